//! Sealing the audit log: a signed checkpoint over the chain heads that moved since the last
//! one (run on a schedule by the `checkpoint` Lambda, on a timer and on demand by local-api),
//! and the export that carries chains and checkpoints for `support-access verify`. The
//! format is `support_access_verify::checkpoint`'s.

use std::collections::HashSet;

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use support_access_verify::chain::UNATTRIBUTED_STREAM;
use support_access_verify::checkpoint::{CHECKPOINT_TYPE, CheckpointClaims, link_of, seal_leaves};

use super::Services;
use crate::domain::{Timestamp, UserId};
use crate::ports::Signer;
use crate::ports::{ChainArchive, Checkpoint, SignerError, StoreError};
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

/// Seals every chain head that moved since the latest checkpoint into a new one, signed by
/// `signer` and linked to the latest. Returns `None` when nothing moved (no empty checkpoint
/// is made). Two runs racing for the same `seq` cannot both land: the loser gets
/// [`StoreError::Conflict`] and the next run seals what it missed.
pub async fn make_checkpoint(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    issuer: &str,
    now: Timestamp,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let latest = archive.latest_checkpoint().await?;
    let heads = archive.unsealed_heads(latest.as_ref()).await?;
    if heads.is_empty() {
        return Ok(None);
    }
    let tree = seal_leaves(heads);
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
    Ok(Some(checkpoint))
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
}

/// Where the next page of an export starts (sealed inside its cursor). `upto` is the newest
/// checkpoint when the export began: only checkpoints up to it are exported, so a checkpoint
/// made while the export runs (which may seal events past those already sent) never lands
/// in it, and the concatenated pages verify as one export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ExportPosition {
    /// The events of `stream` with `seq > after`, then those of the streams after it.
    Events { stream: String, after: u64, upto: u64 },
    /// The checkpoints with `seq > after` and `seq <= upto`.
    Checkpoints { after: u64, upto: u64 },
}

