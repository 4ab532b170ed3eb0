//! On a schedule: records `request.expired` for every access request still pending past its
//! deadline (read from the sparse index of pending requests), so an unanswered request's end
//! is on the user's log whether or not anyone acts on it again. Each expiry is conditioned on
//! the request still being pending, so a run that overlaps another, or a decision, writes
//! nothing twice.

use adapter_aws::lambda::{Needs, init_tracing, services_from_env};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::app::expire_requests;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // Only storage is used: no signing, no public keys, no cursors.
    let services = services_from_env(Needs::default())?;
    let services = &services;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| async move {
        let expired = expire_requests(services.get().await?).await.map_err(|e| Error::from(e.to_string()))?;
        tracing::info!(expired, "access-request sweep done");
        Ok::<(), Error>(())
    }))
    .await
}
