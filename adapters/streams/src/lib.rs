//! Which DynamoDB Streams records of the `Consents` table are expiries. A TTL deletion is a
//! `REMOVE` by the DynamoDB service itself (`userIdentity.type = Service`,
//! `principalId = dynamodb.amazonaws.com`); a user's revoke is a `REMOVE` without that
//! identity and is already audited. A consent replaced by a new grant after it had run out
//! (before TTL got to it) shows as a `MODIFY` whose old image had expired: an expiry too.
//!
//! A feature of its own (`streams`, part of `aws`): reading records needs only the event types,
//! so the fuzz harness parses them without compiling the AWS SDK.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use serde::Deserialize;

use shared::domain::{Consent, ConsentId, Note, Scope, Timestamp, UserId};

/// A consent that ran out, and when the stream saw it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryRecord {
    pub consent: Consent,
    pub observed_at: Timestamp,
}

#[derive(Deserialize)]
struct ConsentImage {
    user_id: String,
    consent_id: String,
    scope: String,
    #[serde(default)]
    note: String,
    granted_at: i64,
    expires_at: i64,
}

fn is_ttl_deletion(record: &EventRecord) -> bool {
    record.user_identity.as_ref().is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

fn consent_from(record: &EventRecord) -> Result<Consent, String> {
    let image: ConsentImage = serde_dynamo::from_item(record.change.old_image.clone()).map_err(|e| e.to_string())?;
    Ok(Consent {
        consent_id: ConsentId::parse(&image.consent_id).map_err(|e| e.to_string())?,
        user_id: UserId::parse(&image.user_id).map_err(|e| e.to_string())?,
        scope: Scope::parse(&image.scope).map_err(|e| e.to_string())?,
        note: Note::parse(&image.note).map_err(|e| e.to_string())?,
        granted_at: Timestamp::from_unix(image.granted_at),
        expires_at: Timestamp::from_unix(image.expires_at),
    })
}

/// The expiries in a batch of stream records. A record that claims to be an expiry but does
/// not parse is logged and skipped, so one poison record cannot block the shard forever.
pub fn expiries_from_stream(event: &Event) -> Vec<ExpiryRecord> {
    let mut out = Vec::new();
    for record in &event.records {
        let observed_at = Timestamp::from_unix(record.change.approximate_creation_date_time.timestamp());
        let candidate = match record.event_name.as_str() {
            "REMOVE" if is_ttl_deletion(record) => true,
            "MODIFY" => true,
            _ => false,
        };
        if !candidate || record.change.old_image.is_empty() {
            continue;
        }
        match consent_from(record) {
            // A MODIFY is an expiry only if the replaced consent had already run out.
            Ok(consent) if record.event_name == "MODIFY" && consent.is_active(observed_at) => {}
            Ok(consent) => out.push(ExpiryRecord { consent, observed_at }),
            Err(e) => tracing::error!(event_id = %record.event_id, error = %e, "unreadable consent in stream record"),
        }
    }
    out
}
