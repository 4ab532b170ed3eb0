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

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
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
    /// Why listing or unlisting stalled streams failed, if it did (their runs stand: the
    /// list is for the auditor's queries, the chains come first).
    pub listing: Option<StoreError>,
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
///
/// The streams in `stale` have waited longer than a healthy sequencer leaves them (on AWS:
/// their oldest record was written more than `STALE_AFTER_SECONDS` ago, a redelivery or a
/// backlog): they are listed as stalled before any run ([`Sequencer::mark_stalled`], so a
/// run that crashes still leaves them listed) and unlisted once a run leaves them nothing
/// pending. A stream whose run failed or did not finish is listed after. So the auditor's
/// queries by actor and by time see what a stalled sequencer left pending, and a healthy one
/// lists nothing.
pub async fn sequence_named(
    sequencer: &dyn Sequencer,
    streams: impl IntoIterator<Item = String>,
    stale: &[String],
    hold: Duration,
    until: Instant,
) -> SequencedStreams {
    let mut active: Vec<String> = streams.into_iter().collect();
    active.sort();
    active.dedup();
    let mut out = SequencedStreams::default();
    if !stale.is_empty() {
        out.listing = sequencer.mark_stalled(stale).await.err();
    }
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
    let stuck: Vec<String> = out.retry().filter(|s| !stale.contains(s)).cloned().collect();
    let done: Vec<String> = stale.iter().filter(|s| !out.retry().any(|r| r == *s)).cloned().collect();
    for (streams, list) in [(stuck, true), (done, false)] {
        if streams.is_empty() {
            continue;
        }
        let listed =
            if list { sequencer.mark_stalled(&streams).await } else { sequencer.clear_stalled(&streams).await };
        if let Err(e) = listed {
            out.listing.get_or_insert(e);
        }
    }
    out
}

/// How many streams a process remembers having listed as stalled (forgotten all at once past
/// it: such a stream is still unlisted by a later stale delivery, or its entry lapses).
const REMEMBERED_LISTED: usize = 10_000;

/// The streams this sequencer process listed as stalled because their run failed or did not
/// finish. Their records come back at once, fresh, so they would not count as stale and
/// stay listed although done; remembered here, they count as stale when they come back, and
/// are unlisted once their run finishes. (Another process does not know them: the entry then
/// lapses, see the store's list.)
#[derive(Debug, Default)]
pub struct ListedHere(Mutex<HashSet<String>>);

impl ListedHere {
    /// `stale`, with those of `named` this process listed.
    pub fn stale<'a>(&self, named: impl IntoIterator<Item = &'a String>, mut stale: Vec<String>) -> Vec<String> {
        let listed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for name in named {
            if listed.contains(name) && !stale.contains(name) {
                stale.push(name.clone());
            }
        }
        stale
    }

    /// After [`sequence_named`] ran with `stale`: the streams it listed are remembered, those
    /// it unlisted forgotten.
    pub fn remember(&self, stale: &[String], done: &SequencedStreams) {
        let mut listed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        listed.retain(|s| !stale.contains(s));
        if listed.len() > REMEMBERED_LISTED {
            listed.clear();
        }
        listed.extend(done.retry().cloned());
    }
}

#[cfg(test)]
mod listed_here_tests {
    use super::*;

    #[test]
    fn a_stream_listed_for_a_failed_run_counts_as_stale_when_it_comes_back_and_is_forgotten_once_done() {
        let listed = ListedHere::default();
        let (alice, bob) = ("alice".to_owned(), "bob".to_owned());
        let failed = SequencedStreams {
            failed: BTreeMap::from([(alice.clone(), StoreError::Unavailable("throttled".into()))]),
            unfinished: vec![bob.clone()],
            ..Default::default()
        };
        listed.remember(&[], &failed);
        assert_eq!(listed.stale([&alice], vec![]), vec![alice.clone()], "fresh records, yet listed here");
        assert_eq!(listed.stale([&alice, &bob], vec![bob.clone()]), [bob.clone(), alice.clone()], "no stream twice");
        listed.remember(std::slice::from_ref(&alice), &SequencedStreams::default());
        assert!(listed.stale([&alice], vec![]).is_empty(), "unlisted by its finished run, forgotten");
        assert_eq!(listed.stale([&alice, &bob], vec![]), [bob], "the other still listed");
    }
}
