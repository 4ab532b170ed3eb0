//! Offline verification of an audit-log export (`GET /audit/export`, JSON Lines): anyone
//! holding the file and the service's JWK Set can check that every chain is intact and
//! sealed by signed checkpoints, without trusting the service or its database. The checks
//! themselves are `support_access_verify::{chain, checkpoint}`.
//!
//! What passes: every stream's events hash and link without a gap; every checkpoint line is
//! signed by a key of the JWK Set with `typ` `support-access-checkpoint+jwt`, links to the
//! checkpoint before it wherever both are in the export, and proves each of its leaves in its
//! Merkle tree; each leaf names an exported stream and matches that stream's event at the
//! leaf's `seq` (so a truncated tail, or a chain rewritten with fresh hashes, fails); and
//! every stream's head is sealed by some checkpoint, unless the caller accepts an unsealed
//! tail (events newer than the latest checkpoint, which nothing signed yet).

pub mod api;
pub mod exit;

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value;
use support_access_verify::KeyRing;
use support_access_verify::chain::{ChainError, GENESIS, event_hash, stream_of, verify_chains};
use support_access_verify::checkpoint::{CheckpointError, ProvenLeaf, link_of, verify_checkpoint, verify_inclusion};

/// How strict [`verify_export`] is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// Accept events after the last checkpoint of their stream (reported, not failed).
    pub allow_unsealed: bool,
}

/// An intact export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: usize,
    /// stream → (last seq, its hash)
    pub heads: BTreeMap<String, (u64, String)>,
    /// stream → the last seq a checkpoint sealed (absent: none did).
    pub sealed: BTreeMap<String, u64>,
    /// The checkpoints verified, by seq.
    pub checkpoints: Vec<u64>,
}

impl Report {
    /// The streams with events past their last sealed one: (stream, first unsealed seq, head seq).
    pub fn unsealed(&self) -> Vec<(String, u64, u64)> {
        self.heads
            .iter()
            .filter_map(|(stream, (head, _))| {
                let sealed = self.sealed.get(stream).copied().unwrap_or(0);
                (sealed < *head).then(|| (stream.clone(), sealed + 1, *head))
            })
            .collect()
    }
}

/// The first thing wrong with an export, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    #[error("line {line}: not JSON: {problem}")]
    NotJson { line: usize, problem: String },
    #[error("line {line}: {error}")]
    Broken { line: usize, event_id: Option<String>, error: ChainError },
    #[error("line {line}: checkpoint {seq}: {problem}")]
    Checkpoint { line: usize, seq: u64, problem: String },
    #[error(
        "{stream}: events #{from}..#{to} are after the last checkpoint that seals this stream; export again after the next checkpoint, or accept an unsealed tail"
    )]
    Unsealed { stream: String, from: u64, to: u64 },
    #[error("the export holds no events")]
    Empty,
}

/// A checkpoint line as exported.
#[derive(Deserialize)]
struct CheckpointLine {
    seq: u64,
    jws: String,
    #[serde(default)]
    leaves: Vec<ProvenLeaf>,
}

/// Verifies the export `text` (JSON Lines: events, each stream oldest first, and checkpoint
/// lines) against the JWK Set `keys`.
pub fn verify_export(text: &str, keys: &KeyRing, options: Options) -> Result<Report, VerifyFailure> {
    let mut events = Vec::new();
    let mut event_lines = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| VerifyFailure::NotJson { line, problem: e.to_string() })?;
        if value.get("type").and_then(Value::as_str) == Some("checkpoint") {
            let seq = value.get("seq").and_then(Value::as_u64).unwrap_or(0);
            let parsed: CheckpointLine = serde_json::from_value(value).map_err(|e| VerifyFailure::Checkpoint {
                line,
                seq,
                problem: format!("malformed line: {e}"),
            })?;
            checkpoints.push((line, parsed));
        } else {
            events.push(value);
            event_lines.push(line);
        }
    }
    if events.is_empty() {
        return Err(VerifyFailure::Empty);
    }
    let heads = verify_chains(&events).map_err(|error| {
        let index = match &error {
            ChainError::Malformed { index, .. }
            | ChainError::Hash { index, .. }
            | ChainError::Sequence { index, .. }
            | ChainError::Link { index, .. } => *index,
        };
        let event_id = events[index].get("event_id").and_then(Value::as_str).map(str::to_owned);
        VerifyFailure::Broken { line: event_lines[index], event_id, error }
    })?;
    // The chains hold, so each (stream, seq) names exactly one event: its hash, for the leaves.
    let hash_at: HashMap<(String, u64), String> =
        events.iter().filter_map(|e| Some(((stream_of(e)?, e.get("seq")?.as_u64()?), event_hash(e)))).collect();

    let mut sealed: BTreeMap<String, u64> = BTreeMap::new();
    // seq → (its JWS, its signed `prev`), for the links between checkpoints in either order.
    let mut verified: BTreeMap<u64, (String, String)> = BTreeMap::new();
    for (line, cp) in &checkpoints {
        let fail = |problem: String| VerifyFailure::Checkpoint { line: *line, seq: cp.seq, problem };
        let claims = verify_checkpoint(&cp.jws, keys).map_err(|e| fail(e.to_string()))?;
        if claims.seq != cp.seq {
            return Err(fail(format!("the line says seq {} but the signed claims say {}", cp.seq, claims.seq)));
        }
        if verified.contains_key(&claims.seq) {
            return Err(fail("appears twice".into()));
        }
        if claims.seq == 1 && claims.prev != GENESIS {
            return Err(fail("the first checkpoint must link to the genesis".into()));
        }
        if let Some((before, _)) = claims.seq.checked_sub(1).and_then(|s| verified.get(&s))
            && claims.prev != link_of(Some(before))
        {
            return Err(fail(format!("does not link to checkpoint {} (a checkpoint was replaced)", claims.seq - 1)));
        }
        if let Some((_, after_prev)) = verified.get(&(claims.seq + 1))
            && *after_prev != link_of(Some(&cp.jws))
        {
            return Err(fail(format!("checkpoint {} does not link to it (a checkpoint was replaced)", claims.seq + 1)));
        }
        for leaf in &cp.leaves {
            verify_inclusion(&claims, leaf).map_err(|e: CheckpointError| fail(e.to_string()))?;
            let (stream, seq) = (&leaf.leaf.stream, leaf.leaf.seq);
            let Some((head, _)) = heads.get(stream) else {
                return Err(fail(format!("seals {stream} #{seq}, but the export holds no event of {stream}")));
            };
            if seq > *head {
                return Err(fail(format!(
                    "seals {stream} #{seq}, but the export's chain of {stream} ends at #{head} (events were cut off)"
                )));
            }
            if hash_at.get(&(stream.clone(), seq)) != Some(&leaf.leaf.hash) {
                return Err(fail(format!(
                    "sealed {stream} #{seq} with another hash than the export's event (the chain was rewritten)"
                )));
            }
            let s = sealed.entry(stream.clone()).or_default();
            *s = (*s).max(seq);
        }
        verified.insert(claims.seq, (cp.jws.clone(), claims.prev.clone()));
    }

    let report = Report { events: events.len(), heads, sealed, checkpoints: verified.into_keys().collect() };
    if !options.allow_unsealed
        && let Some((stream, from, to)) = report.unsealed().into_iter().next()
    {
        return Err(VerifyFailure::Unsealed { stream, from, to });
    }
    Ok(report)
}
