//! Offline verification of an audit-log export (`GET /audit/export`, JSON Lines): anyone
//! holding the file and the service's JWK Set can check that every chain is intact and
//! sealed by signed checkpoints, without trusting the service or its database. The checks
//! themselves are `support_access_verify::{chain, checkpoint}`.
//!
//! What passes: every stream's events hash and link without a gap; every checkpoint line is
//! signed by a key of the JWK Set with `typ` `support-access-checkpoint+jwt`, links to the
//! checkpoint before it wherever both are in the export, and proves each of its leaves in its
//! Merkle tree; each leaf names an exported stream and matches that stream's event at the
//! leaf's `seq` (so a truncated tail, or a chain rewritten with fresh hashes, fails); the
//! export ends with its receipt, signed by a receipt key (never a checkpoint key, nor a
//! checkpoint by a receipt key), and matches it (the stream or
//! streams, the number of events, the newest checkpoint, the digest of every line before it:
//! see `support_access_verify::receipt`), and an export of every stream holds every
//! checkpoint up to the receipt's newest, each with as many leaves as it signs; and every
//! stream's head is sealed by some checkpoint, unless the caller accepts an unsealed tail
//! (events newer than the latest checkpoint, which nothing signed yet).

pub mod api;
pub mod exit;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufRead, Cursor, Seek, SeekFrom};

use serde::Deserialize;
use serde_json::Value;
use support_access_verify::ExportKeys;
use support_access_verify::chain::{ChainError, Chains, GENESIS};
use support_access_verify::checkpoint::{
    CheckpointError, Leaf, ProvenLeaf, link_of, verify_checkpoint, verify_inclusion,
};
use support_access_verify::receipt::{LineDigest, ReceiptClaims, verify_receipt};

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
    /// The export's receipt, which it matches.
    pub receipt: ReceiptClaims,
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
    #[error(
        "the export ends without a receipt: it was cut short, or made before exports carried one (export it again)"
    )]
    NoReceipt,
    #[error("line {line}: receipt: {problem}")]
    Receipt { line: usize, problem: String },
}

/// A receipt line as exported.
#[derive(Deserialize)]
struct ReceiptLine {
    jws: String,
}

/// A checkpoint line as exported.
#[derive(Deserialize)]
struct CheckpointLine {
    seq: u64,
    jws: String,
    #[serde(default)]
    leaves: Vec<ProvenLeaf>,
}

/// The `type` of the lines that are not events. Pass one (see [`verify_stream`]) parses only
/// the lines that may be one of these: those holding a kind's name, or a `\u` escape (which
/// could spell it).
const LINE_KINDS: [&str; 2] = ["checkpoint", "receipt"];

/// Verifies the export `text` (JSON Lines: events, each stream oldest first, checkpoint
/// lines, the receipt) against `keys`: its checkpoints against the checkpoint keys alone, its
/// receipt against the receipt keys alone.
pub fn verify_export(text: &str, keys: &ExportKeys, options: Options) -> Result<Report, VerifyFailure> {
    verify_stream(&mut Cursor::new(text.as_bytes()), keys, options).expect("a string is UTF-8 and reads in full")
}

