//! Item mapping between the domain and DynamoDB attribute maps. Reading fails on a missing or
//! malformed attribute (`StoreError::Corrupt`) rather than inventing a default.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Datelike, Utc};

use shared::domain::{
    AccessRequest, Actor, AgentId, AuditEvent, AuditEventType, Consent, ConsentId, EventId, Jti, Note, Reason,
    RequestId, RequestStatus, Role, Scope, Timestamp, UserId,
};
use shared::ports::StoreError;

pub(super) type Item = HashMap<String, AttributeValue>;

/// Shards of the time index per month, so one month's writes spread over several partitions.
///
/// Sizing: an index partition takes 1,000 write units a second, and each event writes its
/// whole item to the index (projection ALL), one unit per started KB. A use's item is 634
/// bytes, 645 as the sequencer appends it (its `via_intake` mark) (36-character ids, two 64-hex hashes, `at_key`, a `METHOD path` detail), so one
/// unit; the largest event (128-character ids, a 500-character reason of 3-byte characters,
/// a 256-byte detail) is 2,695 bytes, three units (both measured in the tests below). The
/// shard is a uniform hash of the event id, so 8 shards take about 8,000 uses a second
/// (7,000 leaves room for the hash's unevenness over a second), and about 2,600 a second of
/// the largest events, where 4 took half that. More shards cost reads: every page of a time
/// query reads each shard of each month it visits (8 queries at once; a month with nothing
/// in the window still costs them). Grow it when the write rate needs it (docs/operators.md,
/// "Capacity of the time index").
///
/// Changing the count: a bucket is named `month#k` for `k` below the count, and a time query
/// reads every name below the current count. So the count may only grow: every bucket
/// written under a smaller count (4 until this one) is among the names read, and its events
/// are found (a test holds the old names to this). Shrinking it would hide events.
pub(super) const TIME_SHARDS: u8 = 8;
// The time query keeps the shards it finished in a `u32` bit set.
const _: () = assert!(TIME_SHARDS <= 32);

/// Every bucket of `month` a time query reads: the current shards, which include every
/// shard of an earlier, smaller count.
pub(super) fn time_buckets(month: &str) -> impl Iterator<Item = String> + '_ {
    (0..TIME_SHARDS).map(move |shard| format!("{month}#{shard}"))
}

/// The sort key of both GSIs: time-ordered, unique, and ordered like `(at, stream, seq)`.
pub(super) fn at_key(at: Timestamp, stream: &str, seq: u64) -> String {
    format!("{:012}#{stream}#{seq:012}", at.unix())
}

/// The lowest and highest `at_key` of second `at` (`~` sorts after every id character).
pub(super) fn at_key_bounds(from: Timestamp, to: Timestamp) -> (String, String) {
    (format!("{:012}", from.unix().max(0)), format!("{:012}~", to.unix().clamp(0, 999_999_999_999)))
}

/// The month of `at`, as the time index partitions it (`2026-11`).
pub(super) fn month_of(at: Timestamp) -> String {
    let t = DateTime::<Utc>::from_timestamp(at.unix(), 0).unwrap_or_default();
    format!("{:04}-{:02}", t.year(), t.month())
}

/// The time-index partition of an event: its month and a shard from its id's hash.
pub(super) fn time_bucket(at: Timestamp, event_id: &EventId) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, event_id.as_str().as_bytes());
    format!("{}#{}", month_of(at), digest.as_ref()[0] % TIME_SHARDS)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn corrupt(what: &str, name: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: attribute {name} missing or malformed"))
}

pub(super) fn get_s<'a>(item: &'a Item, what: &str, name: &str) -> Result<&'a str, StoreError> {
    item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str).ok_or_else(|| corrupt(what, name))
}

pub(super) fn get_n(item: &Item, what: &str, name: &str) -> Result<i64, StoreError> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok()).ok_or_else(|| corrupt(what, name))
}

fn opt_s<'a>(item: &'a Item, what: &str, name: &str) -> Result<Option<&'a str>, StoreError> {
    item.get(name).map(|_| get_s(item, what, name)).transpose()
}

fn parse<T, E>(what: &str, name: &str, r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|_| corrupt(what, name))
}

pub(super) fn consent_item(c: &Consent) -> Item {
    HashMap::from([
        ("user_id".into(), s(c.user_id.as_str())),
        ("consent_id".into(), s(c.consent_id.as_str())),
        ("scope".into(), s(c.scope.as_str())),
        ("note".into(), s(c.note.as_str())),
        ("granted_at".into(), n(c.granted_at.unix())),
        ("expires_at".into(), n(c.expires_at.unix())),
    ])
}

pub(super) fn user_key(user: &UserId) -> Item {
    HashMap::from([("user_id".into(), s(user.as_str()))])
}

