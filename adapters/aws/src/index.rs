//! The time and actor index of a sequencer run's events: one small index item per run and
//! actor in place of each event's own two index entries (#18, what a use costs).
//!
//! Each `Audit` item with both GSI keys is written to both indexes at its full size: an event
//! is 1 write unit in the table and 1 in each of `by-actor` and `by-time`. So a run of the
//! sequencer that appends two or more events of a stream puts them WITHOUT `at_key` and
//! `time_bucket` (in neither index: an index holds only items that carry both its keys), and
//! before it moves the head past them puts one index item per actor of the run (per
//! [`INDEX_REFS_PER_ITEM`] events, and per [`INDEX_SPAN_SECONDS`] of their times): an `Audit`
//! item of its own partition (`#ix#` and the hash of what it lists: no stream can have
//! that key, `#` is not in an identifier) with the actor, `time_bucket` and `at_key` as an
//! event's, and `refs`, each event's `at_key` and type, one a line. 49 uses of one agent in a
//! run are one item of about 3.7 KB: 4 units in the table and 4 in each index, 12 where the
//! events' own entries were 98. A run of one event keeps its entries on its item (one index
//! item would cost 3 units, the event's two entries cost 2).
//!
//! The index item's `at_key` is its newest event's, then `#ix#` and its id: it sorts just
//! after that event's key and before every later one, and every event it lists is at or
//! below it and at most [`INDEX_SPAN_SECONDS`] older. So a reader of a key range reads the
//! index from [`INDEX_SPAN_SECONDS`] above the range's top, expands each index item into its
//! events, keeps those in the range, and knows, at each item it reads (newest first), that
//! nothing it has yet to read is above that item's key ([`DynamoStore::read_indexed`]).
//!
//! Crashes and races: the index item is written after the run's puts and before the head
//! moves past them. A run that dies between the two leaves its events past the head, and the
//! next run adopts them and indexes them again; an event listed twice (or listed and also
//! carrying its own entries) is read once, by its key. A redelivered batch appends nothing
//! and indexes nothing. An index item is never changed after its put (a put of the same
//! content writes the same item).
//!
//! Events in a bundle (`crate::bundle`) are listed with the bundle's key (its first `seq`)
//! as a fourth part of their line, and read from the bundle.

use std::collections::{BTreeMap, HashMap, btree_map};
use std::ops::Bound;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::try_join_all;
use shared::domain::{AuditEvent, Timestamp};
use shared::ports::StoreError;

use super::bundle::events_of;
use super::dynamodb::{DynamoStore, Found, MAX_QUERY_CALLS, Range, n, s};
use super::items::{Item, TIME_SHARDS, at_key, audit_item, get_n, get_s, month_of};

/// The partition prefix of index items in `Audit`.
pub(super) const INDEX_PREFIX: &str = "#ix#";

/// The most events one index item lists: about 7.5 KB of `refs` (75 bytes each with
/// 36-character user ids), so an index item's three writes (table and both indexes) stay a
/// few units, and a reader's page of them a few hundred KB.
pub(super) const INDEX_REFS_PER_ITEM: usize = 100;

/// The widest span of event times one index item covers, in seconds: how far above a range's
/// top a reader starts, so that it finds an item whose newest event is above the range and
/// older ones in it. A run appending a backlog (a sequencer that was down) writes an item per
/// minute of it.
pub(super) const INDEX_SPAN_SECONDS: i64 = 60;

/// An event as an index item lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexRef {
    pub actor: String,
    /// Its `at_key`: `at`, stream and `seq`.
    pub key: String,
    pub at: i64,
    pub event_type: String,
    /// The key (first `seq`) of the bundle that holds it, if one does.
    pub bundle: Option<u64>,
}

impl IndexRef {
    pub(super) fn of(event: &AuditEvent) -> Self {
        Self {
            actor: event.actor.sub.as_str().to_owned(),
            key: at_key(event.at, event.stream(), event.seq),
            at: event.at.unix(),
            event_type: event.event_type.as_str().to_owned(),
            bundle: None,
        }
    }