/// [`verify_export`] of an export read line by line from `input`, in memory that grows with
/// the streams and the checkpoints' leaves, never with the events. The outer error is the
/// input's: a read that failed, or a line that is not UTF-8 (what the caller reports as an
/// unreadable file, not as a verdict).
///
/// Two passes over `input`, hence `Seek`. A leaf must match "its stream's event at the leaf's
/// `seq`", and the checkpoint lines come after the events: one pass would have to keep the
/// hash of every event in case a leaf names it (32 bytes each at best, 32 MB per million
/// events and growing without bound). Pass one reads only the checkpoint lines (checked
/// whole: signature, links, inclusion) and keeps their leaves; pass two checks the chains
/// (one head per stream) and notes the hash of each event a leaf names. Pass one costs a
/// byte scan of the event lines, next to pass two's parse and SHA-256 of each: BENCHMARKS.md
/// ("Verifying a large export") measures both. Input that cannot seek (a pipe) is spooled to
/// a temporary file by the CLI first.
///
/// Which failure is named when there are several: the first line in the file that is not
/// JSON, is a malformed checkpoint line or breaks a chain; then, when every chain holds, the
/// first checkpoint (in file order) whose signature, links, proofs or leaves do not hold;
/// then the receipt (missing, not the last line, or not matching); then an unsealed tail.
pub fn verify_stream<R: BufRead + Seek>(
    input: &mut R,
    keys: &ExportKeys,
    options: Options,
) -> io::Result<Result<Report, VerifyFailure>> {
    let start = input.stream_position()?;
    let mut seals = Seals::read(input, keys)?;
    input.seek(SeekFrom::Start(start))?;

    let mut chains = Chains::default();
    let mut lines = Lines::default();
    // The receipt's digest of the lines before it (see `support_access_verify::receipt`).
    let receipt_line = seals.receipt.as_ref().map(|r| r.line);
    let mut digest = LineDigest::default();
    while let Some((line, raw)) = lines.next_str(input)? {
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = match serde_json::from_str(raw) {
            Ok(value) => value,
            Err(e) => return Ok(Err(VerifyFailure::NotJson { line, problem: e.to_string() })),
        };
        if let Some(kind) = kind_of(&value) {
            if let Some(malformed) = seals.malformed.take_if(|m| m.line() == Some(line)) {
                return Ok(Err(malformed));
            }
            if Some(line) == receipt_line {
                if let Some(receipt) = seals.receipt.as_mut() {
                    receipt.digest = digest;
                }
            } else if kind != "receipt" {
                digest.push_line(&value);
            }
            continue;
        }
        let linked = match chains.push(&value) {
            Ok(linked) => linked,
            Err(error) => {
                let event_id = value.get("event_id").and_then(Value::as_str).map(str::to_owned);
                return Ok(Err(VerifyFailure::Broken { line, event_id, error }));
            }
        };
        if let Some(slot) = seals.named.get_mut(linked.stream).and_then(|at| at.get_mut(&linked.seq)) {
            *slot = Some(linked.hash.to_owned());
        }
        digest.push_event(linked.hash);
    }
    if chains.is_empty() {
        return Ok(Err(VerifyFailure::Empty));
    }
    let events = chains.len();
    let heads = chains.into_heads();
    let receipt = seals.receipt.take();
    let checked = seals.check_leaves(&heads).and_then(|(sealed, checkpoints)| {
        let receipt = receipt.ok_or(VerifyFailure::NoReceipt)?.check(events, &heads, &checkpoints, keys)?;
        let checkpoints = checkpoints.into_keys().collect();
        Ok(Report { events, heads, sealed, checkpoints, receipt })
    });
    Ok(checked.and_then(|report| match report.unsealed().into_iter().next() {
        Some((stream, from, to)) if !options.allow_unsealed => Err(VerifyFailure::Unsealed { stream, from, to }),
        _ => Ok(report),
    }))
}

/// The receipt line as pass one found it.
struct FoundReceipt {
    line: usize,
    /// The receipt line, or why it is not one.
    jws: Result<String, String>,
    /// The digest of every line before it (filled by pass two).
    digest: LineDigest,
    /// The first non-blank line after it, if any.
    after: Option<usize>,
}

