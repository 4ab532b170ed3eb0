//! The embedded store's audit intake and sequencer (#18, "decide now, sequence later").
//!
//! `audit_intake` holds the decided events not yet on their chains; its `id` is the order
//! they were recorded in (one writer assigns it). A sequencer run, one transaction, moves
//! each stream's settled events onto its chain in decision order
//! ([`shared::ports::decision_order`]) and deletes them from the intake, so a run that fails
//! leaves everything as it was and a repeated run finds nothing to do twice.
//!
//! Why a use decided under a consent lands before the event that ended it: a use is recorded
//! only if its row lands before its deadline (checked inside the writer, the same thread
//! that runs the sequencer), and the deadline is taken before the consent read that decided
//! the use, so before the end's commit. The sequencer stamps each consent-ending event when
//! it first sees it committed, and appends it only `hold` (> the deadline's budget) later;
//! by then every use decided before that commit has landed or was refused, and the ordering
//! rule puts the landed ones before it. The stamps live in memory: after a restart nothing is
//! in flight, and an event stamped anew is only held once more.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::store::{Mode, SqliteStore, append_in, unavailable};
use shared::domain::AuditEvent;
use shared::ports::{
    AuditIntake, Deadline, SEQUENCER_HOLD, Sequencer, SequencerRun, StoreError, decision_order, ends_a_consent,
};

/// The sequencer's memory: when it first saw each consent-ending event committed.
pub(super) struct SequencerState {
    hold: Duration,
    seen: Mutex<HashMap<i64, Instant>>,
}

impl SqliteStore {
    /// Events go through the intake and the sequencer ([`Sequencer::sequence`] appends
    /// them), holding consent changes for [`SEQUENCER_HOLD`].
    pub fn with_sequencer(self) -> Self {
        self.with_sequencer_hold(SEQUENCER_HOLD)
    }

    /// As [`Self::with_sequencer`], with a hold of `hold` (tests shorten it). A use is
    /// refused unless it lands within its own deadline and within `hold` of its decision.
    pub fn with_sequencer_hold(mut self, hold: Duration) -> Self {
        self.sequencer = Some(std::sync::Arc::new(SequencerState { hold, seen: Mutex::default() }));
        self
    }

    pub(super) fn mode(&self) -> Mode {
        if self.sequencer.is_some() { Mode::Sequenced } else { Mode::Direct }
    }
}

/// Records `event` as pending inside `tx`, unless it is already pending or on its chain.
pub(super) fn record_in(tx: &Connection, event: &AuditEvent) -> Result<(), StoreError> {
    let body = serde_json::to_string(event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO audit_intake (stream, event_id, type, at, body)
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM audit WHERE event_id = ?2)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![event.stream(), event.event_id.as_str(), event.event_type.as_str(), event.at.unix(), body])
    })
    .map_err(unavailable)?;
    Ok(())
}

fn parse(body: &str) -> Result<AuditEvent, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("audit intake: {e}")))
}

/// Up to `limit` pending events of `stream`, in the order they were recorded, with their ids.
fn pending_of(tx: &Connection, stream: &str, limit: usize) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
    let mut stmt = tx
        .prepare_cached("SELECT id, body FROM audit_intake WHERE stream = ?1 ORDER BY id LIMIT ?2")
        .map_err(unavailable)?;
    // SQLite reads a negative limit as none.
    let limit = i64::try_from(limit).unwrap_or(-1);
    let rows = stmt
        .query_map(params![stream, limit], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter().map(|(id, body)| Ok((id, parse(&body)?))).collect()
}

/// How many of a user's pending events a read looks at: the intake holds seconds' worth.
const PENDING_READ_LIMIT: i64 = 10_000;

/// The pending events recorded before intake id `before`, newest first, with their ids: of
/// `stream`, or of every stream (`None`: an auditor's query by actor or by time, which sees
/// what is pending too; the intake holds pending rows only, seconds' worth).
pub(super) fn pending_newest_first(
    tx: &Connection,
    stream: Option<&str>,
    before: i64,
) -> Result<Vec<(i64, AuditEvent)>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT id, body FROM audit_intake WHERE (?1 IS NULL OR stream = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3",
        )
        .map_err(unavailable)?;
    let rows = stmt
        .query_map(params![stream, before, PENDING_READ_LIMIT], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    rows.into_iter().map(|(id, body)| Ok((id, parse(&body)?))).collect()
}

/// What one run inside a transaction did: its counts, the consent-ending events it saw for
/// the first time (stamped once the transaction has committed), and the intake rows it
/// moved (whose stamps can go).
struct RunInTx {
    run: SequencerRun,
    unseen: Vec<i64>,
    moved: Vec<i64>,
}

