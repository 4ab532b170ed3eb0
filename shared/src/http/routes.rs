//! The HTTP contract of DESIGN.md, route by route. Each handler parses the request into domain
//! values (refusing anything else with 400 before touching a store), calls its use case and
//! shapes the answer.

use http::{Method, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};

use super::body::{form_body, json_body, no_body, query};
use super::caller::Caller;
use super::problem::problem_response;
use crate::app::{self, ApiError, AuthorizeError, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use crate::domain::{
    AgentId, AuditEventType, AuditFilter, ConsentDuration, Note, Reason, RequestId, Scope, Timestamp, UserId,
};
use crate::ports::Ports;
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
    /// `GET /.well-known/jwks.json`
    Jwks,
    /// Any method on `/app/whoami`: the demo resource guarded by the impersonation token.
    Whoami,
    /// `POST /introspect`: RFC 7662 token introspection for resource servers outside AWS.
    Introspect,
    /// `GET /audit/export[?user_id=...]`: one user's stream (or all) and its checkpoints, as JSON Lines.
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
}

/// The prefix of the per-request routes of the user.
const MY_REQUESTS: &str = "/me/access-requests/";

impl Route {
    /// The route for `method` on `path`: 404 for an unknown path, 405 for a known path with
    /// a method it does not take.
    pub fn resolve(method: &Method, path: &str) -> Result<Self, ApiError> {
        let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
        let (allow, route) = match (path, method) {
            ("/consents", &Method::POST) => ("POST", Some(Self::GrantConsent)),
            ("/consents", _) => ("POST", None),
            ("/consents/current", &Method::GET) => ("GET, DELETE", Some(Self::GetConsent)),
            ("/consents/current", &Method::DELETE) => ("GET, DELETE", Some(Self::RevokeConsent)),
            ("/consents/current", _) => ("GET, DELETE", None),
            ("/tokens", &Method::POST) => ("POST", Some(Self::MintToken)),
            ("/tokens", _) => ("POST", None),
            ("/audit", &Method::GET) => ("GET", Some(Self::QueryAudit)),
            ("/audit/export", &Method::GET) => ("GET", Some(Self::ExportAudit)),
            ("/audit/export", _) => ("GET", None),
            ("/audit", _) => ("GET", None),
            ("/me/access-log", &Method::GET) => ("GET", Some(Self::AccessLog)),
            ("/me/access-log", _) => ("GET", None),
            ("/.well-known/jwks.json", &Method::GET | &Method::HEAD) => ("GET", Some(Self::Jwks)),
            ("/.well-known/jwks.json", _) => ("GET", None),
            ("/app/whoami", _) => ("", Some(Self::Whoami)),
            ("/introspect", &Method::POST) => ("POST", Some(Self::Introspect)),
            ("/introspect", _) => ("POST", None),
            ("/access-requests", &Method::POST) => ("GET, POST", Some(Self::FileAccessRequest)),
            ("/access-requests", &Method::GET) => ("GET, POST", Some(Self::AgentAccessRequests)),
            ("/access-requests", _) => ("GET, POST", None),
            ("/me/access-requests", &Method::GET) => ("GET", Some(Self::MyAccessRequests)),
            ("/me/access-requests", _) => ("GET", None),
            (p, m) if p.starts_with(MY_REQUESTS) => match (decision_of(p), m) {
                (Some((_, Decision::Approve)), &Method::POST) => ("POST", Some(Self::ApproveAccessRequest)),
                (Some((_, Decision::Deny)), &Method::POST) => ("POST", Some(Self::DenyAccessRequest)),
                (Some(_), _) => ("POST", None),
                (None, _) => return Err(ApiError::NotFound("no such route")),
            },
            _ => return Err(ApiError::NotFound("no such route")),
        };
        route.ok_or(ApiError::MethodNotAllowed { allow })
    }