/// A consent read from its item.
pub(super) struct ConsentItem(pub Consent);

impl TryFrom<&Item> for ConsentItem {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        const W: &str = "consent";
        Ok(Self(Consent {
            consent_id: parse(W, "consent_id", ConsentId::parse(get_s(item, W, "consent_id")?))?,
            user_id: parse(W, "user_id", UserId::parse(get_s(item, W, "user_id")?))?,
            scope: parse(W, "scope", Scope::parse(get_s(item, W, "scope")?))?,
            note: parse(W, "note", Note::parse(get_s(item, W, "note")?))?,
            granted_at: Timestamp::from_unix(get_n(item, W, "granted_at")?),
            expires_at: Timestamp::from_unix(get_n(item, W, "expires_at")?),
        }))
    }
}

/// The audit item of `event` (whose `seq` is already assigned), with both GSI keys. Public so
/// the AWS load bench can seed a long chain straight into a table.
pub fn audit_item(e: &AuditEvent) -> Item {
    let stream = e.stream();
    let mut item = HashMap::from([
        ("stream".into(), s(stream)),
        ("seq".into(), n(e.seq as i64)),
        ("prev_hash".into(), s(&e.prev_hash)),
        ("hash".into(), s(&e.hash)),
        ("event_id".into(), s(e.event_id.as_str())),
        ("type".into(), s(e.event_type.as_str())),
        ("at".into(), n(e.at.unix())),
        ("actor".into(), s(e.actor.sub.as_str())),
        ("actor_role".into(), s(e.actor.role.as_str())),
        ("at_key".into(), s(&at_key(e.at, stream, e.seq))),
        ("time_bucket".into(), s(&time_bucket(e.at, &e.event_id))),
    ]);
    let mut opt = |name: &str, v: Option<AttributeValue>| {
        if let Some(v) = v {
            item.insert(name.into(), v);
        }
    };
    opt("user_id", e.user_id.as_ref().map(|u| s(u.as_str())));
    opt("consent_id", e.consent_id.as_ref().map(|c| s(c.as_str())));
    opt("jti", e.jti.as_ref().map(|j| s(j.as_str())));
    opt("scope", e.scope.map(|sc| s(sc.as_str())));
    opt("reason", e.reason.as_ref().map(|r| s(r.as_str())));
    opt("expires_at", e.expires_at.map(|t| n(t.unix())));
    opt("detail", e.detail.as_ref().map(|d| s(d)));
    opt("request_id", e.request_id.as_ref().map(|r| s(r.as_str())));
    item
}

/// The attribute (`BOOL` true) the sequencer adds to each `Audit` item it appends from the
/// intake: the notifier announced such a `token.used` from the `AuditIntake` stream already,
/// and skips it on the `Audit` stream without a second first-use claim. Not part of the event
/// (its hash never covers it, no reader returns it); a direct writer never sets it.
pub(super) const VIA_INTAKE: &str = "via_intake";

/// Whether `item` (an `Audit` item) was appended by the sequencer from the intake.
pub(super) fn appended_via_intake(item: &Item) -> bool {
    item.get(VIA_INTAKE).and_then(|v| v.as_bool().ok()).copied().unwrap_or(false)
}

/// An audit event read from its item.
pub(super) struct AuditItem(pub AuditEvent);

impl TryFrom<&Item> for AuditItem {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        const W: &str = "audit event";
        let seq = get_n(item, W, "seq")?;
        Ok(Self(AuditEvent {
            event_id: parse(W, "event_id", EventId::parse(get_s(item, W, "event_id")?))?,
            event_type: parse(W, "type", AuditEventType::parse(get_s(item, W, "type")?))?,
            at: Timestamp::from_unix(get_n(item, W, "at")?),
            user_id: opt_s(item, W, "user_id")?.map(|u| parse(W, "user_id", UserId::parse(u))).transpose()?,
            actor: Actor {
                sub: parse(W, "actor", AgentId::parse(get_s(item, W, "actor")?))?,
                role: Role::parse(get_s(item, W, "actor_role")?).ok_or_else(|| corrupt(W, "actor_role"))?,
            },
            seq: u64::try_from(seq).map_err(|_| corrupt(W, "seq"))?,
            prev_hash: get_s(item, W, "prev_hash")?.to_owned(),
            hash: get_s(item, W, "hash")?.to_owned(),
            consent_id: opt_s(item, W, "consent_id")?
                .map(|c| parse(W, "consent_id", ConsentId::parse(c)))
                .transpose()?,
            jti: opt_s(item, W, "jti")?.map(|j| parse(W, "jti", Jti::parse(j))).transpose()?,
            scope: opt_s(item, W, "scope")?.map(|sc| parse(W, "scope", Scope::parse(sc))).transpose()?,
            reason: opt_s(item, W, "reason")?.map(|r| parse(W, "reason", Reason::parse(r))).transpose()?,
            expires_at: item
                .get("expires_at")
                .map(|_| get_n(item, W, "expires_at").map(Timestamp::from_unix))
                .transpose()?,
            detail: opt_s(item, W, "detail")?.map(str::to_owned),
            request_id: opt_s(item, W, "request_id")?
                .map(|r| parse(W, "request_id", RequestId::parse(r)))
                .transpose()?,
        }))
    }
}