impl FoundReceipt {
    /// The receipt against what the export holds: the checks that name a cause first, the
    /// digest (which catches any other difference, but cannot say which) last.
    fn check(
        self,
        events: usize,
        heads: &BTreeMap<String, (u64, String)>,
        checkpoints: &BTreeMap<u64, VerifiedCheckpoint>,
        keys: &ExportKeys,
    ) -> Result<ReceiptClaims, VerifyFailure> {
        let fail = |problem: String| VerifyFailure::Receipt { line: self.line, problem };
        let jws = self.jws.clone().map_err(fail)?;
        let claims = verify_receipt(&jws, &keys.receipts).map_err(|e| {
            fail(match keys.checkpoints.is_named_by(&jws) {
                true => "it is signed with a checkpoint key, which may sign checkpoints only (a forged receipt)".into(),
                false => format!("its signature does not hold ({e})"),
            })
        })?;
        if let Some(after) = self.after {
            return Err(fail(format!("line {after} comes after it; the receipt is an export's last line")));
        }
        if let Some(stream) = &claims.stream
            && let Some(other) = heads.keys().find(|s| *s != stream)
        {
            return Err(fail(format!("it covers the stream {stream} alone, the export holds events of {other}")));
        }
        if claims.streams != heads.len() as u64 {
            return Err(fail(format!(
                "it covers {} streams, the export holds {} (a stream dropped or added)",
                claims.streams,
                heads.len()
            )));
        }
        if claims.events != events as u64 {
            return Err(fail(format!(
                "it covers {} events, the export holds {events} (events cut off or added)",
                claims.events
            )));
        }
        if let Some((newer, _)) = checkpoints.range(claims.checkpoint + 1..).next() {
            return Err(fail(format!(
                "checkpoint {newer} is newer than the newest the export began with, {}",
                claims.checkpoint
            )));
        }
        if claims.stream.is_none() {
            // An export of everything holds every checkpoint whole: a dropped checkpoint, or
            // one whose leaves were emptied (in the file or in the store), is named here.
            if let Some(missing) = (1..=claims.checkpoint).find(|seq| !checkpoints.contains_key(seq)) {
                return Err(fail(format!(
                    "checkpoint {missing} is missing: an export of every stream holds checkpoints 1 to {} (a checkpoint was dropped)",
                    claims.checkpoint
                )));
            }
            if let Some((seq, cp)) = checkpoints.iter().find(|(_, cp)| cp.leaves != cp.size) {
                return Err(VerifyFailure::Checkpoint {
                    line: cp.line,
                    seq: *seq,
                    problem: format!(
                        "holds {} of the {} leaves it signs (its leaves were emptied, or deleted from the store)",
                        cp.leaves, cp.size
                    ),
                });
            }
        }
        if LineDigest::from_hex(&claims.digest) != Some(self.digest) {
            return Err(fail(
                "the lines before it are not the ones the service sent (a line edited, added, dropped, or a checkpoint's leaves emptied)"
                    .into(),
            ));
        }
        Ok(claims)
    }
}

/// The non-event kind of a line (`"checkpoint"`), or `None` for an event.
fn kind_of(value: &Value) -> Option<&'static str> {
    let kind = value.get("type").and_then(Value::as_str)?;
    LINE_KINDS.into_iter().find(|k| *k == kind)
}

/// Reads `input` one line at a time into one reused buffer, numbering lines from 1 as
/// `str::lines` does (a `\r` before the `\n` is not part of the line).
#[derive(Default)]
struct Lines {
    buffer: Vec<u8>,
    number: usize,
}

impl Lines {
    fn next_bytes(&mut self, input: &mut impl BufRead) -> io::Result<Option<(usize, &[u8])>> {
        self.buffer.clear();
        if input.read_until(b'\n', &mut self.buffer)? == 0 {
            return Ok(None);
        }
        self.number += 1;
        let mut line = self.buffer.as_slice();
        line = line.strip_suffix(b"\n").unwrap_or(line);
        line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some((self.number, line)))
    }

    fn next_str(&mut self, input: &mut impl BufRead) -> io::Result<Option<(usize, &str)>> {
        match self.next_bytes(input)? {
            None => Ok(None),
            Some((number, bytes)) => std::str::from_utf8(bytes)
                .map(|s| Some((number, s)))
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("line {number} is not valid UTF-8"))),
        }
    }
}

