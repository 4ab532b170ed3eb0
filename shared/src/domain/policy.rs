//! The deployment's limits, read once at start-up from `SUPPORT_ACCESS_*` variables. A bad
//! value stops start-up with a message naming the variable, rather than running with a
//! policy nobody chose.

use thiserror::Error;

use super::StepUpPolicy;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{variable}: {problem}")]
pub struct PolicyError {
    pub variable: &'static str,
    pub problem: String,
}

/// Limits and switches shared by every function and by local-api.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Shortest consent a user may grant.
    pub min_duration_seconds: i64,
    /// Longest consent a user may grant.
    pub max_duration_seconds: i64,
    /// Lifetime of one impersonation token (never past the consent).
    pub token_ttl_seconds: i64,
    /// Clock skew tolerated on `exp` / `nbf`.
    pub leeway_seconds: i64,
    /// Kill switch: off, grant and mint answer 403 `feature-disabled`. Fixed at deploy time;
    /// the emergency stop (`domain::EmergencyStop`) is its run-time counterpart.
    pub enabled: bool,
    /// `iss` of impersonation tokens (and of checkpoints): the service's URL ([`issuer_url_problem`]
    /// says which), whose well-known paths serve its metadata; or, for deployments and
    /// verifiers made before that, a bare name (the old default `support-access`), with no
    /// metadata.
    pub issuer: String,
    /// `aud` of impersonation tokens: the app whose API accepts them.
    pub audience: String,
    /// Identity-token claim that lists the caller's groups.
    pub groups_claim: String,
    pub support_group: String,
    pub auditor_group: String,
    pub introspect_group: String,
    /// Who may engage the emergency stop and revoke an agent's tokens (incident response).
    /// Never the support group: start-up refuses a policy where the two are the same.
    pub operator_group: String,
    /// What an agent's sign-in must show before a mint; off by default.
    pub step_up: StepUpPolicy,
    /// How long an access request waits for the user's decision before it expires.
    pub request_ttl_seconds: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_duration_seconds: 900,
            max_duration_seconds: 7 * 24 * 3600,
            token_ttl_seconds: 900,
            leeway_seconds: 30,
            enabled: true,
            issuer: "support-access".into(),
            audience: "support-access-app".into(),
            groups_claim: "groups".into(),
            support_group: "support".into(),
            auditor_group: "auditor".into(),
            introspect_group: "introspect".into(),
            operator_group: "operator".into(),
            step_up: StepUpPolicy::default(),
            request_ttl_seconds: 24 * 3600,
        }
    }
}

/// `SUPPORT_ACCESS_ISSUER`: unset or empty (the template's parameter before the API's URL is
/// known) is the default; a value with `://` must be an issuer URL; any other is a bare name,
/// as every issuer was before issuers were URLs.
fn issuer(raw: Option<String>, default: &str) -> Result<String, PolicyError> {
    let variable = "SUPPORT_ACCESS_ISSUER";
    let value = raw.as_deref().map(str::trim).unwrap_or("");
    if value.is_empty() {
        return Ok(default.to_owned());
    }
    if value.len() > 256 {
        return Err(PolicyError { variable, problem: "must be 1..=256 characters".into() });
    }
    if value.contains("://")
        && let Some(problem) = issuer_url_problem(value)
    {
        return Err(PolicyError { variable, problem: format!("{value:?}: {problem}") });
    }
    Ok(value.to_owned())
}

/// Why `value` is not an issuer URL, or `None` when it is one. An issuer is compared as an
/// exact string by every verifier (RFC 8414 section 3.3, OpenID Connect Discovery section 4.3),
/// so only one spelling of each origin is taken (see [`origin_problem`]). No path keeps the two
/// well-known locations the same (`/.well-known/oauth-authorization-server` and
/// `/.well-known/openid-configuration` at the root): RFC 8414 puts an issuer's path after the
/// well-known segment, where an API mapping on a custom domain never sees it. `http://` is
/// taken only for a loopback host (local-api).
pub fn issuer_url_problem(value: &str) -> Option<&'static str> {
    if let Some(problem) = origin_problem(value) {
        return Some(problem);
    }
    match value.strip_prefix("http://") {
        Some(authority)
            if !is_loopback_name(if authority.ends_with(']') {
                authority
            } else {
                authority.rsplit_once(':').map_or(authority, |(host, _)| host)
            }) =>
        {
            Some("must start with https:// (http:// only for a loopback host)")
        }
        _ => None,
    }
}

