//! What the use cases need from the outside world, one small trait per job. Each write that
//! pairs a consent change with its audit event is a single port call, so every adapter must
//! make the pair atomic (one SQLite transaction, one DynamoDB `TransactWriteItems`).
//!
//! Ports know only the domain: the wiring that holds one of each for a process is
//! [`crate::app::Services`].

mod clock;
mod errors;
mod sequencing;

use async_trait::async_trait;

pub use clock::{Clock, FixedClock, SystemClock};
pub use errors::{SignerError, StoreError};
pub use sequencing::{
    AuditIntake, Deadline, INTAKE_DEADLINE, SEQUENCER_HOLD, Sequencer, SequencerRun, decision_order, ends_a_consent,
};

use crate::domain::{
    AccessRequest, AgentId, AgentRevocation, AuditEvent, AuditFilter, Consent, ControlState, EmergencyStop, RequestId,
    Timestamp, UserId,
};

/// Reads a user's consent.
#[async_trait]
pub trait ConsentReader: Send + Sync {
    /// The user's active consent, read consistently (never a stale replica). A stored consent
    /// whose `expires_at <= now` is reported as absent, whatever storage still holds.
    async fn current(&self, user: &UserId, now: Timestamp) -> Result<Option<Consent>, StoreError>;
}

/// Changes a user's consent, each change with its audit event in one atomic write.
#[async_trait]
pub trait ConsentWriter: Send + Sync {
    /// Makes `consent` the user's one active consent, replacing any other, and appends
    /// `event` (`consent.granted`). Returns the event as recorded (with its `seq`).
    async fn grant(&self, consent: &Consent, event: AuditEvent) -> Result<AuditEvent, StoreError>;

    /// Deletes `consent` and appends `event` (`consent.revoked`), on condition that it is
    /// still the user's consent; otherwise [`StoreError::ConsentChanged`] and nothing written.
    async fn revoke(&self, consent: &Consent, event: AuditEvent) -> Result<AuditEvent, StoreError>;
}

/// Records what a consent allows (a token issued, a token used), on condition that it still
/// does: the event and the consent's state are checked in one atomic write, so nothing is
/// issued or accepted after a revoke commits.
#[async_trait]
pub trait TokenLedger: Send + Sync {
    /// Appends `event` (`token.issued` or `token.used`) on condition that `consent` is still
    /// the user's consent (same `consent_id`) and unexpired at `now`; otherwise
    /// [`StoreError::ConsentChanged`] and nothing written. A token is released, and a use
    /// allowed, only after this.
    async fn record_under_consent(
        &self,
        consent: &Consent,
        now: Timestamp,
        event: AuditEvent,
    ) -> Result<AuditEvent, StoreError>;
}

/// Reads access requests. Each is stored under its user, so a user's lookup can only ever
/// find their own; statuses are as stored (the caller settles expiry by the clock).
#[async_trait]
pub trait AccessRequestReader: Send + Sync {
    /// The user's request `id`; `None` when there is none or it is someone else's.
    async fn request(&self, user: &UserId, id: &RequestId) -> Result<Option<AccessRequest>, StoreError>;

    /// One page of the user's requests, newest first.
    async fn requests_for_user(&self, user: &UserId, query: &RequestQuery) -> Result<RequestPage, StoreError>;

    /// One page of the requests `agent` filed, newest first.
    async fn requests_by_agent(&self, agent: &AgentId, query: &RequestQuery) -> Result<RequestPage, StoreError>;
}

/// Which page of a listing of access requests to read. Every store orders a listing by
/// `request_id` descending (UUIDv7: newest filed first), and the position is the id of the
/// last request of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestQuery {
    /// 1..=100.
    pub limit: usize,
    /// Where the previous page ended, as the same adapter reported it in `RequestPage::next`.
    pub after: Option<String>,
    /// Only requests still pending at this time (stored as pending, deadline after it).
    pub pending_at: Option<Timestamp>,
}

/// One page of access requests, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPage {
    /// As stored (the caller settles expiry by the clock). A page may hold fewer than the
    /// limit (an adapter stops after a bounded amount of reading) and still have a `next`.
    pub requests: Vec<AccessRequest>,
    /// Position of the last request read, when more may follow; sealed into a cursor.
    pub next: Option<String>,
}

/// Finds the requests a sweep must record as expired.
#[async_trait]
pub trait PendingRequests: Send + Sync {
    /// Requests still stored as pending whose decision deadline is at or before `now`, at
    /// most `limit`, soonest deadline first.
    async fn pending_due(&self, now: Timestamp, limit: usize) -> Result<Vec<AccessRequest>, StoreError>;
}

