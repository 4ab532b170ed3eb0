//! Reads the `Consents` table's stream and records `consent.expired` for each consent that
//! DynamoDB TTL deleted (or that a new grant replaced after it had run out). Recording is
//! idempotent, so a failed batch is simply retried (and bisected) by the event source.

use adapter_aws::lambda::init_tracing;
use adapter_aws::{expiries_from_stream, store_from_env};
use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::app::record_expiry;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // Only storage: this function never signs, verifies or pages.
    let ledger = store_from_env()?;
    let ledger = &ledger;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Event>| async move {
        let ledger = ledger.get().await?;
        let mut recorded = 0;
        for expiry in expiries_from_stream(&event.payload) {
            if record_expiry(ledger, &expiry.consent, expiry.observed_at).await? {
                recorded += 1;
            }
        }
        tracing::info!(recorded, records = event.payload.records.len(), "stream batch done");
        Ok::<(), Error>(())
    }))
    .await
}
