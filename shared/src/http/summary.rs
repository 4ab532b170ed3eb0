//! What the one log line of a request says about it: the route, who called in which role,
//! and what was decided. Built by the HTTP mapping (which knows the route and the caller) and
//! by the token authorizer; written by each entry point's wiring, which adds the latency and
//! its own context (the Lambda functions: Powertools' fields and an EMF metric, `adapter-aws`;
//! local-api: a tracing line). Never a token: only ids the caller was authenticated as.

use std::borrow::Cow;

use serde::Serialize;

use super::caller::Caller;
use crate::domain::Policy;

/// How a request ended, in the three kinds a metric is worth splitting by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Served (HTTP status below 400), or the authorizer allowed the token.
    Allowed,
    /// Refused for the caller's or the request's sake (4xx), or a token the authorizer denied.
    Refused,
    /// The service could not decide (5xx, or an authorizer that denied because a store or KMS
    /// was unreachable).
    Failed,
}

impl Decision {
    pub fn of_status(status: u16) -> Self {
        match status {
            ..400 => Self::Allowed,
            400..500 => Self::Refused,
            _ => Self::Failed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// One request, as its log line tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `METHOD /path/{template}` of the route (a bounded set: it is a metric dimension),
    /// `unrouted` for a 404/405, `authorizer` for the token authorizer, `preflight` for a CORS
    /// preflight local-api answered.
    pub route: Cow<'static, str>,
    /// The caller's roles by the policy's groups (`support`, `auditor`, `operator`,
    /// `introspect`, joined with `+`), `user` with none of them, `anonymous` when the request
    /// carries no authenticated caller.
    pub role: String,
    /// The end user acting on their own data, or whose consent a token rides on.
    pub user: Option<String>,
    /// The staff member calling (an agent, auditor or operator), or a token's acting agent.
    pub agent: Option<String>,
    pub decision: Decision,
    /// The HTTP status answered (none for the authorizer, which answers allow or deny).
    pub status: Option<u16>,
    /// API Gateway's request id where there is one (the `instance` of a problem answer).
    pub correlation_id: Option<String>,
}

/// The roles of the policy's groups, in the order a role label lists them.
fn roles(caller: &Caller, policy: &Policy) -> String {
    let groups = [
        ("operator", &policy.operator_group),
        ("auditor", &policy.auditor_group),
        ("support", &policy.support_group),
        ("introspect", &policy.introspect_group),
    ];
    let held: Vec<&str> = groups.iter().filter(|(_, g)| caller.in_group(g)).map(|(label, _)| *label).collect();
    if held.is_empty() { "user".to_owned() } else { held.join("+") }
}

impl Summary {
    /// A request answered with `status` on `route`, by `caller` (none: not authenticated).
    pub(crate) fn of_http(
        route: Cow<'static, str>,
        caller: Option<(&Caller, &Policy)>,
        status: u16,
        correlation_id: Option<String>,
    ) -> Self {
        let (role, user, agent) = match caller {
            None => ("anonymous".to_owned(), None, None),
            Some((c, policy)) => {
                let role = roles(c, policy);
                let sub = Some(c.sub().to_owned());
                if role == "user" { (role, sub, None) } else { (role, None, sub) }
            }
        };
        Self { route, role, user, agent, decision: Decision::of_status(status), status: Some(status), correlation_id }
    }

    /// A CORS preflight, which local-api answers before any route or identity check (on AWS,
    /// API Gateway answers it and no function runs).
    pub fn of_preflight(status: u16) -> Self {
        Self::of_http(Cow::Borrowed("preflight"), None, status, None)
    }
}
