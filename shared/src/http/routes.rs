//! The HTTP contract (`openapi.yaml`), route by route. Each handler parses the request into domain
//! values (refusing anything else with 400 before touching a store), calls its use case and
//! shapes the answer.

use std::borrow::Cow;

use http::{Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

use super::body::{form_body, json_body, no_body, query};
use super::caller::Caller;
use super::problem::problem_response;
use super::summary::Summary;
use crate::app::Services;
use crate::app::{self, ApiError, AuthorizeError, DEFAULT_PAGE_SIZE, ExportScope, MAX_PAGE_SIZE};
use crate::domain::{
    AgentId, AuditEventType, AuditFilter, ConsentDuration, Note, Reason, RequestId, Scope, Timestamp, UserId,
};
use crate::token::Rejection;

/// Every route of the API. A Lambda serves one; local-api resolves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /consents`
    GrantConsent,
    /// `GET /consents/current`
    GetConsent,
    /// `DELETE /consents/current`
    RevokeConsent,
    /// `POST /tokens`
    MintToken,
    /// `GET /audit`
    QueryAudit,
    /// `GET /me/access-log`
    AccessLog,
    /// `GET /.well-known/jwks.json`: the keys that sign tokens, and only those.
    Jwks,
    /// Any method on `/app/whoami`: the demo resource guarded by the impersonation token.
    Whoami,
    /// `POST /introspect`: RFC 7662 token introspection for resource servers outside AWS.
    Introspect,
    /// `POST /introspect/uses`: a resource server reports a use of a token it was shown
    /// (method and path), recorded as the authorizer records one.
    ReportUse,
    /// `GET /audit/export[?user_id=...|stream=unattributed][&cursor=...]`: one user's stream (or
    /// the unattributed one, or all) and its checkpoints, as JSON Lines in pages.
    ExportAudit,
    /// `POST /access-requests`: an agent asks a user for access.
    FileAccessRequest,
    /// `GET /access-requests`: the requests the calling agent filed.
    AgentAccessRequests,
    /// `GET /me/access-requests`: the caller's requests, as the user asked.
    MyAccessRequests,
    /// `POST /me/access-requests/{request_id}/approve`
    ApproveAccessRequest,
    /// `POST /me/access-requests/{request_id}/deny`
    DenyAccessRequest,
    /// `GET /operator/emergency-stop`: whether the emergency stop is engaged (operators).
    GetEmergencyStop,
    /// `PUT /operator/emergency-stop`: engage it, refusing every grant, mint and use.
    EngageEmergencyStop,
    /// `DELETE /operator/emergency-stop`: lift it.
    LiftEmergencyStop,
    /// `POST /operator/agents/{agent_id}/revoke-tokens`: kill every live token of one agent.
    RevokeAgentTokens,
    /// `GET /.well-known/checkpoint-keys.json`: the keys that sign audit checkpoints, for
    /// `support-access verify`; never a token key's set.
    CheckpointKeys,
    /// `GET /.well-known/oauth-authorization-server`: the issuer's metadata (RFC 8414).
    AuthorizationServerMetadata,
    /// `GET /.well-known/openid-configuration`: the same document where OpenID Connect
    /// Discovery looks for it.
    OpenIdConfiguration,
    /// `POST /token`: the issuer's OAuth token endpoint, RFC 8693 token exchange only: the
    /// agent's identity token in, an impersonation token out, by `POST /tokens`' use case.
    TokenExchange,
}

/// The route table: every route with the methods it takes (none listed: any method) and
/// its path, `{request_id}` or `{agent_id}` standing for a path parameter. It is the one list of routes:
/// [`Route::resolve`] reads it, the fuzz harness draws its requests from it, and the tests
/// hold `openapi.yaml` and the SAM template to it.
const TABLE: &[(Route, &[&str], &str)] = &[
    (Route::GrantConsent, &["POST"], "/consents"),
    (Route::GetConsent, &["GET"], "/consents/current"),
    (Route::RevokeConsent, &["DELETE"], "/consents/current"),
    (Route::MintToken, &["POST"], "/tokens"),
    (Route::QueryAudit, &["GET"], "/audit"),
    (Route::ExportAudit, &["GET"], "/audit/export"),
    (Route::AccessLog, &["GET"], "/me/access-log"),
    (Route::Jwks, &["GET", "HEAD"], "/.well-known/jwks.json"),
    (Route::Whoami, &[], "/app/whoami"),
    (Route::Introspect, &["POST"], "/introspect"),
    (Route::ReportUse, &["POST"], "/introspect/uses"),
    (Route::FileAccessRequest, &["POST"], "/access-requests"),
    (Route::AgentAccessRequests, &["GET"], "/access-requests"),
    (Route::MyAccessRequests, &["GET"], "/me/access-requests"),
    (Route::ApproveAccessRequest, &["POST"], "/me/access-requests/{request_id}/approve"),
    (Route::DenyAccessRequest, &["POST"], "/me/access-requests/{request_id}/deny"),
    (Route::GetEmergencyStop, &["GET"], "/operator/emergency-stop"),
    (Route::EngageEmergencyStop, &["PUT"], "/operator/emergency-stop"),
    (Route::LiftEmergencyStop, &["DELETE"], "/operator/emergency-stop"),
    (Route::RevokeAgentTokens, &["POST"], "/operator/agents/{agent_id}/revoke-tokens"),
    (Route::CheckpointKeys, &["GET", "HEAD"], "/.well-known/checkpoint-keys.json"),
    (Route::AuthorizationServerMetadata, &["GET", "HEAD"], "/.well-known/oauth-authorization-server"),
    (Route::OpenIdConfiguration, &["GET", "HEAD"], "/.well-known/openid-configuration"),
    (Route::TokenExchange, &["POST"], "/token"),
];