/// How long a decided or expired request stays readable (the agent's view) before DynamoDB's
/// TTL removes it; the audit log keeps every step for good.
pub(super) const REQUEST_RETENTION_SECONDS: i64 = 90 * 24 * 3600;

pub(super) fn request_key(user: &UserId, id: &RequestId) -> Item {
    HashMap::from([("user_id".into(), s(user.as_str())), ("request_id".into(), s(id.as_str()))])
}

/// The item of `r`, with `purge_at` (the TTL attribute) a retention period past its last
/// possible change.
pub(super) fn request_item(r: &AccessRequest) -> Item {
    let last_change = r.decided_at.unwrap_or(r.expires_at).max(r.expires_at);
    let mut item = HashMap::from([
        ("user_id".into(), s(r.user_id.as_str())),
        ("request_id".into(), s(r.request_id.as_str())),
        ("agent".into(), s(r.agent.as_str())),
        ("reason".into(), s(r.reason.as_str())),
        ("scope".into(), s(r.scope.as_str())),
        ("duration_seconds".into(), n(r.duration_seconds)),
        ("status".into(), s(r.status.as_str())),
        ("requested_at".into(), n(r.requested_at.unix())),
        ("expires_at".into(), n(r.expires_at.unix())),
        ("purge_at".into(), n(last_change.unix() + REQUEST_RETENTION_SECONDS)),
    ]);
    if let Some(at) = r.decided_at {
        item.insert("decided_at".into(), n(at.unix()));
    }
    if let Some(c) = &r.consent_id {
        item.insert("consent_id".into(), s(c.as_str()));
    }
    // Only a pending request is in the sparse index the sweep reads; a decision's put drops it.
    if r.status == RequestStatus::Pending {
        item.insert(PENDING_KEY.into(), s(PENDING_KEY));
        item.insert("pending_deadline".into(), n(r.expires_at.unix()));
    }
    item
}

/// The partition key of the sparse index of pending requests (one partition: pending
/// requests are few, and each leaves it at its decision or expiry).
pub(super) const PENDING_KEY: &str = "pending";

/// An access request read from its item.
pub(super) struct RequestItem(pub AccessRequest);

impl TryFrom<&Item> for RequestItem {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        const W: &str = "access request";
        Ok(Self(AccessRequest {
            request_id: parse(W, "request_id", RequestId::parse(get_s(item, W, "request_id")?))?,
            user_id: parse(W, "user_id", UserId::parse(get_s(item, W, "user_id")?))?,
            agent: parse(W, "agent", AgentId::parse(get_s(item, W, "agent")?))?,
            reason: parse(W, "reason", Reason::parse(get_s(item, W, "reason")?))?,
            scope: parse(W, "scope", Scope::parse(get_s(item, W, "scope")?))?,
            duration_seconds: get_n(item, W, "duration_seconds")?,
            status: RequestStatus::parse(get_s(item, W, "status")?).ok_or_else(|| corrupt(W, "status"))?,
            requested_at: Timestamp::from_unix(get_n(item, W, "requested_at")?),
            expires_at: Timestamp::from_unix(get_n(item, W, "expires_at")?),
            decided_at: item
                .get("decided_at")
                .map(|_| get_n(item, W, "decided_at").map(Timestamp::from_unix))
                .transpose()?,
            consent_id: opt_s(item, W, "consent_id")?
                .map(|c| parse(W, "consent_id", ConsentId::parse(c)))
                .transpose()?,
        }))
    }
}

/// DynamoDB's size of an item: each attribute's name and value in bytes (a number about half
/// its digits, plus one; a list or map 3 bytes plus its elements, a map's names included):
/// what the tests below hold an event's item to.
#[cfg(test)]
pub(super) fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(name, v)| name.len() + value_bytes(v)).sum()
}