/// Files and decides access requests, each step with its audit events in one atomic write.
#[async_trait]
pub trait AccessRequestWriter: Send + Sync {
    /// Stores the new pending `request` and appends `event` (`request.filed`).
    async fn file(&self, request: &AccessRequest, event: AuditEvent) -> Result<AuditEvent, StoreError>;

    /// Stores `decided` (approved, denied or expired) on condition that the stored request is
    /// still pending and, for an approval, before its deadline at `decided.decided_at`; with
    /// an approval, makes `grant` the user's consent (replacing any other); and appends
    /// `events` to the user's stream in order. Otherwise [`StoreError::Conflict`] and nothing
    /// written.
    async fn decide(
        &self,
        decided: &AccessRequest,
        grant: Option<&Consent>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError>;
}

/// Appends events that change no consent (denials, uses, rejections, expiries).
#[async_trait]
pub trait AuditAppender: Send + Sync {
    /// Appends `event` at the end of its user's stream and returns it with its `seq`.
    async fn append(&self, event: AuditEvent) -> Result<AuditEvent, StoreError>;
}

/// One page of an audit query, newest first.
///
/// The order every store must produce: for a query by `user_id`, that user's stream by
/// `seq`, descending; otherwise by `(at, stream, seq)`, descending (`stream` being the user
/// id, or the unattributed stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    /// 1..=100.
    pub limit: usize,
    /// Where the previous page ended, as the same adapter reported it in `AuditPage::next`.
    pub after: Option<String>,
    /// The time of the query, which bounds a query with no `to`.
    pub now: Timestamp,
}

impl AuditQuery {
    /// How far back a query that names neither a user nor an actor looks when it has no
    /// `from`: a time-ordered scan over everyone must stop somewhere.
    pub const DEFAULT_LOOKBACK_SECONDS: i64 = 400 * 24 * 3600;

    /// The inclusive time window the query covers, defaults applied.
    pub fn window(&self) -> (Timestamp, Timestamp) {
        let f = &self.filter;
        let to = f.to.unwrap_or(Timestamp::from_unix(i64::MAX / 2));
        let from = match f.from {
            Some(from) => from,
            None if f.user_id.is_none() && f.actor.is_none() => {
                f.to.unwrap_or(self.now).plus_seconds(-Self::DEFAULT_LOOKBACK_SECONDS)
            }
            None => Timestamp::from_unix(0),
        };
        (from, to)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Adapter-specific position of the last event, when more may follow. The HTTP layer
    /// seals it into an authenticated cursor; clients never see it raw.
    pub next: Option<String>,
}

/// Queries the audit log.
#[async_trait]
pub trait AuditReader: Send + Sync {
    /// The events matching `query.filter`, newest first, at most `query.limit` of them.
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError>;
}

/// An ES256 signature in JOSE form (raw `r || s`, `s` in low-S form: verifiers refuse the
/// other one, see `support_access_verify::ecdsa`), with the key that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Es256Signature {
    pub kid: String,
    pub raw: [u8; 64],
}

/// Signs impersonation tokens; the private key never leaves the signer (KMS, or a local
/// key file for the embedded default).
#[async_trait]
pub trait Signer: Send + Sync {
    /// The `kid` of the key that signs now; it goes into the header before signing.
    fn key_id(&self) -> &str;

    /// ES256 over `message` (the JWS signing input), low-S.
    async fn sign(&self, message: &[u8]) -> Result<Es256Signature, SignerError>;

    /// Every public key that verifiers should accept, the signing one included.
    async fn public_keys(&self) -> Result<jsonwebtoken::jwk::JwkSet, SignerError>;
}

/// Settles consents that ran out, where storage has no expiry stream of its own (the
/// embedded default: DynamoDB does this with TTL and the stream).
#[async_trait]
pub trait ExpirySweeper: Send + Sync {
    /// Deletes every consent with `expires_at <= now` and records `consent.expired` for each,
    /// atomically per consent. Returns how many expired.
    async fn expire_due(&self, now: Timestamp) -> Result<usize, StoreError>;
}

/// One committed audit event as the outbox holds it, with its place in commit order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub position: u64,
    pub event: AuditEvent,
}

/// How long a first-use claim outlives its token: past `exp`, a token is still accepted for
/// the policy's leeway (at most [`Policy::MAX_LEEWAY_SECONDS`](crate::domain::Policy)), and
/// a use's record may still be delivered to the notifier for as long as DynamoDB Streams keep
/// it (24 h; the embedded relay reads its own log, see [`FirstUses`]). Two days cover both, so
/// no use of a token is ever judged after its claim is gone.
pub const FIRST_USE_CLAIM_MARGIN_SECONDS: i64 = 2 * 24 * 3600;

