//! Consents and the audit log on DynamoDB. Every consent change and its audit event are one
//! `TransactWriteItems`, conditioned on the consent's state; every audit event takes the next
//! `seq` of its user's stream through a head item (`ChainHeads`) advanced in the same
//! transaction, so concurrent writers never lose, fork or skip a number: the loser of a race
//! re-reads the head and retries.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::query::QueryOutput;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use support_access_verify::chain::GENESIS;

use super::archive::{MOVED_SET, MarkMoved};
use super::bundle::unbundled;
use super::index::IndexRange;
use super::items::{
    AuditItem, ConsentItem, Item, at_key_bounds, audit_item, consent_item, month_of, time_buckets, user_key,
};
use shared::domain::{AuditEvent, Consent, Timestamp, UserId};
use shared::ports::{
    AuditAppender, AuditPage, AuditQuery, ConsentReader, ConsentWriter, ExpiryLedger, StoreError, TokenLedger,
};

/// The eight tables (names from `CONSENTS_TABLE`, `AUDIT_TABLE`, `CHAIN_HEADS_TABLE`,
/// `CHECKPOINTS_TABLE`, `ACCESS_REQUESTS_TABLE`, `CONTROLS_TABLE`, `FIRST_USES_TABLE`,
/// `AUDIT_INTAKE_TABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    pub consents: String,
    pub audit: String,
    pub heads: String,
    pub checkpoints: String,
    pub requests: String,
    /// The operators' emergency stop and agent revocations (`controls`).
    pub controls: String,
    /// Each token's first-use claim, by `jti` (the notifier's alone, TTL on `expires_at`).
    pub first_uses: String,
    /// Decided events not yet on their chains, by stream and decision time (#18; written
    /// only by a store [`DynamoStore::with_sequencer`], see `sequencer.rs`).
    pub intake: String,
}

impl Tables {
    pub const ACTOR_INDEX: &'static str = "by-actor";
    pub const TIME_INDEX: &'static str = "by-time";
    /// On `AccessRequests`: the requests an agent filed, by id (so by time).
    pub const AGENT_INDEX: &'static str = "by-agent";
    /// On `AccessRequests`: the pending requests by deadline (sparse), for the sweep.
    pub const PENDING_INDEX: &'static str = "pending-by-deadline";
    /// On `ChainHeads`: the heads that moved since a checkpoint sealed them (sparse, keys
    /// only), by `moved_shard` and `moved_at`; see `archive`.
    pub const MOVED_INDEX: &'static str = "moved";
    /// On `Checkpoints`: the sealed heads (leaves) by `checkpoint` and `leaf_index` (sparse:
    /// a checkpoint item has neither), so a full export reads a checkpoint's leaves with one
    /// query, not one per stream; see `archive`.
    pub const LEAVES_INDEX: &'static str = "leaves-by-checkpoint";

    /// The names from the environment, with the SAM template's defaults.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Self {
            consents: var("CONSENTS_TABLE", "Consents"),
            audit: var("AUDIT_TABLE", "Audit"),
            heads: var("CHAIN_HEADS_TABLE", "ChainHeads"),
            checkpoints: var("CHECKPOINTS_TABLE", "Checkpoints"),
            requests: var("ACCESS_REQUESTS_TABLE", "AccessRequests"),
            controls: var("CONTROLS_TABLE", "Controls"),
            first_uses: var("FIRST_USES_TABLE", "FirstUses"),
            intake: var("AUDIT_INTAKE_TABLE", "AuditIntake"),
        }
    }
}

pub struct DynamoStore {
    pub(super) client: Client,
    pub(super) tables: Tables,
    pub(super) append_budget: Duration,
    /// The last head this process saw of each stream: the first guess of the next append, so
    /// a warm function appends with one transaction and no read. A stale guess is harmless:
    /// the head's condition fails and returns the real head, and the append retries from it.
    recent_heads: std::sync::Mutex<HashMap<String, (u64, String)>>,
    /// `Some` once events go through the intake and the sequencer (#18; see `sequencer.rs`);
    /// `None`: each write appends to its chain at once, as before.
    pub(super) sequencer: Option<std::sync::Arc<super::sequencer::SequencerState>>,
}

