//! Sealing the audit log: a signed checkpoint over the chain heads that moved since the last
//! one (run on a schedule by the `checkpoint` Lambda, on a timer and on demand by local-api),
//! and the export that carries chains and checkpoints for `support-access verify`. The
//! format is `support_access_verify::checkpoint`'s.

use std::collections::{HashSet, VecDeque};

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use support_access_verify::chain::UNATTRIBUTED_STREAM;
use support_access_verify::checkpoint::{CHECKPOINT_TYPE, CheckpointClaims, link_of, seal_leaves};
use support_access_verify::receipt::{LineDigest, RECEIPT_TYPE, ReceiptClaims, empty_digest};

use super::Services;
use crate::domain::{Timestamp, UserId};
use crate::ports::{ChainArchive, Checkpoint, Clock, Leaf, Signer, SignerError, StoreError, StreamsPage};
use crate::token::sign_jws;

use super::ApiError;

/// Why no checkpoint was made. Nothing is half-written: the checkpoint and its leaves are
/// stored together, after signing.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signer(#[from] SignerError),
}

/// The most heads one checkpoint seals. A full export carries each checkpoint as one line
/// with every leaf and its inclusion proof (about 1 KB a leaf at this size: a stream name, a
/// hash and 10 proof hashes), so at most about 1 MB (993,276 bytes enveloped) however many streams moved: well under
/// an export page's [`EXPORT_PAGE_BYTES`]. More moved heads make more checkpoints.
pub const MAX_LEAVES_PER_CHECKPOINT: usize = 1024;

/// What a checkpoint run keeps of its function's time for the last checkpoint it starts
/// (one of [`MAX_LEAVES_PER_CHECKPOINT`] heads takes well under a second on DynamoDB) and
/// its metrics: it starts none past its deadline less this.
pub const CHECKPOINT_RUN_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Seals the heads that moved first (at most `limit` of them, see
/// [`ChainArchive::moved_heads`]) into a new checkpoint, signed by `signer` and linked to the
/// latest, then unmarks them. Returns `None` when nothing moved (no empty checkpoint is made).
/// Two runs racing for the same `seq` cannot both land: the loser gets
/// [`StoreError::Conflict`] and the next run seals what it missed. A crash after the
/// checkpoint landed and before the unmarking only has those heads sealed once more later.
pub async fn make_checkpoint(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    issuer: &str,
    now: Timestamp,
    limit: usize,
) -> Result<Option<Checkpoint>, CheckpointError> {
    // The latest first: a run that lands a checkpoint between the two reads makes this one's
    // `seq` taken (a conflict), never a second seal of the heads it sealed.
    let latest = archive.latest_checkpoint().await?;
    let moved = archive.moved_heads(latest.as_ref(), limit).await?;
    seal_heads(archive, signer, issuer, now, latest, moved.heads.into_iter().map(|m| m.head).collect()).await
}

/// Seals `heads` (as [`ChainArchive::moved_heads`] found them, after `latest` was read) into
/// the checkpoint after `latest`, then unmarks them: the step [`make_checkpoint`] and
/// [`checkpoint_run`] repeat.
pub async fn seal_heads(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    issuer: &str,
    now: Timestamp,
    latest: Option<Checkpoint>,
    heads: Vec<Leaf>,
) -> Result<Option<Checkpoint>, CheckpointError> {
    if heads.is_empty() {
        return Ok(None);
    }
    let tree = seal_leaves(heads.clone());
    let claims = CheckpointClaims {
        iss: issuer.to_owned(),
        seq: latest.as_ref().map_or(1, |c| c.claims.seq + 1),
        iat: now.unix(),
        prev: link_of(latest.as_ref().map(|c| c.jws.as_str())),
        root: tree.root,
        size: tree.leaves.len() as u64,
    };
    let jws = sign_jws(CHECKPOINT_TYPE, &claims, signer).await?;
    let checkpoint = Checkpoint { claims, jws };
    archive.append_checkpoint(&checkpoint, &tree.leaves).await?;
    archive.unmark_sealed(&heads).await?;
    Ok(Some(checkpoint))
}

/// What one checkpoint run did, and what it left: the figures of the checkpoint function's
/// metrics (a late or failed run shows in them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointRun {
    /// The checkpoints made, oldest first.
    pub made: Vec<Checkpoint>,
    /// Heads sealed by them.
    pub sealed: u64,
    /// Moved heads left for the next run (at least this many when `more_left`).
    pub left: u64,
    pub more_left: bool,
    /// When the oldest head left first moved (Unix seconds), if any is left.
    pub oldest_left: Option<i64>,
    /// When the newest checkpoint (made now or before) was signed, if any exists.
    pub latest_iat: Option<i64>,
}

