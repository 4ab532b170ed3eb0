//! The DynamoDB audit intake and sequencer (#18, "decide now, sequence later"; the embedded
//! store's twin is `adapter_embedded::intake`).
//!
//! `AuditIntake` holds the decided events not yet on their chains: partition `stream` (the
//! user, or the unattributed stream), sort key `order` = the decision second in microseconds,
//! 16 digits, `#` event id, so the key comes from the event alone and a repeated put of the
//! same event is a failed condition, not a second item. The sub-second decision order is the
//! attribute `decided_us` (the recording process's clock when it built the put): the event's
//! own `at` has whole seconds only.
//!
//! A use is ONE `PutItem` (no transaction, nothing shared, no condition on a chain head)
//! bounded by `min(deadline, hold - age - margin)`; consent changes are one
//! `TransactWriteItems` of their own items and the event's intake item, without the head.
//!
//! A run of the sequencer over one stream (any number may race or repeat):
//! 1. reads the chain head consistently, then the chain past it (events a run appended and
//!    did not record in the head: a crash, or a racing run still going), which it adopts;
//! 2. reads the stream's pending items (consistent Query from the head's `floor_at`),
//!    sorts them by decision time, applies [`decision_order`] and cuts at the first
//!    consent-ending event held less than the hold since this process first saw it;
//! 3. marks sequenced the intake items of the events it adopted (`seq`, and `expires_at` for
//!    TTL), before anything moves the head past them;
//! 4. appends the pending events in transactions of at most [`SEQUENCER_EVENTS_PER_TRANSACTION`], each
//!    one `TransactWriteItems` of the events' `Audit` items (on condition their `seq` is
//!    free), their intake items' marks (on condition they are still pending) and the head
//!    (on condition it is still the one the previous transaction left, or this run read),
//!    with the new `floor_at`, the oldest decision second a pending item can still have, so
//!    reads skip the marked items below it. A failed condition means another run (or a
//!    direct writer, during a deploy) got there first: the run reads again, from the new
//!    head, and carries on from there; a transaction that only met another one on its items,
//!    or throttling, is sent again as it is (its conditions still decide).
//!
//! Marks instead of deletes: a retried put of an event already on its chain still finds its
//! item and changes nothing (a delete would let it land as a second use). Each transaction
//! appends, marks and moves the head at once, so nothing is pending after it is on the chain,
//! and no head is behind a chain this version wrote; events past the head are still adopted
//! (step 1), written by a run of the previous version (one `PutItem` per event, the marks,
//! then the head), which may run beside this one during a deploy. A redelivered batch finds
//! its items marked, and changes nothing. The stamps of first sight live in memory: another
//! process sees an event anew and only holds it once more.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};

use super::archive::{MOVED_SET, MarkMoved};
use super::dynamodb::{
    Cancelled, DynamoStore, backoff, built, cancellation, corrupt_head, head_of, jittered_backoff, n, s, unavailable,
};
use super::items::{AuditItem, Item, VIA_INTAKE, audit_item, get_n, get_s, item_bytes};
use shared::domain::{AuditEvent, EventId};
use shared::ports::{
    AuditIntake, AuditPage, AuditQuery, AuditReader, Deadline, SEQUENCER_HOLD, Sequencer, SequencerRun, StoreError,
    decision_order, ends_a_consent,
};

/// The sequencer's memory: when this process first saw each consent-ending event committed.
pub(super) struct SequencerState {
    hold: Duration,
    seen: Mutex<HashMap<(String, String), Instant>>,
}

/// What a use's put leaves of the hold for the network, the sequencer's read and clock skew
/// between the two processes' monotonic clocks (none: each measures its own side).
const PUT_MARGIN: Duration = Duration::from_millis(50);

/// How far below the newest decision second on a chain a pending item can still be decided:
/// it was decided at most a hold before it landed, the landing is after the read, and the
/// clocks of the deciding and the sequencing instances differ by milliseconds (NTP); whole
/// seconds, with room.
const FLOOR_WINDOW_SECONDS: i64 = 5;

/// How long a sequenced intake item stays (TTL removes it later, free): far longer than any
/// put can take to land after its decision.
const SEQUENCED_RETENTION_SECONDS: i64 = 24 * 3600;

/// How many events one append transaction carries: each is two of its actions (the event's
/// `Audit` item and its intake item's mark), and the head one more: 2 x 49 + 1 = 99 of the
/// 100 actions DynamoDB allows in one `TransactWriteItems`.
pub const SEQUENCER_EVENTS_PER_TRANSACTION: usize = 49;