/// How many streams' heads one process remembers (cleared when full: it is only a guess).
const RECENT_HEADS: usize = 10_000;

/// The `stream` of the expiry markers kept in `ChainHeads`, which are not chain heads.
pub(super) const EXPIRY_MARKER_PREFIX: &str = "~expired#";

/// How often an audit append retries after losing a race for its stream's next `seq`, and
/// how long it may spend doing so (well inside a function's timeout). Each loss means another
/// writer's event landed, so 50 writers at once on one stream all land within these bounds
/// (measured in the contract suite); beyond that, the answer is 503 and nothing half-written.
const MAX_APPEND_ATTEMPTS: u32 = 200;
pub(super) const APPEND_BUDGET: Duration = Duration::from_secs(5);
/// Backoff after a lost race: a random wait up to `2 ms * 2^attempt`, capped ("full jitter"),
/// so contending writers spread out instead of colliding again in lockstep.
const BACKOFF_BASE_MS: u64 = 2;
const BACKOFF_CAP_MS: u64 = 50;
/// How many `Query` calls one range read may spend before answering with what it has.
pub(super) const MAX_QUERY_CALLS: usize = 12;
/// How many months of the time index one page may visit before answering with what it has.
const MAX_MONTHS_PER_PAGE: usize = 14;

pub(super) fn unavailable<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

pub(super) fn built<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Unavailable(format!("request could not be built: {e}")))
}

pub(super) fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// What a cancelled transaction says about its items.
pub(super) enum Cancelled {
    /// One of the caller's conditions (the consent's state) failed.
    Condition,
    /// Another writer took this `seq` first, or the items were contended: retry, from the
    /// head the failed condition returned when it did.
    Race(Option<(u64, String)>),
    Other(String),
}

/// The `seq` and `hash` a `ChainHeads` item holds, if it holds both.
pub(super) fn head_of(item: &HashMap<String, AttributeValue>) -> Option<(u64, String)> {
    let seq = item.get("seq")?.as_n().ok()?.parse().ok()?;
    Some((seq, item.get("hash")?.as_s().ok()?.clone()))
}

pub(super) fn corrupt_head(stream: &str) -> StoreError {
    StoreError::Corrupt(format!("chain head of {stream}: seq or hash missing"))
}

pub(super) fn cancellation(
    e: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
    own: usize,
) -> Cancelled {
    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else {
        return Cancelled::Other(DisplayErrorContext(e).to_string());
    };
    let codes: Vec<&str> = c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
    if codes.iter().take(own).any(|c| *c == "ConditionalCheckFailed") {
        return Cancelled::Condition;
    }
    if codes.iter().any(|c| *c == "ConditionalCheckFailed" || *c == "TransactionConflict") {
        // The head item follows the caller's own items; its condition returns the head as it is.
        let head = c.cancellation_reasons().get(own).and_then(|r| r.item()).and_then(head_of);
        return Cancelled::Race(head);
    }
    Cancelled::Other(format!("transaction cancelled: {codes:?}"))
}

/// A random wait before attempt `attempt` of a contended write: up to `2 ms * 2^attempt`,
/// capped at 50 ms ("full jitter").
pub(super) async fn backoff(attempt: u32) {
    jittered_backoff(attempt, BACKOFF_BASE_MS, BACKOFF_CAP_MS).await;
}

/// A random wait before attempt `attempt`: up to `base_ms * 2^attempt`, capped at `cap_ms`.
pub(super) async fn jittered_backoff(attempt: u32, base_ms: u64, cap_ms: u64) {
    let ceiling = (base_ms << attempt.min(10)).min(cap_ms);
    let random = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().expect("8 bytes"));
    tokio::time::sleep(Duration::from_millis(random % (ceiling + 1))).await;
}