    /// Whether API Gateway runs the identity (JWT) authorizer on this route, as the template
    /// says: every route but the public JWK Set and the demo resource, which the impersonation
    /// token's own Lambda authorizer guards instead.
    pub fn takes_identity(self) -> bool {
        !matches!(self, Self::Jwks | Self::Whoami)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Approve,
    Deny,
}

/// The `{request_id}` (unparsed) and decision of `/me/access-requests/{request_id}/{approve|deny}`.
fn decision_of(path: &str) -> Option<(&str, Decision)> {
    let (id, action) = path.strip_prefix(MY_REQUESTS)?.split_once('/')?;
    let decision = match action.strip_suffix('/').unwrap_or(action) {
        "approve" => Decision::Approve,
        "deny" => Decision::Deny,
        _ => return None,
    };
    (!id.is_empty()).then_some((id, decision))
}

/// Resolves the route from the request itself (local-api) and handles it.
pub async fn route(req: Request, ports: &Ports) -> Response<Body> {
    match Route::resolve(req.method(), req.uri().path()) {
        Ok(route) => handle(route, req, ports).await,
        Err(e) => problem_response(&e, &request_id(&req)),
    }
}

/// Resolves the route from the request and handles it if it is one of `routes` (a Lambda
/// function serving several routes); any other is 404.
pub async fn route_among(routes: &[Route], req: Request, ports: &Ports) -> Response<Body> {
    match Route::resolve(req.method(), req.uri().path()) {
        Ok(route) if routes.contains(&route) => handle(route, req, ports).await,
        Ok(_) => problem_response(&ApiError::NotFound("no such route"), &request_id(&req)),
        Err(e) => problem_response(&e, &request_id(&req)),
    }
}

/// Handles `req` as `route`: the one entry point of every Lambda function.
pub async fn handle(route: Route, req: Request, ports: &Ports) -> Response<Body> {
    let result = match route {
        Route::GrantConsent => grant_consent(&req, ports).await,
        Route::GetConsent => get_consent(&req, ports).await,
        Route::RevokeConsent => revoke_consent(&req, ports).await,
        Route::MintToken => mint_token(&req, ports).await,
        Route::QueryAudit => query_audit(&req, ports).await,
        Route::AccessLog => access_log(&req, ports).await,
        Route::Jwks => Ok(json(StatusCode::OK, ports.keys.jwks())),
        Route::Whoami => whoami(&req, ports).await,
        Route::Introspect => introspect(&req, ports).await,
        Route::ExportAudit => export_audit(&req, ports).await,
        Route::FileAccessRequest => file_access_request(&req, ports).await,
        Route::AgentAccessRequests => agent_access_requests(&req, ports).await,
        Route::MyAccessRequests => my_access_requests(&req, ports).await,
        Route::ApproveAccessRequest => approve_access_request(&req, ports).await,
        Route::DenyAccessRequest => deny_access_request(&req, ports).await,
    };
    result.unwrap_or_else(|e| problem_response(&e, &request_id(&req)))
}

/// API Gateway's request id, or a fresh one where there is none.
fn request_id(req: &Request) -> String {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.request_id.clone(),
        _ => None,
    }
    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(serde_json::to_string(body).expect("response bodies always serialize")))
        .expect("a static status and headers always build")
}

fn caller(req: &Request, ports: &Ports) -> Result<Caller, ApiError> {
    Caller::from_request(req, &ports.policy)
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

async fn grant_consent(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    let body: GrantBody = json_body(req)?;
    let duration = ConsentDuration::parse(body.duration_seconds, &ports.policy)?;
    let scope = body.scope.as_deref().map(Scope::parse).transpose()?.unwrap_or_default();
    let note = body.note.as_deref().map(Note::parse).transpose()?.unwrap_or_default();
    let consent = app::grant_consent(ports, &user, duration, scope, note).await?;
    Ok(json(StatusCode::CREATED, &consent))
}

async fn get_consent(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    Ok(json(StatusCode::OK, &app::current_consent(ports, &user).await?))
}

async fn revoke_consent(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    app::revoke_consent(ports, &user).await?;
    Ok(Response::builder().status(StatusCode::NO_CONTENT).body(Body::Empty).expect("static response"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    user_id: String,
    reason: String,
}

async fn mint_token(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, ports)?;
    caller.require_group(&ports.policy.support_group)?;
    let agent = caller.agent_id()?;
    let body: MintBody = json_body(req)?;
    let user = UserId::parse(&body.user_id)?;
    let reason = Reason::parse(&body.reason)?;
    let minted = app::mint_token(ports, &agent, caller.sign_in(), &user, reason).await?;
    Ok(json(StatusCode::CREATED, &minted))
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

/// The answer of every listing of access requests.
#[derive(Serialize)]
struct AccessRequestList {
    requests: Vec<crate::domain::AccessRequest>,
}

async fn file_access_request(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, ports)?;
    caller.require_group(&ports.policy.support_group)?;
    let agent = caller.agent_id()?;
    let body: AccessRequestBody = json_body(req)?;
    let user = UserId::parse(&body.user_id)?;
    let reason = Reason::parse(&body.reason)?;
    let scope = body.scope.as_deref().map(Scope::parse).transpose()?.unwrap_or_default();
    let duration = ConsentDuration::parse(body.duration_seconds, &ports.policy)?;
    let request = app::file_request(ports, &agent, user, reason, scope, duration).await?;
    Ok(json(StatusCode::CREATED, &request))
}

async fn agent_access_requests(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, ports)?;
    caller.require_group(&ports.policy.support_group)?;
    let requests = app::agent_requests(ports, &caller.agent_id()?).await?;
    Ok(json(StatusCode::OK, &AccessRequestList { requests }))
}

async fn my_access_requests(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    let requests = app::user_requests(ports, &user).await?;
    Ok(json(StatusCode::OK, &AccessRequestList { requests }))
}

/// The request id in the path of a decision route; a malformed one is as absent as an unknown one.
fn request_id_in(req: &Request) -> Result<RequestId, ApiError> {
    decision_of(req.uri().path())
        .and_then(|(id, _)| RequestId::parse(id).ok())
        .ok_or(ApiError::NotFound("no such access request"))
}

async fn approve_access_request(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    let id = request_id_in(req)?;
    no_body(req)?;
    let consent = app::approve_request(ports, &user, &id).await?;
    Ok(json(StatusCode::CREATED, &consent))
}

async fn deny_access_request(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    let id = request_id_in(req)?;
    no_body(req)?;
    Ok(json(StatusCode::OK, &app::deny_request(ports, &user, &id).await?))
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

async fn query_audit(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, ports)?;
    caller.require_group(&ports.policy.auditor_group)?;
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
    let page = app::query_audit(ports, filter, limit, p.cursor.as_deref()).await?;
    Ok(json(StatusCode::OK, &page))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    user_id: Option<String>,
}

/// The export is JSON Lines (`application/x-ndjson`): audit events as the API returns them,
/// each stream oldest first, then the checkpoints that seal them (see `app::export_lines`),
/// so `support-access verify` can check the chains offline.
async fn export_audit(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, ports)?;
    caller.require_group(&ports.policy.auditor_group)?;
    let p: ExportParams = query(req)?;
    let user = p.user_id.as_deref().map(UserId::parse).transpose()?;
    let mut lines = String::new();
    for line in app::export_lines(ports, user).await? {
        lines.push_str(&line.to_string());
        lines.push('\n');
    }
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(lines))
        .expect("a static status and headers always build"))
}

