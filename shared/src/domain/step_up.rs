//! Step-up for agents: a deployment may require that an agent's identity token shows a
//! second factor (`amr`, RFC 8176) and a recent sign-in (`auth_time`, OIDC Core) before the
//! agent may mint. Off unless configured; a token without the claims never passes when on.

use super::Timestamp;

/// What the deployment demands of an agent's sign-in before a mint (`Policy::step_up`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepUpPolicy {
    /// A value `amr` must contain, e.g. `mfa` (SUPPORT_ACCESS_STEP_UP_AMR).
    pub amr: Option<String>,
    /// How old `auth_time` may be (SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS).
    pub max_age_seconds: Option<i64>,
}

/// How the agent signed in, from their identity token's claims.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignIn {
    /// Authentication methods (`amr`).
    pub amr: Vec<String>,
    /// When the agent last authenticated (`auth_time`).
    pub auth_time: Option<Timestamp>,
}

/// Why a sign-in does not meet the policy; the slug goes on the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StepUpMissing {
    #[error("the identity token's amr does not show the required method")]
    Method,
    #[error("the identity token has no auth_time, or it is too old")]
    Recency,
}

impl StepUpMissing {
    pub fn code(self) -> &'static str {
        match self {
            Self::Method => "step-up-required: amr",
            Self::Recency => "step-up-required: auth_time",
        }
    }
}

impl StepUpPolicy {
    pub fn is_on(&self) -> bool {
        self.amr.is_some() || self.max_age_seconds.is_some()
    }

    /// Whether `sign_in` meets this policy at `now`. An `auth_time` in the future (beyond
    /// `leeway_seconds` of clock skew) is as good as missing: it cannot be trusted to be recent.
    pub fn check(&self, sign_in: &SignIn, now: Timestamp, leeway_seconds: i64) -> Result<(), StepUpMissing> {
        if let Some(method) = &self.amr
            && !sign_in.amr.iter().any(|m| m == method)
        {
            return Err(StepUpMissing::Method);
        }
        if let Some(max_age) = self.max_age_seconds {
            let Some(at) = sign_in.auth_time else { return Err(StepUpMissing::Recency) };
            let age = now.unix() - at.unix();
            if age > max_age || age < -leeway_seconds {
                return Err(StepUpMissing::Recency);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn sign_in(amr: &[&str], auth_time: Option<i64>) -> SignIn {
        SignIn { amr: amr.iter().map(|s| s.to_string()).collect(), auth_time: auth_time.map(Timestamp::from_unix) }
    }

    fn check(policy: &StepUpPolicy, s: &SignIn) -> Result<(), StepUpMissing> {
        policy.check(s, Timestamp::from_unix(NOW), 30)
    }

    #[test]
    fn off_by_default_and_then_anything_passes() {
        let off = StepUpPolicy::default();
        assert!(!off.is_on());
        assert_eq!(check(&off, &SignIn::default()), Ok(()));
    }

    #[test]
    fn the_configured_method_must_be_in_amr() {
        let p = StepUpPolicy { amr: Some("mfa".into()), max_age_seconds: None };
        assert_eq!(check(&p, &sign_in(&["pwd", "mfa"], None)), Ok(()));
        assert_eq!(check(&p, &sign_in(&["pwd"], None)), Err(StepUpMissing::Method));
        assert_eq!(check(&p, &sign_in(&["mfa-ish"], None)), Err(StepUpMissing::Method));
        assert_eq!(check(&p, &SignIn::default()), Err(StepUpMissing::Method));
    }

    #[test]
    fn auth_time_must_be_present_recent_and_not_in_the_future() {
        let p = StepUpPolicy { amr: None, max_age_seconds: Some(300) };
        assert_eq!(check(&p, &sign_in(&[], Some(NOW - 300))), Ok(()));
        assert_eq!(check(&p, &sign_in(&[], Some(NOW + 30))), Ok(()));
        assert_eq!(check(&p, &sign_in(&[], Some(NOW - 301))), Err(StepUpMissing::Recency));
        assert_eq!(check(&p, &sign_in(&[], Some(NOW + 31))), Err(StepUpMissing::Recency));
        assert_eq!(check(&p, &sign_in(&["mfa"], None)), Err(StepUpMissing::Recency));
        // Numbers at the ends of i64 are held within years 0000..=9999: refused, no overflow.
        for absurd in [i64::MIN, -1, 1 << 62, i64::MAX] {
            assert_eq!(check(&p, &sign_in(&[], Some(absurd))), Err(StepUpMissing::Recency), "{absurd}");
        }
    }

    #[test]
    fn both_requirements_apply_together() {
        let p = StepUpPolicy { amr: Some("mfa".into()), max_age_seconds: Some(300) };
        assert_eq!(check(&p, &sign_in(&["mfa"], Some(NOW - 10))), Ok(()));
        assert_eq!(check(&p, &sign_in(&["pwd"], Some(NOW - 10))), Err(StepUpMissing::Method));
        assert_eq!(check(&p, &sign_in(&["mfa"], Some(NOW - 3600))), Err(StepUpMissing::Recency));
    }
}