impl DynamoStore {
    pub fn new(client: Client, tables: Tables) -> Self {
        Self { client, tables, append_budget: APPEND_BUDGET, recent_heads: Default::default(), sequencer: None }
    }

    /// How long one append may keep retrying lost races (default 5 s, half a function's
    /// timeout). Tests against a local server that serializes every request need longer.
    pub fn with_append_budget(mut self, budget: Duration) -> Self {
        self.append_budget = budget;
        self
    }

    fn recent_head(&self, stream: &str) -> Option<(u64, String)> {
        self.recent_heads.lock().ok()?.get(stream).cloned()
    }

    fn remember_head(&self, stream: &str, seq: u64, hash: &str) {
        if let Ok(mut heads) = self.recent_heads.lock() {
            if heads.len() >= RECENT_HEADS {
                heads.clear();
            }
            heads.insert(stream.to_owned(), (seq, hash.to_owned()));
        }
    }

    /// The `ChainHeads` item of `stream` (none for a new stream), read consistently: the
    /// appender and the sequencer each parse what they need of it.
    pub(super) async fn head_item(&self, stream: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.heads)
            .key("stream", s(stream))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// The last `seq` and `hash` of `stream` (0 and the genesis for a new stream), read
    /// consistently.
    async fn head(&self, stream: &str) -> Result<(u64, String), StoreError> {
        let Some(item) = self.head_item(stream).await? else { return Ok((0, GENESIS.to_owned())) };
        head_of(&item).ok_or_else(|| corrupt_head(stream))
    }

    /// An event's `Audit` item (its [`audit_item`], and the sequencer's mark when it appends
    /// from the intake), on condition its `seq` is free: the one way any writer, direct or
    /// sequencer, takes a place on a chain.
    pub(super) fn audit_put(&self, item: Item) -> Result<TransactWriteItem, StoreError> {
        let audit = Put::builder()
            .table_name(&self.tables.audit)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "stream");
        Ok(TransactWriteItem::builder().put(built(audit.build())?).build())
    }

    /// Writes `own` (the caller's conditioned items) with `event` at the end of its stream, in
    /// one transaction. A failed condition of `own` is `ConsentChanged`; a lost race for the
    /// `seq` is retried with a fresh head.
    async fn commit(&self, own: Vec<TransactWriteItem>, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let mut recorded = self.commit_all(own, vec![event]).await?;
        Ok(recorded.pop().expect("one event in, one out"))
    }

    /// As [`Self::commit`], with several events of one stream appended in order.
    pub(super) async fn commit_all(
        &self,
        own: Vec<TransactWriteItem>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let stream = events
            .first()
            .map(|e| e.stream().to_owned())
            .ok_or_else(|| StoreError::Corrupt("an append of no events".into()))?;
        if events.iter().any(|e| e.stream() != stream) {
            return Err(StoreError::Corrupt("events of one commit must share a stream".into()));
        }
        if self.sequencer.is_some() {
            return self.record_all(own, events).await;
        }
        let started = std::time::Instant::now();
        let mut known_head = self.recent_head(&stream);
        let mut guessed = known_head.is_some();
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            let (last, prev_hash) = match known_head.take() {
                Some(head) => head,
                None => self.head(&stream).await?,
            };
            let mut sealed = Vec::with_capacity(events.len());
            let (mut seq, mut hash) = (last, prev_hash);
            for event in &events {
                let event = event.clone().seal(seq + 1, &hash);
                (seq, hash) = (event.seq, event.hash.clone());
                sealed.push(event);
            }
            let newest = sealed.last().expect("at least one event");
            let head = Update::builder()
                .table_name(&self.tables.heads)
                .key("stream", s(&stream))
                .update_expression(format!("SET #q = :q, #h = :h, #at = :at, {MOVED_SET}"))
                .expression_attribute_names("#q", "seq")
                .expression_attribute_names("#h", "hash")
                .expression_attribute_names("#at", "at")
                .expression_attribute_values(":q", n(newest.seq as i64))
                .expression_attribute_values(":h", s(&newest.hash))
                .expression_attribute_values(":at", n(newest.at.unix()))
                .mark_moved(&stream, newest.at.unix())
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
            let head = if last == 0 {
                head.condition_expression("attribute_not_exists(#s)").expression_attribute_names("#s", "stream")
            } else {
                head.condition_expression("#q = :last").expression_attribute_values(":last", n(last as i64))
            };
            let mut items = own.clone();
            items.push(TransactWriteItem::builder().update(built(head.build())?).build());
            for event in &sealed {
                items.push(self.audit_put(audit_item(event))?);
            }
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => {
                    self.remember_head(&stream, seq, &hash);
                    return Ok(sealed);
                }
                Err(e) => match cancellation(&e, own.len()) {
                    Cancelled::Condition => return Err(StoreError::ConsentChanged),
                    // A stale guess from this process's memory: no one is contending, retry at once.
                    Cancelled::Race(head) if std::mem::take(&mut guessed) => known_head = head,
                    Cancelled::Race(head) if started.elapsed() < self.append_budget => {
                        known_head = head;
                        backoff(attempt).await;
                    }
                    Cancelled::Race(_) => break,
                    Cancelled::Other(why) => return Err(StoreError::Unavailable(why)),
                },
            }
        }
        Err(StoreError::Unavailable(format!(
            "gave up appending to {stream} after {:?} of contended attempts",
            started.elapsed()
        )))
    }

    /// The condition "the user's consent is still `consent` and unexpired at `now`".
    fn still_live(consent: &Consent, now: Timestamp) -> (String, HashMap<String, AttributeValue>) {
        (
            "consent_id = :cid AND expires_at > :now".to_owned(),
            HashMap::from([(":cid".to_owned(), s(consent.consent_id.as_str())), (":now".to_owned(), n(now.unix()))]),
        )
    }
}