async fn access_log(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let user = caller(req, ports)?.user_id()?;
    let p: AccessLogParams = query(req)?;
    let filter = AuditFilter { user_id: Some(user), ..AuditFilter::default() };
    let limit = page_size(p.limit.as_deref())?;
    let page = app::query_audit(ports, filter, limit, p.cursor.as_deref()).await?;
    Ok(json(StatusCode::OK, &page))
}

async fn whoami(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or(ApiError::Unauthenticated)?;
    match app::authorize(ports, bearer, req.method(), req.uri().path()).await {
        Ok(who) => Ok(json(StatusCode::OK, &WhoamiView::from(who))),
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
async fn introspect(req: &Request, ports: &Ports) -> Result<Response<Body>, ApiError> {
    let caller = caller(req, ports)?;
    caller.require_group(&ports.policy.introspect_group)?;
    let resource_server = caller.agent_id()?;
    let body: IntrospectBody = form_body(req)?;
    let claims = app::introspect(ports, body.token.trim(), &resource_server).await?;
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

#[derive(Serialize)]
struct WhoamiView {
    user_id: UserId,
    acting_agent: AgentId,
    scope: Scope,
    consent_id: crate::domain::ConsentId,
}

impl From<app::Authorized> for WhoamiView {
    fn from(a: app::Authorized) -> Self {
        Self { user_id: a.user_id, acting_agent: a.acting_agent, scope: a.scope, consent_id: a.consent_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_resolve_and_others_do_not() {
        assert_eq!(Route::resolve(&Method::POST, "/consents").unwrap(), Route::GrantConsent);
        assert_eq!(Route::resolve(&Method::GET, "/consents/current").unwrap(), Route::GetConsent);
        assert_eq!(Route::resolve(&Method::DELETE, "/consents/current/").unwrap(), Route::RevokeConsent);
        assert_eq!(Route::resolve(&Method::PATCH, "/app/whoami").unwrap(), Route::Whoami);
        assert_eq!(Route::resolve(&Method::POST, "/introspect").unwrap(), Route::Introspect);
        assert!(matches!(
            Route::resolve(&Method::GET, "/introspect"),
            Err(ApiError::MethodNotAllowed { allow: "POST" })
        ));
        assert!(matches!(Route::resolve(&Method::GET, "/consents"), Err(ApiError::MethodNotAllowed { allow: "POST" })));
        assert!(matches!(Route::resolve(&Method::GET, "/nope"), Err(ApiError::NotFound(_))));
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
        assert_eq!(decision_of("/me/access-requests/abc/deny"), Some(("abc", Decision::Deny)));
        assert!(matches!(
            Route::resolve(&Method::GET, "/me/access-requests/abc/approve"),
            Err(ApiError::MethodNotAllowed { allow: "POST" })
        ));
        for missing in ["/me/access-requests//approve", "/me/access-requests/abc", "/me/access-requests/abc/grant"] {
            assert!(matches!(Route::resolve(&Method::POST, missing), Err(ApiError::NotFound(_))), "{missing}");
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