/// Makes checkpoints of at most `limit` heads each, the heads that moved first first, until
/// every head that had moved when the last were read is sealed, or `until` passed (checked
/// before each checkpoint, so a run ends within `until` plus one checkpoint's time: the
/// caller keeps that much margin); the rest is left to the next run. The scheduled form (the `checkpoint` function); see [`CheckpointRun`].
pub async fn checkpoint_run(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    issuer: &str,
    clock: &dyn Clock,
    limit: usize,
    until: Option<std::time::Instant>,
) -> Result<CheckpointRun, CheckpointError> {
    let mut run = CheckpointRun::default();
    loop {
        let latest = archive.latest_checkpoint().await?;
        run.latest_iat = latest.as_ref().map(|c| c.claims.iat);
        let moved = archive.moved_heads(latest.as_ref(), limit).await?;
        if moved.heads.is_empty() || until.is_some_and(|u| std::time::Instant::now() >= u) {
            run.left = moved.heads.len() as u64;
            run.more_left = moved.more;
            run.oldest_left = moved.heads.iter().map(|m| m.moved_at).min();
            break;
        }
        let more = moved.more;
        let heads: Vec<Leaf> = moved.heads.into_iter().map(|m| m.head).collect();
        let Some(made) = seal_heads(archive, signer, issuer, clock.now(), latest, heads).await? else { break };
        run.sealed += made.claims.size;
        run.made.push(made);
        // Everything that had moved when the heads were read is sealed: the run ends here,
        // rather than reading every index partition again (on DynamoDB, 32 queries) to find
        // what moved since, which the next run seals, within the two periods promised.
        if !more {
            break;
        }
    }
    Ok(run)
}

/// What one export covers. It is sealed into the export's cursors (as the filter), so a
/// cursor opens only for the export it was made for: never for another user's, nor for
/// `GET /audit`'s listings (whose filters have another shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportScope {
    /// Every stream, the unattributed one included.
    All,
    /// One user's stream.
    User(UserId),
    /// The unattributed stream alone (refusals no user can be named for, operator acts).
    Unattributed,
}

#[derive(Serialize)]
struct ExportFilter<'a> {
    export: &'a ExportScope,
    /// How a full export lists its streams: `"paged"` since it lists them a page at a time in
    /// the store's order ([`ChainArchive::list_streams`]), so a cursor of a full export made
    /// before (which listed them sorted) is refused rather than resumed in another order.
    #[serde(skip_serializing_if = "Option::is_none")]
    streams: Option<&'static str>,
}

/// Where the next page of an export starts, and what the pages before it sent (sealed inside
/// its cursor, so a client can neither move it nor change the tally the receipt will sign).
/// `upto` is the newest checkpoint when the export began: only checkpoints up to it are
/// exported, so a checkpoint made while the export runs (which may seal events past those
/// already sent) never lands in it, and the concatenated pages verify as one export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ExportPosition {
    upto: u64,
    at: ExportAt,
    /// Streams with an event sent so far.
    streams: u64,
    /// Events sent so far.
    events: u64,
    /// The [`LineDigest`] of every line sent so far, hex.
    digest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExportAt {
    /// The events of `stream` with `seq > after`, then those of the streams after it.
    Events { stream: String, after: u64 },
    /// A full export between streams: the streams listed after `after` (from the first when
    /// `None`), see [`ChainArchive::list_streams`].
    Streams { after: Option<String> },
    /// The checkpoints with `seq > after` and `seq <= upto`.
    Checkpoints { after: u64 },
    /// Only the receipt is left.
    Receipt,
}

/// What an export sent so far, as the receipt will sign it.
struct Tally {
    streams: u64,
    events: u64,
    digest: LineDigest,
}

