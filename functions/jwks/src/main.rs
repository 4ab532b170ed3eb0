//! `GET /.well-known/jwks.json`: the public keys that verify impersonation tokens, and
//! `GET /.well-known/checkpoint-keys.json`: those that verify audit checkpoints, apart so that
//! no verifier of tokens ever trusts a checkpoint key; and the issuer's metadata (RFC 8414,
//! OpenID Connect Discovery), public like them.
//! One Lambda behind API Gateway HTTP API: the ports are built once per cold start, and every
//! request goes to `shared::http`'s handler for its route, as in local-api.

use adapter_aws::lambda::{Needs, serve_routes};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(
        &[Route::Jwks, Route::CheckpointKeys, Route::AuthorizationServerMetadata, Route::OpenIdConfiguration],
        Needs { public_keys: true, ..Needs::default() },
    )
    .await
}
