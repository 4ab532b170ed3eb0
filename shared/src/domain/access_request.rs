//! An agent's request for access that the user approves or denies. Approval grants exactly
//! what was asked (scope, duration) and nothing wider; a request left pending past its
//! deadline is expired, whatever storage still says.

use serde::{Deserialize, Serialize};

use super::{
    Actor, AgentId, AuditEvent, AuditEventType, Consent, ConsentDuration, ConsentId, Note, Policy, Reason, Scope,
    Timestamp, UserId, ValidationError,
};

/// The separation of duties behind every step towards impersonation: a support agent is
/// never the user whose account they would enter, so nobody files a request for, approves,
/// or mints a token as their own account (that would be access nobody else consented to).
/// Both are the `sub` of one identity provider, compared exactly as issued.
pub fn agent_is_user(agent: &AgentId, user: &UserId) -> bool {
    agent.as_str() == user.as_str()
}

/// The id of one access request: a UUIDv7, so ids sort by filing time in every store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

impl RequestId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    /// Parses an untrusted id (a path segment): only the canonical hyphenated UUID form.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match uuid::Uuid::try_parse(value) {
            Ok(id) if id.hyphenated().to_string() == value => Ok(Self(value.to_owned())),
            _ => Err(ValidationError::Charset { field: "request_id" }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RequestId {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<RequestId> for String {
    fn from(value: RequestId) -> String {
        value.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a request stands. Storage holds `Pending`, `Approved`, `Denied` or `Expired`; a
/// pending request past its deadline reads as `Expired` before any sweep records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Denied, Self::Expired].into_iter().find(|s| s.as_str() == value)
    }
}

impl std::fmt::Display for RequestStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agent's request to act as a user, for `duration_seconds` with `scope`, because of `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRequest {
    pub request_id: RequestId,
    pub user_id: UserId,
    pub agent: AgentId,
    pub reason: Reason,
    pub scope: Scope,
    pub duration_seconds: i64,
    pub status: RequestStatus,
    pub requested_at: Timestamp,
    /// The deadline for a decision: pending at or after it, the request is expired.
    pub expires_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub decided_at: Option<Timestamp>,
    /// The consent an approval granted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consent_id: Option<ConsentId>,
}

/// Why a decision on a request cannot be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request is {0}, not pending")]
pub struct NotPending(pub RequestStatus);

impl AccessRequest {
    /// A new pending request filed at `now`, open for a decision for the policy's
    /// `request_ttl_seconds`.
    pub fn file(
        user_id: UserId,
        agent: AgentId,
        reason: Reason,
        scope: Scope,
        duration: ConsentDuration,
        now: Timestamp,
        policy: &Policy,
    ) -> Self {
        Self {
            request_id: RequestId::generate(),
            user_id,
            agent,
            reason,
            scope,
            duration_seconds: duration.seconds(),
            status: RequestStatus::Pending,
            requested_at: now,
            expires_at: now.plus_seconds(policy.request_ttl_seconds),
            decided_at: None,
            consent_id: None,
        }
    }

    /// The status as of `now`: a pending request at or past its deadline is expired.
    pub fn status_at(&self, now: Timestamp) -> RequestStatus {
        match self.status {
            RequestStatus::Pending if now >= self.expires_at => RequestStatus::Expired,
            other => other,
        }
    }

    /// The request as shown at `now` (its status settled by the clock).
    pub fn as_of(mut self, now: Timestamp) -> Self {
        self.status = self.status_at(now);
        self
    }

    /// Approval at `now`: the consent exactly as requested (its scope, its duration counted
    /// from now, the agent's reason as its note), and the request marked approved with it.
    /// The duration is checked again against the policy in force now.
    pub fn approve(&self, now: Timestamp, policy: &Policy) -> Result<(Self, Consent), ApproveError> {
        match self.status_at(now) {
            RequestStatus::Pending => {}
            other => return Err(ApproveError::NotPending(NotPending(other))),
        }
        let duration = ConsentDuration::parse(self.duration_seconds, policy).map_err(ApproveError::Duration)?;
        let note = Note::parse(self.reason.as_str()).map_err(ApproveError::Duration)?;
        let consent = Consent::grant(self.user_id.clone(), self.scope, note, duration, now);
        let approved = Self {
            status: RequestStatus::Approved,
            decided_at: Some(now),
            consent_id: Some(consent.consent_id.clone()),
            ..self.clone()
        };
        Ok((approved, consent))
    }

    /// The condition storage puts on writing this decision, besides "still pending": the
    /// stored deadline must be after this time. An approval must land before the deadline;
    /// a denial or an expiry needs nothing more (`None`).
    pub fn decided_before_deadline(&self) -> Option<Timestamp> {
        self.decided_at.filter(|_| self.status == RequestStatus::Approved)
    }

    /// The audit event of a step on this request taken by `actor` at `at`: the request's id,
    /// scope, reason and decision deadline (an approval adds the consent it granted).
    pub fn event(&self, event_type: AuditEventType, actor: Actor, at: Timestamp) -> AuditEvent {
        let mut event = AuditEvent::new(event_type, at, Some(self.user_id.clone()), actor)
            .with_request(&self.request_id)
            .with_reason(&self.reason)
            .with_expires_at(self.expires_at);
        event.scope = Some(self.scope);
        event
    }

    /// Denial (or, with `RequestStatus::Expired`, the recorded expiry) at `now`.
    pub fn settle(&self, status: RequestStatus, now: Timestamp) -> Result<Self, NotPending> {
        let current = self.status_at(now);
        let allowed = match status {
            RequestStatus::Denied => current == RequestStatus::Pending,
            // Only a stored pending request whose deadline passed is recorded as expired.
            RequestStatus::Expired => self.status == RequestStatus::Pending && current == RequestStatus::Expired,
            _ => false,
        };
        if !allowed {
            return Err(NotPending(current));
        }
        Ok(Self { status, decided_at: Some(now), ..self.clone() })
    }
}

/// Why an approval failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    #[error(transparent)]
    NotPending(NotPending),
    /// The requested duration is outside the policy now in force (it changed since filing).
    #[error("{0}")]
    Duration(ValidationError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(now: Timestamp) -> AccessRequest {
        let p = Policy::default();
        AccessRequest::file(
            UserId::parse("alice").unwrap(),
            AgentId::parse("agent-7").unwrap(),
            Reason::parse("ticket 4411: billing").unwrap(),
            Scope::Read,
            ConsentDuration::parse(3600, &p).unwrap(),
            now,
            &p,
        )
    }

    #[test]
    fn request_ids_are_canonical_uuids_that_sort_by_time() {
        let a = RequestId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RequestId::generate();
        assert!(a < b);
        assert_eq!(RequestId::parse(a.as_str()).unwrap(), a);
        for bad in ["", "x", "../etc", &a.as_str().to_uppercase(), &a.as_str().replace('-', "")] {
            assert!(RequestId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_pending_request_expires_at_its_deadline() {
        let now = Timestamp::from_unix(1_000_000);
        let r = request(now);
        assert_eq!(r.expires_at.unix(), 1_000_000 + 24 * 3600);
        assert_eq!(r.status_at(r.expires_at.plus_seconds(-1)), RequestStatus::Pending);
        assert_eq!(r.status_at(r.expires_at), RequestStatus::Expired);
    }

    #[test]
    fn approval_grants_exactly_the_requested_scope_and_duration_from_now() {
        let now = Timestamp::from_unix(1_000_000);
        let r = request(now);
        let later = now.plus_seconds(600);
        let (approved, consent) = r.approve(later, &Policy::default()).unwrap();
        assert_eq!(consent.scope, Scope::Read);
        assert_eq!(consent.user_id, r.user_id);
        assert_eq!(consent.granted_at, later);
        assert_eq!(consent.expires_at, later.plus_seconds(3600));
        assert_eq!(consent.note.as_str(), r.reason.as_str());
        assert_eq!(approved.status, RequestStatus::Approved);
        assert_eq!(approved.consent_id, Some(consent.consent_id));
        assert_eq!(approved.decided_at, Some(later));
        assert_eq!(approved.decided_before_deadline(), Some(later), "an approval must land before the deadline");
        let denied = r.settle(RequestStatus::Denied, later).unwrap();
        assert_eq!(denied.decided_before_deadline(), None, "a denial only needs the request pending");
    }

    #[test]
    fn an_agent_is_the_user_only_with_the_very_same_sub() {
        let agent = AgentId::parse("agent-7").unwrap();
        assert!(agent_is_user(&agent, &UserId::parse("agent-7").unwrap()));
        for other in ["alice", "Agent-7", "agent-7 ", "agent-70"] {
            if let Ok(user) = UserId::parse(other) {
                assert!(!agent_is_user(&agent, &user), "{other}");
            }
        }
    }

    #[test]
    fn nothing_but_a_pending_request_can_be_decided() {
        let now = Timestamp::from_unix(1_000_000);
        let r = request(now);
        let p = Policy::default();
        let late = r.expires_at;
        assert_eq!(r.approve(late, &p).unwrap_err(), ApproveError::NotPending(NotPending(RequestStatus::Expired)));
        assert_eq!(r.settle(RequestStatus::Denied, late).unwrap_err(), NotPending(RequestStatus::Expired));
        assert_eq!(r.settle(RequestStatus::Expired, late).unwrap().status, RequestStatus::Expired);
        assert!(r.settle(RequestStatus::Expired, now).is_err(), "not yet due");
        let denied = r.settle(RequestStatus::Denied, now).unwrap();
        assert!(denied.approve(now, &p).is_err());
        assert!(denied.settle(RequestStatus::Denied, now).is_err());
        assert!(r.settle(RequestStatus::Approved, now).is_err(), "approval goes through approve()");
    }

    #[test]
    fn approval_rechecks_the_duration_against_the_policy_in_force() {
        let now = Timestamp::from_unix(1_000_000);
        let r = request(now);
        let strict = Policy { max_duration_seconds: 1800, ..Policy::default() };
        assert!(matches!(r.approve(now, &strict), Err(ApproveError::Duration(_))));
    }
}
