//! `GET /audit/export`: one user's audit stream as JSON Lines, for offline verification of its hash chain.
//! One Lambda behind API Gateway HTTP API: the ports are built once per cold start, and every
//! request goes to `shared::http`'s handler for this route, as in local-api.

use adapter_aws::lambda::{Needs, serve_http};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_http(Route::ExportAudit, Needs::default()).await
}
