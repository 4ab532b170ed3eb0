//! What the app hears about, at once: every grant, revoke, expiry, access-request step, token
//! issue and first use of a token, as a CloudEvents 1.0 envelope around the audit event. The
//! envelope's `id` is the audit event's id, so a consumer deduplicates redeliveries by it.

use serde::Serialize;

use super::{AuditEvent, AuditEventType, EventId, Timestamp, UserId};

/// The CloudEvents `source` of every notification.
pub const NOTIFICATION_SOURCE: &str = "support-access";

/// Whether an event of this type is published (a `token.used` only on its token's first use,
/// which the caller decides: the event alone cannot tell). Denials and rejections are on the
/// audit log but not pushed: they are refusals, and a flood of them must not page a user.
pub fn is_notified(event_type: AuditEventType) -> bool {
    use AuditEventType::*;
    match event_type {
        ConsentGranted | ConsentRevoked | ConsentExpired | TokenIssued | TokenUsed => true,
        RequestFiled | RequestApproved | RequestDenied | RequestExpired => true,
        // Incident response: the user learns at once that an agent's access was cut, and the
        // app that every support access is stopped (or resumed).
        TokenRevoked | StopEngaged | StopLifted => true,
        TokenDenied | TokenRejected => false,
    }
}

/// One notification, in CloudEvents 1.0 structured JSON (`application/cloudevents+json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub specversion: &'static str,
    /// The audit event's id: the same on every delivery of it.
    pub id: EventId,
    pub source: &'static str,
    /// `support-access.` and the audit event type, e.g. `support-access.token.issued`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub time: Timestamp,
    /// The user the event concerns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<UserId>,
    pub datacontenttype: &'static str,
    /// The audit event as the API returns it (hash-chained, so the app can check it against
    /// an export).
    pub data: AuditEvent,
}

impl Notification {
    pub fn of(event: AuditEvent) -> Self {
        Self {
            specversion: "1.0",
            id: event.event_id.clone(),
            source: NOTIFICATION_SOURCE,
            event_type: format!("{NOTIFICATION_SOURCE}.{}", event.event_type.as_str()),
            time: event.at,
            subject: event.user_id.clone(),
            datacontenttype: "application/json",
            data: event,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, AgentId, Role};

    #[test]
    fn a_notification_is_a_cloudevent_whose_id_is_the_audit_event_id() {
        let event = AuditEvent::new(
            AuditEventType::TokenIssued,
            Timestamp::from_unix(0),
            Some(UserId::parse("alice").unwrap()),
            Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
        );
        let v = serde_json::to_value(Notification::of(event.clone())).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], event.event_id.as_str());
        assert_eq!(v["type"], "support-access.token.issued");
        assert_eq!(v["subject"], "alice");
        assert_eq!(v["time"], "1970-01-01T00:00:00Z");
        assert_eq!(v["data"], serde_json::to_value(&event).unwrap());
    }

    #[test]
    fn refusals_are_not_pushed_and_every_other_step_is() {
        let pushed: Vec<_> = AuditEventType::ALL.into_iter().filter(|t| is_notified(*t)).collect();
        assert_eq!(pushed.len(), AuditEventType::ALL.len() - 2);
        assert!(!is_notified(AuditEventType::TokenDenied) && !is_notified(AuditEventType::TokenRejected));
    }
}
