use crate::domain::{Actor, AuditEvent, AuditEventType, Consent, Timestamp};
use crate::ports::{ExpiryLedger, StoreError};

/// Records that `consent` ran out (seen by storage at `observed_at`) as `consent.expired`,
/// once, however often the news is delivered. Returns whether this call recorded it.
pub async fn record_expiry(
    ledger: &dyn ExpiryLedger,
    consent: &Consent,
    observed_at: Timestamp,
) -> Result<bool, StoreError> {
    let event =
        AuditEvent::new(AuditEventType::ConsentExpired, observed_at, Some(consent.user_id.clone()), Actor::system())
            .with_consent(&consent.consent_id, consent.scope, consent.expires_at);
    ledger.record_expired(consent, event).await
}