    /// `event`, held by the bundle whose first event is `first`.
    pub(super) fn in_bundle(event: &AuditEvent, first: u64) -> Self {
        Self { bundle: Some(first), ..Self::of(event) }
    }
}

/// An index line read back: the event's `at_key`, its type, and the bundle that holds it.
fn parse_line(line: &str) -> Option<(&str, &str, Option<u64>)> {
    // `at#stream#seq#type`, then `#bundle` for an event in a bundle.
    let mut hashes = line.match_indices('#').map(|(i, _)| i);
    let end = hashes.nth(2)?;
    let (key, rest) = (&line[..end], &line[end + 1..]);
    Some(match rest.split_once('#') {
        Some((event_type, bundle)) => (key, event_type, Some(bundle.parse().ok()?)),
        None => (key, rest, None),
    })
}

/// An `at_key` read back: its second, stream and `seq`.
fn parse_key(key: &str) -> Option<(i64, &str, u64)> {
    let mut parts = key.splitn(3, '#');
    let at = parts.next()?.parse().ok()?;
    let stream = parts.next()?;
    let seq = parts.next()?.parse().ok()?;
    Some((at, stream, seq))
}

/// The index items listing `refs`: per actor, in key order, cut every
/// [`INDEX_REFS_PER_ITEM`] events and wherever an item would span more than
/// [`INDEX_SPAN_SECONDS`].
pub(super) fn index_items(refs: &[IndexRef]) -> Vec<Item> {
    let mut by_actor: BTreeMap<&str, Vec<&IndexRef>> = BTreeMap::new();
    for r in refs {
        by_actor.entry(&r.actor).or_default().push(r);
    }
    let mut items = Vec::new();
    for (actor, mut refs) in by_actor {
        refs.sort_by(|a, b| a.key.cmp(&b.key));
        refs.dedup_by(|a, b| a.key == b.key);
        let mut start = 0;
        for i in 1..=refs.len() {
            let cut =
                i == refs.len() || i - start == INDEX_REFS_PER_ITEM || refs[i].at - refs[start].at > INDEX_SPAN_SECONDS;
            if cut {
                items.push(index_item(actor, &refs[start..i]));
                start = i;
            }
        }
    }
    items
}

fn index_item(actor: &str, refs: &[&IndexRef]) -> Item {
    let lines: Vec<String> = refs
        .iter()
        .map(|r| match r.bundle {
            Some(bundle) => format!("{}#{}#{bundle}", r.key, r.event_type),
            None => format!("{}#{}", r.key, r.event_type),
        })
        .collect();
    let body = lines.join("\n");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, format!("{actor}\n{body}").as_bytes());
    let id = support_access_verify::chain::hex(&digest.as_ref()[..16]);
    let newest = refs.last().expect("an index item lists at least one event");
    HashMap::from([
        ("stream".into(), s(&format!("{INDEX_PREFIX}{id}"))),
        ("seq".into(), n(0)),
        ("actor".into(), s(actor)),
        ("at_key".into(), s(&format!("{}{INDEX_PREFIX}{id}", newest.key))),
        (
            "time_bucket".into(),
            s(&format!("{}#{}", month_of(Timestamp::from_unix(newest.at)), digest.as_ref()[0] % TIME_SHARDS)),
        ),
        ("refs".into(), s(&body)),
    ])
}

/// One entry of a key range as the reader has it: an event item the index holds itself, or
/// an event an index item lists, to be read from the table.
enum Entry {
    Item(Item),
    Listed(Listed),
}

/// An event an index item lists: its stream, `seq` and type, and the key (`seq`) of the
/// `Audit` item that holds it: its own, or its bundle's.
struct Listed {
    stream: String,
    seq: u64,
    event_type: String,
    holder: u64,
}

