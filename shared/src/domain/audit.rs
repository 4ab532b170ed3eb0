//! What the audit log records. Every event names who acted (`actor`), whose account it
//! concerns (`user_id`; absent only for a token whose signature did not verify, since its
//! claims cannot be trusted to name anyone), and the facts of that step.

use serde::{Deserialize, Serialize};

use super::{AgentId, ConsentId, EventId, Jti, Reason, RequestId, Scope, Timestamp, UserId, ValidationError};

/// Every kind of event on the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditEventType {
    #[serde(rename = "consent.granted")]
    ConsentGranted,
    #[serde(rename = "consent.revoked")]
    ConsentRevoked,
    #[serde(rename = "consent.expired")]
    ConsentExpired,
    #[serde(rename = "token.issued")]
    TokenIssued,
    #[serde(rename = "token.denied")]
    TokenDenied,
    #[serde(rename = "token.used")]
    TokenUsed,
    #[serde(rename = "token.rejected")]
    TokenRejected,
    #[serde(rename = "request.filed")]
    RequestFiled,
    #[serde(rename = "request.approved")]
    RequestApproved,
    #[serde(rename = "request.denied")]
    RequestDenied,
    #[serde(rename = "request.expired")]
    RequestExpired,
    /// An operator revoked every live token of one agent; on each affected user's stream.
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// An operator engaged the emergency stop; on the unattributed stream (it is no one user's).
    #[serde(rename = "stop.engaged")]
    StopEngaged,
    /// An operator lifted the emergency stop; on the unattributed stream.
    #[serde(rename = "stop.lifted")]
    StopLifted,
}

impl AuditEventType {
    pub const ALL: [Self; 14] = [
        Self::ConsentGranted,
        Self::ConsentRevoked,
        Self::ConsentExpired,
        Self::TokenIssued,
        Self::TokenDenied,
        Self::TokenUsed,
        Self::TokenRejected,
        Self::RequestFiled,
        Self::RequestApproved,
        Self::RequestDenied,
        Self::RequestExpired,
        Self::TokenRevoked,
        Self::StopEngaged,
        Self::StopLifted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsentGranted => "consent.granted",
            Self::ConsentRevoked => "consent.revoked",
            Self::ConsentExpired => "consent.expired",
            Self::TokenIssued => "token.issued",
            Self::TokenDenied => "token.denied",
            Self::TokenUsed => "token.used",
            Self::TokenRejected => "token.rejected",
            Self::RequestFiled => "request.filed",
            Self::RequestApproved => "request.approved",
            Self::RequestDenied => "request.denied",
            Self::RequestExpired => "request.expired",
            Self::TokenRevoked => "token.revoked",
            Self::StopEngaged => "stop.engaged",
            Self::StopLifted => "stop.lifted",
        }
    }

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        Self::ALL.into_iter().find(|t| t.as_str() == value).ok_or(ValidationError::OneOf {
            field: "type",
            allowed: "consent.granted, consent.revoked, consent.expired, token.issued, token.denied, token.used, \
                      token.rejected, request.filed, request.approved, request.denied, request.expired, \
                      token.revoked, stop.engaged, stop.lifted",
        })
    }
}

/// In which capacity the actor acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end user, on their own account.
    User,
    /// A support agent.
    Support,
    /// The service itself (expiry).
    System,
    /// An operator, responding to an incident (emergency stop, agent revocation).
    Operator,
    /// Someone presenting a token whose claims could not be trusted.
    Unknown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Support => "support",
            Self::System => "system",
            Self::Operator => "operator",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [Self::User, Self::Support, Self::System, Self::Operator, Self::Unknown]
            .into_iter()
            .find(|r| r.as_str() == value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: AgentId,
    pub role: Role,
}

impl Actor {
    /// The id the log gives the service itself ([`Actor::system`]).
    pub const SYSTEM_ID: &str = "support-access";
    /// The id the log gives a caller nobody could identify ([`Actor::unknown`]).
    pub const UNKNOWN_ID: &str = "unknown";

    /// The service itself, for events nobody caused (a consent running out).
    pub fn system() -> Self {
        Self { sub: AgentId::parse(Self::SYSTEM_ID).expect("constant id is valid"), role: Role::System }
    }

    /// A caller nobody could identify (a forged or malformed token).
    pub fn unknown() -> Self {
        Self { sub: AgentId::parse(Self::UNKNOWN_ID).expect("constant id is valid"), role: Role::Unknown }
    }

    /// Whether `id` is one of the service's own actor names, which no caller may bear: an
    /// event of a user or agent so named would pass for the service's or an unidentified
    /// caller's (`http::Caller` refuses them).
    pub fn is_reserved(id: &str) -> bool {
        id == Self::SYSTEM_ID || id == Self::UNKNOWN_ID
    }
}