/// The bytes of items one append transaction may carry: DynamoDB's 4 MB, less room for the
/// head. An event is at most about 3 KB and its intake item about twice that, so the count
/// binds first (49 such events: under 0.5 MB); this keeps an unforeseen large event from
/// failing a whole run.
const TRANSACTION_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// How often an append transaction is sent again when it met another transaction on one of
/// its items (`TransactionConflict`: a racing run, or a checkpoint sealing the head), and
/// when a partition was over its throughput (`ThrottlingError`), before the run gives up as
/// unavailable (the stream delivers its records again).
const CONFLICT_RESENDS: u32 = 8;
const THROTTLE_RESENDS: u32 = 3;
/// Backoff after throttling: up to 100 ms, 200 ms, 400 ms (a partition refills each second).
const THROTTLE_BACKOFF_BASE_MS: u64 = 100;
const THROTTLE_BACKOFF_CAP_MS: u64 = 1_000;

/// How many times a run reads its stream again after another run took a `seq` or moved the
/// head first; then it answers what it did, and the rest is left pending for the next run.
const MAX_PASSES: u32 = 8;

impl DynamoStore {
    /// Events go through the intake and the sequencer ([`Sequencer::sequence`] appends
    /// them), holding consent changes for [`SEQUENCER_HOLD`].
    pub fn with_sequencer(self) -> Self {
        self.with_sequencer_hold(SEQUENCER_HOLD)
    }

    /// As [`Self::with_sequencer`], with a hold of `hold` (tests shorten it). A use is
    /// refused unless its put can land within its own deadline and within `hold` of its
    /// decision.
    pub fn with_sequencer_hold(mut self, hold: Duration) -> Self {
        self.sequencer = Some(Arc::new(SequencerState { hold, seen: Mutex::default() }));
        self
    }
}

/// The intake key of `event`: its decision second in microseconds, then its id.
fn order_key(event: &AuditEvent) -> String {
    format!("{:016}#{}", event.at.unix().max(0) * 1_000_000, event.event_id)
}

/// The lowest key of decision second `at`.
fn order_floor(at: i64) -> String {
    format!("{:016}", at.max(0) * 1_000_000)
}

fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn intake_item(event: &AuditEvent, decided_us: i64) -> Result<Item, StoreError> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(HashMap::from([
        ("stream".into(), s(event.stream())),
        ("order".into(), s(&order_key(event))),
        ("decided_us".into(), n(decided_us)),
        ("at".into(), n(event.at.unix())),
        ("type".into(), s(event.event_type.as_str())),
        ("body".into(), s(&body)),
    ]))
}

/// The `Audit` item of `event` as the sequencer appends it: marked [`VIA_INTAKE`], so the
/// notifier, which announced it from the intake's stream, does not claim it again.
fn appended_item(event: &AuditEvent) -> Item {
    let mut item = audit_item(event);
    item.insert(VIA_INTAKE.into(), AttributeValue::Bool(true));
    item
}

/// The event an intake item (a table read, or a stream record's new image) holds: the one
/// reading of an intake item, the sequencer's, the access log's and the notifier's.
pub(super) fn intake_event(item: &Item) -> Result<AuditEvent, StoreError> {
    Pending::try_from(item).map(|p| p.event)
}

/// A pending intake item.
#[derive(Clone)]
struct Pending {
    order: String,
    decided_us: i64,
    event: AuditEvent,
}

impl TryFrom<&Item> for Pending {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        const W: &str = "audit intake item";
        let event = serde_json::from_str(get_s(item, W, "body")?)
            .map_err(|e| StoreError::Corrupt(format!("audit intake item: {e}")))?;
        Ok(Self { order: get_s(item, W, "order")?.to_owned(), decided_us: get_n(item, W, "decided_us")?, event })
    }
}

/// `pending` in the order the sequencer appends them: by decision time, then the ordering
/// rule every backend shares.
fn in_decision_order(mut pending: Vec<Pending>) -> Vec<Pending> {
    pending.sort_by(|a, b| (a.decided_us, &a.order).cmp(&(b.decided_us, &b.order)));
    let mut by_id: HashMap<EventId, Pending> = pending.iter().map(|p| (p.event.event_id.clone(), p.clone())).collect();
    decision_order(pending.into_iter().map(|p| p.event).collect())
        .into_iter()
        .filter_map(|e| by_id.remove(&e.event_id))
        .collect()
}

