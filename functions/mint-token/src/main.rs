//! `POST /tokens`: a support agent mints an impersonation token for a user who consented.
//! One Lambda behind API Gateway HTTP API: the ports are built once per cold start, and every
//! request goes to `shared::http`'s handler for this route, as in local-api.

use adapter_aws::lambda::{Needs, serve_http};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_http(Route::MintToken, Needs::default()).await
}
