//! `POST /introspect` (RFC 7662 token introspection) and `POST /introspect/uses` (a use
//! reported, recorded as the authorizer records one), for resource servers outside AWS that
//! cannot use the Lambda authorizer (callers in the introspect group). One Lambda behind API
//! Gateway HTTP API: ports and the JWK Set are built once per cold start, and every request
//! goes to `shared::http`'s handler for its route, as in local-api.

use adapter_aws::lambda::{Needs, serve_routes};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(&[Route::Introspect, Route::ReportUse], Needs { public_keys: true, ..Needs::default() }).await
}
