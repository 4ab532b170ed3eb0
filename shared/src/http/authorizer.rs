//! The impersonation-token authorizer for the app's API on API Gateway HTTP API: a Lambda
//! authorizer with payload format 2.0 and simple responses. It runs [`app::authorize`], the
//! same check as every other entry point, with the route's method and path, so a `read` token
//! is refused on a write route here too.
//!
//! API Gateway must not cache its answers (or only for a few seconds): a cached "allow" would
//! keep working after the user revoked consent, and a cached answer is not audited as a use.

use std::borrow::Cow;

use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use serde_json::Value;

use super::summary::{Decision, Summary};

use crate::app::Services;
use crate::app::{self, AuthorizeError};
use crate::domain::AgentId;

/// The keys of the context an allowed request carries to the integration
/// (`$context.authorizer.<key>`, or `requestContext.authorizer.lambda` in a Lambda): all of
/// them for an impersonation token, `user_id` alone for the user's own identity token
/// ([`app::Access::context`]).
pub const CONTEXT_KEYS: [&str; 5] = ["user_id", "acting_agent", "scope", "consent_id", "jti"];

/// Decides one request, an impersonation token or (where configured) the user's own identity
/// token ([`app::authorize_bearer`]): allowed with the context keys of [`CONTEXT_KEYS`], or denied with an
/// empty context (API Gateway answers the client 403; why is on the audit log). Fails closed:
/// no token, a malformed event or an unreachable store all deny.
pub async fn authorize_request(
    event: ApiGatewayV2CustomAuthorizerV2Request,
    services: &Services,
) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
    decide(event, services).await.0
}

/// As [`authorize_request`], with the [`Summary`] of the decision for its log line: the user
/// and acting agent of an allowed token (a denied one names nobody: its claims are not trusted).
pub async fn decide(
    event: ApiGatewayV2CustomAuthorizerV2Request,
    services: &Services,
) -> (ApiGatewayV2CustomAuthorizerSimpleResponse, Summary) {
    let summary = |decision, user: Option<&str>, agent: Option<&str>| summary(&event, decision, user, agent);
    let Some(token) = bearer(&event) else {
        return (deny(), summary(Decision::Refused, None, None));
    };
    let http = &event.request_context.http;
    let path = event.raw_path.as_deref().filter(|p| !p.is_empty()).or(http.path.as_deref()).unwrap_or("/");
    match app::authorize_bearer(services, &token, &http.method, path).await {
        Ok(access) => {
            let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
            response.is_authorized = true;
            let context = access.context();
            response.context = serde_json::to_value(&context).expect("the context always serializes");
            let agent = context.acting_agent.as_ref().map(AgentId::as_str);
            let summary = summary(Decision::Allowed, Some(context.user_id.as_str()), agent);
            (response, summary)
        }
        Err(AuthorizeError::Rejected(_)) => (deny(), summary(Decision::Refused, None, None)),
        Err(AuthorizeError::Unavailable(e)) => {
            tracing::error!(error = %e, "authorizer could not check the token; denying");
            (deny(), summary(Decision::Failed, None, None))
        }
    }
}

/// The denial of a request the authorizer could not check at all (its set-up failed: the SDK
/// clients or the JWK Set); fails closed.
pub fn undecided(
    event: &ApiGatewayV2CustomAuthorizerV2Request,
    cause: &str,
) -> (ApiGatewayV2CustomAuthorizerSimpleResponse, Summary) {
    tracing::error!(error = %cause, "authorizer could not check the token; denying");
    (deny(), summary(event, Decision::Failed, None, None))
}

/// The authorizer's summary: an allowed token's user and acting agent (a support agent), or
/// the user alone for their own identity token.
fn summary(
    event: &ApiGatewayV2CustomAuthorizerV2Request,
    decision: Decision,
    user: Option<&str>,
    agent: Option<&str>,
) -> Summary {
    Summary {
        route: Cow::Borrowed("authorizer"),
        role: match (user, agent) {
            (_, Some(_)) => "support",
            (Some(_), None) => "user",
            (None, None) => "anonymous",
        }
        .to_owned(),
        user: user.map(str::to_owned),
        agent: agent.map(str::to_owned),
        decision,
        status: None,
        correlation_id: event.request_context.request_id.clone(),
    }
}

fn deny() -> ApiGatewayV2CustomAuthorizerSimpleResponse {
    let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    response.is_authorized = false;
    response.context = Value::Object(Default::default());
    response
}

/// The bearer token: from the identity source (configure `$request.header.Authorization`),
/// else from the `Authorization` header itself.
fn bearer(event: &ApiGatewayV2CustomAuthorizerV2Request) -> Option<String> {
    let from_source = event.identity_source.as_ref().and_then(|s| s.iter().find_map(|v| bearer_token(v)));
    let from_header =
        || event.headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
    from_source.or_else(from_header).map(str::to_owned)
}

/// The token of an `Authorization` value in the Bearer scheme (RFC 6750), the scheme's name
/// in any case (RFC 9110: schemes are case-insensitive), `None` for any other value. The one
/// bearer parser of every entry point: the authorizer, the demo route, local-api's identity.
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