#[cfg(test)]
fn value_bytes(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Ss(l) => l.iter().map(String::len).sum(),
        AttributeValue::Ns(l) => l.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(l) => l.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value_bytes(v)).sum::<usize>(),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_event_round_trips_through_its_item() {
        let e = AuditEvent::new(
            AuditEventType::TokenIssued,
            Timestamp::from_unix(1_795_600_800),
            Some(UserId::parse("alice").unwrap()),
            Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
        )
        .with_jti(&Jti::generate())
        .with_reason(&Reason::parse("ticket 12345").unwrap())
        .with_detail("x");
        let e = e.seal(42, support_access_verify::chain::GENESIS);
        let item = audit_item(&e);
        assert_eq!(item["at_key"].as_s().unwrap(), "001795600800#alice#000000000042");
        assert!(item["time_bucket"].as_s().unwrap().starts_with("2026-11#"));
        assert_eq!(AuditItem::try_from(&item).unwrap().0, e);
    }

    #[test]
    fn a_use_writes_one_unit_to_the_time_index_and_the_largest_event_three() {
        // A use as recorded: ids of 36 characters, a path in the detail.
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let at = Timestamp::from_unix(1_795_600_800);
        let used = AuditEvent::new(
            AuditEventType::TokenUsed,
            at,
            Some(UserId::parse(id).unwrap()),
            Actor { sub: AgentId::parse(id).unwrap(), role: Role::Support },
        )
        .with_consent(&ConsentId::generate(), Scope::Read, at.plus_seconds(900))
        .with_jti(&Jti::generate())
        .with_detail("GET /api/v1/accounts/0f8fad5b-d9cb-469f-a165-70867728950e/invoices?page=2");
        let used = audit_item(&used.seal(123_456, support_access_verify::chain::GENESIS));
        assert!(item_bytes(&used) <= 1024, "{} bytes", item_bytes(&used));
        // The largest: ids of 128 characters, a reason of 500 three-byte characters, a
        // 256-byte detail.
        let long = "u".repeat(128);
        let largest = AuditEvent::new(
            AuditEventType::TokenIssued,
            at,
            Some(UserId::parse(&long).unwrap()),
            Actor { sub: AgentId::parse(&long).unwrap(), role: Role::Support },
        )
        .with_consent(&ConsentId::generate(), Scope::Read, at.plus_seconds(900))
        .with_jti(&Jti::generate())
        .with_reason(&Reason::parse(&"€".repeat(500)).unwrap())
        .with_detail("d".repeat(256));
        let largest = audit_item(&largest.seal(u64::from(u32::MAX), support_access_verify::chain::GENESIS));
        assert!(item_bytes(&largest) <= 3 * 1024, "{} bytes", item_bytes(&largest));
    }

    #[test]
    fn buckets_of_the_earlier_shard_count_are_still_read() {
        let read: Vec<String> = time_buckets("2026-11").collect();
        // 4 shards until the count grew to 8: every old bucket name is among those read.
        for old in 0..4 {
            assert!(read.contains(&format!("2026-11#{old}")), "2026-11#{old}");
        }
        assert_eq!(read.len(), usize::from(TIME_SHARDS));
    }

    #[test]
    fn an_access_request_round_trips_through_its_item_and_fails_without_a_field() {
        let p = shared::domain::Policy::default();
        let r = AccessRequest::file(
            UserId::parse("alice").unwrap(),
            AgentId::parse("agent-7").unwrap(),
            Reason::parse("ticket 4411: billing").unwrap(),
            Scope::Full,
            shared::domain::ConsentDuration::parse(3600, &p).unwrap(),
            Timestamp::from_unix(1_000),
            &p,
        );
        let item = request_item(&r);
        assert_eq!(RequestItem::try_from(&item).unwrap().0, r);
        assert_eq!(get_n(&item, "t", "pending_deadline").unwrap(), r.expires_at.unix(), "in the sweep's index");
        assert_eq!(get_n(&item, "t", "purge_at").unwrap(), r.expires_at.unix() + REQUEST_RETENTION_SECONDS);
        let (approved, _) = r.approve(Timestamp::from_unix(2_000), &p).unwrap();
        assert_eq!(RequestItem::try_from(&request_item(&approved)).unwrap().0, approved);
        assert!(!request_item(&approved).contains_key(PENDING_KEY), "out of the sweep's index");
        let mut item = request_item(&r);
        item.remove("duration_seconds");
        assert!(matches!(RequestItem::try_from(&item), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn an_item_missing_an_attribute_is_corrupt() {
        let c = Consent {
            consent_id: ConsentId::generate(),
            user_id: UserId::parse("alice").unwrap(),
            scope: Scope::Read,
            note: Note::default(),
            granted_at: Timestamp::from_unix(1),
            expires_at: Timestamp::from_unix(2),
        };
        let mut item = consent_item(&c);
        assert_eq!(ConsentItem::try_from(&item).unwrap().0, c);
        item.remove("expires_at");
        assert!(matches!(ConsentItem::try_from(&item), Err(StoreError::Corrupt(_))));
        let mut item = consent_item(&c);
        item.insert("scope".into(), AttributeValue::S("admin".into()));
        assert!(matches!(ConsentItem::try_from(&item), Err(StoreError::Corrupt(_))));
    }
}
