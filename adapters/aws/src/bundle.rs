//! Bundles: a sequencer run's consecutive uses stored as one `Audit` item (#18, what a use
//! costs; docs/design.md, "What a use costs").
//!
//! An event's own `Audit` item is about 650 bytes, one write unit, most of it the two hashes
//! and the ids; DynamoDB bills every item at least a unit. So where a run of the sequencer
//! appends two or more `token.used` in a row, it stores them as one item: keyed by the
//! stream and the `seq` of the FIRST event it holds, `last` the `seq` of its last (at most
//! [`MAX_BUNDLE_EVENTS`] - 1 above the first), `v` = [`BUNDLE_VERSION`], and `events` the
//! events as the chain holds them (sealed: `seq`, `prev_hash` and `hash` included), one JSON
//! object a line, deflated (49 uses: about 3 KB, 3 write units, where their own items were
//! 49). A bundle has neither GSI key: the run's index items list its events
//! (`crate::index`), each naming the bundle by its key. A read of a chain newest first from
//! `s` (`seq <= s`) meets the bundle holding `s` first ([`unbundled`]); a read oldest first
//! past `s` starts [`MAX_BUNDLE_EVENTS`] - 1 below it, where the bundle holding `s + 1` can
//! start at the lowest (`ChainArchive::stream_events`).
//!
//! What a bundle is NOT: part of what is hashed, exported, checkpointed or verified. Events
//! and their hash encoding are unchanged; a bundle is how they are stored. Items without `v`
//! are one event each (every item written before bundles, and every item a direct writer or
//! a run of a single event writes), and every reader takes both ([`events_of`]).
//!
//! Why keyed by its first `seq`: then the put's one condition, that its key is free, is all
//! it needs, as for an event's own item. Every writer takes `seq` n only once it has read or
//! put the item holding n - 1 (the sequencer), or once the head is at n - 1 (a direct writer
//! during a deploy, on condition n is free): the sequencer moves a head past a bundle only to
//! its last event, never into it, so no writer can put an item inside a bundle's range, and a
//! writer that wants its first `seq` meets the bundle's key. A bundle keyed by its last `seq`
//! would need the head's move in the same transaction (billed twice) to rule out an event put
//! at its first by a direct writer. A crash between the bundle's put and the head's move
//! leaves it past the head, and the next run adopts it, as it adopts an event's own item.

use std::collections::HashMap;
use std::io::{Read, Write};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use shared::domain::{AuditEvent, AuditEventType};
use shared::ports::StoreError;

use super::dynamodb::{n, s};
use super::items::{AuditItem, Item, VIA_INTAKE, audit_item, get_n, get_s};

/// The `v` of a bundle item.
pub(super) const BUNDLE_VERSION: i64 = 2;

/// The most events a bundle holds: what a run appends between two moves of the head.
pub(super) const MAX_BUNDLE_EVENTS: usize = super::sequencer::SEQUENCER_EVENTS_PER_HEAD_MOVE;

/// The most bytes a bundle's events inflate to: 49 events of the largest size an event can
/// have, with room; a forged or damaged `events` that inflates past it is corrupt, never read
/// to the end.
const MAX_INFLATED_BYTES: u64 = 4 << 20;

/// Whether `item` (an `Audit` item) is a bundle.
pub(super) fn is_bundle(item: &Item) -> bool {
    item.contains_key("v")
}

/// Whether `event` may go into a bundle: a use, appended from the intake (the notifier
/// announced it from there, and skips a bundle on the `Audit` stream).
pub(super) fn bundled(event: &AuditEvent) -> bool {
    event.event_type == AuditEventType::TokenUsed
}

fn corrupt(item: &Item, why: impl std::fmt::Display) -> StoreError {
    let at = |name: &str| item.get(name).and_then(|v| v.as_s().or(v.as_n()).ok()).cloned().unwrap_or_default();
    StoreError::Corrupt(format!("audit bundle {} {}: {why}", at("stream"), at("seq")))
}