/// Until when the first-use claim of `used` (a `token.used`) is kept: its token's `exp` (the
/// event's `expires_at`; without one, the longest a token can live from the use) plus
/// [`FIRST_USE_CLAIM_MARGIN_SECONDS`].
pub fn first_use_claim_expiry(used: &AuditEvent) -> Timestamp {
    let exp = used.expires_at.unwrap_or(used.at.plus_seconds(crate::domain::Policy::MAX_TOKEN_TTL_SECONDS));
    exp.plus_seconds(FIRST_USE_CLAIM_MARGIN_SECONDS)
}

/// Tells a token's first use from its later ones (only the first is announced), with one
/// conditional write per use and no read of the audit log: a claim keyed by the token's `jti`,
/// first writer wins, holding the event id that claimed it, kept until
/// [`first_use_claim_expiry`].
///
/// Why this is exactly-once enough: the notifier claims, then publishes, and moves past a
/// use only once both succeeded. A crash or a failed publish after the claim leaves the use
/// to be retried (the stream redelivers the record; the embedded relay keeps its position);
/// the retry is the same event, so its claim answers `true` again and the announcement goes
/// out: it is never lost. A later use of the same token finds the claim held by another
/// event and is not announced. An announcement can go out twice only when a publish succeeded
/// but was reported as failed, and then with the same id, which consumers deduplicate by.
/// Uses are claimed in the order the notifier reads them; on DynamoDB Streams that is commit
/// order per user, so the claim goes to the token's earliest use.
#[async_trait]
pub trait FirstUses: Send + Sync {
    /// Claims the first use of `used`'s token (`used` is a committed `token.used`) for `used`,
    /// unless another use holds it: `true` when `used` holds it (claimed now, or by an earlier
    /// attempt at this same event), `false` when another event does. A use without a `jti`
    /// is announced (`true`).
    async fn claim_first_use(&self, used: &AuditEvent) -> Result<bool, StoreError>;
}

/// The committed audit log read as an outbox, for a relay that publishes notifications after
/// the fact: publishing never runs inside (or delays) the write it reports, and a relay that
/// stops resumes from its saved position, so nothing committed is ever skipped.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Committed events after `position`, in commit order, at most `limit`.
    async fn committed_after(&self, position: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Where relay `relay` got to; `None` for a relay that never ran.
    async fn position(&self, relay: &str) -> Result<Option<u64>, StoreError>;

    /// The position of the newest committed event (0 for an empty log).
    async fn last_position(&self) -> Result<u64, StoreError>;

    /// Records that `relay` delivered everything up to `position`.
    async fn save_position(&self, relay: &str, position: u64) -> Result<(), StoreError>;
}

/// Why a notification was not delivered (for logs and counters only).
#[derive(Debug, thiserror::Error)]
#[error("notification not delivered: {0}")]
pub struct PublishError(pub String);

/// Delivers notifications to the app (a signed webhook locally, EventBridge on AWS).
#[async_trait]
pub trait Publisher: Send + Sync {
    /// Delivers `notification` once; an error means it may or may not have arrived, and the
    /// caller retries (consumers deduplicate by its id).
    async fn publish(&self, notification: &crate::domain::Notification) -> Result<(), PublishError>;
}

/// Records expiries that storage noticed on its own (DynamoDB TTL, via the stream).
#[async_trait]
pub trait ExpiryLedger: Send + Sync {
    /// Appends `event` (`consent.expired`) for `consent` unless that consent's expiry is
    /// already recorded: stream records are delivered at least once. Returns whether it wrote.
    async fn record_expired(&self, consent: &Consent, event: AuditEvent) -> Result<bool, StoreError>;
}

pub use support_access_verify::checkpoint::{CheckpointClaims, Leaf, ProvenLeaf};

/// A signed checkpoint as stored: its claims, and the compact JWS that signs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub claims: CheckpointClaims,
    pub jws: String,
}

/// A chain head that moved past what a checkpoint sealed of it, and when it first moved
/// since (Unix seconds, the time of the event that moved it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovedHead {
    pub head: Leaf,
    pub moved_at: i64,
}

/// What [`ChainArchive::moved_heads`] found: the oldest moved heads, and whether more are
/// left past them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovedHeads {
    pub heads: Vec<MovedHead>,
    pub more: bool,
}

/// One page of [`ChainArchive::list_streams`]: the streams, and where the listing goes on
/// from (`None`: every stream was listed). On DynamoDB a page may name no stream and still
/// have a `next` (the Scan read only expiry markers, which share the heads' table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamsPage {
    pub streams: Vec<String>,
    pub next: Option<String>,
}

