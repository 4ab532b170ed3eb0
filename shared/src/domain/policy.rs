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
    /// `iss` of impersonation tokens.
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

impl Policy {
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
            issuer: text("SUPPORT_ACCESS_ISSUER", &d.issuer)?,
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
        let e = from(&[("SUPPORT_ACCESS_ISSUER", "  ")]).unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_ISSUER");
    }

    #[test]
    fn a_maximum_below_the_minimum_is_refused() {
        let e =
            from(&[("SUPPORT_ACCESS_MIN_DURATION_SECONDS", "7200"), ("SUPPORT_ACCESS_MAX_DURATION_SECONDS", "3600")])
                .unwrap_err();
        assert_eq!(e.variable, "SUPPORT_ACCESS_MAX_DURATION_SECONDS");
    }
}
