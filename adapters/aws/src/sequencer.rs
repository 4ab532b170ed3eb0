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
//! 2. reads the stream's intake items from the head's floor (`appended_from`, consistent
//!    Query), drops those already appended (listed in the head, or marked by the previous
//!    release), sorts the rest by decision time, applies [`decision_order`] and cuts at the
//!    first consent-ending event held less than the hold since this process first saw it;
//! 3. appends the pending events one at a time, each a single conditional `PutItem` of its
//!    `Audit` item (on condition its `seq` is free), two uses or more in a row as one
//!    bundle (`crate::bundle`: one such put for up to [`SEQUENCER_EVENTS_PER_HEAD_MOVE`]),
//!    and after each bundle, each [`SEQUENCER_EVENTS_PER_HEAD_MOVE`] other events (and at
//!    the end) moves the head in one conditional
//!    `UpdateItem` (on condition it is still the one the run read, or last left), with the new
//!    floor (`appended_from`, the oldest decision second a pending item can still have, never
//!    lowered) and the list of what is appended at or above it (`appended`). A failed
//!    condition means another run (or a direct writer, during a deploy) got there first: the
//!    run reads again, from the new head, and carries on from there; a write that met a
//!    transaction on its item, or throttling, is sent again as it is (its condition still
//!    decides).
//!
//! The puts go one after another, never concurrently: each event's `prev_hash` is the hash
//! of the event at the `seq` before it, and an `Audit` item is never deleted, so a writer puts
//! `seq` n only once the item at n - 1 is one it put or read. Concurrent puts could leave an
//! event on the chain behind one that failed (throttled, or taken by a racing writer), which
//! no later run could mend.
//!
//! No marks, no deletes: an intake item stays after its event is appended (TTL removes it
//! [`INTAKE_RETENTION_SECONDS`] after its put, pending or not), so a retried put of an event
//! already on its chain still finds its item and changes nothing (a delete would let it land
//! as a second use). What is appended is told by the head alone: an intake item is appended
//! when it is below the head's floor, or listed in the head (the first
//! [`LISTED_BYTES`] bytes of the SHA-256 of its key), or marked (`seq`, written by the
//! previous release, which marked each item in the transaction that appended it: still read,
//! so a stack upgrades in place). A crash between the puts and the head leaves events past
//! the head, which the next run adopts (step 1) and lists in the head it moves past them.
//! Events past the head may also come from a run of the previous release beside this one
//! during a deploy (its items marked). A redelivered batch finds nothing pending, and only
//! reads. The head's `floor_at` is left for the previous release: above every event this
//! release appended, so a rollback after a drain finds none of them pending (docs/operators.md).
//! The stamps of first sight live in memory: another process sees an event anew and only
//! holds it once more.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};

use super::archive::{MOVED_SET, MarkMoved, stream_shard};
use super::bundle::{MAX_BUNDLE_EVENTS, bundle_item, bundled, events_of, is_bundle};
use super::dynamodb::{
    Cancelled, DynamoStore, backoff, built, cancellation, corrupt_head, head_of, jittered_backoff, n, s, unavailable,
};
use super::index::IndexRef;
use super::items::{Item, VIA_INTAKE, audit_item, get_n, get_s};
use adapter_streams::STALLED_PREFIX;
use futures_util::{StreamExt, TryStreamExt};
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

/// How long an intake item stays after its put, pending or appended (TTL removes it later,
/// free): far longer than any put can take to land after its decision (a retried put of an
/// appended event must still find its item), and longer than a broken sequencer can go
/// unnoticed and unmended: its failed batches reach `FailuresAlarm` within the hour, and a
/// pending item past this is gone from the intake unappended (docs/operators.md).
pub const INTAKE_RETENTION_SECONDS: i64 = 14 * 24 * 3600;

/// How many events a run appends between two moves of the head: bounds how long the head is
/// behind the chain (a direct writer waits for it during a deploy) and what a crashed run
/// leaves for the next to adopt.
pub const SEQUENCER_EVENTS_PER_HEAD_MOVE: usize = 49;

/// The bytes of an intake key's SHA-256 a head lists it by: 128 bits, as unlikely to collide
/// as two random UUIDs (a collision would pass a pending event as appended).
pub const LISTED_BYTES: usize = 16;