/// Whether a conditional write landed: `Ok(false)` when its condition failed, which for
/// every conditional write here means the item is already as wanted (recorded, marked,
/// appended or moved by another run), so nothing is left to do.
fn landed<T, E, R>(sent: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(unavailable(e)),
    }
}

fn sequenced_expiry() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64) + SEQUENCED_RETENTION_SECONDS
}

/// The mark of an intake item appended at a `seq` (with [`mark_names`] and [`mark_values`]),
/// whether it is set alone or in the append's transaction: the `seq`, and the TTL that lets
/// the marked item expire; the item must exist (`#s`), so a mark never creates one.
const MARK_SET: &str = "SET #q = :q, expires_at = :e";
const MARK_EXISTS: &str = "attribute_exists(#s)";

fn mark_names() -> HashMap<String, String> {
    HashMap::from([("#q".to_owned(), "seq".to_owned()), ("#s".to_owned(), "stream".to_owned())])
}

fn mark_values(seq: u64) -> HashMap<String, AttributeValue> {
    HashMap::from([(":q".to_owned(), n(seq as i64)), (":e".to_owned(), n(sequenced_expiry()))])
}

/// Where a run has got to on a stream's chain: what the head says once it moves there.
#[derive(Clone)]
struct Moved {
    seq: u64,
    hash: String,
    /// The newest decision second on the chain this run appended or adopted (`i64::MIN`:
    /// none yet).
    newest_at: i64,
    /// The oldest decision second a pending item can still have.
    floor_at: i64,
    consents: ChainConsents,
}

impl Moved {
    /// Past `event`, appended or adopted.
    fn follow(&mut self, event: &AuditEvent) {
        self.consents.follow(event);
        (self.seq, self.hash) = (event.seq, event.hash.clone());
        self.newest_at = self.newest_at.max(event.at.unix());
    }
}

/// How a pass over a stream ended.
enum Pass {
    Done(SequencerRun),
    /// Another writer took a `seq` or moved the head first, after this pass appended
    /// `sequenced`: read again.
    Lost(SequencerRun),
}

/// What a cancelled append transaction says, in the order its reasons are weighed.
enum Refused {
    /// A condition failed: another run (or a direct writer) took a `seq`, marked an item or
    /// moved the head first. Read again from the new head; never send it again.
    Lost,
    /// Another transaction was on one of its items at the time: nothing was written.
    Conflict,
    /// A partition over its throughput: nothing was written.
    Throttled,
    Failed(StoreError),
}

fn refusal(e: SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>) -> Refused {
    let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error() else {
        return Refused::Failed(unavailable(e));
    };
    let codes: Vec<&str> = c.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None")).collect();
    if codes.contains(&"ConditionalCheckFailed") {
        Refused::Lost
    } else if codes.contains(&"TransactionConflict") {
        Refused::Conflict
    } else if codes.iter().any(|c| matches!(*c, "ThrottlingError" | "ProvisionedThroughputExceeded")) {
        Refused::Throttled
    } else {
        Refused::Failed(StoreError::Unavailable(format!("append transaction cancelled: {codes:?}")))
    }
}

/// A stream's chain head as the sequencer reads it.
struct Head {
    /// Whether the stream has a head item yet.
    exists: bool,
    seq: u64,
    hash: String,
    /// The oldest decision second a pending item of the stream can have (none: read all).
    floor_at: Option<i64>,
    /// The chain's consent state at the head: the live consent, and the last consents ended.
    consents: ChainConsents,
}

/// How many ended consents a head remembers (a stream ends a few per hour at most).
const ENDED_REMEMBERED: usize = 16;

/// What the chain up to the head says about the stream's consents: which is live, and which
/// ended lately. A `token.used` of an ended consent still pending was recorded after its end
/// was appended, so more than a hold after its decision: its put landed after its client gave
/// up, and the app refused the use. It is appended as what it was, a `token.rejected`
/// (detail `late <method> <path>`), never as a use after the end.
#[derive(Default, Clone)]
struct ChainConsents {
    live: Option<String>,
    ended: Vec<String>,
}

impl ChainConsents {
    fn of(item: &Item) -> Self {
        let live = item.get("live").and_then(|v| v.as_s().ok()).filter(|s| !s.is_empty()).cloned();
        let ended = item
            .get("ended")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
            .unwrap_or_default();
        Self { live, ended }
    }

    fn end(&mut self, consent: String) {
        self.ended.retain(|c| *c != consent);
        self.ended.push(consent);
        if self.ended.len() > ENDED_REMEMBERED {
            self.ended.remove(0);
        }
    }