/// The bundle item of `events`: sealed, consecutive, one stream's, two to
/// [`MAX_BUNDLE_EVENTS`].
pub(super) fn bundle_item(events: &[AuditEvent]) -> Result<Item, StoreError> {
    let (first, last) = match events {
        [first, .., last] if events.len() <= MAX_BUNDLE_EVENTS => (first, last),
        _ => return Err(StoreError::Corrupt(format!("a bundle of {} events", events.len()))),
    };
    let mut deflated = DeflateEncoder::new(Vec::with_capacity(events.len() * 100), Compression::default());
    for event in events {
        serde_json::to_writer(&mut deflated, event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        deflated.write_all(b"\n").map_err(|e| StoreError::Corrupt(e.to_string()))?;
    }
    let deflated = deflated.finish().map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(HashMap::from([
        ("stream".into(), s(first.stream())),
        ("seq".into(), n(first.seq as i64)),
        ("last".into(), n(last.seq as i64)),
        ("v".into(), n(BUNDLE_VERSION)),
        ("events".into(), AttributeValue::B(Blob::new(deflated))),
        (VIA_INTAKE.into(), AttributeValue::Bool(true)),
    ]))
}

/// The events a bundle item holds, oldest first, checked to be the consecutive, chained
/// events of its stream from `first` to its key.
fn unbundle(item: &Item) -> Result<Vec<AuditEvent>, StoreError> {
    let version = get_n(item, "audit bundle", "v")?;
    if version != BUNDLE_VERSION {
        return Err(corrupt(item, format!("version {version}, this release reads {BUNDLE_VERSION}")));
    }
    let (first, last) = (get_n(item, "audit bundle", "seq")?, get_n(item, "audit bundle", "last")?);
    let stream = get_s(item, "audit bundle", "stream")?;
    let deflated = match item.get("events") {
        Some(AttributeValue::B(blob)) => blob.as_ref(),
        _ => return Err(corrupt(item, "events")),
    };
    let mut text = String::new();
    DeflateDecoder::new(deflated)
        .take(MAX_INFLATED_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| corrupt(item, e))?;
    if text.len() as u64 > MAX_INFLATED_BYTES {
        return Err(corrupt(item, "events inflate past the limit"));
    }
    let events = text
        .lines()
        .map(|line| serde_json::from_str::<AuditEvent>(line).map_err(|e| corrupt(item, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let chained = events.windows(2).all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash);
    let ends = events.first().map(|e| e.seq as i64) == Some(first) && events.last().map(|e| e.seq as i64) == Some(last);
    if !chained || !ends || events.len() > MAX_BUNDLE_EVENTS || events.iter().any(|e| e.stream() != stream) {
        return Err(corrupt(item, format!("its events are not {stream} {first} to {last}, chained")));
    }
    Ok(events)
}

/// The events an `Audit` item holds, oldest first: a bundle's, or the one event of any other.
pub(super) fn events_of(item: &Item) -> Result<Vec<AuditEvent>, StoreError> {
    if is_bundle(item) { unbundle(item) } else { AuditItem::try_from(item).map(|a| vec![a.0]) }
}

/// The events `items` hold (a `Query` of `Audit` read oldest first), oldest first.
pub(super) fn events_of_all(items: &[Item]) -> Result<Vec<AuditEvent>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.extend(events_of(item)?);
    }
    Ok(out)
}

/// `items` (an `Audit` read, newest first) with each bundle replaced by the items of its
/// events that `keep` keeps, newest first; other items as they are.
pub(super) fn unbundled(items: &[Item], keep: impl Fn(&AuditEvent) -> bool) -> Result<Vec<Item>, StoreError> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if is_bundle(item) {
            out.extend(unbundle(item)?.iter().rev().filter(|e| keep(e)).map(audit_item));
        } else {
            out.push(item.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{Actor, AgentId, Role, Timestamp, UserId};

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut hash = support_access_verify::chain::GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let actor = Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support };
                let user = UserId::parse("alice").unwrap();
                let event =
                    AuditEvent::new(AuditEventType::TokenUsed, Timestamp::from_unix(1_800_000_000), Some(user), actor)
                        .with_detail("GET /app/whoami")
                        .seal(seq, &hash);
                hash = event.hash.clone();
                event
            })
            .collect()
    }

    #[test]
    fn a_bundle_reads_back_as_the_events_it_was_made_of() {
        let events = chain(49);
        let item = bundle_item(&events[3..]).unwrap();
        assert!(is_bundle(&item));
        assert_eq!(item["seq"].as_n().unwrap(), "4");
        assert_eq!(item["last"].as_n().unwrap(), "49");
        assert_eq!(events_of(&item).unwrap(), events[3..]);
        let newest_first = unbundled(&[item], |_| true).unwrap();
        assert_eq!(newest_first.first().unwrap()["seq"].as_n().unwrap(), "49");
    }

    #[test]
    fn forty_nine_uses_bundle_into_four_write_units_at_most() {
        let item = bundle_item(&chain(49)).unwrap();
        let bytes = super::super::items::item_bytes(&item);
        assert!(bytes <= 4 * 1024, "{bytes} bytes");
    }

    #[test]
    fn a_bundle_whose_events_do_not_match_its_key_or_chain_is_corrupt() {
        let events = chain(5);
        let mut item = bundle_item(&events).unwrap();
        item.insert("last".into(), n(4));
        assert!(matches!(events_of(&item), Err(StoreError::Corrupt(_))));

        let mut broken = events.clone();
        broken[2].prev_hash = "00".repeat(32);
        assert!(matches!(events_of(&bundle_item(&broken).unwrap()), Err(StoreError::Corrupt(_))));

        let mut item = bundle_item(&events).unwrap();
        item.insert("events".into(), AttributeValue::B(Blob::new(b"not deflate".to_vec())));
        assert!(matches!(events_of(&item), Err(StoreError::Corrupt(_))));

        let mut item = bundle_item(&events).unwrap();
        item.insert("v".into(), n(3));
        assert!(matches!(events_of(&item), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn an_item_of_one_event_reads_as_before() {
        let event = chain(1).remove(0);
        assert_eq!(events_of(&super::super::items::audit_item(&event)).unwrap(), vec![event]);
    }

    #[test]
    fn a_bundle_holds_two_to_forty_nine_events() {
        assert!(bundle_item(&chain(1)).is_err());
        assert!(bundle_item(&chain(50)).is_err());
    }
}
