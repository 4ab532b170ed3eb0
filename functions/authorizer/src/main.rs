//! The impersonation-token authorizer for the app's own API (API Gateway HTTP API, Lambda
//! authorizer, payload format 2.0, simple responses). Attach it with caching off: a cached
//! answer would outlive a revoked consent. The check is `shared::http::authorize_request`.

use adapter_aws::lambda::{Needs, init_tracing, services_from_env};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::http::authorize_request;
use shared::lambda_events::{ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    init_tracing();
    // The JWK Set is fetched once per cold start; the live consent check runs on every call.
    let services = services_from_env(Needs { public_keys: true, ..Needs::default() }).await?;
    let services = &services;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
        Ok::<ApiGatewayV2CustomAuthorizerSimpleResponse, Error>(authorize_request(event.payload, services).await)
    }))
    .await
}