/// The order methods are listed in an `Allow` header.
const METHOD_ORDER: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Route {
    /// Every route, in the table's order.
    pub fn all() -> impl Iterator<Item = Route> {
        TABLE.iter().map(|(route, _, _)| *route)
    }

    /// The methods this route takes; empty for a route that takes any method.
    pub fn methods(self) -> &'static [&'static str] {
        self.row().1
    }

    /// The route's path as the API documents it, `{request_id}` for a path parameter.
    pub fn path(self) -> &'static str {
        self.row().2
    }

    fn row(self) -> &'static (Route, &'static [&'static str], &'static str) {
        TABLE.iter().find(|(route, _, _)| *route == self).expect("every route is in the table")
    }

    /// The route for `method` on `path` (one trailing slash ignored): 404 for an unknown
    /// path, 405 with the methods it takes for a known path with a method it does not take.
    pub fn resolve(method: &Method, path: &str) -> Result<Self, ApiError> {
        let path = normalized(path);
        let mut allowed: Vec<&str> = Vec::new();
        for (route, methods, template) in TABLE {
            if path_parameter(template, path).is_none() {
                continue;
            }
            if methods.is_empty() || methods.contains(&method.as_str()) {
                return Ok(*route);
            }
            allowed.extend_from_slice(methods);
        }
        if allowed.is_empty() {
            return Err(ApiError::NotFound("no such route"));
        }
        allowed.sort_by_key(|m| METHOD_ORDER.iter().position(|o| o == m));
        allowed.dedup();
        Err(ApiError::MethodNotAllowed { allow: allowed.join(", ") })
    }

    /// `METHOD /path` as a log line and a metric dimension name the route: its first method
    /// (`ANY` for a route of every method) and its path template.
    pub fn label(self) -> Cow<'static, str> {
        Cow::Owned(format!("{} {}", self.methods().first().unwrap_or(&"ANY"), self.path()))
    }

    /// Whether API Gateway runs the identity (JWT) authorizer on this route, as the template
    /// says: every route but the public documents (key sets, the issuer's metadata), the
    /// demo resource, which the impersonation token's own Lambda authorizer guards instead,
    /// and the token endpoint, whose caller's identity token comes in the body
    /// (`subject_token`), verified by the function itself.
    pub fn takes_identity(self) -> bool {
        !matches!(
            self,
            Self::Jwks
                | Self::CheckpointKeys
                | Self::AuthorizationServerMetadata
                | Self::OpenIdConfiguration
                | Self::Whoami
                | Self::TokenExchange
        )
    }
}

/// `path` without one trailing slash (`/` itself stays).
fn normalized(path: &str) -> &str {
    path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path)
}

/// Whether `path` is an instance of `template`: `Some` with the text of its `{...}` segment
/// (`""` for a template without one), `None` when it is not. A parameter is one non-empty
/// segment.
fn path_parameter<'a>(template: &str, path: &'a str) -> Option<&'a str> {
    let mut parameter = "";
    let mut segments = path.split('/');
    for expected in template.split('/') {
        let segment = segments.next()?;
        if expected.starts_with('{') {
            if segment.is_empty() {
                return None;
            }
            parameter = segment;
        } else if expected != segment {
            return None;
        }
    }
    segments.next().is_none().then_some(parameter)
}

/// Resolves the route from the request itself and handles it.
pub async fn route(req: Request, services: &Services) -> Response<Body> {
    answer(Route::resolve(req.method(), req.uri().path()), req, services).await.0
}

/// The route of `req` if it is one of `routes` (a Lambda function serving several routes);
/// any other is 404, as API Gateway answers a route it does not have.
pub fn resolve_among(routes: &[Route], req: &Request) -> Result<Route, ApiError> {
    match Route::resolve(req.method(), req.uri().path()) {
        Ok(route) if routes.contains(&route) => Ok(route),
        Ok(_) => Err(ApiError::NotFound("no such route")),
        Err(e) => Err(e),
    }
}

/// The caller of a request, authenticated once by [`answer`] for its handler and its log line.
#[derive(Clone)]
struct KnownCaller(Option<Caller>);

/// The one entry point of every HTTP Lambda function and of local-api: `req` handled as the
/// route it resolved to (or its 404/405 answered), with the [`Summary`] its log line tells.
pub async fn answer(
    resolved: Result<Route, ApiError>,
    mut req: Request,
    services: &Services,
) -> (Response<Body>, Summary) {
    let correlation_id = apigw_request_id(&req);
    let route = match resolved {
        Ok(route) => route,
        Err(e) => {
            let response = problem_response(&e, &request_id(&req));
            let status = response.status().as_u16();
            return (response, Summary::of_http(Cow::Borrowed("unrouted"), None, status, correlation_id));
        }
    };
    let known = Caller::from_request(&req, &services.policy).ok();
    req.extensions_mut().insert(KnownCaller(known.clone()));
    let response = dispatch(route, &req, services).await.unwrap_or_else(|e| problem_response(&e, &request_id(&req)));
    // A handler that authenticates its caller itself (the token endpoint) names them on its
    // response, for the log line.
    let verified = response.extensions().get::<KnownCaller>().and_then(|k| k.0.as_ref());
    let caller = known.as_ref().or(verified).map(|c| (c, &*services.policy));
    let summary = Summary::of_http(route.label(), caller, response.status().as_u16(), correlation_id);
    (response, summary)
}

/// The answer to a request its function cannot serve: its set-up (the SDK clients, the
/// public keys, a secret) failed. 503, whose cause goes to the log; the next request tries
/// the set-up again.
pub fn unavailable(resolved: &Result<Route, ApiError>, req: &Request, cause: String) -> (Response<Body>, Summary) {
    let response = problem_response(&ApiError::Unavailable(cause), &request_id(req));
    let label = resolved.as_ref().map_or(Cow::Borrowed("unrouted"), |r| r.label());
    let summary = Summary::of_http(label, None, response.status().as_u16(), apigw_request_id(req));
    (response, summary)
}

async fn dispatch(route: Route, req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    match route {
        Route::GrantConsent => grant_consent(req, services).await,
        Route::GetConsent => get_consent(req, services).await,
        Route::RevokeConsent => revoke_consent(req, services).await,
        Route::MintToken => mint_token(req, services).await,
        Route::QueryAudit => query_audit(req, services).await,
        Route::AccessLog => access_log(req, services).await,
        Route::Jwks => Ok(public_document(services.keys.jwks())),
        Route::CheckpointKeys => Ok(public_document(&support_access_verify::ExportKeySet {
            keys: services.checkpoint_keys.keys.clone(),
            receipt_keys: services.receipt_keys.keys.clone(),
        })),
        Route::AuthorizationServerMetadata | Route::OpenIdConfiguration => issuer_metadata(&services.policy),
        Route::Whoami => whoami(req, services).await,
        Route::Introspect => introspect(req, services).await,
        Route::ReportUse => report_use(req, services).await,
        Route::ExportAudit => export_audit(req, services).await,
        Route::FileAccessRequest => file_access_request(req, services).await,
        Route::AgentAccessRequests => agent_access_requests(req, services).await,
        Route::MyAccessRequests => my_access_requests(req, services).await,
        Route::ApproveAccessRequest => approve_access_request(req, services).await,
        Route::DenyAccessRequest => deny_access_request(req, services).await,
        Route::GetEmergencyStop => get_emergency_stop(req, services).await,
        Route::EngageEmergencyStop => engage_emergency_stop(req, services).await,
        Route::LiftEmergencyStop => lift_emergency_stop(req, services).await,
        Route::RevokeAgentTokens => revoke_agent_tokens(req, services).await,
        Route::TokenExchange => Ok(token_exchange(req, services).await),
    }
}