/// One step on the audit log. `seq` is the event's place in its user's stream, gapless, and
/// `prev_hash`/`hash` chain it to the event before it (see `support_access_verify::chain`);
/// the store assigns all three when it appends the event ([`AuditEvent::seal`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub event_id: EventId,
    #[serde(rename = "type")]
    pub event_type: AuditEventType,
    pub at: Timestamp,
    pub user_id: Option<UserId>,
    pub actor: Actor,
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub prev_hash: String,
    #[serde(default)]
    pub hash: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consent_id: Option<ConsentId>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub jti: Option<Jti>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub scope: Option<Scope>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<Reason>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<Timestamp>,
    /// Machine-readable particulars (a rejection code, the method and path of a use).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
    /// The access request this step belongs to (filed, decided, or the consent it granted).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub request_id: Option<RequestId>,
}

impl AuditEvent {
    /// A new event with a fresh id; the optional facts are filled with the `with_*` setters.
    pub fn new(event_type: AuditEventType, at: Timestamp, user_id: Option<UserId>, actor: Actor) -> Self {
        Self {
            event_id: EventId::generate(),
            event_type,
            at,
            user_id,
            actor,
            seq: 0,
            prev_hash: String::new(),
            hash: String::new(),
            consent_id: None,
            jti: None,
            scope: None,
            reason: None,
            expires_at: None,
            detail: None,
            request_id: None,
        }
    }

    /// The stream the event is chained in: its user's, or the unattributed one.
    pub fn stream(&self) -> &str {
        self.user_id.as_ref().map_or(support_access_verify::chain::UNATTRIBUTED_STREAM, |u| u.as_str())
    }

    /// Whether the event is decided but not yet on its chain (#18: a sequencing store's intake
    /// holds it until the sequencer appends it): unsealed, `seq` 0, for a chain's first event
    /// is sealed at 1.
    pub fn is_pending(&self) -> bool {
        self.seq == 0
    }

    /// The event as appended at `seq` after the event whose hash is `prev_hash` (the chain's
    /// genesis for the first): both set, and `hash` computed over the canonical encoding.
    pub fn seal(mut self, seq: u64, prev_hash: &str) -> Self {
        self.seq = seq;
        self.prev_hash = prev_hash.to_owned();
        let mut canonical = Vec::with_capacity(1024);
        serde_json::to_writer(&mut canonical, &self.canonical()).expect("an audit event serializes");
        self.hash = support_access_verify::chain::canonical_hash(&canonical);
        self
    }

    /// The event as its canonical encoding has it (`support_access_verify::chain`), written
    /// straight from the struct: every append seals an event, and going through a
    /// `serde_json::Value` (a map and a string per member) cost more than the hash itself
    /// (BENCHMARKS.md, "Load on local-api"). A test holds it to `chain::event_hash`.
    fn canonical(&self) -> Canonical<'_> {
        // No `..`: a new field does not compile until it is placed here.
        let AuditEvent {
            event_id,
            event_type,
            at,
            user_id,
            actor,
            seq,
            prev_hash,
            hash: _,
            consent_id,
            jti,
            scope,
            reason,
            expires_at,
            detail,
            request_id,
        } = self;
        Canonical {
            actor: CanonicalActor { role: actor.role, sub: &actor.sub },
            at: *at,
            consent_id: consent_id.as_ref(),
            detail: detail.as_deref(),
            event_id,
            expires_at: *expires_at,
            jti: jti.as_ref(),
            prev_hash,
            reason: reason.as_ref(),
            request_id: request_id.as_ref(),
            scope: *scope,
            seq: *seq,
            event_type: *event_type,
            user_id: user_id.as_ref(),
        }
    }

    pub fn with_consent(mut self, consent_id: &ConsentId, scope: Scope, expires_at: Timestamp) -> Self {
        self.consent_id = Some(consent_id.clone());
        self.scope = Some(scope);
        self.expires_at = Some(expires_at);
        self
    }

    pub fn with_jti(mut self, jti: &Jti) -> Self {
        self.jti = Some(jti.clone());
        self
    }

    pub fn with_reason(mut self, reason: &Reason) -> Self {
        self.reason = Some(reason.clone());
        self
    }

    pub fn with_expires_at(mut self, expires_at: Timestamp) -> Self {
        self.expires_at = Some(expires_at);
        self
    }

    pub fn with_request(mut self, request_id: &RequestId) -> Self {
        self.request_id = Some(request_id.clone());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// An [`AuditEvent`] without its `hash`, members in the canonical order (sorted by key) and
/// the absent facts left out as the event's own serialization leaves them out.
#[derive(Serialize)]
struct Canonical<'a> {
    actor: CanonicalActor<'a>,
    at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    consent_id: Option<&'a ConsentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    event_id: &'a EventId,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a Jti>,
    prev_hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a Reason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a RequestId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<Scope>,
    seq: u64,
    #[serde(rename = "type")]
    event_type: AuditEventType,
    user_id: Option<&'a UserId>,
}