/// A leaf of a checkpoint that verified, waiting for pass two's chains.
struct PendingLeaf {
    line: usize,
    checkpoint: u64,
    stream: String,
    seq: u64,
    hash: String,
}

/// What pass one learned from the checkpoint lines.
#[derive(Default)]
struct Seals {
    /// The leaves of the checkpoints that hold, in file order (those of the first failing
    /// checkpoint before its failure included, as they were checked before it).
    leaves: Vec<PendingLeaf>,
    /// stream → seq → the hash of the export's event there (filled by pass two).
    named: HashMap<String, HashMap<u64, Option<String>>>,
    /// The first checkpoint line that is not one (named in pass two, in line order).
    malformed: Option<VerifyFailure>,
    /// The first failure of a well-formed checkpoint; nothing after it is checked.
    failed: Option<VerifyFailure>,
    /// The checkpoints that verified, by seq.
    verified: BTreeMap<u64, VerifiedCheckpoint>,
    /// The receipt line, if pass one found one.
    receipt: Option<FoundReceipt>,
}

/// What pass one keeps of a checkpoint that verified.
struct VerifiedCheckpoint {
    line: usize,
    /// `link_of` its JWS, and its signed `prev`, for the links in either order.
    link: String,
    prev: String,
    /// The leaves it signs, and those the export holds.
    size: u64,
    leaves: u64,
}

impl VerifyFailure {
    fn line(&self) -> Option<usize> {
        match self {
            VerifyFailure::NotJson { line, .. }
            | VerifyFailure::Broken { line, .. }
            | VerifyFailure::Checkpoint { line, .. } => Some(*line),
            VerifyFailure::Receipt { line, .. } => Some(*line),
            VerifyFailure::Unsealed { .. } | VerifyFailure::Empty | VerifyFailure::NoReceipt => None,
        }
    }
}

impl Seals {
    /// Pass one: every checkpoint line, checked as far as it can be without the events.
    fn read(input: &mut impl BufRead, keys: &ExportKeys) -> io::Result<Self> {
        let mut seals = Seals::default();
        let mut lines = Lines::default();
        while let Some((line, raw)) = lines.next_bytes(input)? {
            // Whatever is not UTF-8 or JSON here is named by pass two, in its place. `str`'s
            // substring search is the fast one: a `windows().any()` scan of the bytes here
            // took verify from 0.85x to 0.74x of the baseline (scripts/bench-verify, 10^5).
            let Ok(raw) = std::str::from_utf8(raw) else { continue };
            if raw.trim().is_empty() {
                continue;
            }
            if let Some(receipt) = &mut seals.receipt {
                receipt.after.get_or_insert(line);
            }
            if !(raw.contains("\\u") || LINE_KINDS.iter().any(|k| raw.contains(k))) {
                continue;
            }
            let Ok(value) = serde_json::from_str::<Value>(raw) else { continue };
            match kind_of(&value) {
                Some("checkpoint") => {}
                Some(_receipt) => {
                    if seals.receipt.is_none() {
                        let jws = serde_json::from_value::<ReceiptLine>(value)
                            .map(|r| r.jws)
                            .map_err(|e| format!("malformed line: {e}"));
                        let digest = LineDigest::default();
                        seals.receipt = Some(FoundReceipt { line, jws, digest, after: None });
                    }
                    continue;
                }
                None => continue,
            }
            let seq = value.get("seq").and_then(Value::as_u64).unwrap_or(0);
            match serde_json::from_value::<CheckpointLine>(value) {
                Err(e) => {
                    let problem = format!("malformed line: {e}");
                    seals.malformed.get_or_insert(VerifyFailure::Checkpoint { line, seq, problem });
                }
                Ok(checkpoint) if seals.failed.is_none() => {
                    if let Err(problem) = seals.check(&checkpoint, line, keys) {
                        seals.failed = Some(VerifyFailure::Checkpoint { line, seq: checkpoint.seq, problem });
                    }
                }
                Ok(_) => {}
            }
        }
        for leaf in &seals.leaves {
            seals.named.entry(leaf.stream.clone()).or_default().insert(leaf.seq, None);
        }
        Ok(seals)
    }

