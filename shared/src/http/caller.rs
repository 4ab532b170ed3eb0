//! Who is calling, from the identity token API Gateway's JWT authorizer validated (or
//! local-api, playing it). API Gateway hands every claim over in the request context as a
//! string, so an array claim arrives as `"[a b]"`: a group named `tier1 support` and the two
//! groups `tier1` and `support` look the same there. So list claims (the groups claim, `amr`)
//! are read as the arrays they are, from the token itself: the JWT authorizer takes it from
//! the `Authorization` header (infra/template.yaml, `IdentitySource`), which API Gateway
//! passes on to the function, already verified; the function decodes its payload and checks
//! it is the token the context describes. With no token at hand, a rendering is read only
//! when it cannot be misread ([`rendered_list`]); anything else carries no role and no `amr`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use serde_json::{Map, Value};

use crate::app::ApiError;
use crate::domain::{Actor, AgentId, Policy, SignIn, Timestamp, UserId};
use crate::http::bearer_token;

/// The claims that name one token: the token in the header must carry the same values as the
/// context (`sub` always, the others when either side has them), or it is not the one the
/// authorizer validated.
const SAME_TOKEN_CLAIMS: [&str; 4] = ["sub", "iat", "exp", "jti"];

/// The authenticated caller: their `sub` and their groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    sub: String,
    groups: Vec<String>,
    sign_in: SignIn,
}

impl Caller {
    /// The caller of `req`; 401 when the request carries no authenticated `sub`, or carries a
    /// bearer token that is not the one its claims came from.
    pub fn from_request(req: &Request, policy: &Policy) -> Result<Self, ApiError> {
        let claims = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
            }
            _ => None,
        };
        let claims = claims.ok_or(ApiError::Unauthenticated)?;
        let sub = claims.get("sub").filter(|s| !s.is_empty()).ok_or(ApiError::Unauthenticated)?;
        let bearer =
            req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_token);
        let (groups, amr) = match bearer {
            Some(token) => {
                let payload = token_payload(token).ok_or_else(|| {
                    tracing::warn!("the bearer token beside the authorizer's claims is not a JWT; refused");
                    ApiError::Unauthenticated
                })?;
                if let Some(claim) =
                    SAME_TOKEN_CLAIMS.into_iter().find(|c| !same_claim(payload.get(*c), claims.get(*c)))
                {
                    tracing::warn!(claim, "the bearer token is not the one the authorizer's claims describe; refused");
                    return Err(ApiError::Unauthenticated);
                }
                (token_list(payload.get(&policy.groups_claim)), token_list(payload.get("amr")))
            }
            None => (
                claims.get(&policy.groups_claim).map(|g| rendered_or_none(&policy.groups_claim, g)).unwrap_or_default(),
                claims.get("amr").map(|a| rendered_or_none("amr", a)).unwrap_or_default(),
            ),
        };
        // `auth_time` (seconds since the epoch) arrives as its decimal text, which cannot be
        // misread; anything else reads as absent.
        let sign_in = SignIn {
            amr,
            auth_time: claims.get("auth_time").and_then(|t| t.trim().parse::<i64>().ok()).map(Timestamp::from_unix),
        };
        Ok(Self { sub: sub.clone(), groups, sign_in })
    }

    /// The caller an identity token names that the service verified itself (the token
    /// exchange's `subject_token`, `crate::identity`): the same `sub`, groups and sign-in as
    /// [`Caller::from_request`] reads from the same token behind API Gateway's JWT authorizer,
    /// here from its JSON claims directly (lists as arrays, `auth_time` a number).
    pub fn from_identity(identity: &crate::identity::IdentityClaims, policy: &Policy) -> Self {
        let sign_in = SignIn {
            amr: identity.list("amr"),
            auth_time: identity.claims.get("auth_time").and_then(Value::as_i64).map(Timestamp::from_unix),
        };
        Self { sub: identity.sub.clone(), groups: identity.list(&policy.groups_claim), sign_in }
    }

    /// The caller's `sub`, as authenticated (for the request's log line).
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// How the caller signed in (`amr`, `auth_time`), for the step-up policy.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// The caller as an end user; their `sub` must be a valid id to key their data, and not
    /// one of the names the audit log gives the service itself and unidentified callers.
    pub fn user_id(&self) -> Result<UserId, ApiError> {
        self.refuse_reserved()?;
        UserId::parse(&self.sub).map_err(|_| ApiError::Forbidden("the identity's sub is not a usable user id"))
    }

    /// The caller as an actor (agent, auditor); never one of the service's own actor names.
    pub fn agent_id(&self) -> Result<AgentId, ApiError> {
        self.refuse_reserved()?;
        AgentId::parse(&self.sub).map_err(|_| ApiError::Forbidden("the identity's sub is not a usable id"))
    }

    /// 403 for a `sub` the audit log uses for the service (`support-access`) or for a caller
    /// nobody could identify (`unknown`): an event of such a caller would pass for theirs.
    fn refuse_reserved(&self) -> Result<(), ApiError> {
        if Actor::is_reserved(&self.sub) {
            return Err(ApiError::Forbidden("the identity's sub is a name the service reserves for its own actors"));
        }
        Ok(())
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// 403 unless the caller is in `group`.
    pub fn require_group(&self, group: &str) -> Result<(), ApiError> {
        if self.in_group(group) { Ok(()) } else { Err(ApiError::MissingGroup(group.to_owned())) }
    }
}