/// An [`Actor`], members sorted by key.
#[derive(Serialize)]
struct CanonicalActor<'a> {
    role: Role,
    sub: &'a AgentId,
}

/// Which events an audit query wants; every field narrows the result. Times are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub user_id: Option<UserId>,
    pub actor: Option<AgentId>,
    pub event_type: Option<AuditEventType>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
}

impl AuditFilter {
    /// Whether an event passes the filter (the reference semantics every store must match).
    pub fn matches(&self, e: &AuditEvent) -> bool {
        self.user_id.as_ref().is_none_or(|u| e.user_id.as_ref() == Some(u))
            && self.actor.as_ref().is_none_or(|a| &e.actor.sub == a)
            && self.event_type.is_none_or(|t| e.event_type == t)
            && self.from.is_none_or(|f| e.at >= f)
            && self.to.is_none_or(|t| e.at <= t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_serialize_as_their_dotted_names() {
        for t in AuditEventType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::Value::String(t.as_str().into()));
            assert_eq!(AuditEventType::parse(t.as_str()).unwrap(), t);
        }
        assert!(AuditEventType::parse("token.stolen").is_err());
    }

    #[test]
    fn an_event_serializes_with_type_and_without_empty_facts() {
        let e = AuditEvent::new(
            AuditEventType::TokenDenied,
            Timestamp::from_unix(0),
            Some(UserId::parse("alice").unwrap()),
            Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
        )
        .with_reason(&Reason::parse("ticket 12345").unwrap());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "token.denied");
        assert_eq!(v["at"], "1970-01-01T00:00:00Z");
        assert_eq!(v["actor"]["role"], "support");
        assert_eq!(v["reason"], "ticket 12345");
        assert!(v.get("jti").is_none());
        let back: AuditEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn a_sealed_events_hash_is_the_chain_hash_of_its_json_with_every_fact_set_or_absent() {
        let bare = AuditEvent::new(
            AuditEventType::TokenRejected,
            Timestamp::from_unix(-62_167_219_200),
            None,
            Actor::unknown(),
        );
        let full = AuditEvent::new(
            AuditEventType::TokenUsed,
            Timestamp::from_unix(1_764_064_800),
            Some(UserId::parse("alice").unwrap()),
            Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
        )
        .with_consent(&ConsentId::generate(), Scope::Full, Timestamp::from_unix(253_402_300_799))
        .with_jti(&Jti::generate())
        .with_reason(&Reason::parse("ticket \"4411\" \\ caf\u{e9} \u{1F600}").unwrap())
        .with_request(&RequestId::generate())
        .with_detail("GET /a/b?c=d\u{1}\u{1f}\n\t\r\u{8}\u{c}\u{7f}\u{2028} reported by rs-1");
        for (event, seq) in [(bare, 1), (full.clone(), 42), (full.with_expires_at(Timestamp::from_unix(5)), u64::MAX)] {
            let sealed = event.seal(seq, support_access_verify::chain::GENESIS);
            let value = serde_json::to_value(&sealed).unwrap();
            assert_eq!(sealed.hash, support_access_verify::chain::event_hash(&value), "{value}");
        }
    }

    #[test]
    fn a_filter_narrows_by_every_field() {
        let alice = UserId::parse("alice").unwrap();
        let e = AuditEvent::new(
            AuditEventType::ConsentGranted,
            Timestamp::from_unix(100),
            Some(alice.clone()),
            Actor { sub: AgentId::from(alice.clone()), role: Role::User },
        );
        assert!(AuditFilter::default().matches(&e));
        assert!(AuditFilter { user_id: Some(alice.clone()), ..Default::default() }.matches(&e));
        assert!(!AuditFilter { user_id: Some(UserId::parse("bob").unwrap()), ..Default::default() }.matches(&e));
        assert!(!AuditFilter { actor: Some(AgentId::parse("agent").unwrap()), ..Default::default() }.matches(&e));
        assert!(!AuditFilter { event_type: Some(AuditEventType::TokenUsed), ..Default::default() }.matches(&e));
        assert!(
            AuditFilter {
                from: Some(Timestamp::from_unix(100)),
                to: Some(Timestamp::from_unix(100)),
                ..Default::default()
            }
            .matches(&e)
        );
        assert!(!AuditFilter { from: Some(Timestamp::from_unix(101)), ..Default::default() }.matches(&e));
        assert!(!AuditFilter { to: Some(Timestamp::from_unix(99)), ..Default::default() }.matches(&e));
    }
}