/// The most bytes of one export page, counted as the page would be JSON-escaped inside
/// Lambda's response envelope (a `"` or `\` counts 2, a control character 6): under Lambda's
/// 6 MB response limit with 2 MB to spare, whatever the events' free text holds.
pub const EXPORT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most store reads one export page makes, of events (each at most
/// [`EXPORT_READ_EVENTS`]), of a full export's streams (each at most [`EXPORT_READ_STREAMS`])
/// and then of checkpoints (each at most [`EXPORT_READ_CHECKPOINTS`]) together; a longer
/// export only has more pages.
pub const EXPORT_PAGE_READS: usize = 100;

/// How long an export page keeps starting reads: none starts after this, so a page ends
/// within this plus one read (a read of events is one store call, on AWS bounded by the
/// SDK's 5 s operation timeout; a read of checkpoints is one call per checkpoint, of the
/// user's leaves or of the checkpoint's, see `ChainArchive::checkpoints`; a listing of
/// streams one call), well inside API Gateway's 30 s integration timeout however
/// slow the store answers. On DynamoDB a read of 500 events (at most 1 MB) takes tens of
/// milliseconds, so the byte budget ends a page first; this bound is what holds when the
/// store is slow (throttled, retrying, or a test server that walks a whole table per query).
pub const EXPORT_PAGE_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Events asked for by one store read of an export (a DynamoDB query returns at most 1 MB,
/// so maybe fewer; only an empty answer ends a stream).
pub const EXPORT_READ_EVENTS: usize = 500;

/// Streams listed by one store read of a full export (on DynamoDB a Scan page of this many
/// chain heads, a few kilobytes): each needs a read of its events besides, so a page seldom
/// finishes more than [`EXPORT_PAGE_READS`] of them, and a page lists at most this many ahead.
pub const EXPORT_READ_STREAMS: usize = 100;

/// Checkpoints asked for by one store read of an export, each with its leaves (one for a
/// user's export; every stream that moved in its interval for a full one): a long life of
/// checkpoints (one an interval) is read this many at a time, from where the cursor stands,
/// never all at once.
pub const EXPORT_READ_CHECKPOINTS: usize = 100;

/// The bounds of one export page: [`EXPORT_PAGE_BYTES`], [`EXPORT_PAGE_READS`],
/// [`EXPORT_PAGE_TIME`], [`EXPORT_READ_EVENTS`], [`EXPORT_READ_STREAMS`] and
/// [`EXPORT_READ_CHECKPOINTS`] by default
/// (`Services::export_budget`); a test makes them small to force many pages out of a few
/// events and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportBudget {
    pub page_bytes: usize,
    /// Store reads of one page, of events and of checkpoints together.
    pub page_reads: usize,
    pub page_time: std::time::Duration,
    pub read_events: usize,
    pub read_streams: usize,
    pub read_checkpoints: usize,
}

impl Default for ExportBudget {
    fn default() -> Self {
        Self {
            page_bytes: EXPORT_PAGE_BYTES,
            page_reads: EXPORT_PAGE_READS,
            page_time: EXPORT_PAGE_TIME,
            read_events: EXPORT_READ_EVENTS,
            read_streams: EXPORT_READ_STREAMS,
            read_checkpoints: EXPORT_READ_CHECKPOINTS,
        }
    }
}

/// One page of `GET /audit/export`: whole JSON lines (each ending in `\n`), and the cursor
/// of the next page, `None` on the last. The pages' concatenation is the export
/// `support-access verify` reads: every stream's events oldest first, then the checkpoints, then the receipt.
#[derive(Debug, Clone, Default)]
pub struct ExportPage {
    pub lines: String,
    /// How many lines `lines` holds.
    pub count: usize,
    pub next_cursor: Option<String>,
}

/// The size `line` takes JSON-escaped in a Lambda response envelope, plus its newline
/// (escaped too): an upper bound, never less.
fn enveloped_len(line: &str) -> usize {
    2 + line
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..0x20 | 0x7f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

impl ExportPage {
    /// Appends `line` if the page has room for it within `budget` bytes (a page always takes
    /// its first line, so every page moves the export on); `false` when the page is full.
    /// The caller takes a line it appended into the receipt's digest.
    fn push(&mut self, line: &str, bytes: &mut usize, budget: usize) -> bool {
        let len = enveloped_len(line);
        if self.count > 0 && *bytes + len > budget {
            return false;
        }
        *bytes += len;
        self.lines.push_str(line);
        self.lines.push('\n');
        self.count += 1;
        true
    }
}

/// `GET /audit/export`: one page of the export of `scope`, from `cursor` (the start when
/// absent; a cursor made for another scope, edited or from another key is refused). Events
/// keep their own `type`; checkpoints are `{"type":"checkpoint","seq":…,"jws":…,"leaves":[…]}`,
/// with only the exported streams' leaves and their inclusion proofs, so a user's export
/// names nobody else; the last line is the receipt, `{"type":"receipt","jws":…}`
/// (`support_access_verify::receipt`), signed with the receipt key (never the checkpoint
/// key) over what the pages sent. A page holds at most [`EXPORT_PAGE_BYTES`], makes at most
/// [`EXPORT_PAGE_READS`] reads (of events, then of checkpoints, [`EXPORT_READ_CHECKPOINTS`]
/// at a time) and starts none after [`EXPORT_PAGE_TIME`] (`Services::export_budget`), so no
/// number of events (a flood of refusals) or of checkpoints (a long life) and no slow store
/// makes an export fail: it only has more pages. Every read moves the export on (events or
/// checkpoints sent, or a stream done), so a page that stops early still leaves the next one
/// less to do.
pub async fn export_page(
    services: &Services,
    scope: &ExportScope,
    cursor: Option<&str>,
) -> Result<ExportPage, ApiError> {
    let budget = services.export_budget;
    let deadline = tokio::time::Instant::now() + budget.page_time;
    let filter = ExportFilter { export: scope, streams: matches!(scope, ExportScope::All).then_some("paged") };
    let archive = services.chain_archive.as_ref();
    let invalid = || ApiError::InvalidRequest("cursor is not valid for this query".into());
    let position = match cursor {
        Some(cursor) => {
            let raw = services.cursor_key.key().await?.open(cursor, &filter)?;
            serde_json::from_str(&raw).map_err(|_| invalid())?
        }
        None => {
            let upto = archive.latest_checkpoint().await?.map_or(0, |c| c.claims.seq);
            let at = match scope {
                ExportScope::All => ExportAt::Streams { after: None },
                ExportScope::User(user) => ExportAt::Events { stream: user.as_str().to_owned(), after: 0 },
                ExportScope::Unattributed => ExportAt::Events { stream: UNATTRIBUTED_STREAM.to_owned(), after: 0 },
            };
            ExportPosition { upto, at, streams: 0, events: 0, digest: empty_digest().to_owned() }
        }
    };
    let ExportPosition { upto, at, streams, events, digest } = position;
    let tally = Tally { streams, events, digest: LineDigest::from_hex(&digest).ok_or_else(invalid)? };
    let mut fill = Fill { page: ExportPage::default(), bytes: 0, reads: 0, deadline, tally };
    let mut next = match at {
        at @ (ExportAt::Events { .. } | ExportAt::Streams { .. }) => {
            events_page(services, scope, &mut fill, at).await?
        }
        other => Some(other),
    };
    if let Some(ExportAt::Checkpoints { after }) = next {
        next = checkpoints_page(services, scope, &mut fill, after, upto).await?;
    }
    let Fill { mut page, mut bytes, tally, .. } = fill;
    if let Some(ExportAt::Receipt) = next {
        let claims = ReceiptClaims {
            iss: services.policy.issuer.clone(),
            iat: services.clock.now().unix(),
            stream: match scope {
                ExportScope::All => None,
                ExportScope::User(user) => Some(user.as_str().to_owned()),
                ExportScope::Unattributed => Some(UNATTRIBUTED_STREAM.to_owned()),
            },
            streams: tally.streams,
            events: tally.events,
            checkpoint: upto,
            digest: tally.digest.hex(),
        };
        let jws = sign_jws(RECEIPT_TYPE, &claims, services.receipt_signer.as_ref()).await?;
        let line = json!({"type": "receipt", "jws": jws}).to_string();
        if page.push(&line, &mut bytes, budget.page_bytes) {
            next = None;
        }
    }
    let next = next.map(|at| {
        let position =
            ExportPosition { upto, at, streams: tally.streams, events: tally.events, digest: tally.digest.hex() };
        serde_json::to_string(&position).expect("a position serializes")
    });
    page.next_cursor = services.cursor_key.seal_cursor(&filter, next).await?;
    Ok(page)
}

/// A page being filled: its lines and their enveloped bytes, the store reads it made, when
/// it must stop starting them, and the receipt's tally of what the export sent.
struct Fill {
    page: ExportPage,
    bytes: usize,
    reads: usize,
    deadline: tokio::time::Instant,
    tally: Tally,
}

impl Fill {
    /// Whether the page may start another read: the first always (so every page moves the
    /// export on), then until the budget's reads are made or the deadline passed.
    fn may_read(&self, budget: &ExportBudget) -> bool {
        self.reads == 0 || (self.reads < budget.page_reads && tokio::time::Instant::now() < self.deadline)
    }

    fn push(&mut self, line: &str, budget: &ExportBudget) -> bool {
        self.page.push(line, &mut self.bytes, budget.page_bytes)
    }
}

/// Fills the page with events from where `at` stands (a stream past a `seq`, or a full
/// export's listing of streams past a position), stream after stream of the scope, while it
/// may read and has room; where to go on from: still events (or the listing), or the
/// checkpoints' when every stream is done. A full export lists its streams
/// [`ExportBudget::read_streams`] at a time ([`ChainArchive::list_streams`], each listing one
/// read of the page's), from where the cursor stands: a page's work never grows with the
/// number of streams.
async fn events_page(
    services: &Services,
    scope: &ExportScope,
    fill: &mut Fill,
    mut at: ExportAt,
) -> Result<Option<ExportAt>, ApiError> {
    let budget = services.export_budget;
    let archive = services.chain_archive.as_ref();
    // The streams this page listed and has not started yet, and where the listing goes on
    // from after them (`None` until the page lists; `Some(None)` once every stream is listed).
    let mut listed: VecDeque<String> = VecDeque::new();
    let mut listing: Option<Option<String>> = None;
    loop {
        if !fill.may_read(&budget) {
            return Ok(Some(at));
        }
        match at {
            ExportAt::Streams { after } => {
                fill.reads += 1;
                let StreamsPage { streams, next } = archive.list_streams(after.as_deref(), budget.read_streams).await?;
                listed = streams.into();
                at = match (listed.pop_front(), next.clone()) {
                    (Some(first), _) => ExportAt::Events { stream: first, after: 0 },
                    (None, Some(next)) => ExportAt::Streams { after: Some(next) },
                    (None, None) => return Ok(Some(ExportAt::Checkpoints { after: 0 })),
                };
                listing = Some(next);
            }
            ExportAt::Events { stream, mut after } => {
                fill.reads += 1;
                let events = archive.stream_events(&stream, after, budget.read_events).await?;
                if events.is_empty() {
                    // This stream is done: on to the next one of a full export, else the checkpoints.
                    at = match (scope, listed.pop_front(), &listing) {
                        (ExportScope::All, Some(next), _) => ExportAt::Events { stream: next, after: 0 },
                        (ExportScope::All, None, None) => ExportAt::Streams { after: Some(stream) },
                        (ExportScope::All, None, Some(Some(next))) => ExportAt::Streams { after: Some(next.clone()) },
                        _ => return Ok(Some(ExportAt::Checkpoints { after: 0 })),
                    };
                    continue;
                }
                for event in events {
                    let line = serde_json::to_string(&event).expect("an audit event serializes");
                    if !fill.push(&line, &budget) {
                        return Ok(Some(ExportAt::Events { stream, after }));
                    }
                    fill.tally.digest.push_event(&event.hash);
                    if after == 0 {
                        fill.tally.streams += 1;
                    }
                    fill.tally.events += 1;
                    after = event.seq;
                }
                at = ExportAt::Events { stream, after };
            }
            other => return Ok(Some(other)),
        }
    }
}

/// Fills the page with the checkpoints past `after` (up to `upto`) that seal the scope's
/// streams, read [`ExportBudget::read_checkpoints`] at a time while the page may read and
/// has room; where to go on from: still checkpoints, or the receipt when they are done.
async fn checkpoints_page(
    services: &Services,
    scope: &ExportScope,
    fill: &mut Fill,
    mut after: u64,
    upto: u64,
) -> Result<Option<ExportAt>, ApiError> {
    let budget = services.export_budget;
    let stream = match scope {
        ExportScope::All => None,
        ExportScope::User(user) => Some(user.as_str()),
        ExportScope::Unattributed => Some(UNATTRIBUTED_STREAM),
    };
    while after < upto {
        if !fill.may_read(&budget) {
            return Ok(Some(ExportAt::Checkpoints { after }));
        }
        fill.reads += 1;
        let checkpoints = services.chain_archive.checkpoints(stream, after, budget.read_checkpoints).await?;
        if checkpoints.is_empty() {
            break;
        }
        for (checkpoint, leaves) in checkpoints {
            let seq = checkpoint.claims.seq;
            if seq > upto {
                return Ok(Some(ExportAt::Receipt));
            }
            let value = json!({"type": "checkpoint", "seq": seq, "jws": checkpoint.jws, "leaves": leaves});
            if !fill.push(&value.to_string(), &budget) {
                return Ok(Some(ExportAt::Checkpoints { after }));
            }
            fill.tally.digest.push_line(&value);
            after = seq;
        }
    }
    Ok(Some(ExportAt::Receipt))
}

/// The public keys that verify the checkpoints of `archive`: those of `signer` (which signs
/// new ones), and of `former` (keys that may have signed older ones, such as local-api's token
/// key before checkpoints had a key of their own) only those that signed a stored checkpoint,
/// so an export made before keeps verifying while no unused token key joins the set.
pub async fn checkpoint_keys(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    former: &JwkSet,
) -> Result<JwkSet, CheckpointError> {
    let mut keys = signer.public_keys().await?;
    let (mut signed, mut after) = (HashSet::new(), 0);
    loop {
        let read = archive.checkpoints(None, after, EXPORT_READ_CHECKPOINTS).await?;
        let Some((last, _)) = read.last() else { break };
        after = last.claims.seq;
        signed.extend(read.iter().filter_map(|(c, _)| jsonwebtoken::decode_header(&c.jws).ok()?.kid));
    }
    for jwk in &former.keys {
        let kid = jwk.common.key_id.as_deref().unwrap_or_default();
        if signed.contains(kid) && !keys.keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
            keys.keys.push(jwk.clone());
        }
    }
    Ok(keys)
}

/// Seals the heads that moved first now, at most [`MAX_LEAVES_PER_CHECKPOINT`], into one
/// checkpoint: the on-demand form (`local-api checkpoint`), with the ports' own checkpoint
/// signer, issuer and clock. `None` when nothing moved.
pub async fn checkpoint_now(services: &Services) -> Result<Option<Checkpoint>, CheckpointError> {
    make_checkpoint(
        services.chain_archive.as_ref(),
        services.checkpoint_signer.as_ref(),
        &services.policy.issuer,
        services.clock.now(),
        MAX_LEAVES_PER_CHECKPOINT,
    )
    .await
}

/// Seals every moved head, [`MAX_LEAVES_PER_CHECKPOINT`] a checkpoint, as [`checkpoint_run`]
/// does, with the ports' own checkpoint signer, issuer and clock.
pub async fn checkpoint_all(
    services: &Services,
    until: Option<std::time::Instant>,
) -> Result<CheckpointRun, CheckpointError> {
    checkpoint_run(
        services.chain_archive.as_ref(),
        services.checkpoint_signer.as_ref(),
        &services.policy.issuer,
        services.clock.as_ref(),
        MAX_LEAVES_PER_CHECKPOINT,
        until,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound on leaves keeps the largest checkpoint line of a full export (every leaf a
    /// stream name of the longest an id may be, each `"` counted twice as the page does) under
    /// a third of a page: a checkpoint never makes a page over its budget.
    #[test]
    fn the_largest_checkpoint_line_fits_well_inside_a_page() {
        let heads = (0..MAX_LEAVES_PER_CHECKPOINT)
            .map(|i| Leaf { stream: format!("{i:0>128}"), seq: u64::MAX, hash: "f".repeat(64) })
            .collect();
        let tree = seal_leaves(heads);
        let jws = "x".repeat(1024);
        let line = json!({"type": "checkpoint", "seq": u64::MAX, "jws": jws, "leaves": tree.leaves}).to_string();
        let size = enveloped_len(&line);
        assert!(size < EXPORT_PAGE_BYTES / 3, "{size} bytes");
        assert!(size > 900_000, "the estimate in MAX_LEAVES_PER_CHECKPOINT's comment: {size}");
    }
}