/// The payload of a compact JWT, unverified: only ever read for a token API Gateway's JWT
/// authorizer (or local-api) has already verified, and only after its claims are matched to
/// the context's.
fn token_payload(token: &str) -> Option<Map<String, Value>> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    serde_json::from_slice(&B64.decode(payload).ok()?).ok()
}

/// Whether the token's claim and the context's rendering of it agree: both absent, the same
/// string, or the same number (the context carries a number as its decimal text).
fn same_claim(token: Option<&Value>, context: Option<&String>) -> bool {
    match (token, context) {
        (None, None) => true,
        (Some(Value::String(t)), Some(c)) => t == c,
        (Some(Value::Number(n)), Some(c)) => {
            n.as_i64().is_some_and(|n| c.trim().parse::<i64>() == Ok(n)) || n.to_string() == *c
        }
        _ => false,
    }
}

/// A list claim of the token itself: a JSON array's strings, each whole (a group named
/// `tier1 support` is that one group), or a string read as a comma list; anything else is no
/// entries.
pub(crate) fn token_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => {
            items.iter().filter_map(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
        Some(Value::String(s)) => comma_list(s),
        _ => Vec::new(),
    }
}

fn comma_list(raw: &str) -> Vec<String> {
    raw.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect()
}

/// A rendered list claim, or no entries (logged) when the rendering is ambiguous.
fn rendered_or_none(claim: &str, raw: &str) -> Vec<String> {
    rendered_list(raw).unwrap_or_else(|| {
        tracing::warn!(
            claim,
            "an array claim rendered as `[a b]` with whitespace inside and no token to read it from: read as no entries"
        );
        Vec::new()
    })
}

/// A list claim as the request context renders it, `None` when the rendering is ambiguous:
/// a JSON array `["a","b"]` (entries whole); API Gateway's `[a]`, one entry with no
/// whitespace (`[a b]` is either two entries or one containing a space, so it is `None`);
/// `[]`; or a plain comma list `a,b` (entries trimmed, kept whole). Never a role from part of
/// an entry.
pub fn rendered_list(raw: &str) -> Option<Vec<String>> {
    let raw = raw.trim();
    if !raw.starts_with('[') {
        return Some(comma_list(raw));
    }
    if let Ok(list) = serde_json::from_str::<Vec<String>>(raw) {
        return Some(list.into_iter().filter(|g| !g.is_empty()).collect());
    }
    let inner = raw.strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.contains(char::is_whitespace) {
        return None;
    }
    Some(if inner.is_empty() { Vec::new() } else { vec![inner.to_owned()] })
}

