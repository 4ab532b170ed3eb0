//! The stream-driven sequencer's job (#18; on AWS the `sequencer` function, triggered by the
//! `AuditIntake` table's stream). A trigger only names the streams (users) with something new:
//! each run reads that stream's whole pending set from the store, so a record delivered twice,
//! late, or beside others of the same user changes nothing, and one user's failure leaves the
//! other users' runs standing.
//!
//! A run holds each consent change [`crate::ports::SEQUENCER_HOLD`] after it first saw it,
//! and those stamps live in the running process: nothing else will trigger a stream whose last
//! record was a held change, so the job runs such a stream again, a hold later, until it has
//! nothing pending or the time given is up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};

use crate::ports::{Sequencer, StoreError};

/// The most events one run appends to one stream (a batch of 100 records names at most 100
/// events; a stream's backlog after an outage is appended over a few runs).
pub const SEQUENCER_RUN_LIMIT: usize = 1_000;

/// How many streams of one trigger are sequenced at once.
pub const SEQUENCER_PARALLEL_STREAMS: usize = 16;

/// What [`sequence_named`] did.
#[derive(Debug, Default)]
pub struct SequencedStreams {
    /// Events appended to their chains.
    pub sequenced: usize,
    /// Streams whose run failed, and why: their triggers are to be delivered again.
    pub failed: BTreeMap<String, StoreError>,
    /// Streams with events still pending when the time given ran out: to be delivered again.
    pub unfinished: Vec<String>,
    /// How many rounds it took.
    pub rounds: usize,
}

impl SequencedStreams {
    /// The streams whose triggers must be delivered again: failed or unfinished.
    pub fn retry(&self) -> impl Iterator<Item = &String> {
        self.failed.keys().chain(&self.unfinished)
    }
}

/// Runs `sequencer` over `streams` in rounds, [`SEQUENCER_PARALLEL_STREAMS`] at once: a
/// stream left with nothing pending is done; one whose run failed is given up (its trigger is
/// delivered again, and a repeated run changes nothing); one still pending is run again, at
/// once if its run appended something, else after `hold` (its run met a held consent change,
/// which the next run then releases). No round starts with less than `hold` left before
/// `until`: what is still pending then is `unfinished`.
pub async fn sequence_named(
    sequencer: &dyn Sequencer,
    streams: impl IntoIterator<Item = String>,
    hold: Duration,
    until: Instant,
) -> SequencedStreams {
    let mut active: Vec<String> = streams.into_iter().collect();
    active.sort();
    active.dedup();
    let mut out = SequencedStreams::default();
    while !active.is_empty() {
        out.rounds += 1;
        let runs: Vec<_> = stream::iter(std::mem::take(&mut active))
            .map(|name| async move {
                let run = sequencer.sequence_streams(std::slice::from_ref(&name), SEQUENCER_RUN_LIMIT).await;
                (name, run)
            })
            .buffer_unordered(SEQUENCER_PARALLEL_STREAMS)
            .collect()
            .await;
        let mut held = false;
        for (name, run) in runs {
            match run {
                Ok(run) if run.pending == 0 => out.sequenced += run.sequenced,
                Ok(run) => {
                    out.sequenced += run.sequenced;
                    held |= run.sequenced == 0;
                    active.push(name);
                }
                Err(e) => {
                    out.failed.insert(name, e);
                }
            }
        }
        active.sort();
        let wait = if held { hold } else { Duration::ZERO };
        if !active.is_empty() && Instant::now() + wait + hold > until {
            out.unfinished = std::mem::take(&mut active);
            break;
        }
        if !active.is_empty() {
            tokio::time::sleep(wait).await;
        }
    }
    out
}
