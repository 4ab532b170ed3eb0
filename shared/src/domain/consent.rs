use serde::{Deserialize, Serialize};

use super::{ConsentId, Note, Policy, Scope, Timestamp, UserId, ValidationError};

/// How long a consent lasts, within the policy's bounds (default 15 minutes .. 7 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsentDuration(i64);

impl ConsentDuration {
    pub fn parse(seconds: i64, policy: &Policy) -> Result<Self, ValidationError> {
        let (min, max) = (policy.min_duration_seconds, policy.max_duration_seconds);
        if seconds < min || seconds > max {
            return Err(ValidationError::Range { field: "duration_seconds", min, max });
        }
        Ok(Self(seconds))
    }

    pub fn seconds(self) -> i64 {
        self.0
    }
}

/// A user's live permission for support to act as them, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    pub consent_id: ConsentId,
    pub user_id: UserId,
    pub scope: Scope,
    pub note: Note,
    pub granted_at: Timestamp,
    pub expires_at: Timestamp,
}

impl Consent {
    /// A new consent granted at `now` for `duration`, with a fresh id.
    pub fn grant(user_id: UserId, scope: Scope, note: Note, duration: ConsentDuration, now: Timestamp) -> Self {
        Self {
            consent_id: ConsentId::generate(),
            user_id,
            scope,
            note,
            granted_at: now,
            expires_at: now.plus_seconds(duration.seconds()),
        }
    }

    /// Live until the last second before `expires_at`; at `expires_at` it is gone. Every
    /// read checks this, because storage-level expiry (DynamoDB TTL) is lazy.
    pub fn is_active(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::default()
    }

    #[test]
    fn duration_must_be_inside_the_policy() {
        let p = policy();
        assert!(ConsentDuration::parse(p.min_duration_seconds, &p).is_ok());
        assert!(ConsentDuration::parse(p.max_duration_seconds, &p).is_ok());
        assert!(ConsentDuration::parse(p.min_duration_seconds - 1, &p).is_err());
        assert!(ConsentDuration::parse(p.max_duration_seconds + 1, &p).is_err());
        assert!(ConsentDuration::parse(-5, &p).is_err());
    }

    #[test]
    fn a_consent_is_active_until_its_expiry_second() {
        let p = policy();
        let now = Timestamp::from_unix(1_000_000);
        let c = Consent::grant(
            UserId::parse("alice").unwrap(),
            Scope::Read,
            Note::default(),
            ConsentDuration::parse(900, &p).unwrap(),
            now,
        );
        assert_eq!(c.expires_at.unix(), 1_000_900);
        assert!(c.is_active(Timestamp::from_unix(1_000_899)));
        assert!(!c.is_active(Timestamp::from_unix(1_000_900)));
    }
}
