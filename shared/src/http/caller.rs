//! Who is calling, from the claims API Gateway's JWT authorizer (or local-api, playing it)
//! put in the request context. API Gateway hands every claim over as a string, so a groups
//! array arrives as `"[support auditor]"`; [`parse_groups`] reads that form, a JSON array
//! and a comma-separated list, because misreading it would silently drop every role.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::app::ApiError;
use crate::domain::{AgentId, Policy, SignIn, Timestamp, UserId};

/// The authenticated caller: their `sub` and their groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    sub: String,
    groups: Vec<String>,
    sign_in: SignIn,
}

impl Caller {
    /// The caller of `req`; 401 when the request carries no authenticated `sub`.
    pub fn from_request(req: &Request, policy: &Policy) -> Result<Self, ApiError> {
        let claims = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                ctx.authorizer.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| &j.claims)
            }
            _ => None,
        };
        let claims = claims.ok_or(ApiError::Unauthenticated)?;
        let sub = claims.get("sub").filter(|s| !s.is_empty()).ok_or(ApiError::Unauthenticated)?;
        let groups = claims.get(&policy.groups_claim).map(|g| parse_groups(g)).unwrap_or_default();
        // `amr` is a JSON array, so it arrives in the same renderings as groups; `auth_time`
        // (seconds since the epoch) as its decimal text. Anything else reads as absent.
        let sign_in = SignIn {
            amr: claims.get("amr").map(|a| parse_groups(a)).unwrap_or_default(),
            auth_time: claims.get("auth_time").and_then(|t| t.trim().parse::<i64>().ok()).map(Timestamp::from_unix),
        };
        Ok(Self { sub: sub.clone(), groups, sign_in })
    }

    /// How the caller signed in (`amr`, `auth_time`), for the step-up policy.
    pub fn sign_in(&self) -> &SignIn {
        &self.sign_in
    }

    /// The caller as an end user; their `sub` must be a valid id to key their data.
    pub fn user_id(&self) -> Result<UserId, ApiError> {
        UserId::parse(&self.sub).map_err(|_| ApiError::Forbidden("the identity's sub is not a usable user id"))
    }

    /// The caller as an actor (agent, auditor).
    pub fn agent_id(&self) -> Result<AgentId, ApiError> {
        AgentId::parse(&self.sub).map_err(|_| ApiError::Forbidden("the identity's sub is not a usable id"))
    }

    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }

    /// 403 unless the caller is in `group`.
    pub fn require_group(&self, group: &str) -> Result<(), ApiError> {
        if self.in_group(group) {
            Ok(())
        } else {
            Err(ApiError::Forbidden("the caller lacks the group this route needs"))
        }
    }
}

/// Reads a groups claim (or any list claim, such as `amr`) as API Gateway delivers it: `[a b]`
/// (its rendering of a JSON array), a JSON array `["a","b"]`, or `a,b`. Empty entries are
/// dropped.
pub fn parse_groups(raw: &str) -> Vec<String> {
    let raw = raw.trim();
    if raw.starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(raw)
    {
        return list.into_iter().map(|g| g.trim().to_owned()).filter(|g| !g.is_empty()).collect();
    }
    let inner = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(raw);
    inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|g| g.trim_matches('"'))
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_gateway_bracketed_form_is_read() {
        assert_eq!(parse_groups("[support auditor]"), ["support", "auditor"]);
        assert_eq!(parse_groups("[support]"), ["support"]);
        assert!(parse_groups("[]").is_empty());
    }

    #[test]
    fn a_json_array_is_read() {
        assert_eq!(parse_groups(r#"["support","auditor"]"#), ["support", "auditor"]);
        assert_eq!(parse_groups(r#"[ "support" , "auditor" ]"#), ["support", "auditor"]);
    }

    #[test]
    fn a_comma_separated_string_is_read() {
        assert_eq!(parse_groups("support,auditor"), ["support", "auditor"]);
        assert_eq!(parse_groups("support, auditor"), ["support", "auditor"]);
        assert_eq!(parse_groups("support"), ["support"]);
    }

    #[test]
    fn a_group_is_never_half_matched() {
        let groups = parse_groups("[supporters auditor-readonly]");
        assert!(!groups.iter().any(|g| g == "support" || g == "auditor"));
    }
}