/// Whether `name`, a host without its port (an IPv6 address with or without its brackets), is
/// this machine's loopback: `localhost` (in any ASCII case), 127.0.0.0/8 or `::1`.
pub fn is_loopback_name(name: &str) -> bool {
    let name = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Why `value` is not a web origin as browsers and URL libraries print it (the `Origin` header,
/// an issuer), or `None` when it is one: `https://` or `http://`, a lowercase host (a DNS name
/// or an IP address), an explicit port only when it is not the scheme's default, and nothing
/// after the authority (no path, not even `/`, no query, no fragment, no user).
pub fn origin_problem(value: &str) -> Option<&'static str> {
    let (authority, default_port) = match (value.strip_prefix("https://"), value.strip_prefix("http://")) {
        (Some(rest), _) => (rest, "443"),
        (None, Some(rest)) => (rest, "80"),
        (None, None) => return Some("must start with https://"),
    };
    if authority.contains(['/', '?', '#']) {
        return Some("must be an origin: no path (not even a trailing /), query or fragment");
    }
    if authority.contains('@') {
        return Some("must not carry user information");
    }
    let (host, port) = match authority.find(']') {
        Some(end) => match &authority[end + 1..] {
            "" => (authority, None),
            rest => (&authority[..=end], Some(rest.strip_prefix(':').unwrap_or(rest))),
        },
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                })
        }
    };
    if !host_ok {
        return Some("the host must be a lowercase DNS name or an IP address");
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(n) if n > 0 && !port.starts_with('0') && port != default_port => {}
            _ => return Some("the port must be 1..=65535, without leading zeros, and left out when it is the default"),
        }
    }
    None
}

impl Policy {
    /// The issuer when it is a URL: the base of the metadata documents' URLs. `None` for a bare
    /// name, which has no well-known location.
    pub fn issuer_url(&self) -> Option<&str> {
        issuer_url_problem(&self.issuer).is_none().then_some(self.issuer.as_str())
    }

    /// The largest `SUPPORT_ACCESS_TOKEN_TTL_SECONDS` accepted: no token lives longer (the
    /// verifiers refuse a token whose `exp - iat` is longer).
    pub const MAX_TOKEN_TTL_SECONDS: i64 = support_access_verify::MAX_TOKEN_LIFETIME_SECONDS;
    /// The largest `SUPPORT_ACCESS_LEEWAY_SECONDS` accepted.
    pub const MAX_LEEWAY_SECONDS: i64 = 300;