/// Whole chains, oldest first, and the signed checkpoints that seal their heads (see
/// `support_access_verify::checkpoint`). Checkpoints, like events, are only ever appended.
#[async_trait]
pub trait ChainArchive: Send + Sync {
    /// At most `limit` of the streams that hold an event, listed after the position `after`
    /// (a stream this listing returned, or its [`StreamsPage::next`]; from the first when
    /// `None`): one store call, so a full export lists a bounded page at a time and resumes
    /// from its cursor, never listing every stream at once. The order is the store's own and
    /// stable: SQLite sorts by name; DynamoDB lists in its Scan order of the chain heads (by
    /// the hash of the stream's name), resuming the Scan at `after`'s key. A listing run to
    /// its end names every stream that held an event when it began exactly once; a stream
    /// created while it runs may be named or not, depending on where it lands in the order.
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<StreamsPage, StoreError>;

    /// The events of `stream` with `seq > after_seq`, by `seq` ascending, at most `limit`:
    /// one store call (on DynamoDB one `Query`, at most 1 MB), never a loop of them, so an
    /// export page can bound its time by the number of reads it starts and when (see
    /// `app::EXPORT_PAGE_TIME`). Fewer than `limit` does not mean the stream is done; only an
    /// empty answer does.
    async fn stream_events(&self, stream: &str, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;

    /// The newest checkpoint, if any was made.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// The heads of at most `limit` streams that moved past what a checkpoint last sealed of
    /// them, those that moved first (since their last seal) first. Never a walk of every
    /// stream: on DynamoDB a head that moves is marked in the same write (a sparse index,
    /// `moved`), read here by a query and unmarked by [`ChainArchive::unmark_sealed`]; on
    /// SQLite one query against the sealed leaves. A head that `latest` (the newest
    /// checkpoint) sealed at its current `seq` is left out: a racing run that landed it may
    /// not have unmarked it yet.
    async fn moved_heads(&self, latest: Option<&Checkpoint>, limit: usize) -> Result<MovedHeads, StoreError>;

    /// After the checkpoint that sealed `heads` landed: each of them that did not move since
    /// is no longer moved (one that moved again stays so, and is sealed by a later one).
    /// Where "moved" is derived from the leaves (SQLite), nothing to do.
    async fn unmark_sealed(&self, heads: &[Leaf]) -> Result<(), StoreError>;

    /// Appends `checkpoint` with its tree's leaves, on condition that no checkpoint holds
    /// its `seq` yet; otherwise [`StoreError::Conflict`] and nothing written.
    async fn append_checkpoint(&self, checkpoint: &Checkpoint, leaves: &[ProvenLeaf]) -> Result<(), StoreError>;

    /// For an export, oldest first, the checkpoints with `seq > after`, at most `limit` of
    /// them: with `stream`, those that sealed a head of it, each with that stream's leaves
    /// only; without, every checkpoint with all its leaves, read by checkpoint (never one read
    /// per stream: on DynamoDB one query of the leaves' index per checkpoint, and no more
    /// checkpoints than hold 4,096 leaves together, at least one, about one page). An
    /// export reads them `limit` at a time from where its cursor stands
    /// (`app::EXPORT_READ_CHECKPOINTS`), so a long life of checkpoints is never read at once;
    /// fewer than `limit` does not mean none is left, only an empty answer does.
    async fn checkpoints(
        &self,
        stream: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(Checkpoint, Vec<ProvenLeaf>)>, StoreError>;
}

/// The incident-response switches (`domain::controls`): read on every use, written only by
/// operators. Kept apart from the consents so that on AWS only the operator function can
/// write them (a table of their own).
#[async_trait]
pub trait Controls: Send + Sync {
    /// The emergency stop and, for `agent`, its revocation, read consistently.
    async fn read(&self, agent: Option<&AgentId>) -> Result<ControlState, StoreError>;

    /// Engages the stop (`Some`, replacing one already engaged) or lifts it (`None`).
    async fn set_stop(&self, stop: Option<&EmergencyStop>) -> Result<(), StoreError>;

    /// Stores `revocation` for its agent, replacing an earlier one (a later `revoked_before`
    /// covers every token the earlier one did). Entries past their `expires_at` may go.
    async fn revoke_agent(&self, revocation: &AgentRevocation) -> Result<(), StoreError>;
}

/// A store that fills every storage port (the embedded store and DynamoDB both do).
pub trait Store:
    ConsentReader
    + ConsentWriter
    + TokenLedger
    + AuditAppender
    + AuditReader
    + ChainArchive
    + AccessRequestReader
    + AccessRequestWriter
    + PendingRequests
    + Controls
{
}
impl<
    T: ConsentReader
        + ConsentWriter
        + TokenLedger
        + AuditAppender
        + AuditReader
        + ChainArchive
        + AccessRequestReader
        + AccessRequestWriter
        + PendingRequests
        + Controls,
> Store for T
{
}