/// [`rendered_list`], an ambiguous rendering read as no entries: the groups a caller has when
/// the request carries no token to read them from.
pub fn parse_groups(raw: &str) -> Vec<String> {
    rendered_list(raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use lambda_http::Body;
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
    };
    use serde_json::json;

    use super::*;

    /// A request whose context carries `claims` (API Gateway's strings) and, when given, the
    /// bearer token `payload` in the `Authorization` header (signature not checked here).
    fn request(claims: &[(&str, &str)], payload: Option<Value>) -> Request {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<HashMap<_, _>>();
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        let mut ctx = ApiGatewayV2httpRequestContext::default();
        ctx.authorizer = Some(authorizer);
        let mut req = Request::new(Body::Empty);
        if let Some(payload) = payload {
            let token = format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", B64.encode(payload.to_string()));
            req.headers_mut().insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        }
        req.with_request_context(RequestContext::ApiGatewayV2(ctx))
    }

    fn caller(claims: &[(&str, &str)], payload: Option<Value>) -> Result<Caller, ApiError> {
        Caller::from_request(&request(claims, payload), &Policy::default())
    }

    #[test]
    fn an_unambiguous_rendering_is_read() {
        assert_eq!(parse_groups("[support]"), ["support"]);
        assert_eq!(parse_groups(" [ support ] "), ["support"]);
        assert!(parse_groups("[]").is_empty());
        assert_eq!(parse_groups(r#"["support","auditor"]"#), ["support", "auditor"]);
        assert_eq!(parse_groups(r#"[ "support" , "auditor" ]"#), ["support", "auditor"]);
        assert_eq!(parse_groups("support,auditor"), ["support", "auditor"]);
        assert_eq!(parse_groups("support, auditor"), ["support", "auditor"]);
        assert_eq!(parse_groups("support"), ["support"]);
    }

    #[test]
    fn a_rendering_with_whitespace_inside_brackets_is_ambiguous_and_carries_nothing() {
        for raw in ["[support auditor]", "[tier1 support]", "[read-only auditor]", "[weak mfa]", "[a\tb]", "[support"] {
            assert_eq!(rendered_list(raw), None, "{raw:?}");
            assert!(parse_groups(raw).is_empty(), "{raw:?}");
        }
    }

    #[test]
    fn an_entry_is_never_split_or_half_matched() {
        assert_eq!(parse_groups(r#"["tier1 support"]"#), ["tier1 support"]);
        assert_eq!(parse_groups("tier1 support"), ["tier1 support"]);
        let groups = parse_groups("[supporters]");
        assert!(!groups.iter().any(|g| g == "support" || g == "auditor"));
    }

    #[test]
    fn look_alike_names_in_the_token_give_no_role_and_no_mfa() {
        let claims = [("sub", "agent-7"), ("groups", "[tier1 support read-only auditor]"), ("amr", "[weak mfa]")];
        let payload = json!({"sub": "agent-7", "groups": ["tier1 support", "read-only auditor"], "amr": ["weak mfa"]});
        let c = caller(&claims, Some(payload)).unwrap();
        assert!(!c.in_group("support") && !c.in_group("auditor") && !c.in_group("tier1"));
        assert!(c.in_group("tier1 support"));
        assert_eq!(c.sign_in().amr, ["weak mfa"]);
        // Without the token the same rendering is ambiguous: no role, no amr.
        let c = caller(&claims, None).unwrap();
        assert!(!c.in_group("support") && !c.in_group("auditor"));
        assert!(c.sign_in().amr.is_empty());
    }

    #[test]
    fn real_arrays_in_the_token_give_their_roles() {
        let claims = [("sub", "agent-7"), ("iat", "1764064800"), ("groups", "[support auditor]"), ("amr", "[pwd mfa]")];
        let payload =
            json!({"sub": "agent-7", "iat": 1_764_064_800, "groups": ["support", "auditor"], "amr": ["pwd", "mfa"]});
        let c = caller(&claims, Some(payload)).unwrap();
        assert!(c.in_group("support") && c.in_group("auditor"));
        assert_eq!(c.sign_in().amr, ["pwd", "mfa"]);
    }

    #[test]
    fn a_bearer_that_is_not_the_token_of_the_claims_is_refused() {
        let claims = [("sub", "agent-7"), ("iat", "100"), ("exp", "200"), ("jti", "j1"), ("groups", "[support]")];
        let same = json!({"sub": "agent-7", "iat": 100, "exp": 200, "jti": "j1", "groups": ["support"]});
        assert!(caller(&claims, Some(same.clone())).is_ok());
        for (name, value) in [
            ("sub", json!("agent-8")),
            ("iat", json!(101)),
            ("exp", json!("200x")),
            ("jti", json!("j2")),
            ("sub", Value::Null),
        ] {
            let mut other = same.clone();
            other[name] = value;
            if other[name].is_null() {
                other.as_object_mut().unwrap().remove(name);
            }
            assert!(matches!(caller(&claims, Some(other)), Err(ApiError::Unauthenticated)), "{name}");
        }
        let mut extra = same.clone();
        extra["jti"] = json!("j1");
        let claims_without_jti = [("sub", "agent-7"), ("iat", "100"), ("exp", "200")];
        assert!(matches!(caller(&claims_without_jti, Some(extra)), Err(ApiError::Unauthenticated)));

        let mut req = request(&claims, None);
        req.headers_mut().insert(http::header::AUTHORIZATION, "Bearer not-a-jwt".parse().unwrap());
        assert!(matches!(Caller::from_request(&req, &Policy::default()), Err(ApiError::Unauthenticated)));
    }

    #[test]
    fn the_service_s_own_actor_names_are_no_caller_s_id() {
        for reserved in [Actor::SYSTEM_ID, Actor::UNKNOWN_ID] {
            let c = caller(&[("sub", reserved)], None).unwrap();
            assert!(matches!(c.user_id(), Err(ApiError::Forbidden(_))), "{reserved}");
            assert!(matches!(c.agent_id(), Err(ApiError::Forbidden(_))), "{reserved}");
        }
        assert!(caller(&[("sub", "unknown-user")], None).unwrap().user_id().is_ok());
    }
}