#[async_trait]
impl ConsentReader for DynamoStore {
    async fn current(&self, user: &UserId, now: Timestamp) -> Result<Option<Consent>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.consents)
            .set_key(Some(user_key(user)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        // TTL deletes lazily (within days): an expired item still stored is absent all the same.
        Ok(out.item().map(ConsentItem::try_from).transpose()?.map(|c| c.0).filter(|c| c.is_active(now)))
    }
}

#[async_trait]
impl ConsentWriter for DynamoStore {
    async fn grant(&self, consent: &Consent, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let put = Put::builder().table_name(&self.tables.consents).set_item(Some(consent_item(consent)));
        self.commit(vec![TransactWriteItem::builder().put(built(put.build())?).build()], event).await
    }

    async fn revoke(&self, consent: &Consent, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let (condition, values) = Self::still_live(consent, event.at);
        let delete = Delete::builder()
            .table_name(&self.tables.consents)
            .set_key(Some(user_key(&consent.user_id)))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values));
        self.commit(vec![TransactWriteItem::builder().delete(built(delete.build())?).build()], event).await
    }
}

#[async_trait]
impl TokenLedger for DynamoStore {
    async fn record_under_consent(
        &self,
        consent: &Consent,
        now: Timestamp,
        event: AuditEvent,
    ) -> Result<AuditEvent, StoreError> {
        let (condition, values) = Self::still_live(consent, now);
        let check = ConditionCheck::builder()
            .table_name(&self.tables.consents)
            .set_key(Some(user_key(&consent.user_id)))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values));
        self.commit(vec![TransactWriteItem::builder().condition_check(built(check.build())?).build()], event).await
    }
}

#[async_trait]
impl AuditAppender for DynamoStore {
    async fn append(&self, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        self.commit(Vec::new(), event).await
    }
}