/// API Gateway's request id, or a fresh one where there is none.
fn request_id(req: &Request) -> String {
    apigw_request_id(req).unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// How long verifiers and HTTP caches may keep a published key set (the JWK Set, the
/// checkpoint keys): they are public and change only on rotation, so caching them spares KMS
/// and the function; a rotation publishes a new key at least this long (plus the verifiers'
/// own cache) before it signs (docs/operators.md, "Rotating the signing keys"). The issuer's
/// metadata, public too, changes only on a redeploy and is kept as long.
pub const KEY_SET_CACHE_CONTROL: &str = "public, max-age=300";

fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    json_with(status, body, "no-store")
}

/// A published document (a key set, the issuer's metadata): public, cacheable for
/// [`KEY_SET_CACHE_CONTROL`].
fn public_document<T: Serialize + ?Sized>(body: &T) -> Response<Body> {
    json_with(StatusCode::OK, body, KEY_SET_CACHE_CONTROL)
}

fn json_with<T: Serialize + ?Sized>(status: StatusCode, body: &T, cache_control: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, cache_control)
        .body(Body::from(serde_json::to_string(body).expect("response bodies always serialize")))
        .expect("a static status and headers always build")
}

/// The issuer's metadata: RFC 8414 authorization server metadata, served as it is at both
/// well-known paths so that issuer-only configurations (OpenID Connect Discovery first, as
/// most libraries try) find it. Only what holds: the keys, introspection, ES256, and the
/// token endpoint (`POST /token`) with its one grant, RFC 8693 token exchange, for public
/// clients (`none`: the agent's identity token in the body is the credential, so no client
/// secret is issued or checked). Neither is there an authorization endpoint: this is not an
/// OpenID provider (`response_types_supported` is empty), and the OpenID-only members say
/// what a library reading them needs (ES256, public subjects). A bare-name issuer has no
/// well-known location: 404.
#[derive(Serialize)]
struct IssuerMetadata<'a> {
    issuer: &'a str,
    jwks_uri: String,
    introspection_endpoint: String,
    token_endpoint: String,
    grant_types_supported: [&'static str; 1],
    token_endpoint_auth_methods_supported: [&'static str; 1],
    response_types_supported: [&'static str; 0],
    subject_types_supported: [&'static str; 1],
    id_token_signing_alg_values_supported: [&'static str; 1],
}

fn issuer_metadata(policy: &crate::domain::Policy) -> Result<Response<Body>, ApiError> {
    let issuer = policy
        .issuer_url()
        .ok_or(ApiError::NotFound("the issuer is not a URL: set SUPPORT_ACCESS_ISSUER (TokenIssuer on AWS)"))?;
    Ok(public_document(&IssuerMetadata {
        issuer,
        jwks_uri: format!("{issuer}{}", Route::Jwks.path()),
        introspection_endpoint: format!("{issuer}{}", Route::Introspect.path()),
        token_endpoint: format!("{issuer}{}", Route::TokenExchange.path()),
        grant_types_supported: [TOKEN_EXCHANGE_GRANT],
        token_endpoint_auth_methods_supported: ["none"],
        response_types_supported: [],
        subject_types_supported: ["public"],
        id_token_signing_alg_values_supported: ["ES256"],
    }))
}

/// The caller [`answer`] authenticated (401 where none), else authenticated here.
fn caller(req: &Request, services: &Services) -> Result<Caller, ApiError> {
    match req.extensions().get::<KnownCaller>() {
        Some(KnownCaller(known)) => known.clone().ok_or(ApiError::Unauthenticated),
        None => Caller::from_request(req, &services.policy),
    }
}

/// API Gateway's request id, if the request came through it.
fn apigw_request_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    duration_seconds: i64,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    note: Option<String>,
}

async fn grant_consent(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    let body: GrantBody = json_body(req)?;
    let duration = ConsentDuration::parse(body.duration_seconds, &services.policy)?;
    let scope = body.scope.as_deref().map(Scope::parse).transpose()?.unwrap_or_default();
    let note = body.note.as_deref().map(Note::parse).transpose()?.unwrap_or_default();
    let consent = app::grant_consent(services, &user, duration, scope, note).await?;
    Ok(json(StatusCode::CREATED, &consent))
}

async fn get_consent(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    Ok(json(StatusCode::OK, &app::current_consent(services, &user).await?))
}

async fn revoke_consent(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    app::revoke_consent(services, &user).await?;
    Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).expect("static response"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    user_id: String,
    reason: String,
}

async fn mint_token(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.support_group)?;
    let agent = caller.agent_id()?;
    let body: MintBody = json_body(req)?;
    let user = UserId::parse(&body.user_id)?;
    let reason = Reason::parse(&body.reason)?;
    let minted = app::mint_token(services, &agent, caller.sign_in(), &user, reason).await?;
    Ok(json(StatusCode::CREATED, &minted))
}

/// RFC 8693's grant type, the only one the token endpoint serves.
pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The `subject_token_type`s the identity verifier takes: the identity provider's ID token,
/// its access token (Cognito's, whose audience is its `client_id`), or any JWT of it.
const SUBJECT_TOKEN_TYPES: [&str; 3] = [
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:access_token",
    "urn:ietf:params:oauth:token-type:jwt",
];
/// What an impersonation token is, in RFC 8693's words: an access token of this issuer, and a
/// JWT. A `requested_token_type` must be one of them; the answer's `issued_token_type` is the
/// one asked for (`access_token` when none was).
const ISSUED_TOKEN_TYPES: [&str; 2] =
    ["urn:ietf:params:oauth:token-type:access_token", "urn:ietf:params:oauth:token-type:jwt"];

/// The token exchange request's parameters (RFC 8693 section 2.1), read from the form's pairs:
/// a parameter sent empty is absent and one this endpoint does not know is ignored (RFC 6749
/// section 3.2); any other but `audience` sent twice is refused (section 3.1), `audience`
/// may repeat (RFC 8693).
#[derive(Default)]
struct ExchangeParams {
    grant_type: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    requested_subject: Option<String>,
    reason: Option<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    audience: Vec<String>,
    resource: Vec<String>,
}

impl ExchangeParams {
    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, ApiError> {
        let mut p = Self::default();
        for (name, value) in pairs {
            if value.is_empty() {
                continue;
            }
            let slot = match name.as_str() {
                "audience" => {
                    p.audience.push(value);
                    continue;
                }
                "resource" => {
                    p.resource.push(value);
                    continue;
                }
                "grant_type" => &mut p.grant_type,
                "subject_token" => &mut p.subject_token,
                "subject_token_type" => &mut p.subject_token_type,
                "requested_subject" => &mut p.requested_subject,
                "reason" => &mut p.reason,
                "scope" => &mut p.scope,
                "requested_token_type" => &mut p.requested_token_type,
                "actor_token" => &mut p.actor_token,
                "actor_token_type" => &mut p.actor_token_type,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(ApiError::InvalidRequest(format!("{name} must not be sent more than once")));
            }
        }
        Ok(p)
    }
}

/// What a valid exchange asks for, every parameter checked before the subject token is
/// read: the grant, the subject token and its type, no actor token (delegation by an actor
/// token is not served: the agent acts as the user in their own name, which the minted
/// token's `act` says), the audience (this service's own, `Policy::audience`; no `resource`,
/// which names no app this service knows), the scope (one of this service's: the token still
/// carries the consent's, which the user chose, RFC 6749 section 3.3), the token type, and
/// the user (`requested_subject`, as Keycloak names it) and `reason`, as `POST /tokens` takes them.
struct Exchange {
    subject_token: String,
    user: UserId,
    reason: Reason,
    issued_token_type: &'static str,
}

fn exchange_request(p: ExchangeParams, policy: &crate::domain::Policy) -> Result<Exchange, ApiError> {
    let missing = |name: &str| ApiError::InvalidRequest(format!("{name} is required"));
    match p.grant_type.as_deref() {
        None => return Err(missing("grant_type")),
        Some(TOKEN_EXCHANGE_GRANT) => {}
        Some(_) => return Err(ApiError::UnsupportedGrantType),
    }
    if p.actor_token.is_some() || p.actor_token_type.is_some() {
        return Err(ApiError::InvalidRequest(
            "actor_token is not supported: the subject token's identity acts as the requested_subject itself".into(),
        ));
    }
    let subject_token = p.subject_token.ok_or_else(|| missing("subject_token"))?;
    match p.subject_token_type.as_deref() {
        None => return Err(missing("subject_token_type")),
        Some(t) if SUBJECT_TOKEN_TYPES.contains(&t) => {}
        Some(_) => {
            return Err(ApiError::InvalidRequest(format!(
                "subject_token_type must be one of {}",
                SUBJECT_TOKEN_TYPES.join(", ")
            )));
        }
    }
    let issued_token_type = match p.requested_token_type.as_deref() {
        None => ISSUED_TOKEN_TYPES[0],
        Some(t) => ISSUED_TOKEN_TYPES.iter().copied().find(|i| *i == t).ok_or_else(|| {
            ApiError::InvalidRequest(format!("requested_token_type must be one of {}", ISSUED_TOKEN_TYPES.join(", ")))
        })?,
    };
    if !p.resource.is_empty() {
        return Err(ApiError::InvalidTarget(format!(
            "resource is not supported: name the app by audience ({})",
            policy.audience
        )));
    }
    if p.audience.iter().any(|a| *a != policy.audience) {
        return Err(ApiError::InvalidTarget(format!("the only audience is {}", policy.audience)));
    }
    if let Some(scope) = p.scope.as_deref()
        && Scope::parse(scope).is_err()
    {
        return Err(ApiError::InvalidScope(
            "scope must be one of read, full (the token carries the consent's scope)".into(),
        ));
    }
    let user = UserId::parse(p.requested_subject.as_deref().ok_or_else(|| missing("requested_subject"))?)
        .map_err(|e| ApiError::InvalidRequest(format!("requested_subject: {e}")))?;
    let reason = Reason::parse(p.reason.as_deref().ok_or_else(|| missing("reason"))?)?;
    Ok(Exchange { subject_token, user, reason, issued_token_type })
}

/// RFC 8693 section 2.2.1's answer, with `POST /tokens`' own members beside it.
#[derive(Serialize)]
struct ExchangedToken {
    access_token: String,
    issued_token_type: &'static str,
    token_type: &'static str,
    expires_in: i64,
    scope: Scope,
    expires_at: Timestamp,
    jti: crate::domain::Jti,
    consent_id: crate::domain::ConsentId,
}

/// `POST /token`: RFC 8693 token exchange. The agent's identity token (`subject_token`) is
/// verified here against the identity provider (`Services::identity`, as the app API's
/// authorizer verifies a user's), then the request is `POST /tokens`' own: the support group,
/// then `app::mint_token` unchanged (its consent, reason, step-up and audit rules). 200 with
/// the token; every refusal in RFC 6749's shape ([`super::problem::oauth_error_response`]).
/// The caller, once verified, is on the response for the log line.
async fn token_exchange(req: &Request, services: &Services) -> Response<Body> {
    let mut verified = None;
    let mut response = exchange(req, services, &mut verified)
        .await
        .unwrap_or_else(|e| super::problem::oauth_error_response(&e, &request_id(req)));
    response.extensions_mut().insert(KnownCaller(verified));
    response
}

async fn exchange(
    req: &Request,
    services: &Services,
    verified: &mut Option<Caller>,
) -> Result<Response<Body>, ApiError> {
    let request = exchange_request(ExchangeParams::from_pairs(form_body(req)?)?, &services.policy)?;
    let verifier = services
        .identity
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("no identity provider is configured to verify subject tokens".into()))?;
    let identity = match verifier.verify(&request.subject_token, services.clock.now().unix()).await {
        Ok(identity) => identity,
        Err(crate::identity::IdentityRejection::Unavailable(e)) => {
            return Err(ApiError::Unavailable(format!("identity provider: {e}")));
        }
        Err(e) => {
            tracing::info!(error = %e, "subject_token refused");
            return Err(ApiError::InvalidRequest(
                "subject_token is not a valid identity token of the identity provider".into(),
            ));
        }
    };
    let caller = verified.insert(Caller::from_identity(&identity, &services.policy));
    caller.require_group(&services.policy.support_group)?;
    let agent = caller.agent_id()?;
    let minted = app::mint_token(services, &agent, caller.sign_in(), &request.user, request.reason).await?;
    let mut response = json(
        StatusCode::OK,
        &ExchangedToken {
            access_token: minted.access_token,
            issued_token_type: request.issued_token_type,
            token_type: minted.token_type,
            expires_in: minted.expires_in,
            scope: minted.scope,
            expires_at: minted.expires_at,
            jti: minted.jti,
            consent_id: minted.consent_id,
        },
    );
    response.headers_mut().insert(header::PRAGMA, http::HeaderValue::from_static("no-cache"));
    Ok(response)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessRequestBody {
    user_id: String,
    reason: String,
    #[serde(default)]
    scope: Option<String>,
    duration_seconds: i64,
}

/// The query of every listing of access requests: `?status=pending` (the only filter) keeps
/// the ones pending now; `limit` and `cursor` page as on `/audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestListParams {
    status: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

impl RequestListParams {
    fn listing(&self) -> Result<app::RequestListing, ApiError> {
        match self.status.as_deref() {
            None => Ok(app::RequestListing::All),
            Some("pending") => Ok(app::RequestListing::Pending),
            Some(_) => Err(ApiError::InvalidRequest("status must be pending (or absent, for every request)".into())),
        }
    }
}

async fn file_access_request(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.support_group)?;
    let agent = caller.agent_id()?;
    let body: AccessRequestBody = json_body(req)?;
    let user = UserId::parse(&body.user_id)?;
    let reason = Reason::parse(&body.reason)?;
    let scope = body.scope.as_deref().map(Scope::parse).transpose()?.unwrap_or_default();
    let duration = ConsentDuration::parse(body.duration_seconds, &services.policy)?;
    let request = app::file_request(services, &agent, user, reason, scope, duration).await?;
    Ok(json(StatusCode::CREATED, &request))
}

async fn agent_access_requests(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.support_group)?;
    let agent = caller.agent_id()?;
    let p: RequestListParams = query(req)?;
    let limit = page_size(p.limit.as_deref())?;
    let page = app::agent_requests(services, &agent, p.listing()?, limit, p.cursor.as_deref()).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn my_access_requests(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    let p: RequestListParams = query(req)?;
    let limit = page_size(p.limit.as_deref())?;
    let page = app::user_requests(services, &user, p.listing()?, limit, p.cursor.as_deref()).await?;
    Ok(json(StatusCode::OK, &page))
}

/// The request id in the path of a decision route; a malformed one is as absent as an unknown one.
fn request_id_in(route: Route, req: &Request) -> Result<RequestId, ApiError> {
    path_parameter(route.path(), normalized(req.uri().path()))
        .and_then(|id| RequestId::parse(id).ok())
        .ok_or(ApiError::NotFound("no such access request"))
}

async fn approve_access_request(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    let id = request_id_in(Route::ApproveAccessRequest, req)?;
    no_body(req)?;
    let consent = app::approve_request(services, &user, &id).await?;
    Ok(json(StatusCode::CREATED, &consent))
}

async fn deny_access_request(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    let id = request_id_in(Route::DenyAccessRequest, req)?;
    no_body(req)?;
    Ok(json(StatusCode::OK, &app::deny_request(services, &user, &id).await?))
}

/// The caller as an operator: 403 unless in the operator group (which is never the support
/// group, `Policy::from_lookup` makes sure).
fn operator(req: &Request, services: &Services) -> Result<AgentId, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.operator_group)?;
    caller.agent_id()
}