/// A key range of one index partition, for [`DynamoStore::read_indexed`].
pub(super) struct IndexRange<'a> {
    pub index: &'static str,
    /// The partition key's attribute and value (`actor`, or `time_bucket`).
    pub partition: (&'static str, &'a str),
    /// The lowest and highest `at_key` wanted (both included; `at_key_bounds`).
    pub lo: &'a str,
    pub hi: &'a str,
    pub event_type: Option<&'a str>,
}

/// The highest key an index item can have and still list an event at or below `hi`.
fn index_top(hi: &str) -> String {
    let second: i64 = hi.get(..12).and_then(|d| d.parse().ok()).unwrap_or(999_999_999_999);
    format!("{:012}~", second.saturating_add(INDEX_SPAN_SECONDS).min(999_999_999_999))
}

/// Adds what the index entry `item` holds to `found`: itself (an event's own entry), or
/// the events it lists in the range.
fn expand(range: &IndexRange<'_>, item: &Item, found: &mut BTreeMap<String, Entry>) -> Result<(), StoreError> {
    let key = get_s(item, "audit index entry", "at_key")?;
    let Some(refs) = item.get("refs") else {
        if key <= range.hi {
            found.insert(key.to_owned(), Entry::Item(item.clone()));
        }
        return Ok(());
    };
    let refs = refs.as_s().map_err(|_| StoreError::Corrupt(format!("audit index item {key}: refs")))?;
    for line in refs.lines() {
        let bad = || StoreError::Corrupt(format!("audit index item {key}: {line:?}"));
        let (event_key, event_type, bundle) = parse_line(line).ok_or_else(bad)?;
        let (_, stream, seq) = parse_key(event_key).ok_or_else(bad)?;
        let wanted = event_key >= range.lo && event_key <= range.hi && range.event_type.is_none_or(|t| t == event_type);
        if !wanted {
            continue;
        }
        if let btree_map::Entry::Vacant(v) = found.entry(event_key.to_owned()) {
            let (stream, event_type, holder) = (stream.to_owned(), event_type.to_owned(), bundle.unwrap_or(seq));
            v.insert(Entry::Listed(Listed { stream, seq, event_type, holder }));
        }
    }
    Ok(())
}

impl DynamoStore {
    /// Puts the index items listing `refs` (unconditionally: the same content is the same
    /// item), all at once.
    pub(super) async fn put_index(&self, refs: &[IndexRef]) -> Result<(), StoreError> {
        let puts = index_items(refs).into_iter().map(|item| async move {
            self.resent("an index put", || {
                self.client.put_item().table_name(&self.tables.audit).set_item(Some(item.clone())).send()
            })
            .await
        });
        try_join_all(puts).await.map(|_| ())
    }