#[async_trait]
impl ExpiryLedger for DynamoStore {
    async fn record_expired(&self, consent: &Consent, event: AuditEvent) -> Result<bool, StoreError> {
        // A marker item per expired consent makes redelivery a failed condition, not a duplicate.
        let marker = Put::builder()
            .table_name(&self.tables.heads)
            .item("stream", s(&format!("{EXPIRY_MARKER_PREFIX}{}", consent.consent_id)))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "stream");
        match self.commit(vec![TransactWriteItem::builder().put(built(marker.build())?).build()], event).await {
            Ok(_) => Ok(true),
            Err(StoreError::ConsentChanged) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One key range read newest first: a partition, a sort-key condition and an optional filter.
pub(super) struct Range<'a> {
    pub(super) index: Option<&'static str>,
    pub(super) key_condition: String,
    pub(super) filter: Option<String>,
    pub(super) names: &'a HashMap<String, String>,
    pub(super) values: HashMap<String, AttributeValue>,
}

/// What a range read found: matching items (newest first), and whether the range is used up.
pub(super) struct Found {
    pub(super) items: Vec<Item>,
    pub(super) exhausted: bool,
    /// The sort key of the last item examined (matching or not).
    pub(super) last_examined: Option<AttributeValue>,
}

impl DynamoStore {
    /// One `Query` call over `range`, newest first, at most `limit` items examined, from
    /// `start` (consistent on the table; an index is read as it stands).
    pub(super) async fn query_page(
        &self,
        table: &str,
        range: &Range<'_>,
        limit: usize,
        start: Option<Item>,
    ) -> Result<QueryOutput, StoreError> {
        self.client
            .query()
            .table_name(table)
            .set_index_name(range.index.map(str::to_owned))
            .key_condition_expression(&range.key_condition)
            .set_filter_expression(range.filter.clone())
            .set_expression_attribute_names(if range.names.is_empty() { None } else { Some(range.names.clone()) })
            .set_expression_attribute_values(Some(range.values.clone()))
            .scan_index_forward(false)
            .consistent_read(range.index.is_none())
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)
    }

    /// Reads `range` until `want` items match, the range ends, or the call budget is spent.
    pub(super) async fn read_range(
        &self,
        table: &str,
        sort_key: &str,
        range: &Range<'_>,
        want: usize,
    ) -> Result<Found, StoreError> {
        let mut found = Found { items: Vec::new(), exhausted: false, last_examined: None };
        let mut start: Option<Item> = None;
        for _ in 0..MAX_QUERY_CALLS {
            let out = self.query_page(table, range, want.max(10), start.take()).await?;
            for item in out.items() {
                if found.items.len() == want {
                    return Ok(found);
                }
                found.last_examined = item.get(sort_key).cloned();
                found.items.push(item.clone());
            }
            if let Some(key) = out.last_evaluated_key() {
                found.last_examined = key.get(sort_key).cloned();
            }
            match out.last_evaluated_key() {
                Some(key) if found.items.len() < want => start = Some(key.clone()),
                Some(_) => return Ok(found),
                None => {
                    found.exhausted = true;
                    return Ok(found);
                }
            }
        }
        Ok(found)
    }
}

fn sort_value(v: &AttributeValue) -> String {
    match v {
        AttributeValue::S(s) | AttributeValue::N(s) => s.clone(),
        _ => String::new(),
    }
}