/// The body of every operator action: why, for the log of everyone it affects.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorBody {
    reason: String,
}

async fn get_emergency_stop(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    operator(req, services)?;
    Ok(json(StatusCode::OK, &app::emergency_stop(services).await?))
}

async fn engage_emergency_stop(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let by = operator(req, services)?;
    let body: OperatorBody = json_body(req)?;
    let reason = Reason::parse(&body.reason)?;
    Ok(json(StatusCode::OK, &app::engage_stop(services, &by, reason).await?))
}

async fn lift_emergency_stop(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let by = operator(req, services)?;
    no_body(req)?;
    app::lift_stop(services, &by).await?;
    Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).expect("static response"))
}

async fn revoke_agent_tokens(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let by = operator(req, services)?;
    let raw = path_parameter(Route::RevokeAgentTokens.path(), normalized(req.uri().path())).unwrap_or_default();
    let agent =
        AgentId::parse(&percent_decoded(raw)).map_err(|e| ApiError::InvalidRequest(format!("agent_id: {e}")))?;
    let body: OperatorBody = json_body(req)?;
    let reason = Reason::parse(&body.reason)?;
    Ok(json(StatusCode::OK, &app::revoke_agent_tokens(services, &by, &agent, reason).await?))
}

/// A path segment with its `%XX` escapes decoded (a client may escape the `@` or `:` of an
/// id); anything that does not decode to UTF-8 is kept as sent, and then fails to parse.
fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| segment.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    user_id: Option<String>,
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogParams {
    limit: Option<String>,
    cursor: Option<String>,
}