    /// Reads `range` newest first, as [`DynamoStore::read_range`] reads a key range: until
    /// `want` events are found, the range ends or the call budget is spent. Index items are
    /// expanded into the events they list (read from the table, 100 a call), so the `Found`
    /// holds events only, each with its `at_key`, newest first, each once.
    ///
    /// Reading from [`INDEX_SPAN_SECONDS`] above the top, an event is certain once the reader
    /// has passed its key: every item still to read has a lower key, and lists nothing above
    /// it. So the answer is the events above the last key read (all of them, once the range
    /// has ended), and `last_examined` is where the next read may resume: nothing at or above
    /// it is left out.
    pub(super) async fn read_indexed(&self, range: &IndexRange<'_>, want: usize) -> Result<Found, StoreError> {
        let mut names =
            HashMap::from([("#p".to_owned(), range.partition.0.to_owned()), ("#k".to_owned(), "at_key".to_owned())]);
        let mut values = HashMap::from([
            (":pk".to_owned(), s(range.partition.1)),
            (":lo".to_owned(), s(range.lo)),
            (":hi".to_owned(), s(&index_top(range.hi))),
        ]);
        let filter = range.event_type.map(|t| {
            names.insert("#t".to_owned(), "type".to_owned());
            names.insert("#r".to_owned(), "refs".to_owned());
            values.insert(":type".to_owned(), s(t));
            "#t = :type OR attribute_exists(#r)".to_owned()
        });
        let query = Range {
            index: Some(range.index),
            key_condition: "#p = :pk AND #k BETWEEN :lo AND :hi".to_owned(),
            filter,
            names: &names,
            values,
        };
        let mut found: BTreeMap<String, Entry> = BTreeMap::new();
        let certain = |found: &BTreeMap<String, Entry>, above: &str| {
            found.range::<str, _>((Bound::Excluded(above), Bound::Unbounded)).count()
        };
        let mut start: Option<Item> = None;
        // Where reading stopped: `None` once the range has ended (every event found is certain).
        let mut stopped: Option<String> = None;
        'calls: for _ in 0..MAX_QUERY_CALLS {
            let out = self.query_page(&self.tables.audit, &query, want.max(100), start.take()).await?;
            for item in out.items() {
                let key = get_s(item, "audit index entry", "at_key")?.to_owned();
                if certain(&found, &key) >= want {
                    stopped = Some(key);
                    break 'calls;
                }
                expand(range, item, &mut found)?;
            }
            match out.last_evaluated_key() {
                Some(key) => {
                    stopped = Some(get_s(key, "audit index key", "at_key")?.to_owned());
                    start = Some(key.clone());
                }
                None => {
                    stopped = None;
                    break;
                }
            }
        }
        // The certain ones: above where reading stopped (at it too, when that is an event's
        // own entry: every item below it is below it), newest first, `want` at most.
        let mut certain: Vec<(String, Entry)> = match &stopped {
            None => found.into_iter().rev().collect(),
            Some(stop) => found.into_iter().rev().take_while(|(key, _)| key >= stop).collect(),
        };
        let exhausted = stopped.is_none() && certain.len() <= want;
        certain.truncate(want);
        let last_examined = match (&stopped, certain.len() == want) {
            (_, true) => certain.last().map(|(key, _)| s(key)),
            (Some(stop), false) => Some(s(stop)),
            (None, false) => None,
        };
        let items = self.entries_read(certain).await?;
        Ok(Found { items, exhausted, last_examined })
    }

    /// The events of `entries`, in their order: those an index item listed read from the
    /// table ([`DynamoStore::batch_get`], each item once: a bundle holds many), each checked
    /// against its key and given its `at_key`.
    async fn entries_read(&self, entries: Vec<(String, Entry)>) -> Result<Vec<Item>, StoreError> {
        let mut keys: Vec<(String, u64)> = entries
            .iter()
            .filter_map(|(_, e)| match e {
                Entry::Listed(l) => Some((l.stream.clone(), l.holder)),
                Entry::Item(_) => None,
            })
            .collect();
        keys.sort();
        keys.dedup();
        let keys = keys
            .into_iter()
            .map(|(stream, seq)| HashMap::from([("stream".to_owned(), s(&stream)), ("seq".to_owned(), n(seq as i64))]))
            .collect();
        // Each event each item read holds, by stream and `seq`.
        let mut read: HashMap<(String, u64), Vec<AuditEvent>> = HashMap::new();
        for item in self.batch_get(&self.tables.audit, keys, None).await? {
            let stream = get_s(&item, "audit event", "stream")?.to_owned();
            let holder = u64::try_from(get_n(&item, "audit event", "seq")?).unwrap_or_default();
            read.insert((stream, holder), events_of(&item)?);
        }
        let mut out = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            let l = match entry {
                Entry::Item(item) => {
                    out.push(item);
                    continue;
                }
                Entry::Listed(l) => l,
            };
            let held =
                read.get(&(l.stream.clone(), l.holder)).and_then(|events| events.iter().find(|e| e.seq == l.seq));
            let Some(event) = held else {
                return Err(StoreError::Corrupt(format!("audit index lists {} {}, not on the chain", l.stream, l.seq)));
            };
            if at_key(event.at, &l.stream, event.seq) != key || event.event_type.as_str() != l.event_type {
                return Err(StoreError::Corrupt(format!("audit index lists {key}, the chain holds another event")));
            }
            let mut item = audit_item(event);
            item.insert("at_key".into(), AttributeValue::S(key));
            out.push(item);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(actor: &str, at: i64, stream: &str, seq: u64) -> IndexRef {
        IndexRef {
            actor: actor.into(),
            key: at_key(Timestamp::from_unix(at), stream, seq),
            at,
            event_type: "token.used".into(),
            bundle: None,
        }
    }

    #[test]
    fn an_index_item_sorts_after_its_newest_event_and_before_any_later_one() {
        let items = index_items(&[r("agent", 100, "alice", 7), r("agent", 101, "alice", 8)]);
        assert_eq!(items.len(), 1);
        let key = items[0]["at_key"].as_s().unwrap().clone();
        assert!(key.as_str() > at_key(Timestamp::from_unix(101), "alice", 8).as_str());
        assert!(key.as_str() < at_key(Timestamp::from_unix(101), "alice", 9).as_str());
        assert!(key.as_str() < at_key(Timestamp::from_unix(101), "alicf", 0).as_str());
        assert!(key.as_str() < index_top(&at_key(Timestamp::from_unix(101 - INDEX_SPAN_SECONDS), "a", 0)).as_str());
        assert!(items[0]["stream"].as_s().unwrap().starts_with(INDEX_PREFIX));
        assert!(items[0]["time_bucket"].as_s().unwrap().starts_with("1970-01#"));
    }

    #[test]
    fn an_index_item_per_actor_per_hundred_events_and_per_minute() {
        let mut refs: Vec<IndexRef> = (0..150).map(|i| r("agent", 1_000, "alice", i)).collect();
        refs.push(r("other", 1_000, "alice", 150));
        refs.push(r("agent", 1_000 + INDEX_SPAN_SECONDS + 1, "alice", 151));
        let items = index_items(&refs);
        let lists: Vec<usize> = items.iter().map(|i| i["refs"].as_s().unwrap().lines().count()).collect();
        assert_eq!(lists, vec![100, 50, 1, 1]);
        assert_eq!(items[3]["actor"].as_s().unwrap(), "other");
    }

    #[test]
    fn the_same_events_make_the_same_index_item() {
        let a = index_items(&[r("agent", 5, "bob", 1), r("agent", 6, "bob", 2)]);
        let b = index_items(&[r("agent", 6, "bob", 2), r("agent", 5, "bob", 1), r("agent", 5, "bob", 1)]);
        assert_eq!(a, b);
    }

    #[test]
    fn a_line_names_the_bundle_that_holds_its_event() {
        let mut bundled = r("agent", 7, "dave", 12);
        bundled.bundle = Some(20);
        let items = index_items(&[r("agent", 7, "dave", 11), bundled]);
        let refs = items[0]["refs"].as_s().unwrap();
        let lines: Vec<_> = refs.lines().map(|l| parse_line(l).unwrap()).collect();
        let key = |seq| at_key(Timestamp::from_unix(7), "dave", seq);
        assert_eq!(lines, vec![(key(11).as_str(), "token.used", None), (key(12).as_str(), "token.used", Some(20))]);
        assert_eq!(parse_line("000000000007#dave#12#token.used#x"), None);
        assert_eq!(parse_line("000000000007#dave"), None);
    }

    #[test]
    fn a_key_reads_back_as_its_second_stream_and_seq() {
        assert_eq!(parse_key(&at_key(Timestamp::from_unix(42), "carol", 9)), Some((42, "carol", 9)));
        assert_eq!(index_top("000000000100~"), "000000000160~");
    }
}