impl DynamoStore {
    /// The sequenced events a query matches (every query's answer on a store without a
    /// sequencer; see `sequencer.rs` for the pending events a user's log shows first).
    pub(super) async fn query_chain(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let f = &query.filter;
        let (from, to) = query.window();
        let want = query.limit + 1;
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut filters = Vec::new();
        if let Some(t) = f.event_type {
            names.insert("#t".to_owned(), "type".to_owned());
            values.insert(":type".to_owned(), s(t.as_str()));
            filters.push("#t = :type");
        }

        let (items, next) = if let Some(user) = &f.user_id {
            // The user's own stream, by seq; everything else is a filter.
            names.insert("#s".to_owned(), "stream".to_owned());
            values.insert(":pk".to_owned(), s(user.as_str()));
            values.insert(":from".to_owned(), n(from.unix()));
            values.insert(":to".to_owned(), n(to.unix()));
            filters.push("#at BETWEEN :from AND :to");
            names.insert("#at".to_owned(), "at".to_owned());
            if let Some(actor) = &f.actor {
                values.insert(":actor".to_owned(), s(actor.as_str()));
                filters.push("actor = :actor");
            }
            let below = match &query.after {
                Some(pos) => Some(pos.parse::<u64>().map_err(|_| StoreError::Corrupt(format!("position {pos:?}")))?),
                None => None,
            };
            let key_condition = match below {
                Some(seq) => {
                    values.insert(":pos".to_owned(), n(seq as i64));
                    names.insert("#q".to_owned(), "seq".to_owned());
                    "#s = :pk AND #q < :pos".to_owned()
                }
                None => "#s = :pk".to_owned(),
            };
            // A bundle (keyed by its first `seq`) passes the filter and is filtered here, event
            // by event: read newest first from a position inside it, it is the first item read.
            names.insert("#v".to_owned(), "v".to_owned());
            let filter = format!("({}) OR attribute_exists(#v)", filters.join(" AND "));
            let range = Range { index: None, key_condition, filter: Some(filter), names: &names, values };
            let mut found = self.read_range(&self.tables.audit, "seq", &range, want).await?;
            found.items = unbundled(&found.items, |e| f.matches(e) && below.is_none_or(|below| e.seq < below))?;
            page_from(found, query.limit, "seq")
        } else if let Some(actor) = &f.actor {
            let (lo, hi) = at_key_bounds(from, to);
            let hi = match &query.after {
                Some(pos) => pos.clone().min(hi),
                None => hi,
            };
            let range = IndexRange {
                index: Tables::ACTOR_INDEX,
                partition: ("actor", actor.as_str()),
                lo: &lo,
                hi: &hi,
                event_type: f.event_type.map(|t| t.as_str()),
            };
            let mut found = self.read_indexed(&range, want + 1).await?;
            // BETWEEN is inclusive; the position itself was the last event of the previous page.
            if query.after.is_some() {
                found.items.retain(|i| i.get("at_key").map(sort_value).as_deref() != query.after.as_deref());
            }
            found.items.truncate(want);
            page_from(found, query.limit, "at_key")
        } else {
            self.query_by_time(query, from, to, f.event_type.map(|t| t.as_str())).await?
        };

        let events = items.iter().map(|i| AuditItem::try_from(i).map(|a| a.0)).collect::<Result<Vec<_>, _>>()?;
        Ok(AuditPage { events, next })
    }
}

/// The page and its resume position from one range read of `limit + 1` wanted items.
pub(super) fn page_from(mut found: Found, limit: usize, sort_key: &str) -> (Vec<Item>, Option<String>) {
    if found.items.len() > limit {
        found.items.truncate(limit);
        let next = found.items.last().and_then(|i| i.get(sort_key)).map(sort_value);
        return (found.items, next);
    }
    // A short page: finished, or the call budget ran out (resume after what was examined).
    let next = if found.exhausted { None } else { found.last_examined.as_ref().map(sort_value) };
    (found.items, next)
}