    /// Folds in `event`, appended after the head.
    fn follow(&mut self, event: &AuditEvent) {
        use shared::domain::AuditEventType as T;
        let consent = event.consent_id.as_ref().map(|c| c.as_str().to_owned());
        match event.event_type {
            T::ConsentGranted => {
                if let Some(old) = self.live.take().filter(|old| Some(old) != consent.as_ref()) {
                    self.end(old);
                }
                self.ended.retain(|c| Some(c) != consent.as_ref());
                self.live = consent;
            }
            T::ConsentRevoked | T::ConsentExpired => {
                if let Some(consent) = consent {
                    if self.live.as_ref() == Some(&consent) {
                        self.live = None;
                    }
                    self.end(consent);
                }
            }
            _ => {}
        }
    }

    /// `event` as it is appended: a use of a consent already ended on the chain is late.
    fn judge(&self, mut event: AuditEvent) -> AuditEvent {
        let late = event.event_type == shared::domain::AuditEventType::TokenUsed
            && event.consent_id.as_ref().is_some_and(|c| self.ended.iter().any(|e| e == c.as_str()));
        if late {
            event.event_type = shared::domain::AuditEventType::TokenRejected;
            event.detail = Some(format!("late {}", event.detail.as_deref().unwrap_or_default()).trim_end().to_owned());
        }
        event
    }
}

impl DynamoStore {
    fn intake_put(&self, event: &AuditEvent, decided_us: i64) -> Result<Put, StoreError> {
        built(
            Put::builder()
                .table_name(&self.tables.intake)
                .set_item(Some(intake_item(event, decided_us)?))
                .condition_expression("attribute_not_exists(#s)")
                .expression_attribute_names("#s", "stream")
                .build(),
        )
    }