/// How often a write of a run is sent again when it met a transaction on its item
/// (`TransactionConflictException`: a direct writer's, or a checkpoint sealing the head), and
/// when a partition was over its throughput (beyond the SDK's own retries), before the run
/// gives up as unavailable (the stream delivers its records again).
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
        // Set at the put, so that appending it writes nothing more to it.
        ("expires_at".into(), n(decided_us / 1_000_000 + INTAKE_RETENTION_SECONDS)),
    ]))
}

/// How a head lists the intake item `order` as appended.
type Listed = [u8; LISTED_BYTES];

fn listed(order: &str) -> Listed {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, order.as_bytes());
    let mut out = [0; LISTED_BYTES];
    out.copy_from_slice(&digest.as_ref()[..LISTED_BYTES]);
    out
}

/// The `Audit` item of `event` as the sequencer appends it: marked [`VIA_INTAKE`], so the
/// notifier, which announced it from the intake's stream, does not claim it again; without
/// its own index entries when an index item lists it (`crate::index`).
fn appended_item(event: &AuditEvent, in_index_item: bool) -> Item {
    let mut item = audit_item(event);
    item.insert(VIA_INTAKE.into(), AttributeValue::Bool(true));
    if in_index_item {
        item.remove("at_key");
        item.remove("time_bucket");
    }
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

/// How many uses in a row `todo` starts with, up to a bundle's most: two or more are
/// appended as one bundle.
fn uses_in_a_row(todo: &[Pending]) -> usize {
    todo.iter().take(MAX_BUNDLE_EVENTS).take_while(|p| bundled(&p.event)).count()
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
/// every conditional write here means the item is already as wanted (recorded, appended or
/// moved by another run), so nothing is left to do.
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

/// Where a run has got to on a stream's chain: what the head says once it moves there.
#[derive(Clone)]
struct Moved {
    seq: u64,
    hash: String,
    /// The newest decision second on the chain this run appended or adopted (`i64::MIN`:
    /// none yet).
    newest_at: i64,
    /// The oldest decision second a pending item can still have (`i64::MIN`: any).
    floor_at: i64,
    /// The head's `floor_at`, for the previous release: past every event this release
    /// appended (see [`Head::compat_floor`]).
    compat_floor: i64,
    consents: ChainConsents,
}

impl Moved {
    /// Past `event`, appended or adopted.
    fn follow(&mut self, event: &AuditEvent) {
        self.consents.follow(event);
        (self.seq, self.hash) = (event.seq, event.hash.clone());
        self.newest_at = self.newest_at.max(event.at.unix());
        self.compat_floor = self.compat_floor.max(event.at.unix().saturating_add(1));
    }
}

/// How a pass over a stream ended.
enum Pass {
    Done(SequencerRun),
    /// Another writer took a `seq` or moved the head first, after this pass appended
    /// `sequenced`: read again.
    Lost(SequencerRun),
}

/// How a write of a run was answered, once sent again as its refusal allows.
pub(super) enum Sent {
    Landed,
    /// Its condition failed: another run (or a direct writer) took the `seq` or moved the
    /// head first. Read again from the new head; never send it again.
    Lost,
}

/// A stream's chain head as the sequencer reads it.
struct Head {
    /// Whether the stream has a head item yet.
    exists: bool,
    seq: u64,
    hash: String,
    /// The oldest decision second a pending item of the stream can have (none: read all):
    /// `appended_from`, or where a head of the previous release has none, its `floor_at`.
    floor_at: Option<i64>,
    /// The head's `floor_at` as stored: this release writes it above every event it
    /// appended, for the previous release (whose runs take an unmarked item at or above it
    /// for pending), and reads it only from a head that release wrote.
    compat_floor: Option<i64>,
    /// The intake items at or above `floor_at` that are appended (`appended`).
    listed: BTreeSet<Listed>,
    /// The chain's consent state at the head: the live consent, and the last consents ended.
    consents: ChainConsents,
}

impl Head {
    /// Whether the intake item `order` is on its chain by what the head says (a marked item,
    /// of the previous release, is too).
    fn has_appended(&self, order: &str) -> bool {
        self.floor_at.is_some_and(|at| *order < *order_floor(at)) || self.listed.contains(&listed(order))
    }
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
                compat_floor: None,
                listed: BTreeSet::new(),
                consents: ChainConsents::default(),
            });
        };
        let (seq, hash) = head_of(&item).ok_or_else(|| corrupt_head(stream))?;
        let number = |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
        let compat_floor = number("floor_at");
        let listed = match item.get("appended") {
            None => BTreeSet::new(),
            Some(AttributeValue::B(blob)) if blob.as_ref().len() % LISTED_BYTES == 0 => blob
                .as_ref()
                .chunks_exact(LISTED_BYTES)
                .map(|c| c.try_into().expect("chunks of LISTED_BYTES"))
                .collect(),
            Some(_) => return Err(corrupt_head(stream)),
        };
        Ok(Head {
            exists: true,
            seq,
            hash,
            floor_at: number("appended_from").or(compat_floor),
            compat_floor,
            listed,
            consents: ChainConsents::of(&item),
        })
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

    /// The events on `stream`'s chain past `seq` (a head's), oldest first, each with the key
    /// of the bundle that holds it, if one does. A head is never inside a bundle (a run moves
    /// it to a bundle's last event), so every item holding an event past it is keyed past it.
    async fn chain_after(&self, stream: &str, seq: u64) -> Result<Vec<(AuditEvent, Option<u64>)>, StoreError> {
        let names = HashMap::from([("#s".to_owned(), "stream".to_owned()), ("#q".to_owned(), "seq".to_owned())]);
        let values = HashMap::from([(":s".to_owned(), s(stream)), (":q".to_owned(), n(seq as i64))]);
        let items = self.query_all(&self.tables.audit, "#s = :s AND #q > :q", None, names, values).await?;
        let mut out = Vec::new();
        for item in &items {
            let events = events_of(item)?;
            // A bundle is keyed by its first event's `seq`.
            let holder = is_bundle(item).then(|| events[0].seq);
            out.extend(events.into_iter().map(|e| (e, holder)));
        }
        Ok(out)
    }

    /// `stream`'s intake items from `head`'s floor on, by key: those pending, and those the
    /// head lists as appended. Items the previous release marked (`seq`) are neither.
    async fn intake_items(&self, stream: &str, head: &Head) -> Result<(Vec<Pending>, Vec<Pending>), StoreError> {
        let mut names = HashMap::from([("#s".to_owned(), "stream".to_owned()), ("#q".to_owned(), "seq".to_owned())]);
        let mut values = HashMap::from([(":s".to_owned(), s(stream))]);
        let key_condition = match head.floor_at {
            Some(at) => {
                names.insert("#o".to_owned(), "order".to_owned());
                values.insert(":lo".to_owned(), s(&order_floor(at)));
                "#s = :s AND #o >= :lo"
            }
            None => "#s = :s",
        };
        let items =
            self.query_all(&self.tables.intake, key_condition, Some("attribute_not_exists(#q)"), names, values).await?;
        let items = items.iter().map(Pending::try_from).collect::<Result<Vec<_>, _>>()?;
        Ok(items.into_iter().partition(|p| !head.has_appended(&p.order)))
    }

    /// `stream`'s pending events in the order the sequencer will append them.
    async fn pending_in_order(&self, stream: &str) -> Result<Vec<Pending>, StoreError> {
        let head = self.chain_head(stream).await?;
        Ok(in_decision_order(self.intake_items(stream, &head).await?.0))
    }

    /// Sends one write of a run (`send`, called again for each resend): `Lost` when its
    /// condition failed (another writer got there first: read again, never resend), sent
    /// again as it is after a conflict with a transaction on its item or throttling, a few
    /// times each.
    pub(super) async fn resent<T, E, R, F>(&self, what: &str, send: impl Fn() -> F) -> Result<Sent, StoreError>
    where
        F: std::future::Future<Output = Result<T, SdkError<E, R>>>,
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let (mut conflicts, mut throttles) = (0, 0);
        loop {
            let e = match send().await {
                Ok(_) => return Ok(Sent::Landed),
                Err(e) => e,
            };
            match e.as_service_error().and_then(|e| e.code()) {
                Some("ConditionalCheckFailedException") => return Ok(Sent::Lost),
                Some("TransactionConflictException") if conflicts < CONFLICT_RESENDS => {
                    backoff(conflicts).await;
                    conflicts += 1;
                }
                Some("ThrottlingException" | "ProvisionedThroughputExceededException" | "RequestLimitExceeded")
                    if throttles < THROTTLE_RESENDS =>
                {
                    jittered_backoff(throttles, THROTTLE_BACKOFF_BASE_MS, THROTTLE_BACKOFF_CAP_MS).await;
                    throttles += 1;
                }
                _ => {
                    return Err(StoreError::Unavailable(format!(
                        "{what} failed after {conflicts} conflicts and {throttles} throttles: {}",
                        unavailable(e)
                    )));
                }
            }
        }
    }

    /// Puts `item` on its chain: an `Audit` item on condition its key (stream, `seq`) is free,
    /// as [`DynamoStore::audit_put`] takes a place on a chain. `item` is an event's own item
    /// ([`appended_item`], marked [`VIA_INTAKE`]) or a bundle of uses ([`bundle_item`], keyed
    /// by its first event's `seq`: `crate::bundle` says why that condition is enough).
    async fn put_on_chain(&self, what: &str, item: Item) -> Result<Sent, StoreError> {
        self.resent(what, || {
            self.client
                .put_item()
                .table_name(&self.tables.audit)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(#s)")
                .expression_attribute_names("#s", "stream")
                .send()
        })
        .await
    }

    /// Moves the head of `stream` to `to`, listing `listed` appended, on condition it is still
    /// `from` (`None`: no head yet).
    async fn move_head(
        &self,
        stream: &str,
        from: Option<&(u64, String)>,
        to: &Moved,
        listed: &BTreeSet<Listed>,
    ) -> Result<Sent, StoreError> {
        let list = if listed.is_empty() { " REMOVE appended" } else { "" };
        let mut values = HashMap::from([
            (":q".to_owned(), n(to.seq as i64)),
            (":h".to_owned(), s(&to.hash)),
            (":at".to_owned(), n(to.newest_at)),
            (":c".to_owned(), n(to.compat_floor)),
            (":f".to_owned(), n(to.floor_at)),
            (":l".to_owned(), s(to.consents.live.as_deref().unwrap_or_default())),
            (":e".to_owned(), AttributeValue::L(to.consents.ended.iter().map(|c| s(c)).collect())),
        ]);
        let mut set =
            "SET #q = :q, #h = :h, #at = :at, floor_at = :c, appended_from = :f, live = :l, ended = :e".to_owned();
        if !listed.is_empty() {
            values.insert(
                ":a".to_owned(),
                AttributeValue::B(Blob::new(listed.iter().flatten().copied().collect::<Vec<u8>>())),
            );
            set.push_str(", appended = :a");
        }
        let mut names = HashMap::from([
            ("#q".to_owned(), "seq".to_owned()),
            ("#h".to_owned(), "hash".to_owned()),
            ("#at".to_owned(), "at".to_owned()),
        ]);
        let condition = match from {
            None => {
                names.insert("#s".to_owned(), "stream".to_owned());
                "attribute_not_exists(#s)"
            }
            Some((seq, hash)) => {
                values.insert(":last".to_owned(), n(*seq as i64));
                values.insert(":last_hash".to_owned(), s(hash));
                "#q = :last AND #h = :last_hash"
            }
        };
        self.resent("a head move", || {
            self.client
                .update_item()
                .table_name(&self.tables.heads)
                .key("stream", s(stream))
                .update_expression(format!("{set}, {MOVED_SET}{list}"))
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .mark_moved(stream, to.newest_at)
                .condition_expression(condition)
                .send()
        })
        .await
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
    /// appends them (module documentation, steps 1 to 3).
    async fn sequence_pass(&self, state: &SequencerState, stream: &str, limit: usize) -> Result<Pass, StoreError> {
        // 1. The head, then what a run appended past it: both before the intake items, so
        // every event this run sees pending and another run appended sits past this head.
        let head = self.chain_head(stream).await?;
        let (adopted, holders): (Vec<AuditEvent>, Vec<Option<u64>>) =
            self.chain_after(stream, head.seq).await?.into_iter().unzip();
        let mut at = Moved {
            seq: head.seq,
            hash: head.hash.clone(),
            newest_at: i64::MIN,
            floor_at: head.floor_at.unwrap_or(i64::MIN),
            compat_floor: head.compat_floor.unwrap_or(i64::MIN),
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
        // What the head will list: the items it lists already, the adopted events' and those
        // this run appends (each with its decision second, to keep those at the floor or above).
        let mut appended: Vec<(String, i64)> = adopted.iter().map(|e| (order_key(e), e.at.unix())).collect();
        // What the index must list before the head moves: the adopted events (a run that died
        // may not have indexed them; listed twice is read once), then the puts of a chunk of
        // two or more, made without their own index entries (`crate::index`).
        let mut unindexed: Vec<IndexRef> =
            adopted.iter().zip(&holders).map(|(e, holder)| IndexRef { bundle: *holder, ..IndexRef::of(e) }).collect();
        let adopted: HashMap<EventId, u64> = adopted.into_iter().map(|e| (e.event_id, e.seq)).collect();

        // 2. The pending items in decision order, cut at the first consent change held.
        // Released by the time the read began (a use that landed after that may be missed);
        // stamped by the time it answered (not before the event committed).
        let read_at = Instant::now();
        let (all, listed_already) = self.intake_items(stream, &head).await?;
        let seen_at = Instant::now();
        appended.extend(listed_already.iter().map(|p| (p.order.clone(), p.event.at.unix())));
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

        // 3. Appended one put at a time (two uses or more in a row: one bundle), the head moved
        // after each bundle, each SEQUENCER_EVENTS_PER_HEAD_MOVE other events and at the end (or
        // only, when the run only adopted); the first move on condition the head is as read.
        let todo = &ordered[..cut.min(limit)];
        let mut last = head.exists.then(|| (head.seq, head.hash.clone()));
        let mut head_behind = at.seq != head.seq;
        let (mut from, mut lost) = (0, false);
        while from < todo.len() || head_behind {
            let (mut next, mut to) = (at.clone(), from);
            // Two uses or more in a row from here: one bundle (`crate::bundle`). Else the events
            // up to the next such pair, each an item of its own.
            let uses = uses_in_a_row(&todo[from..]);
            if uses >= 2 {
                let mut events = Vec::with_capacity(uses);
                for p in &todo[from..from + uses] {
                    let event = p.event.clone().seal(next.seq + 1, &next.hash);
                    next.follow(&event);
                    events.push(event);
                }
                if let Sent::Lost = self.put_on_chain("a bundle's put", bundle_item(&events)?).await? {
                    // Another writer has its first `seq`: nothing of it is on the chain.
                    next = at.clone();
                    lost = true;
                } else {
                    let first = events[0].seq;
                    unindexed.extend(events.iter().map(|e| IndexRef::in_bundle(e, first)));
                    appended.extend(todo[from..from + uses].iter().map(|p| (p.order.clone(), p.event.at.unix())));
                    to += uses;
                }
            } else {
                let ends = (from + 1..todo.len().min(from + SEQUENCER_EVENTS_PER_HEAD_MOVE))
                    .find(|&i| uses_in_a_row(&todo[i..]) >= 2)
                    .unwrap_or(todo.len().min(from + SEQUENCER_EVENTS_PER_HEAD_MOVE));
                let in_index_item = ends - from >= 2;
                while to < ends {
                    let p = &todo[to];
                    let event = p.event.clone().seal(next.seq + 1, &next.hash);
                    if let Sent::Lost = self.put_on_chain("an append", appended_item(&event, in_index_item)).await? {
                        // Another writer has this `seq`: what this run put before it is still
                        // its own, and the head moves past it.
                        lost = true;
                        break;
                    }
                    if in_index_item {
                        unindexed.push(IndexRef::of(&event));
                    }
                    next.follow(&event);
                    appended.push((p.order.clone(), p.event.at.unix()));
                    to += 1;
                }
            }
            // The floor: below the newest decision second by the window, or the oldest left
            // pending, and never lower than it was (the list covers what is above it only).
            let left = ordered[to..].iter().map(|p| p.event.at.unix()).min();
            let floor = next.newest_at.saturating_sub(FLOOR_WINDOW_SECONDS).min(left.unwrap_or(i64::MAX));
            next.floor_at = next.floor_at.max(floor);
            let listed: BTreeSet<Listed> =
                appended.iter().filter(|(_, at)| *at >= next.floor_at).map(|(order, _)| listed(order)).collect();
            if !unindexed.is_empty() {
                self.put_index(&unindexed).await?;
                unindexed.clear();
            }
            let moved = (to > from || head_behind)
                && matches!(self.move_head(stream, last.as_ref(), &next, &listed).await?, Sent::Landed);
            if moved {
                last = Some((next.seq, next.hash.clone()));
                (at, from, head_behind) = (next, to, false);
            }
            if lost || !moved {
                lost = true;
                break;
            }
        }
        if let Ok(mut seen) = state.seen.lock() {
            for p in done.iter().chain(&todo[..from]) {
                seen.remove(&key(p));
            }
        }
        let run = SequencerRun { sequenced: from, pending: ordered.len() - from };
        Ok(if lost { Pass::Lost(run) } else { Pass::Done(run) })
    }

    /// The streams with pending items, and how many each has: a `Scan` of the intake, then
    /// each such stream's head (what it lists as appended), for [`Sequencer::sequence`] (tests
    /// and operators; the function is driven by the stream).
    async fn pending_streams(&self) -> Result<BTreeMap<String, usize>, StoreError> {
        let (mut unmarked, mut start) = (BTreeMap::<String, Vec<String>>::new(), None);
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.tables.intake)
                .filter_expression("attribute_not_exists(#q)")
                .projection_expression("#s, #o")
                .expression_attribute_names("#q", "seq")
                .expression_attribute_names("#s", "stream")
                .expression_attribute_names("#o", "order")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for item in out.items() {
                let (stream, order) =
                    (get_s(item, "audit intake item", "stream")?, get_s(item, "audit intake item", "order")?);
                if stream.starts_with(STALLED_PREFIX) {
                    continue;
                }
                unmarked.entry(stream.to_owned()).or_default().push(order.to_owned());
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        let mut streams = BTreeMap::new();
        for (stream, orders) in unmarked {
            let head = self.chain_head(&stream).await?;
            let pending = orders.iter().filter(|o| !head.has_appended(o)).count();
            if pending > 0 {
                streams.insert(stream, pending);
            }
        }
        Ok(streams)
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
        // Not landed: already recorded (pending, or appended), nothing changes.
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

    async fn mark_stalled(&self, streams: &[String]) -> Result<(), StoreError> {
        self.list_stalled(streams, true).await
    }

    async fn clear_stalled(&self, streams: &[String]) -> Result<(), StoreError> {
        self.list_stalled(streams, false).await
    }
}

/// Where a page of a user's log ended among the pending events: `p<decided_us>|<order>`.
fn pending_position(p: &Pending) -> String {
    format!("p{}|{}", p.decided_us, p.order)
}

#[async_trait]
impl AuditReader for DynamoStore {
    /// On a sequencing store, a user's log lists the pending events first (unsealed, newest
    /// first), then the chain, as the embedded store does. A query by actor or by time does
    /// the same with the pending events of the streams listed as stalled
    /// ([`Sequencer::mark_stalled`]): on a healthy stack, none (an event is pending for the
    /// sequencer's lag, under a second, as an index item is unseen for its propagation).
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        if self.sequencer.is_none() {
            return self.query_chain(query).await;
        }
        let below = match query.after.as_deref() {
            None => None,
            Some(p) if p.starts_with('p') => Some(position_key(p)?),
            Some(_) => return self.query_chain(query).await,
        };
        let streams = match &query.filter.user_id {
            Some(user) => vec![user.to_string()],
            None => self.stalled_streams().await?,
        };
        let by_user = query.filter.user_id.is_some();
        let pending: Vec<Vec<Pending>> = futures_util::stream::iter(streams)
            .map(|stream| async move {
                let head = self.chain_head(&stream).await?;
                match self.intake_items(&stream, &head).await {
                    Ok((pending, _)) => Ok(pending),
                    // One stalled user's unreadable item (what stalls their sequencer, and
                    // fails their own log) does not hide everyone else's from the auditor.
                    Err(StoreError::Corrupt(e)) if !by_user => {
                        tracing::warn!(%stream, error = %e, "a stalled stream's pending events are unreadable; left out");
                        Ok(Vec::new())
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(STALLED_READS_AT_ONCE)
            .try_collect()
            .await?;
        // Newest first by decision time (the display order; the chain's may differ slightly).
        let mut pending: Vec<Pending> = pending.into_iter().flatten().collect();
        pending.sort_by_key(|p| std::cmp::Reverse(log_key(p)));
        if let Some(below) = &below {
            pending.retain(|p| log_key(p) < *below);
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
        // Appended between the two reads: shown once, pending (its sealed copy is the chain's).
        let ids: BTreeSet<EventId> = events.iter().map(|e| e.event_id.clone()).collect();
        events.extend(chain.events.into_iter().filter(|e| !ids.contains(&e.event_id)));
        Ok(AuditPage { events, next: chain.next })
    }
}

/// The sort key of a pending event in a user's log (newest first: the highest comes first).
fn log_key(p: &Pending) -> (i64, String) {
    (p.decided_us, p.order.clone())
}

/// Partitions of the list of stalled streams, `#stalled#0` to `#stalled#7` in
/// `AuditIntake` (see [`STALLED_PREFIX`]): a stall lists each of its users once per delivery,
/// so 8 partitions take about 8,000 of them a second.
pub const STALLED_SHARDS: u32 = 8;

/// How long a stream stays listed as stalled after it was last listed: a day, past the
/// event source's last delivery of its records (an hour, then the failed-batches bucket), so
/// what a stall left pending stays in the auditor's view well after the alarm.
pub const STALLED_LISTED_SECONDS: i64 = 24 * 3600;

/// How many stalled streams a query reads at once (a head and an intake range each).
const STALLED_READS_AT_ONCE: usize = 16;

/// The key of `stream`'s entry in the list of stalled streams: partition
/// `#stalled#<shard>` (no user's stream can have it: `#` is not in an identifier), sort key
/// the stream.
fn stalled_key(stream: &str) -> (String, String) {
    (format!("{STALLED_PREFIX}{}", stream_shard(stream, STALLED_SHARDS)), stream.to_owned())
}

impl DynamoStore {
    /// Every stream listed as stalled, read from each partition of the list.
    async fn stalled_streams(&self) -> Result<Vec<String>, StoreError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let shards = futures_util::future::try_join_all((0..STALLED_SHARDS).map(|shard| {
            let names =
                HashMap::from([("#s".to_owned(), "stream".to_owned()), ("#e".to_owned(), "expires_at".to_owned())]);
            let values =
                HashMap::from([(":s".to_owned(), s(&format!("{STALLED_PREFIX}{shard}"))), (":now".to_owned(), n(now))]);
            async move { self.query_all(&self.tables.intake, "#s = :s", Some("#e > :now"), names, values).await }
        }))
        .await?;
        shards.iter().flatten().map(|item| get_s(item, "stalled stream entry", "order").map(str::to_owned)).collect()
    }

    /// Lists (`list`) or unlists each of `streams`: one `PutItem` or `DeleteItem` each, a
    /// repeat changing nothing. An entry counts for [`STALLED_LISTED_SECONDS`] after its
    /// last listing (readers skip it after, TTL removes it later): the sequencer lists a
    /// stream again at each delivery of its records while it stalls. An entry left by a run
    /// that failed once, then finished in another process on fresh records (which does not
    /// know to unlist it), costs readers an empty read for at most that long.
    async fn list_stalled(&self, streams: &[String], list: bool) -> Result<(), StoreError> {
        futures_util::stream::iter(streams.to_vec())
            .map(|stream| async move {
                let (partition, sort) = stalled_key(&stream);
                if list {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
                    self.client
                        .put_item()
                        .table_name(&self.tables.intake)
                        .item("stream", s(&partition))
                        .item("order", s(&sort))
                        .item("expires_at", n(now + STALLED_LISTED_SECONDS))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(unavailable)
                } else {
                    self.client
                        .delete_item()
                        .table_name(&self.tables.intake)
                        .key("stream", s(&partition))
                        .key("order", s(&sort))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(unavailable)
                }
            })
            .buffer_unordered(STALLED_READS_AT_ONCE)
            .try_collect()
            .await
    }
}

/// The sort key a `p<decided_us>|<order>` position names.
fn position_key(position: &str) -> Result<(i64, String), StoreError> {
    let corrupt = || StoreError::Corrupt(format!("position {position:?}"));
    let (us, order) = position.strip_prefix('p').and_then(|raw| raw.split_once('|')).ok_or_else(corrupt)?;
    Ok((us.parse().map_err(|_| corrupt())?, order.to_owned()))
}
