//! The impersonation-token authorizer for the app's own API (API Gateway HTTP API, Lambda
//! authorizer, payload format 2.0, simple responses). Attach it with caching off: a cached
//! answer would outlive a revoked consent. The check is `shared::http::authorize_request`.

use lambda_runtime::Error;

#[tokio::main]
async fn main() -> Result<(), Error> {
    adapter_aws::lambda::serve_authorizer().await
}