    /// Records `events` (one stream's, in order) as pending, with `own` (the caller's
    /// conditioned items) in one transaction when there are any: the sequencing store's
    /// [`DynamoStore::commit_all`]. Answers the events unsealed (`seq` 0).
    pub(super) async fn record_all(
        &self,
        own: Vec<TransactWriteItem>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        // Events of one call keep their order: a microsecond apart.
        let base = now_micros();
        if own.is_empty() && events.len() == 1 {
            let sent = self
                .client
                .put_item()
                .table_name(&self.tables.intake)
                .set_item(Some(intake_item(&events[0], base)?))
                .condition_expression("attribute_not_exists(#s)")
                .expression_attribute_names("#s", "stream")
                .send()
                .await;
            // Already recorded: a repeated put changes nothing.
            return landed(sent).map(|_| events);
        }
        let started = Instant::now();
        for attempt in 0.. {
            // Stamped at each attempt, as near its commit as this process can know it: a
            // change retried after a conflict commits after the writes it lost to.
            let base = if attempt == 0 { base } else { now_micros() };
            let mut items = own.clone();
            for (i, event) in events.iter().enumerate() {
                items.push(TransactWriteItem::builder().put(self.intake_put(event, base + i as i64)?).build());
            }
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => return Ok(events),
                Err(e) => match cancellation(&e, own.len()) {
                    Cancelled::Condition => return Err(StoreError::ConsentChanged),
                    // Contention on the caller's items (the SDK's idempotency token makes its
                    // own retries of a landed transaction harmless).
                    Cancelled::Race(_) if started.elapsed() < self.append_budget => backoff(attempt).await,
                    Cancelled::Race(_) => break,
                    Cancelled::Other(why) => return Err(StoreError::Unavailable(why)),
                },
            }
        }
        Err(StoreError::Unavailable(format!("gave up recording after {:?} of contended attempts", started.elapsed())))
    }

    async fn chain_head(&self, stream: &str) -> Result<Head, StoreError> {
        let Some(item) = self.head_item(stream).await? else {
            return Ok(Head {
                exists: false,
                seq: 0,
                hash: support_access_verify::chain::GENESIS.to_owned(),
                floor_at: None,
                consents: ChainConsents::default(),
            });
        };
        let (seq, hash) = head_of(&item).ok_or_else(|| corrupt_head(stream))?;
        let floor_at = item.get("floor_at").and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok());
        Ok(Head { exists: true, seq, hash, floor_at, consents: ChainConsents::of(&item) })
    }

    /// Every item of one key range, oldest first, read consistently.
    async fn query_all(
        &self,
        table: &str,
        key_condition: &str,
        filter: Option<&str>,
        names: HashMap<String, String>,
        values: HashMap<String, AttributeValue>,
    ) -> Result<Vec<Item>, StoreError> {
        let (mut items, mut start) = (Vec::new(), None);
        loop {
            let out = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression(key_condition)
                .set_filter_expression(filter.map(str::to_owned))
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(items),
            }
        }
    }

    /// The events on `stream`'s chain past `seq`, oldest first.
    async fn chain_after(&self, stream: &str, seq: u64) -> Result<Vec<AuditEvent>, StoreError> {
        let names = HashMap::from([("#s".to_owned(), "stream".to_owned()), ("#q".to_owned(), "seq".to_owned())]);
        let values = HashMap::from([(":s".to_owned(), s(stream)), (":q".to_owned(), n(seq as i64))]);
        let items = self.query_all(&self.tables.audit, "#s = :s AND #q > :q", None, names, values).await?;
        items.iter().map(|i| AuditItem::try_from(i).map(|a| a.0)).collect()
    }

    /// `stream`'s pending intake items from decision second `floor_at` on, by key.
    async fn pending_items(&self, stream: &str, floor_at: Option<i64>) -> Result<Vec<Pending>, StoreError> {
        let mut names = HashMap::from([("#s".to_owned(), "stream".to_owned()), ("#q".to_owned(), "seq".to_owned())]);
        let mut values = HashMap::from([(":s".to_owned(), s(stream))]);
        let key_condition = match floor_at {
            Some(at) => {
                names.insert("#o".to_owned(), "order".to_owned());
                values.insert(":lo".to_owned(), s(&order_floor(at)));
                "#s = :s AND #o >= :lo"
            }
            None => "#s = :s",
        };
        let items =
            self.query_all(&self.tables.intake, key_condition, Some("attribute_not_exists(#q)"), names, values).await?;
        items.iter().map(Pending::try_from).collect()
    }

    /// `stream`'s pending events in the order the sequencer will append them.
    async fn pending_in_order(&self, stream: &str) -> Result<Vec<Pending>, StoreError> {
        let head = self.chain_head(stream).await?;
        Ok(in_decision_order(self.pending_items(stream, head.floor_at).await?))
    }

    /// Marks the intake item `order` of `stream` sequenced at `seq`: an event adopted from a
    /// run of the previous version (whose own mark may have landed already: same values).
    async fn mark_sequenced(&self, stream: &str, order: &str, seq: u64) -> Result<(), StoreError> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.tables.intake)
            .key("stream", s(stream))
            .key("order", s(order))
            .update_expression(MARK_SET)
            .condition_expression(MARK_EXISTS)
            .set_expression_attribute_names(Some(mark_names()))
            .set_expression_attribute_values(Some(mark_values(seq)))
            .send()
            .await;
        landed(sent).map(|_| ())
    }

    /// The mark of the pending intake item `order` of `stream`, appended at `seq`, in the
    /// transaction that appends it: on condition it is still pending (a racing run that
    /// appended it first marked it, and this transaction must lose).
    fn mark_in_transaction(&self, stream: &str, order: &str, seq: u64) -> Result<TransactWriteItem, StoreError> {
        let mark = Update::builder()
            .table_name(&self.tables.intake)
            .key("stream", s(stream))
            .key("order", s(order))
            .update_expression(MARK_SET)
            .condition_expression(format!("{MARK_EXISTS} AND attribute_not_exists(#q)"))
            .set_expression_attribute_names(Some(mark_names()))
            .set_expression_attribute_values(Some(mark_values(seq)));
        Ok(TransactWriteItem::builder().update(built(mark.build())?).build())
    }

    /// The head of `stream` moved to `to` in an append transaction, on condition it is still
    /// `from` (`None`: no head yet).
    fn head_in_transaction(
        &self,
        stream: &str,
        from: Option<&(u64, String)>,
        to: &Moved,
    ) -> Result<TransactWriteItem, StoreError> {
        let head = Update::builder()
            .table_name(&self.tables.heads)
            .key("stream", s(stream))
            .update_expression(format!(
                "SET #q = :q, #h = :h, #at = :at, floor_at = :f, live = :l, ended = :e, {MOVED_SET}"
            ))
            .mark_moved(stream, to.newest_at)
            .expression_attribute_names("#q", "seq")
            .expression_attribute_names("#h", "hash")
            .expression_attribute_names("#at", "at")
            .expression_attribute_values(":q", n(to.seq as i64))
            .expression_attribute_values(":h", s(&to.hash))
            .expression_attribute_values(":at", n(to.newest_at))
            .expression_attribute_values(":f", n(to.floor_at))
            .expression_attribute_values(":l", s(to.consents.live.as_deref().unwrap_or_default()))
            .expression_attribute_values(":e", AttributeValue::L(to.consents.ended.iter().map(|c| s(c)).collect()));
        let head = match from {
            None => head.condition_expression("attribute_not_exists(#s)").expression_attribute_names("#s", "stream"),
            Some((seq, hash)) => head
                .condition_expression("#q = :last AND #h = :last_hash")
                .expression_attribute_values(":last", n(*seq as i64))
                .expression_attribute_values(":last_hash", s(hash)),
        };
        Ok(TransactWriteItem::builder().update(built(head.build())?).build())
    }

    /// Sends one append transaction: `Ok(true)` once it landed, `Ok(false)` when a condition
    /// failed (another writer got there first: read again, never resend), sent again as it
    /// is after a conflict with another transaction or throttling, a few times each.
    async fn send_appends(&self, items: Vec<TransactWriteItem>) -> Result<bool, StoreError> {
        let (mut conflicts, mut throttles) = (0, 0);
        loop {
            let sent = self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await;
            let Err(e) = sent else { return Ok(true) };
            match refusal(e) {
                Refused::Lost => return Ok(false),
                Refused::Conflict if conflicts < CONFLICT_RESENDS => {
                    backoff(conflicts).await;
                    conflicts += 1;
                }
                Refused::Throttled if throttles < THROTTLE_RESENDS => {
                    jittered_backoff(throttles, THROTTLE_BACKOFF_BASE_MS, THROTTLE_BACKOFF_CAP_MS).await;
                    throttles += 1;
                }
                Refused::Conflict => {
                    return Err(StoreError::Unavailable(format!("append transaction in conflict {conflicts} times")));
                }
                Refused::Throttled => {
                    return Err(StoreError::Unavailable(format!("append transaction throttled {throttles} times")));
                }
                Refused::Failed(e) => return Err(e),
            }
        }
    }

    /// One run over one stream (see the module's documentation): appends at most `limit`,
    /// reading the stream again whenever another run got a `seq` or the head first.
    async fn sequence_stream(
        &self,
        state: &SequencerState,
        stream: &str,
        limit: usize,
    ) -> Result<SequencerRun, StoreError> {
        let mut sequenced = 0;
        for pass in 1.. {
            match self.sequence_pass(state, stream, limit.saturating_sub(sequenced)).await? {
                Pass::Done(run) => return Ok(SequencerRun { sequenced: sequenced + run.sequenced, ..run }),
                Pass::Lost(run) => {
                    sequenced += run.sequenced;
                    if pass >= MAX_PASSES {
                        // Another run keeps winning: it appends what this one would have.
                        return Ok(SequencerRun { sequenced, ..run });
                    }
                    backoff(pass).await;
                }
            }
        }
        unreachable!("the passes end")
    }

    /// One pass of a run: reads the head, the chain past it and the pending items, and
    /// appends them (module documentation, steps 1 to 4).
    async fn sequence_pass(&self, state: &SequencerState, stream: &str, limit: usize) -> Result<Pass, StoreError> {
        // 1. The head, then what a run appended past it: both before the pending items, so
        // every event this run sees pending and another run appended sits past this head.
        let head = self.chain_head(stream).await?;
        let adopted = self.chain_after(stream, head.seq).await?;
        let mut at = Moved {
            seq: head.seq,
            hash: head.hash.clone(),
            newest_at: i64::MIN,
            floor_at: 0,
            consents: head.consents.clone(),
        };
        for event in &adopted {
            if event.seq != at.seq + 1 || event.prev_hash != at.hash {
                return Err(StoreError::Corrupt(format!(
                    "chain {stream}: seq {} does not follow {}",
                    event.seq, at.seq
                )));
            }
            at.follow(event);
        }
        let adopted: HashMap<EventId, u64> = adopted.into_iter().map(|e| (e.event_id, e.seq)).collect();

        // 2. The pending items in decision order, cut at the first consent change held.
        // Released by the time the read began (a use that landed after that may be missed);
        // stamped by the time it answered (not before the event committed).
        let read_at = Instant::now();
        let all = self.pending_items(stream, head.floor_at).await?;
        let seen_at = Instant::now();
        let (done, pending): (Vec<Pending>, Vec<Pending>) =
            all.into_iter().partition(|p| adopted.contains_key(&p.event.event_id));
        // A late use is judged against the chain before the batch, whose own ends order it.
        let pending = pending.into_iter().map(|p| Pending { event: at.consents.judge(p.event), ..p }).collect();
        let ordered = in_decision_order(pending);
        let key = |p: &Pending| (stream.to_owned(), p.order.clone());
        let cut = {
            let mut seen = state.seen.lock().map_err(|_| StoreError::Unavailable("sequencer state poisoned".into()))?;
            let cut = ordered
                .iter()
                .position(|p| {
                    ends_a_consent(&p.event)
                        && seen.get(&key(p)).is_none_or(|first| read_at.saturating_duration_since(*first) < state.hold)
                })
                .unwrap_or(ordered.len());
            // Stamped after the read that saw them, so not before they committed.
            for p in ordered[cut..].iter().filter(|p| ends_a_consent(&p.event)) {
                seen.entry(key(p)).or_insert(seen_at);
            }
            cut
        };

        // 3. The adopted events' items marked, before any head moves past them.
        futures_util::future::try_join_all(
            done.iter().map(|p| self.mark_sequenced(stream, &p.order, adopted[&p.event.event_id])),
        )
        .await?;

        // 4. Appended in transactions, each with its marks and the head; the first (or the
        // only one, when the run only adopted) on condition the head is as read.
        let todo = &ordered[..cut.min(limit)];
        let mut last = head.exists.then(|| (head.seq, head.hash.clone()));
        let mut head_behind = at.seq != head.seq;
        let (mut from, mut lost) = (0, false);
        while from < todo.len() || head_behind {
            // At most SEQUENCER_EVENTS_PER_TRANSACTION events and TRANSACTION_BYTES of items (each event
            // its `Audit` item and its intake item), and at least one event when any is left.
            let (mut next, mut items, mut bytes, mut to) = (at.clone(), Vec::new(), 0, from);
            while to < todo.len() && to - from < SEQUENCER_EVENTS_PER_TRANSACTION {
                let p = &todo[to];
                let event = p.event.clone().seal(next.seq + 1, &next.hash);
                let appended = appended_item(&event);
                bytes += item_bytes(&appended) + item_bytes(&intake_item(&p.event, p.decided_us)?);
                if to > from && bytes > TRANSACTION_BYTES {
                    break;
                }
                items.push(self.audit_put(appended)?);
                items.push(self.mark_in_transaction(stream, &p.order, event.seq)?);
                next.follow(&event);
                to += 1;
            }
            let left = ordered[to..].iter().map(|p| p.event.at.unix()).min();
            next.floor_at = next.newest_at.saturating_sub(FLOOR_WINDOW_SECONDS).min(left.unwrap_or(i64::MAX));
            items.push(self.head_in_transaction(stream, last.as_ref(), &next)?);
            if !self.send_appends(items).await? {
                lost = true;
                break;
            }
            last = Some((next.seq, next.hash.clone()));
            (at, from, head_behind) = (next, to, false);
        }
        if let Ok(mut seen) = state.seen.lock() {
            for p in done.iter().chain(&todo[..from]) {
                seen.remove(&key(p));
            }
        }
        let run = SequencerRun { sequenced: from, pending: ordered.len() - from };
        Ok(if lost { Pass::Lost(run) } else { Pass::Done(run) })
    }

    /// The streams with pending items, and how many each has: a `Scan` of the intake, for
    /// [`Sequencer::sequence`] (tests and operators; the function is driven by the stream).
    async fn pending_streams(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let (mut streams, mut start) = (BTreeMap::new(), None);
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.tables.intake)
                .filter_expression("attribute_not_exists(#q)")
                .projection_expression("#s")
                .expression_attribute_names("#q", "seq")
                .expression_attribute_names("#s", "stream")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items() {
                *streams.entry(get_s(item, "audit intake item", "stream")?.to_owned()).or_insert(0) += 1;
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(streams),
            }
        }
    }
}

