//! Reads the `Audit` table's stream and puts each step the app should hear about (grant,
//! revoke, expiry, access-request steps, token issue, a token's first use) on the EventBridge
//! bus `NOTIFICATION_BUS`; and the `AuditIntake` table's stream (`AUDIT_INTAKE_TABLE`), for
//! first uses recorded through the intake (#18), announced before the sequencer appends them
//! and not again from the `Audit` stream. A failed put reports the batch from that record on
//! as failed, so the event source retries from there: nothing is skipped, order is kept per
//! user on each stream, and a redelivered event carries the same id for the consumer to
//! deduplicate.

use adapter_aws::lambda::init_tracing;
use adapter_aws::notifier_from_env;
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::app::{FirstUseMemory, RelayStats, publish_committed};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    let ports = notifier_from_env()?;
    let ports = &ports;
    // The claims this process won, for the life of the process: a token's later uses cost no
    // write (see FirstUseMemory).
    let memory = &FirstUseMemory::default();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let (history, publisher) = ports.get().await?;
        let stats = RelayStats::default();
        let records = history.stream_events_to_announce(&event.payload);
        let events: Vec<_> = records.iter().map(|(_, e)| e.clone()).collect();
        let mut response = DynamoDbEventResponse::default();
        if let Err((failed, e)) = publish_committed(&events, &memory.over(history), publisher, &stats).await {
            tracing::warn!(error = %e, delivered = stats.delivered(), "notification not delivered; retrying from it");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(records[failed].0.clone());
            response.batch_item_failures.push(failure);
        }
        tracing::info!(delivered = stats.delivered(), records = event.payload.records.len(), "stream batch done");
        Ok::<_, Error>(response)
    }))
    .await
}