fn page_size(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_PAGE_SIZE) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        _ => Err(ApiError::InvalidRequest(format!("limit must be a whole number in 1..={MAX_PAGE_SIZE}"))),
    }
}

async fn query_audit(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.auditor_group)?;
    let p: AuditParams = query(req)?;
    let filter = AuditFilter {
        user_id: p.user_id.as_deref().map(UserId::parse).transpose()?,
        actor: p.actor.as_deref().map(AgentId::parse).transpose()?,
        event_type: p.event_type.as_deref().map(AuditEventType::parse).transpose()?,
        from: p.from.as_deref().map(|t| Timestamp::parse_rfc3339(t, "from")).transpose()?,
        to: p.to.as_deref().map(|t| Timestamp::parse_rfc3339(t, "to")).transpose()?,
    };
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err(ApiError::InvalidRequest("from must not be after to".into()));
    }
    let limit = page_size(p.limit.as_deref())?;
    let page = app::query_audit(services, filter, limit, p.cursor.as_deref()).await?;
    Ok(json(StatusCode::OK, &page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    user_id: Option<String>,
    stream: Option<String>,
    cursor: Option<String>,
}

/// The export is JSON Lines (`application/x-ndjson`) in pages: audit events as the API
/// returns them, each stream oldest first, then the checkpoints that seal them (see
/// `app::export_page`), so `support-access verify` can check the chains offline. A page that
/// is not the last names the next in a `Link: <?…&cursor=…>; rel="next"` header (a reference
/// relative to this request, so it holds behind any stage prefix).
async fn export_audit(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.auditor_group)?;
    let p: ExportParams = query(req)?;
    let scope = match (p.user_id.as_deref(), p.stream.as_deref()) {
        (None, None) => ExportScope::All,
        (Some(user), None) => ExportScope::User(UserId::parse(user)?),
        (None, Some("unattributed")) => ExportScope::Unattributed,
        (None, Some(_)) => return Err(ApiError::InvalidRequest("stream must be unattributed".into())),
        (Some(_), Some(_)) => return Err(ApiError::InvalidRequest("give user_id or stream, not both".into())),
    };
    let page = app::export_page(services, &scope, p.cursor.as_deref()).await?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store");
    if let Some(cursor) = &page.next_cursor {
        // The cursor is base64url with a `.`, safe in a URL as it is; so is a user id
        // (`[A-Za-z0-9._@:+-]`) once its `+` (a space in a query) is escaped.
        let scope = match &scope {
            ExportScope::All => String::new(),
            ExportScope::User(user) => format!("user_id={}&", user.as_str().replace('+', "%2B")),
            ExportScope::Unattributed => "stream=unattributed&".to_owned(),
        };
        response = response.header(header::LINK, format!("<?{scope}cursor={cursor}>; rel=\"next\""));
    }
    Ok(response.body(Body::from(page.lines)).expect("a static status and headers always build"))
}