/// The most bytes of one export page, counted as the page would be JSON-escaped inside
/// Lambda's response envelope (a `"` or `\` counts 2, a control character 6): under Lambda's
/// 6 MB response limit with 2 MB to spare, whatever the events' free text holds.
pub const EXPORT_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most store reads of events one export page makes (each at most
/// [`EXPORT_READ_EVENTS`] events); a longer export only has more pages.
pub const EXPORT_PAGE_READS: usize = 100;

/// How long an export page keeps starting reads of events: none starts after this, so a
/// page ends within this plus one read (each read is one store call, on AWS bounded by the
/// SDK's 5 s operation timeout), well inside API Gateway's 30 s integration timeout however
/// slow the store answers. On DynamoDB a read of 500 events (at most 1 MB) takes tens of
/// milliseconds, so the byte budget ends a page first; this bound is what holds when the
/// store is slow (throttled, retrying, or a test server that walks a whole table per query).
pub const EXPORT_PAGE_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// Events asked for by one store read of an export (a DynamoDB query returns at most 1 MB,
/// so maybe fewer; only an empty answer ends a stream).
pub const EXPORT_READ_EVENTS: usize = 500;

/// One page of `GET /audit/export`: whole JSON lines (each ending in `\n`), and the cursor
/// of the next page, `None` on the last. The pages' concatenation is the export
/// `support-access verify` reads: every stream's events oldest first, then the checkpoints.
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
    /// Appends `line` if the page has room for it (a page always takes its first line, so
    /// every page moves the export on); `false` when it is full.
    fn push(&mut self, line: &str, bytes: &mut usize) -> bool {
        let len = enveloped_len(line);
        if self.count > 0 && *bytes + len > EXPORT_PAGE_BYTES {
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
/// names nobody else. A page holds at most [`EXPORT_PAGE_BYTES`], makes at most
/// [`EXPORT_PAGE_READS`] reads of events and starts none after [`EXPORT_PAGE_TIME`], so no
/// number of events (a flood of refusals) and no slow store makes an export fail: it only
/// has more pages. Every read moves the export on (events sent, or a stream done), so a page
/// that stops early still leaves the next one less to do.
pub async fn export_page(
    services: &Services,
    scope: &ExportScope,
    cursor: Option<&str>,
) -> Result<ExportPage, ApiError> {
    let deadline = tokio::time::Instant::now() + EXPORT_PAGE_TIME;
    let filter = ExportFilter { export: scope };
    let archive = services.chain_archive.as_ref();
    let position = match cursor {
        Some(cursor) => {
            let raw = services.cursor_key.open(cursor, &filter)?;
            serde_json::from_str(&raw)
                .map_err(|_| ApiError::InvalidRequest("cursor is not valid for this query".into()))?
        }
        None => {
            let upto = archive.latest_checkpoint().await?.map_or(0, |c| c.claims.seq);
            match scope {
                ExportScope::All => match archive.streams().await?.into_iter().min() {
                    Some(stream) => ExportPosition::Events { stream, after: 0, upto },
                    None => ExportPosition::Checkpoints { after: 0, upto },
                },
                ExportScope::User(user) => ExportPosition::Events { stream: user.as_str().to_owned(), after: 0, upto },
                ExportScope::Unattributed => {
                    ExportPosition::Events { stream: UNATTRIBUTED_STREAM.to_owned(), after: 0, upto }
                }
            }
        }
    };
    let mut page = ExportPage::default();
    let mut bytes = 0;
    let next = match position {
        ExportPosition::Events { stream, after, upto } => {
            events_page(services, scope, &mut page, &mut bytes, deadline, stream, after, upto).await?
        }
        checkpoints => Some(checkpoints),
    };
    let out_of_time = page.count > 0 && tokio::time::Instant::now() >= deadline;
    let next = match next {
        Some(ExportPosition::Checkpoints { after, upto }) if !out_of_time => {
            checkpoints_page(services, scope, &mut page, &mut bytes, after, upto).await?
        }
        other => other,
    };
    page.next_cursor =
        next.map(|p| services.cursor_key.seal(&filter, serde_json::to_string(&p).expect("a position serializes")));
    Ok(page)
}

/// Fills `page` with events from `stream` (past `after`), then the streams after it in the
/// scope, until the page is full, has made [`EXPORT_PAGE_READS`] reads or `deadline` passed;
/// the position to go on from, or the checkpoints' when every stream is done.
#[allow(clippy::too_many_arguments)]
async fn events_page(
    services: &Services,
    scope: &ExportScope,
    page: &mut ExportPage,
    bytes: &mut usize,
    deadline: tokio::time::Instant,
    mut stream: String,
    mut after: u64,
    upto: u64,
) -> Result<Option<ExportPosition>, ApiError> {
    let archive = services.chain_archive.as_ref();
    // A full export's streams, listed once per page (not once per stream it finishes).
    let mut streams: Option<Vec<String>> = None;
    for read in 0..EXPORT_PAGE_READS {
        if read > 0 && tokio::time::Instant::now() >= deadline {
            break;
        }
        let events = archive.stream_events(&stream, after, EXPORT_READ_EVENTS).await?;
        if events.is_empty() {
            // This stream is done: on to the next one of a full export, else the checkpoints.
            let next = match scope {
                ExportScope::All => {
                    if streams.is_none() {
                        streams = Some(archive.streams().await?);
                    }
                    streams.iter().flatten().filter(|s| **s > stream).min().cloned()
                }
                _ => None,
            };
            match next {
                Some(next) => (stream, after) = (next, 0),
                None => return Ok(Some(ExportPosition::Checkpoints { after: 0, upto })),
            }
            continue;
        }
        for event in events {
            let line = serde_json::to_string(&event).expect("an audit event serializes");
            if !page.push(&line, bytes) {
                return Ok(Some(ExportPosition::Events { stream, after, upto }));
            }
            after = event.seq;
        }
    }
    Ok(Some(ExportPosition::Events { stream, after, upto }))
}

/// Fills `page` with the checkpoints past `after` (up to `upto`) that seal the scope's
/// streams; the position to go on from, `None` when the export is complete.
async fn checkpoints_page(
    services: &Services,
    scope: &ExportScope,
    page: &mut ExportPage,
    bytes: &mut usize,
    after: u64,
    upto: u64,
) -> Result<Option<ExportPosition>, ApiError> {
    let stream = match scope {
        ExportScope::All => None,
        ExportScope::User(user) => Some(user.as_str()),
        ExportScope::Unattributed => Some(UNATTRIBUTED_STREAM),
    };
    let checkpoints = services.chain_archive.checkpoints(stream).await?;
    let mut last = after;
    for (checkpoint, leaves) in checkpoints {
        let seq = checkpoint.claims.seq;
        if seq <= after || seq > upto {
            continue;
        }
        let line = json!({"type": "checkpoint", "seq": seq, "jws": checkpoint.jws, "leaves": leaves}).to_string();
        if !page.push(&line, bytes) {
            return Ok(Some(ExportPosition::Checkpoints { after: last, upto }));
        }
        last = seq;
    }
    Ok(None)
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
    let signed: HashSet<String> = archive
        .checkpoints(None)
        .await?
        .iter()
        .filter_map(|(c, _)| jsonwebtoken::decode_header(&c.jws).ok()?.kid)
        .collect();
    for jwk in &former.keys {
        let kid = jwk.common.key_id.as_deref().unwrap_or_default();
        if signed.contains(kid) && !keys.keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
            keys.keys.push(jwk.clone());
        }
    }
    Ok(keys)
}

/// Seals pending heads now: the on-demand form (`local-api checkpoint`), with the ports'
/// own checkpoint signer, issuer and clock.
pub async fn checkpoint_now(services: &Services) -> Result<Option<Checkpoint>, CheckpointError> {
    make_checkpoint(
        services.chain_archive.as_ref(),
        services.checkpoint_signer.as_ref(),
        &services.policy.issuer,
        services.clock.now(),
    )
    .await
}
