//! Reads the `AuditIntake` table's stream and appends each named user's pending events to
//! their chain (#18, "decide now, sequence later"). The records are only a trigger: each run
//! reads the user's pending items from the table, so a redelivered batch changes nothing. A
//! user whose run fails (or who still has events pending when the time is up) has their
//! records reported as batch item failures, to be delivered again; the other users' runs stand.
//! A record naming no user is reported too, so the batch ends in the failed-batches bucket.
//! Users whose records waited past `STALE_AFTER_SECONDS`, or whose run failed or did not
//! finish, are listed as stalled, so the auditor's queries by actor and by time show their
//! pending events (`shared::app::sequence_named`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapter_aws::lambda::{init_tracing, until_deadline};
use adapter_aws::{intake_batch, sequencer_from_env};
use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::app::{ListedHere, sequence_named};
use shared::ports::SEQUENCER_HOLD;

/// What a run in flight at the deadline may still take (one SDK call's 5 s budget, and more).
const MARGIN: Duration = Duration::from_secs(8);

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let store = sequencer_from_env();
    let store = &store;
    let listed = &ListedHere::default();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let store = store.get().await?;
        let until = until_deadline(event.context.deadline, MARGIN);
        let batch = intake_batch(&event.payload);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let stale = listed.stale(batch.streams.keys(), batch.stale(now));
        let done = sequence_named(store, batch.streams.keys().cloned(), &stale, SEQUENCER_HOLD, until).await;
        listed.remember(&stale, &done);
        for (user, e) in &done.failed {
            tracing::warn!(stream = %user, error = %e, "stream not sequenced; its records go back to the event source");
        }
        if let Some(e) = &done.listing {
            tracing::warn!(error = %e, "stalled streams not (un)listed; the auditor's queries by actor and time may miss their pending events");
        }
        let response = batch.response(done.retry());
        tracing::info!(
            sequenced = done.sequenced,
            streams = batch.streams.len(),
            stale = stale.len(),
            failed = done.failed.len(),
            unfinished = done.unfinished.len(),
            unreadable = batch.unreadable.len(),
            rounds = done.rounds,
            records = event.payload.records.len(),
            "stream batch done"
        );
        Ok::<_, Error>(response)
    }))
    .await
}