#[async_trait]
impl AuditIntake for DynamoStore {
    async fn record(&self, event: AuditEvent, deadline: Deadline) -> Result<(), StoreError> {
        let Some(state) = &self.sequencer else {
            if deadline.passed() {
                return Err(StoreError::DeadlinePassed);
            }
            return self.commit_all(Vec::new(), vec![event]).await.map(|_| ());
        };
        // The put may take what is left of the deadline, and never so long that it lands a
        // hold after its decision: the sequencer's ordering rests on that bound.
        let budget = deadline.remaining().min(state.hold.saturating_sub(deadline.age()).saturating_sub(PUT_MARGIN));
        if budget.is_zero() {
            return Err(StoreError::DeadlinePassed);
        }
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(budget.min(Duration::from_secs(1)))
            .operation_attempt_timeout(budget)
            .operation_timeout(budget)
            .build();
        let sent = self
            .client
            .put_item()
            .table_name(&self.tables.intake)
            .set_item(Some(intake_item(&event, now_micros())?))
            .condition_expression("attribute_not_exists(#s)")
            .expression_attribute_names("#s", "stream")
            .customize()
            .config_override(aws_sdk_dynamodb::config::Builder::default().timeout_config(timeouts))
            .send()
            .await;
        // Not landed: already recorded (pending, or sequenced and marked), nothing changes.
        landed(sent).map(|_| ())
    }
}

