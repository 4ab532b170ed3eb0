//! The cold-start baseline: an empty `lambda_runtime` function (the same runtime crate,
//! features and tokio as the real functions, built with the same release profile) that
//! answers every event with `{"hello": "world"}`. `scripts/bench-cold-start` starts it
//! beside each function.
//!
//! `cargo build --release --example hello_lambda`

use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(|_: LambdaEvent<Value>| async { Ok::<Value, Error>(json!({"hello": "world"})) }))
        .await
}
