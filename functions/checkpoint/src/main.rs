//! Runs on an EventBridge schedule (every few minutes): seals every chain head that moved
//! since the last checkpoint into a new one, signed with the KMS key and linked to the last.
//! The schedule's event carries nothing it needs; a run with nothing new makes no checkpoint.

use adapter_aws::lambda::{Needs, init_tracing, services_from_env};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::app::checkpoint_now;

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // It signs, but never verifies or pages: no public keys, no cursor key.
    let services = services_from_env(Needs::default())?;
    let services = &services;
    lambda_runtime::run(service_fn(move |_: LambdaEvent<Value>| async move {
        let made = checkpoint_now(services.get().await?).await?;
        match &made {
            Some(c) => {
                tracing::info!(seq = c.claims.seq, heads = c.claims.size, root = %c.claims.root, "checkpoint made")
            }
            None => tracing::info!("no chain moved since the last checkpoint"),
        }
        Ok::<Value, Error>(json!({
            "checkpoint": made.as_ref().map(|c| c.claims.seq),
            "heads": made.as_ref().map_or(0, |c| c.claims.size),
        }))
    }))
    .await
}