async fn access_log(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let user = caller(req, services)?.user_id()?;
    let p: AccessLogParams = query(req)?;
    let filter = AuditFilter { user_id: Some(user), ..AuditFilter::default() };
    let limit = page_size(p.limit.as_deref())?;
    let page = app::query_audit(services, filter, limit, p.cursor.as_deref()).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn whoami(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(super::bearer_token)
        .ok_or(ApiError::Unauthenticated)?;
    match app::authorize_bearer(services, bearer, req.method(), req.uri().path()).await {
        Ok(access) => Ok(json(StatusCode::OK, &access.context())),
        Err(AuthorizeError::Rejected(Rejection::Scope)) => {
            Err(ApiError::Forbidden("the token's scope does not allow this method"))
        }
        Err(AuthorizeError::Rejected(_)) => Err(ApiError::TokenRefused),
        Err(AuthorizeError::Unavailable(e)) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct IntrospectBody {
    token: String,
    /// RFC 7662 lets the caller hint at the token's type; there is only one type here.
    #[serde(default, rename = "token_type_hint")]
    _token_type_hint: Option<String>,
}

/// RFC 7662 §2.2: what an active token is. An inactive one (forged, expired, revoked,
/// replaced) is only ever `{"active": false}`, with no hint of why.
#[derive(Serialize)]
struct IntrospectionView {
    active: bool,
    #[serde(flatten)]
    claims: Option<ActiveClaims>,
}

#[derive(Serialize)]
struct ActiveClaims {
    sub: UserId,
    act: crate::token::ActClaim,
    scope: Scope,
    exp: i64,
    iat: i64,
    nbf: i64,
    cid: crate::domain::ConsentId,
    jti: crate::domain::Jti,
    iss: String,
    aud: String,
    token_type: &'static str,
}

/// `POST /introspect`: only callers in the introspect group may ask (the answer discloses
/// who is acting as whom). The live consent is checked as on every use; the scope is not,
/// since there is no method to check it against: the resource server enforces it.
async fn introspect(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.introspect_group)?;
    let resource_server = caller.agent_id()?;
    let body: IntrospectBody = form_body(req)?;
    let claims = app::introspect(services, body.token.trim(), &resource_server).await?;
    let view = IntrospectionView {
        active: claims.is_some(),
        claims: claims.map(|c| ActiveClaims {
            sub: c.sub,
            act: c.act,
            scope: c.scope,
            exp: c.exp,
            iat: c.iat,
            nbf: c.nbf,
            cid: c.cid,
            jti: c.jti,
            iss: c.iss,
            aud: c.aud,
            token_type: "Bearer",
        }),
    };
    Ok(json(StatusCode::OK, &view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UseReportBody {
    token: String,
    method: String,
    path: String,
}

/// The longest path a use report may name, in bytes (the detail keeps its first 115 or more
/// characters, `app::report_use`).
const MAX_REPORTED_PATH_BYTES: usize = 2048;

/// A reported use's method: one of the methods an HTTP API routes (the route table's own),
/// spelled exactly, in capitals.
fn reported_method(method: &str) -> Result<Method, ApiError> {
    METHOD_ORDER
        .iter()
        .find(|m| **m == method)
        .map(|m| Method::from_bytes(m.as_bytes()).expect("the listed methods are valid"))
        .ok_or_else(|| ApiError::InvalidRequest(format!("method must be one of {}", METHOD_ORDER.join(", "))))
}

/// A reported use's path: the request's path as the resource server received it, starting
/// with `/`, at most [`MAX_REPORTED_PATH_BYTES`], visible ASCII only (percent-encode the
/// rest, as on the wire) and no query or fragment, which may carry secrets the user's log
/// must not keep. No space, so the reporter that follows it in the detail is unambiguous.
fn reported_path(path: &str) -> Result<&str, ApiError> {
    let invalid = |why: &str| Err(ApiError::InvalidRequest(format!("path {why}")));
    if !path.starts_with('/') {
        return invalid("must start with /");
    }
    if path.len() > MAX_REPORTED_PATH_BYTES {
        return invalid(&format!("must be at most {MAX_REPORTED_PATH_BYTES} bytes"));
    }
    if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#') {
        return invalid("must be visible ASCII (percent-encoded) without a query or fragment");
    }
    Ok(path)
}

/// `POST /introspect/uses`: a resource server in the introspect group (as for
/// `POST /introspect`) reports that it served `method` on `path` with `token`. 200 with the
/// authorizer's context (`user_id`, `acting_agent`, `scope`, `consent_id`, `jti`) once the use
/// is recorded as `token.used`; 403 `use-refused` when the token may not be used so (refused
/// and audited as on the authorizer, why only on the log); 503 when the check or the write
/// could not complete. The body is checked whole before the token is read.
async fn report_use(req: &Request, services: &Services) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, services)?;
    caller.require_group(&services.policy.introspect_group)?;
    let resource_server = caller.agent_id()?;
    let body: UseReportBody = json_body(req)?;
    let method = reported_method(&body.method)?;
    let path = reported_path(&body.path)?;
    if body.token.is_empty() {
        return Err(ApiError::InvalidRequest("token must not be empty".into()));
    }
    match app::report_use(services, &body.token, &method, path, &resource_server).await {
        Ok(used) => Ok(json(StatusCode::OK, &used)),
        Err(AuthorizeError::Rejected(_)) => Err(ApiError::UseRefused),
        Err(AuthorizeError::Unavailable(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow_of(result: Result<Route, ApiError>) -> String {
        match result {
            Err(ApiError::MethodNotAllowed { allow }) => allow,
            other => panic!("expected 405, got {other:?}"),
        }
    }

    #[test]
    fn known_paths_resolve_and_others_do_not() {
        assert_eq!(Route::resolve(&Method::POST, "/consents").unwrap(), Route::GrantConsent);
        assert_eq!(Route::resolve(&Method::GET, "/consents/current").unwrap(), Route::GetConsent);
        assert_eq!(Route::resolve(&Method::DELETE, "/consents/current/").unwrap(), Route::RevokeConsent);
        assert_eq!(Route::resolve(&Method::PATCH, "/app/whoami").unwrap(), Route::Whoami);
        assert_eq!(Route::resolve(&Method::POST, "/introspect").unwrap(), Route::Introspect);
        assert_eq!(Route::resolve(&Method::HEAD, "/.well-known/jwks.json").unwrap(), Route::Jwks);
        assert_eq!(allow_of(Route::resolve(&Method::GET, "/introspect")), "POST");
        assert_eq!(Route::resolve(&Method::POST, "/introspect/uses/").unwrap(), Route::ReportUse);
        assert_eq!(allow_of(Route::resolve(&Method::GET, "/introspect/uses")), "POST");
        assert_eq!(allow_of(Route::resolve(&Method::GET, "/consents")), "POST");
        assert_eq!(allow_of(Route::resolve(&Method::PUT, "/consents/current")), "GET, DELETE");
        assert_eq!(allow_of(Route::resolve(&Method::DELETE, "/access-requests")), "GET, POST");
        assert_eq!(allow_of(Route::resolve(&Method::POST, "/.well-known/jwks.json")), "GET, HEAD");
        for unknown in ["/nope", "/", "", "/consents/current/x", "//consents", "/CONSENTS", "/consents//"] {
            assert!(matches!(Route::resolve(&Method::GET, unknown), Err(ApiError::NotFound(_))), "{unknown}");
        }
    }

    #[test]
    fn access_request_routes_resolve_with_their_id_in_the_path() {
        assert_eq!(Route::resolve(&Method::POST, "/access-requests").unwrap(), Route::FileAccessRequest);
        assert_eq!(Route::resolve(&Method::GET, "/access-requests").unwrap(), Route::AgentAccessRequests);
        assert_eq!(Route::resolve(&Method::GET, "/me/access-requests").unwrap(), Route::MyAccessRequests);
        assert_eq!(
            Route::resolve(&Method::POST, "/me/access-requests/abc/approve").unwrap(),
            Route::ApproveAccessRequest
        );
        assert_eq!(Route::resolve(&Method::POST, "/me/access-requests/abc/deny/").unwrap(), Route::DenyAccessRequest);
        assert_eq!(path_parameter(Route::DenyAccessRequest.path(), "/me/access-requests/abc/deny"), Some("abc"));
        assert_eq!(path_parameter(Route::ApproveAccessRequest.path(), "/me/access-requests/abc/deny"), None);
        assert_eq!(allow_of(Route::resolve(&Method::GET, "/me/access-requests/abc/approve")), "POST");
        for missing in [
            "/me/access-requests//approve",
            "/me/access-requests/abc",
            "/me/access-requests/abc/grant",
            "/me/access-requests/abc/approve/x",
            "/me/access-requests/a/b/approve",
        ] {
            assert!(matches!(Route::resolve(&Method::POST, missing), Err(ApiError::NotFound(_))), "{missing}");
        }
    }

    #[test]
    fn a_reported_use_names_a_known_method_and_a_bare_visible_path() {
        for m in METHOD_ORDER {
            assert_eq!(reported_method(m).unwrap().as_str(), *m);
        }
        for bad in ["get", "TRACE", "CONNECT", "", " GET", "GET ", "PROPFIND"] {
            assert!(matches!(reported_method(bad), Err(ApiError::InvalidRequest(_))), "{bad:?}");
        }
        let longest = format!("/{}", "a".repeat(MAX_REPORTED_PATH_BYTES - 1));
        for good in ["/", "/orders/42", "/a%20b/~x:y@z!$&'()*+,;=", longest.as_str()] {
            assert_eq!(reported_path(good).unwrap(), good);
        }
        let too_long = format!("{longest}a");
        for bad in [
            "",
            "orders",
            "//\u{e9}",
            "/a b",
            "/a\tb",
            "/a\nb",
            "/orders?token=secret",
            "/orders#top",
            "/caf\u{e9}",
            "/a\u{7f}",
            too_long.as_str(),
        ] {
            assert!(matches!(reported_path(bad), Err(ApiError::InvalidRequest(_))), "{bad:?}");
        }
    }

    #[test]
    fn every_route_resolves_from_its_own_path_and_methods() {
        for route in Route::all() {
            let path = route
                .path()
                .replace("{request_id}", "0190b4c8-7f00-7000-8000-000000000000")
                .replace("{agent_id}", "agent-7");
            let methods = if route.methods().is_empty() { &["GET", "POST", "DELETE"][..] } else { route.methods() };
            for method in methods {
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                assert_eq!(Route::resolve(&method, &path).unwrap(), route, "{method} {path}");
            }
        }
    }

    /// `(METHOD, path)` of every operation in a YAML document's lines: OpenAPI's `paths`
    /// (a path key at two spaces, its methods at four) or the SAM template's HttpApi events
    /// (`Path:` and `Method:` properties).
    fn openapi_operations(yaml: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut path = None;
        for line in yaml.lines() {
            if let Some(p) = line.strip_prefix("  /").and_then(|p| p.strip_suffix(':')) {
                path = Some(format!("/{p}"));
            } else if !line.starts_with("    ") && !line.trim().is_empty() {
                path = None;
            } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|m| m.strip_suffix(':')))
                && ["get", "head", "options", "post", "put", "patch", "trace", "delete"].contains(&m)
            {
                out.push((m.to_uppercase(), p.clone()));
            }
        }
        out.sort();
        out
    }

    fn template_operations(yaml: &str) -> Vec<(String, String)> {
        let value = |line: &str, key: &str| {
            let at = line.find(key)? + key.len();
            let rest = line[at..].trim_start();
            let text = match rest.strip_prefix('"') {
                Some(quoted) => &quoted[..quoted.find('"')?],
                None => rest[..rest.find([',', '}']).unwrap_or(rest.len())].trim(),
            };
            Some(text.to_owned())
        };
        let mut out = Vec::new();
        let mut pending_path: Option<String> = None;
        for line in yaml.lines() {
            if let Some(p) = value(line, "Path:") {
                pending_path = Some(p);
            }
            if let (Some(m), Some(p)) = (value(line, "Method:"), &pending_path) {
                out.push((m.to_uppercase(), p.clone()));
                pending_path = None;
            }
        }
        out.sort();
        out
    }

    fn table_operations(with_any: &[&str], skip: &[Route]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Route::all()
            .filter(|r| !skip.contains(r))
            .flat_map(|r| {
                let methods = if r.methods().is_empty() { with_any } else { r.methods() };
                methods.iter().map(move |m| (m.to_string(), r.path().to_owned()))
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn openapi_documents_exactly_the_route_table() {
        let spec = include_str!("../../../openapi.yaml");
        let mut documented = openapi_operations(spec);
        let expected = table_operations(&["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "TRACE", "DELETE"], &[]);
        documented.dedup();
        assert_eq!(documented, expected);
    }

    #[test]
    fn the_sam_template_deploys_exactly_the_route_table() {
        let template = include_str!("../../../infra/template.yaml");
        // The demo resource is local-api's only; HEAD is served by the GET route.
        let expected: Vec<_> =
            table_operations(&[], &[Route::Whoami]).into_iter().filter(|(m, _)| m != "HEAD").collect();
        assert_eq!(template_operations(template), expected);
    }

    #[test]
    fn operator_routes_resolve_and_their_agent_id_is_decoded() {
        assert_eq!(Route::resolve(&Method::PUT, "/operator/emergency-stop").unwrap(), Route::EngageEmergencyStop);
        assert_eq!(Route::resolve(&Method::GET, "/operator/emergency-stop/").unwrap(), Route::GetEmergencyStop);
        assert_eq!(Route::resolve(&Method::DELETE, "/operator/emergency-stop").unwrap(), Route::LiftEmergencyStop);
        assert_eq!(allow_of(Route::resolve(&Method::POST, "/operator/emergency-stop")), "GET, PUT, DELETE");
        assert_eq!(
            Route::resolve(&Method::POST, "/operator/agents/a@b.example/revoke-tokens").unwrap(),
            Route::RevokeAgentTokens
        );
        assert!(matches!(Route::resolve(&Method::POST, "/operator/agents//revoke-tokens"), Err(ApiError::NotFound(_))));
        assert_eq!(percent_decoded("a%40b.example"), "a@b.example");
        assert_eq!(percent_decoded("agent-7"), "agent-7");
        assert_eq!(percent_decoded("bad%zz%"), "bad%zz%");
        assert_eq!(percent_decoded("%ff"), "%ff");
    }

    #[test]
    fn the_issuer_metadata_names_the_issuer_its_keys_introspection_and_the_token_exchange_grant() {
        let policy = crate::domain::Policy { issuer: "https://support.example.com".into(), ..Default::default() };
        let response = issuer_metadata(&policy).unwrap();
        assert_eq!(response.headers()[header::CACHE_CONTROL], KEY_SET_CACHE_CONTROL);
        let doc: serde_json::Value = serde_json::from_slice(response.body().as_ref()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "issuer": "https://support.example.com",
                "jwks_uri": "https://support.example.com/.well-known/jwks.json",
                "introspection_endpoint": "https://support.example.com/introspect",
                "token_endpoint": "https://support.example.com/token",
                "grant_types_supported": ["urn:ietf:params:oauth:grant-type:token-exchange"],
                "token_endpoint_auth_methods_supported": ["none"],
                "response_types_supported": [],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256"],
            })
        );
        assert_eq!(
            Route::resolve(&Method::GET, "/.well-known/openid-configuration").unwrap(),
            Route::OpenIdConfiguration
        );
        assert!(!Route::AuthorizationServerMetadata.takes_identity() && !Route::OpenIdConfiguration.takes_identity());
        // A bare-name issuer has no well-known location.
        let legacy = crate::domain::Policy::default();
        assert!(matches!(issuer_metadata(&legacy), Err(ApiError::NotFound(_))));
    }

    /// A browser may send every method a route takes (the CORS allow list is a constant, for
    /// the template test to compare): no more, no fewer. A route of any method (the demo
    /// resource) takes them all, but OPTIONS, which a preflight is.
    #[test]
    fn cors_allows_exactly_the_methods_of_the_route_table() {
        let mut taken: Vec<&str> = if TABLE.iter().any(|(_, methods, _)| methods.is_empty()) {
            METHOD_ORDER.to_vec()
        } else {
            TABLE.iter().flat_map(|(_, methods, _)| methods.iter().copied()).collect()
        };
        taken.retain(|m| *m != "OPTIONS");
        taken.sort_by_key(|m| METHOD_ORDER.iter().position(|o| o == m));
        taken.dedup();
        assert_eq!(taken, crate::http::cors::ALLOW_METHODS);
    }

    fn exchange_of(pairs: &[(&str, &str)]) -> Result<Exchange, ApiError> {
        let pairs = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        exchange_request(ExchangeParams::from_pairs(pairs)?, &crate::domain::Policy::default())
    }

    const VALID: [(&str, &str); 5] = [
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", "eyJ.x.y"),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
        ("requested_subject", "alice"),
        ("reason", "ticket 4411: billing page broken"),
    ];

    fn with(extra: &[(&'static str, &'static str)], without: &str) -> Vec<(&'static str, &'static str)> {
        VALID.iter().copied().filter(|(k, _)| *k != without).chain(extra.iter().copied()).collect()
    }

    #[test]
    fn a_token_exchange_request_is_checked_whole_and_each_refusal_has_its_oauth_error() {
        let ok = exchange_of(&VALID).unwrap();
        assert_eq!((ok.user.as_str(), ok.issued_token_type), ("alice", ISSUED_TOKEN_TYPES[0]));
        // Unknown parameters are ignored, empty ones are absent, audience may repeat.
        let ok = exchange_of(&with(
            &[
                ("client_id", "support-tool"),
                ("scope", ""),
                ("audience", "support-access-app"),
                ("audience", "support-access-app"),
                ("scope", "read"),
                ("requested_token_type", "urn:ietf:params:oauth:token-type:jwt"),
            ],
            "",
        ))
        .unwrap();
        assert_eq!(ok.issued_token_type, "urn:ietf:params:oauth:token-type:jwt");
        let refused = |pairs: Vec<(&str, &str)>| exchange_of(&pairs).err().unwrap_or_else(|| panic!("{pairs:?}"));
        assert!(matches!(
            refused(with(&[("grant_type", "client_credentials")], "grant_type")),
            ApiError::UnsupportedGrantType
        ));
        assert!(matches!(refused(with(&[("audience", "another-app")], "")), ApiError::InvalidTarget(_)));
        assert!(matches!(refused(with(&[("resource", "https://app.example.com")], "")), ApiError::InvalidTarget(_)));
        assert!(matches!(refused(with(&[("scope", "read full")], "")), ApiError::InvalidScope(_)));
        assert!(matches!(refused(with(&[("scope", "admin")], "")), ApiError::InvalidScope(_)));
        for bad in [
            with(&[], "grant_type"),
            with(&[], "subject_token"),
            with(&[], "subject_token_type"),
            with(&[], "requested_subject"),
            with(&[], "reason"),
            with(&[("actor_token", "eyJ.a.b")], ""),
            with(&[("actor_token_type", "urn:ietf:params:oauth:token-type:id_token")], ""),
            with(&[("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")], "subject_token_type"),
            with(&[("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token")], ""),
            with(&[("requested_subject", "al ice")], "requested_subject"),
            with(&[("reason", "x")], "reason"),
            with(&[("requested_subject", "bob")], ""),
        ] {
            assert!(matches!(refused(bad.clone()), ApiError::InvalidRequest(_)), "{bad:?}");
        }
    }

    #[test]
    fn page_size_is_bounded() {
        assert_eq!(page_size(None).unwrap(), 50);
        assert_eq!(page_size(Some("1")).unwrap(), 1);
        assert_eq!(page_size(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", ""] {
            assert!(page_size(Some(bad)).is_err(), "{bad}");
        }
    }
}