#[async_trait]
impl Sequencer for DynamoStore {
    async fn sequence(&self, limit: usize) -> Result<SequencerRun, StoreError> {
        let streams = self.pending_streams().await?;
        let mut run = SequencerRun::default();
        for (stream, count) in streams {
            if run.sequenced >= limit {
                run.pending += count;
                continue;
            }
            let this = self.sequence_streams(&[stream], limit - run.sequenced).await?;
            run.sequenced += this.sequenced;
            run.pending += this.pending;
        }
        Ok(run)
    }

    /// The `sequencer` function's entry point: the streams are the keys of its batch of
    /// intake stream records.
    async fn sequence_streams(&self, streams: &[String], limit: usize) -> Result<SequencerRun, StoreError> {
        let Some(state) = self.sequencer.clone() else { return Ok(SequencerRun::default()) };
        let mut run = SequencerRun::default();
        for stream in streams {
            let this = self.sequence_stream(&state, stream, limit.saturating_sub(run.sequenced)).await?;
            run.sequenced += this.sequenced;
            run.pending += this.pending;
        }
        Ok(run)
    }

    async fn pending(&self, stream: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events: Vec<AuditEvent> = self.pending_in_order(stream).await?.into_iter().map(|p| p.event).collect();
        events.truncate(limit);
        Ok(events)
    }
}

