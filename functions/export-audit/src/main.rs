//! `GET /audit/export`: one user's audit stream as JSON Lines, for offline verification of its hash chain.
//! One Lambda behind API Gateway HTTP API; the handler is `shared::http`'s, as in local-api.

use std::convert::Infallible;

use lambda_http::{Error, service_fn};
use shared::http::{Route, handle};
use shared::lambda::{Needs, init_tracing, ports_from_env};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // Built once per cold start, borrowed by every invocation.
    let ports = ports_from_env(Needs::default()).await?;
    let ports = &ports;
    lambda_http::run(service_fn(move |request| async move {
        Ok::<_, Infallible>(handle(Route::ExportAudit, request, ports).await)
    }))
    .await
}