impl DynamoStore {
    /// Everyone's events in a time window: month by month, newest first, merging the shards
    /// of each month, read concurrently. The position is `month/done|at_key`: every shard of
    /// that month resumes below `at_key`, except those in `done` (a hex bit set), which hold
    /// nothing more in the window and are not read again. (`month|at_key`, from before
    /// `done` existed, still reads: nothing done.)
    ///
    /// Each shard's read may end before its range does (the call budget, with a filter that
    /// few items match). Then the page ends where the least advanced of those shards stopped
    /// (its last examined key, the highest such key): another shard's match below that key
    /// is not returned yet, since the stopped shard may still hold newer matches, and the
    /// cursor resumes every shard not done from there. So a page never skips a match, and
    /// every page moves past at least what that shard examined.
    async fn query_by_time(
        &self,
        query: &AuditQuery,
        from: Timestamp,
        to: Timestamp,
        event_type: Option<&str>,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let want = query.limit + 1;
        let (lo, top) = at_key_bounds(from, to);
        let mut hi = top.clone();
        let mut months = months_between(from, to.min(query.now.plus_seconds(366 * 24 * 3600)));
        let mut after: Option<&str> = None;
        let mut done: u32 = 0;
        if let Some(pos) = &query.after {
            let corrupt = || StoreError::Corrupt(format!("position {pos:?}"));
            let (month, key) = pos.split_once('|').ok_or_else(corrupt)?;
            let month = match month.split_once('/') {
                Some((month, mask)) => {
                    done = u32::from_str_radix(mask, 16).map_err(|_| corrupt())?;
                    month
                }
                None => month,
            };
            months.retain(|m| m.as_str() <= month);
            hi = key.to_owned().min(hi);
            after = Some(key);
        }
        let mut out: Vec<Item> = Vec::new();
        for (visited, month) in months.iter().enumerate() {
            if visited == MAX_MONTHS_PER_PAGE {
                // A short page; the cursor resumes at the top of the next older month.
                return Ok((out, Some(format!("{month}|{top}"))));
            }
            let reads =
                time_buckets(month).enumerate().filter(|(shard, _)| done & (1 << shard) == 0).map(|(shard, bucket)| {
                    let (lo, hi) = (&lo, &hi);
                    async move {
                        let range = IndexRange {
                            index: Tables::TIME_INDEX,
                            partition: ("time_bucket", &bucket),
                            lo,
                            hi,
                            event_type,
                        };
                        Ok::<_, StoreError>((shard, self.read_indexed(&range, want + 1).await?))
                    }
                });
            let shards = futures_util::future::try_join_all(reads).await?;
            // Where the least advanced unfinished shard stopped (None: every shard finished).
            let stop = shards
                .iter()
                .filter(|(_, f)| !f.exhausted)
                .map(|(_, f)| f.last_examined.as_ref().map(sort_value).unwrap_or_else(|| hi.clone()))
                .max();
            let exhausted = shards.iter().filter(|(_, f)| f.exhausted).fold(0u32, |m, (shard, _)| m | 1 << shard);
            let mut merged: Vec<(String, usize, Item)> = shards
                .into_iter()
                .flat_map(|(shard, f)| f.items.into_iter().map(move |i| (shard, i)))
                .map(|(shard, i)| (i.get("at_key").map(sort_value).unwrap_or_default(), shard, i))
                // BETWEEN is inclusive: the position itself was the last of the previous page.
                .filter(|(key, _, _)| Some(key.as_str()) != after)
                .collect();
            merged.sort_by(|a, b| b.0.cmp(&a.0));
            // The shards with a match this page does not return: not done.
            let mut left: u32 = 0;
            let mut last_shard = 0;
            for (key, shard, item) in merged {
                if out.len() < want && stop.as_ref().is_none_or(|stop| &key >= stop) {
                    out.push(item);
                    last_shard = shard;
                } else {
                    left |= 1 << shard;
                }
            }
            if out.len() == want {
                // The extra item only shows that more follow: its shard is not done.
                out.truncate(query.limit);
                done |= exhausted & !(left | 1 << last_shard);
                let last = out.last().and_then(|i| i.get("at_key")).map(sort_value).unwrap_or_default();
                return Ok((out, Some(format!("{month}/{done:x}|{last}"))));
            }
            if let Some(stop) = stop {
                // A short page: the month goes on below `stop` in some shard.
                done |= exhausted & !left;
                return Ok((out, Some(format!("{month}/{done:x}|{stop}"))));
            }
            // The next (older) month starts from its top, every shard to read.
            hi = top.clone();
            done = 0;
        }
        Ok((out, None))
    }
}

/// The months from `to`'s back to `from`'s, newest first.
fn months_between(from: Timestamp, to: Timestamp) -> Vec<String> {
    let mut months = Vec::new();
    let mut t = to;
    let first = month_of(from);
    loop {
        let m = month_of(t);
        let done = m <= first;
        if months.last() != Some(&m) {
            months.push(m);
        }
        if done {
            return months;
        }
        t = t.plus_seconds(-27 * 24 * 3600);
    }
}
