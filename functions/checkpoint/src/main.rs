//! Runs on an EventBridge schedule (every few minutes): seals the chain heads that moved
//! since they were last sealed into KMS-signed checkpoints linked to the last, at most
//! `MAX_LEAVES_PER_CHECKPOINT` heads each, those that moved first first, until those it found
//! are sealed or the invocation's deadline (less `CHECKPOINT_RUN_MARGIN`) nears: the rest is
//! left to the next run. Each run writes one line of metrics (the unsealed backlog and its age,
//! the newest checkpoint's age) that the checkpoint alarm watches. The schedule's event carries
//! nothing it needs; a run with nothing new makes no checkpoint.

use adapter_aws::lambda::{Needs, init_tracing, services_from_env, until_deadline};
use adapter_aws::telemetry::log_checkpoint_run;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::app::{CHECKPOINT_RUN_MARGIN, checkpoint_all};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // It signs, but never verifies or pages: no public keys, no cursor key.
    let services = services_from_env(Needs::default())?;
    let services = &services;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let until = until_deadline(event.context.deadline, CHECKPOINT_RUN_MARGIN);
        let run = checkpoint_all(services.get().await?, Some(until)).await?;
        log_checkpoint_run(&run, &event.context.env_config.function_name);
        Ok::<Value, Error>(json!({
            "checkpoints": run.made.iter().map(|c| c.claims.seq).collect::<Vec<_>>(),
            "heads": run.sealed,
            "left": run.left,
        }))
    }))
    .await
}
