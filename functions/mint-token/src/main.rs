//! `POST /tokens`: a support agent mints an impersonation token for a user who consented; and
//! `POST /token`, the same mint as an RFC 8693 token exchange, whose caller is the identity
//! token in its body, verified here against the identity provider the environment names
//! (`SUPPORT_ACCESS_IDENTITY_ISSUER`, `_AUDIENCE`). One Lambda behind API Gateway HTTP API:
//! the ports are built once per cold start, and every request goes to `shared::http`'s
//! handler for its route, as in local-api.

use adapter_aws::lambda::{Needs, serve_routes};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(&[Route::MintToken, Route::TokenExchange], Needs { identity: true, ..Needs::default() }).await
}