    /// The checks of one checkpoint that need no event; its leaves are kept for pass two.
    fn check(&mut self, cp: &CheckpointLine, line: usize, keys: &ExportKeys) -> Result<(), String> {
        let claims =
            verify_checkpoint(&cp.jws, &keys.checkpoints).map_err(|e| match keys.receipts.is_named_by(&cp.jws) {
                true => {
                    "it is signed with a receipt key, which may sign receipts only (a forged checkpoint)".to_owned()
                }
                false => e.to_string(),
            })?;
        if claims.seq != cp.seq {
            return Err(format!("the line says seq {} but the signed claims say {}", cp.seq, claims.seq));
        }
        if self.verified.contains_key(&claims.seq) {
            return Err("appears twice".into());
        }
        if claims.seq == 1 && claims.prev != GENESIS {
            return Err("the first checkpoint must link to the genesis".into());
        }
        if let Some(before) = claims.seq.checked_sub(1).and_then(|s| self.verified.get(&s))
            && claims.prev != before.link
        {
            return Err(format!("does not link to checkpoint {} (a checkpoint was replaced)", claims.seq - 1));
        }
        let link = link_of(Some(&cp.jws));
        if let Some(after) = self.verified.get(&(claims.seq + 1))
            && after.prev != link
        {
            return Err(format!("checkpoint {} does not link to it (a checkpoint was replaced)", claims.seq + 1));
        }
        for proven in &cp.leaves {
            verify_inclusion(&claims, proven).map_err(|e: CheckpointError| e.to_string())?;
            let Leaf { stream, seq, hash } = &proven.leaf;
            let leaf = PendingLeaf { line, checkpoint: cp.seq, stream: stream.clone(), seq: *seq, hash: hash.clone() };
            self.leaves.push(leaf);
        }
        let checkpoint =
            VerifiedCheckpoint { line, link, prev: claims.prev, size: claims.size, leaves: cp.leaves.len() as u64 };
        self.verified.insert(claims.seq, checkpoint);
        Ok(())
    }

    /// After pass two: each leaf against its stream's event, in file order, then the first
    /// failure of pass one (which came after every leaf kept). Returns stream → the last seq
    /// sealed, and the checkpoints verified.
    #[allow(clippy::type_complexity)]
    fn check_leaves(
        self,
        heads: &BTreeMap<String, (u64, String)>,
    ) -> Result<(BTreeMap<String, u64>, BTreeMap<u64, VerifiedCheckpoint>), VerifyFailure> {
        let mut sealed: BTreeMap<String, u64> = BTreeMap::new();
        for PendingLeaf { line, checkpoint, stream, seq, hash } in self.leaves {
            let fail = |problem: String| VerifyFailure::Checkpoint { line, seq: checkpoint, problem };
            let Some((head, _)) = heads.get(&stream) else {
                return Err(fail(format!("seals {stream} #{seq}, but the export holds no event of {stream}")));
            };
            if seq > *head {
                return Err(fail(format!(
                    "seals {stream} #{seq}, but the export's chain of {stream} ends at #{head} (events were cut off)"
                )));
            }
            // The chains hold, so each (stream, seq) up to the head names exactly one event.
            if self.named.get(&stream).and_then(|at| at.get(&seq)).and_then(Option::as_ref) != Some(&hash) {
                return Err(fail(format!(
                    "sealed {stream} #{seq} with another hash than the export's event (the chain was rewritten)"
                )));
            }
            let s = sealed.entry(stream).or_default();
            *s = (*s).max(seq);
        }
        match self.failed {
            Some(failure) => Err(failure),
            None => Ok((sealed, self.verified)),
        }
    }
}