/// One run over `only` the streams named, or over every stream with pending events.
fn sequence_in(
    tx: &Connection,
    only: Option<&[String]>,
    limit: usize,
    hold: Duration,
    seen: &HashMap<i64, Instant>,
) -> Result<RunInTx, StoreError> {
    let streams: Vec<String> = match only {
        Some(named) => named.to_vec(),
        None => {
            let mut stmt = tx.prepare_cached("SELECT DISTINCT stream FROM audit_intake").map_err(unavailable)?;
            stmt.query_map([], |r| r.get(0)).map_err(unavailable)?.collect::<Result<_, _>>().map_err(unavailable)?
        }
    };
    let now = Instant::now();
    let (mut run, mut unseen, mut moved, mut budget) = (SequencerRun::default(), Vec::new(), Vec::new(), limit);
    let mut batches: BTreeMap<String, Vec<(i64, AuditEvent)>> = BTreeMap::new();
    for stream in streams {
        if budget == 0 {
            break;
        }
        // The stream in decision order, and where it stops: at the first consent change
        // still held (everything after it waits). Ordered before cutting, so that a use
        // recorded behind a held change but belonging before an earlier one goes with it.
        let order_and_cut = |rows: Vec<(i64, AuditEvent)>| {
            let ids: HashMap<_, _> = rows.iter().map(|(id, e)| (e.event_id.clone(), *id)).collect();
            let ordered: Vec<(i64, AuditEvent)> = decision_order(rows.into_iter().map(|(_, e)| e).collect())
                .into_iter()
                .map(|e| (ids[&e.event_id], e))
                .collect();
            let cut = ordered
                .iter()
                .position(|(id, e)| {
                    ends_a_consent(e) && seen.get(id).is_none_or(|first| now.duration_since(*first) < hold)
                })
                .unwrap_or(ordered.len());
            (ordered, cut)
        };
        let window = pending_of(tx, &stream, budget)?;
        let cut_short = window.len() == budget;
        let (mut rows, mut cut) = order_and_cut(window);
        // A consent change released now takes along every use that must precede it, which
        // landed after it (within the hold) wherever the limit cut the stream: such a stream
        // is read whole (about a hold's worth of its events), past the run's limit.
        if cut_short && rows[..cut].iter().any(|(_, e)| ends_a_consent(e)) {
            (rows, cut) = order_and_cut(pending_of(tx, &stream, usize::MAX)?);
        }
        unseen.extend(rows[cut..].iter().filter(|(id, e)| ends_a_consent(e) && !seen.contains_key(id)).map(|r| r.0));
        rows.truncate(cut);
        budget = budget.saturating_sub(rows.len());
        batches.insert(stream, rows);
    }
    for rows in batches.into_values() {
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        for (_, event) in rows {
            // A crash cannot leave an event both on its chain and pending (one transaction),
            // but an event recorded again by a retrying writer must still land once.
            let on_chain = tx
                .prepare_cached("SELECT 1 FROM audit WHERE event_id = ?1")
                .and_then(|mut s| s.exists([event.event_id.as_str()]))
                .map_err(unavailable)?;
            if !on_chain {
                append_in(tx, event)?;
                run.sequenced += 1;
            }
        }
        let mut delete = tx.prepare_cached("DELETE FROM audit_intake WHERE id = ?1").map_err(unavailable)?;
        for id in ids {
            delete.execute([id]).map_err(unavailable)?;
            moved.push(id);
        }
    }
    let pending: i64 = match only {
        None => tx.query_row("SELECT COUNT(*) FROM audit_intake", [], |r| r.get::<_, i64>(0)).map_err(unavailable)?,
        Some(named) => {
            let mut count =
                tx.prepare_cached("SELECT COUNT(*) FROM audit_intake WHERE stream = ?1").map_err(unavailable)?;
            let mut total = 0;
            for stream in named {
                total += count.query_row([stream], |r| r.get::<_, i64>(0)).map_err(unavailable)?;
            }
            total
        }
    };
    run.pending = pending as usize;
    Ok(RunInTx { run, unseen, moved })
}

#[async_trait]
impl AuditIntake for SqliteStore {
    async fn record(&self, event: AuditEvent, deadline: Deadline) -> Result<(), StoreError> {
        let (mode, hold) = (self.mode(), self.sequencer.as_ref().map(|s| s.hold));
        self.transaction(move |tx| {
            // Checked in the writer, which also runs the sequencer: a row that lands, landed
            // before its deadline and less than the hold after its decision (see the module's
            // documentation).
            if deadline.passed() || hold.is_some_and(|hold| deadline.age() >= hold) {
                return Err(StoreError::DeadlinePassed);
            }
            match mode {
                Mode::Sequenced => record_in(tx, &event),
                Mode::Direct => append_in(tx, event).map(|_| ()),
            }
        })
        .await
    }
}

impl SqliteStore {
    /// One sequencer run (one transaction) over `only` the streams named, or over all.
    async fn sequence_run(&self, only: Option<Vec<String>>, limit: usize) -> Result<SequencerRun, StoreError> {
        let Some(state) = self.sequencer.clone() else { return Ok(SequencerRun::default()) };
        let seen = state.seen.lock().map_err(|_| StoreError::Unavailable("sequencer state poisoned".into()))?.clone();
        let hold = state.hold;
        let RunInTx { run, unseen, moved } =
            self.transaction(move |tx| sequence_in(tx, only.as_deref(), limit, hold, &seen)).await?;
        // Stamped only now: the transaction that saw them committed after they did, so the
        // stamp is not earlier than their commit.
        let stamped = Instant::now();
        let mut seen = state.seen.lock().map_err(|_| StoreError::Unavailable("sequencer state poisoned".into()))?;
        for id in unseen {
            seen.entry(id).or_insert(stamped);
        }
        for id in moved {
            seen.remove(&id);
        }
        Ok(run)
    }
}

#[async_trait]
impl Sequencer for SqliteStore {
    async fn sequence(&self, limit: usize) -> Result<SequencerRun, StoreError> {
        self.sequence_run(None, limit).await
    }

    async fn sequence_streams(&self, streams: &[String], limit: usize) -> Result<SequencerRun, StoreError> {
        self.sequence_run(Some(streams.to_vec()), limit).await
    }

    async fn pending(&self, stream: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let stream = stream.to_owned();
        let rows = self.read(move |c| pending_of(c, &stream, limit)).await?;
        Ok(decision_order(rows.into_iter().map(|(_, e)| e).collect()))
    }

    /// Nothing to list: the auditor's queries read the intake's rows, all of them pending,
    /// by time with SQL (`AuditReader::query`).
    async fn mark_stalled(&self, _streams: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn clear_stalled(&self, _streams: &[String]) -> Result<(), StoreError> {
        Ok(())
    }
}