    /// The policy from the process environment.
    pub fn from_env() -> Result<Self, PolicyError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// The policy from any name → value lookup (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, PolicyError> {
        let d = Self::default();
        let int = |variable: &'static str, default: i64, min: i64, max: i64| -> Result<i64, PolicyError> {
            match lookup(variable) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<i64>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    Ok(v) => Err(PolicyError { variable, problem: format!("{v} is outside {min}..={max}") }),
                    Err(_) => Err(PolicyError { variable, problem: format!("{raw:?} is not a whole number") }),
                },
            }
        };
        let text = |variable: &'static str, default: &str| -> Result<String, PolicyError> {
            match lookup(variable) {
                None => Ok(default.to_owned()),
                Some(v) if !v.trim().is_empty() && v.len() <= 256 => Ok(v.trim().to_owned()),
                Some(_) => Err(PolicyError { variable, problem: "must be 1..=256 characters".into() }),
            }
        };
        const YEAR: i64 = 366 * 24 * 3600;
        let min_duration_seconds = int("SUPPORT_ACCESS_MIN_DURATION_SECONDS", d.min_duration_seconds, 60, YEAR)?;
        let max_duration_seconds = int("SUPPORT_ACCESS_MAX_DURATION_SECONDS", d.max_duration_seconds, 60, YEAR)?;
        if max_duration_seconds < min_duration_seconds {
            return Err(PolicyError {
                variable: "SUPPORT_ACCESS_MAX_DURATION_SECONDS",
                problem: format!("{max_duration_seconds} is below the minimum duration {min_duration_seconds}"),
            });
        }
        let enabled = match lookup("SUPPORT_ACCESS_ENABLED").as_deref().map(str::trim) {
            None => d.enabled,
            Some("true" | "1" | "on" | "yes") => true,
            Some("false" | "0" | "off" | "no") => false,
            Some(other) => {
                return Err(PolicyError {
                    variable: "SUPPORT_ACCESS_ENABLED",
                    problem: format!("{other:?} is not one of true/false/1/0/on/off/yes/no"),
                });
            }
        };
        let support_group = text("SUPPORT_ACCESS_SUPPORT_GROUP", &d.support_group)?;
        let operator_group = text("SUPPORT_ACCESS_OPERATOR_GROUP", &d.operator_group)?;
        if operator_group == support_group {
            // Incident response must not be in the hands of those it may have to stop.
            return Err(PolicyError {
                variable: "SUPPORT_ACCESS_OPERATOR_GROUP",
                problem: format!("{operator_group:?} is the support group; operators must be a group of their own"),
            });
        }
        Ok(Self {
            min_duration_seconds,
            max_duration_seconds,
            token_ttl_seconds: int(
                "SUPPORT_ACCESS_TOKEN_TTL_SECONDS",
                d.token_ttl_seconds,
                60,
                Self::MAX_TOKEN_TTL_SECONDS,
            )?,
            leeway_seconds: int("SUPPORT_ACCESS_LEEWAY_SECONDS", d.leeway_seconds, 0, Self::MAX_LEEWAY_SECONDS)?,
            request_ttl_seconds: int("SUPPORT_ACCESS_REQUEST_TTL_SECONDS", d.request_ttl_seconds, 300, 30 * 24 * 3600)?,
            enabled,
            issuer: issuer(lookup("SUPPORT_ACCESS_ISSUER"), &d.issuer)?,
            audience: text("SUPPORT_ACCESS_AUDIENCE", &d.audience)?,
            groups_claim: text("SUPPORT_ACCESS_GROUPS_CLAIM", &d.groups_claim)?,
            support_group,
            operator_group,
            auditor_group: text("SUPPORT_ACCESS_AUDITOR_GROUP", &d.auditor_group)?,
            introspect_group: text("SUPPORT_ACCESS_INTROSPECT_GROUP", &d.introspect_group)?,
            step_up: StepUpPolicy {
                // Unset or empty (a template parameter left at its default) means off.
                amr: match lookup("SUPPORT_ACCESS_STEP_UP_AMR").as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(_) => Some(text("SUPPORT_ACCESS_STEP_UP_AMR", "")?),
                },
                max_age_seconds: match int("SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS", 0, 0, 7 * 24 * 3600)? {
                    0 => None,
                    seconds => Some(seconds),
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Policy::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_variables_give_the_documented_defaults() {
        let p = from(&[]).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!((p.min_duration_seconds, p.max_duration_seconds), (900, 604_800));
        assert_eq!((p.token_ttl_seconds, p.leeway_seconds), (900, 30));
        assert!(p.enabled);
        assert_eq!((p.support_group.as_str(), p.auditor_group.as_str()), ("support", "auditor"));
        assert_eq!(p.introspect_group, "introspect");
        assert_eq!(p.operator_group, "operator");
        assert!(!p.step_up.is_on());
    }

    #[test]
    fn step_up_is_read_and_empty_values_leave_it_off() {
        let p =
            from(&[("SUPPORT_ACCESS_STEP_UP_AMR", "mfa"), ("SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS", "600")]).unwrap();
        assert_eq!(p.step_up, StepUpPolicy { amr: Some("mfa".into()), max_age_seconds: Some(600) });
        let p = from(&[("SUPPORT_ACCESS_STEP_UP_AMR", ""), ("SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS", "0")]).unwrap();
        assert!(!p.step_up.is_on());
        let e = from(&[("SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS", "-5")]).unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS");
    }

    #[test]
    fn every_variable_is_read() {
        let p = from(&[
            ("SUPPORT_ACCESS_MIN_DURATION_SECONDS", "600"),
            ("SUPPORT_ACCESS_MAX_DURATION_SECONDS", "3600"),
            ("SUPPORT_ACCESS_TOKEN_TTL_SECONDS", "300"),
            ("SUPPORT_ACCESS_LEEWAY_SECONDS", "5"),
            ("SUPPORT_ACCESS_ENABLED", "false"),
            ("SUPPORT_ACCESS_ISSUER", "https://support.example"),
            ("SUPPORT_ACCESS_AUDIENCE", "app"),
            ("SUPPORT_ACCESS_GROUPS_CLAIM", "cognito:groups"),
            ("SUPPORT_ACCESS_SUPPORT_GROUP", "helpdesk"),
            ("SUPPORT_ACCESS_AUDITOR_GROUP", "compliance"),
            ("SUPPORT_ACCESS_INTROSPECT_GROUP", "resource-servers"),
            ("SUPPORT_ACCESS_OPERATOR_GROUP", "incident"),
        ])
        .unwrap();
        assert_eq!(
            (p.min_duration_seconds, p.max_duration_seconds, p.token_ttl_seconds, p.leeway_seconds),
            (600, 3600, 300, 5)
        );
        assert!(!p.enabled);
        assert_eq!(p.issuer, "https://support.example");
        assert_eq!(p.groups_claim, "cognito:groups");
        assert_eq!(p.introspect_group, "resource-servers");
        assert_eq!(p.operator_group, "incident");
    }

    #[test]
    fn operators_are_never_the_support_group() {
        let e = from(&[("SUPPORT_ACCESS_OPERATOR_GROUP", "support")]).unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_OPERATOR_GROUP");
        let e = from(&[("SUPPORT_ACCESS_SUPPORT_GROUP", "helpdesk"), ("SUPPORT_ACCESS_OPERATOR_GROUP", "helpdesk")])
            .unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_OPERATOR_GROUP");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = from(&[("SUPPORT_ACCESS_TOKEN_TTL_SECONDS", "ten")]).unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_TOKEN_TTL_SECONDS");
        assert!(e.to_string().starts_with("SUPPORT_ACCESS_TOKEN_TTL_SECONDS"));
        let e = from(&[("SUPPORT_ACCESS_ENABLED", "maybe")]).unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_ENABLED");
        let e = from(&[("SUPPORT_ACCESS_LEEWAY_SECONDS", "3600")]).unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_LEEWAY_SECONDS");
    }

    #[test]
    fn the_issuer_is_one_spelling_of_an_origin_or_a_bare_name() {
        for good in [
            "https://support.example.com",
            "https://abc123.execute-api.eu-west-1.amazonaws.com",
            "https://support.example.com:8443",
            "http://127.0.0.1:3000",
            "http://localhost:3000",
            "http://[::1]:3000",
            "http://[::1]",
            "https://[2001:db8::1]",
        ] {
            assert_eq!(issuer_url_problem(good), None, "{good}");
            let p = from(&[("SUPPORT_ACCESS_ISSUER", good)]).unwrap();
            assert_eq!((p.issuer.as_str(), p.issuer_url()), (good, Some(good)));
        }
        for bad in [
            "https://support.example.com/",
            "https://support.example.com/prod",
            "https://support.example.com?x=1",
            "https://support.example.com#f",
            "https://Support.Example.com",
            "https://support.example.com:443",
            "http://127.0.0.1:80",
            "https://support.example.com:0",
            "https://support.example.com:08443",
            "https://support.example.com:99999",
            "https://user@support.example.com",
            "https://",
            "https://exa mple.com",
            "https://-bad.example",
            "http://support.example.com",
            "http://10.0.0.1:3000",
            "ftp://support.example.com",
        ] {
            assert!(issuer_url_problem(bad).is_some(), "{bad}");
            if bad.contains("://") {
                let e = from(&[("SUPPORT_ACCESS_ISSUER", bad)]).unwrap_err();
                assert_eq!(e.variable, "SUPPORT_ACCESS_ISSUER", "{bad}");
            }
        }
        // A bare name, as every issuer was before: accepted, with no metadata to serve.
        let p = from(&[("SUPPORT_ACCESS_ISSUER", "support-access")]).unwrap();
        assert_eq!((p.issuer.as_str(), p.issuer_url()), ("support-access", None));
        // Unset or empty (the template's parameter before the API's URL is known): the default.
        for empty in ["", "  "] {
            assert_eq!(from(&[("SUPPORT_ACCESS_ISSUER", empty)]).unwrap().issuer, Policy::default().issuer);
        }
        let long = format!("https://{}.example", "a".repeat(250));
        assert_eq!(from(&[("SUPPORT_ACCESS_ISSUER", &long)]).unwrap_err().variable, "SUPPORT_ACCESS_ISSUER");
    }

    #[test]
    fn a_maximum_below_the_minimum_is_refused() {
        let e =
            from(&[("SUPPORT_ACCESS_MIN_DURATION_SECONDS", "7200"), ("SUPPORT_ACCESS_MAX_DURATION_SECONDS", "3600")])
                .unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_MAX_DURATION_SECONDS");
    }
}