/// Where a page of a user's log ended among the pending events: `p<decided_us>|<order>`.
fn pending_position(p: &Pending) -> String {
    format!("p{}|{}", p.decided_us, p.order)
}

#[async_trait]
impl AuditReader for DynamoStore {
    /// On a sequencing store, a user's log lists the pending events first (unsealed, newest
    /// first), then the chain, as the embedded store does.
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let Some(user) = query.filter.user_id.as_ref().filter(|_| self.sequencer.is_some()) else {
            return self.query_chain(query).await;
        };
        let below = match query.after.as_deref() {
            None => None,
            Some(p) if p.starts_with('p') => Some(p.to_owned()),
            Some(_) => return self.query_chain(query).await,
        };
        // Newest first by decision time (the display order; the chain's may differ slightly).
        let head = self.chain_head(user.as_str()).await?;
        let mut pending = self.pending_items(user.as_str(), head.floor_at).await?;
        pending.sort_by_key(|p| std::cmp::Reverse(log_key(p)));
        if let Some(below) = &below {
            let below = position_key(below)?;
            pending.retain(|p| log_key(p) < below);
        }
        let (from, to) = query.window();
        let mut shown: Vec<Pending> = Vec::new();
        for p in pending {
            if !query.filter.matches(&p.event) || p.event.at < from || p.event.at > to {
                continue;
            }
            if shown.len() == query.limit {
                break;
            }
            shown.push(p);
        }
        if shown.len() == query.limit {
            let next = shown.last().map(pending_position);
            return Ok(AuditPage { events: shown.into_iter().map(|p| p.event).collect(), next });
        }
        let rest = AuditQuery { limit: query.limit - shown.len(), after: None, ..query.clone() };
        let chain = self.query_chain(&rest).await?;
        let mut events: Vec<AuditEvent> = shown.into_iter().map(|p| p.event).collect();
        events.extend(chain.events);
        Ok(AuditPage { events, next: chain.next })
    }
}

/// The sort key of a pending event in a user's log (newest first: the highest comes first).
fn log_key(p: &Pending) -> (i64, String) {
    (p.decided_us, p.order.clone())
}

/// The sort key a `p<decided_us>|<order>` position names.
fn position_key(position: &str) -> Result<(i64, String), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("position {position:?}"));
    let (us, order) = position.strip_prefix('p').and_then(|raw| raw.split_once('|')).ok_or_else(corrupt)?;
    Ok((us.parse().map_err(|_| corrupt())?, order.to_owned()))
}
