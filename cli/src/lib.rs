//! Offline verification of an audit-log export (`GET /audit/export`, JSON Lines): anyone
//! holding the file can check that every user's chain is intact, without trusting the
//! service or its database. The checks themselves are `support_access_verify::chain`.

use std::collections::BTreeMap;

use serde_json::Value;
use support_access_verify::chain::{ChainError, verify_chains};

/// An intact export: each stream's length and head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub events: usize,
    /// stream → (last seq, its hash)
    pub heads: BTreeMap<String, (u64, String)>,
}

/// The first thing wrong with an export, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyFailure {
    #[error("line {line}: not JSON: {problem}")]
    NotJson { line: usize, problem: String },
    #[error("line {line}: {problem}")]
    Unsupported { line: usize, problem: String },
    #[error("line {line}: {error}")]
    Broken { line: usize, event_id: Option<String>, error: ChainError },
    #[error("the export holds no events")]
    Empty,
}

/// Verifies the export `text` (JSON Lines, oldest first within each stream).
pub fn verify_export(text: &str) -> Result<Report, VerifyFailure> {
    let mut events = Vec::new();
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| VerifyFailure::NotJson { line, problem: e.to_string() })?;
        if value.get("type").and_then(Value::as_str) == Some("checkpoint") {
            return Err(VerifyFailure::Unsupported {
                line,
                problem: "checkpoint lines need a newer support-access".into(),
            });
        }
        events.push(value);
        lines.push(line);
    }
    if events.is_empty() {
        return Err(VerifyFailure::Empty);
    }
    match verify_chains(&events) {
        Ok(heads) => Ok(Report { events: events.len(), heads }),
        Err(error) => {
            let index = match &error {
                ChainError::Malformed { index, .. }
                | ChainError::Hash { index, .. }
                | ChainError::Sequence { index, .. }
                | ChainError::Link { index, .. } => *index,
            };
            let event_id = events[index].get("event_id").and_then(Value::as_str).map(str::to_owned);
            Err(VerifyFailure::Broken { line: lines[index], event_id, error })
        }
    }
}
