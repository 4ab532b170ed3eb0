//! `POST /consents`: a user grants support access for a window of their choosing.
//! One Lambda behind API Gateway HTTP API: the ports are built once per cold start, and every
//! request goes to `shared::http`'s handler for this route, as in local-api.

use adapter_aws::lambda::{Needs, serve_http};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_http(Route::GrantConsent, Needs::default()).await
}
