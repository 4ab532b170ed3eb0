use super::Services;
use crate::domain::{Actor, AuditEvent, AuditEventType, Consent, ConsentDuration, Note, Role, Scope, UserId};
use crate::ports::StoreError;

use super::ApiError;

fn user_actor(user: &UserId) -> Actor {
    Actor { sub: user.clone().into(), role: Role::User }
}

/// `POST /consents`: the user lets support in for `duration`. A consent already active is
/// replaced (new `consent_id`, so its tokens stop working).
pub async fn grant_consent(
    services: &Services,
    user: &UserId,
    duration: ConsentDuration,
    scope: Scope,
    note: Note,
) -> Result<Consent, ApiError> {
    if !services.policy.enabled {
        return Err(ApiError::FeatureDisabled);
    }
    if super::stopped(services).await? {
        return Err(ApiError::EmergencyStop);
    }
    let now = services.clock.now();
    let consent = Consent::grant(user.clone(), scope, note, duration, now);
    let event = AuditEvent::new(AuditEventType::ConsentGranted, now, Some(user.clone()), user_actor(user))
        .with_consent(&consent.consent_id, consent.scope, consent.expires_at);
    services.consent_writer.grant(&consent, event).await?;
    Ok(consent)
}

/// `GET /consents/current`: the user's active consent, or 404.
pub async fn current_consent(services: &Services, user: &UserId) -> Result<Consent, ApiError> {
    services.consent_reader.current(user, services.clock.now()).await?.ok_or(ApiError::NotFound("no active consent"))
}

/// `DELETE /consents/current`: ends the consent at once; 404 when there is none.
pub async fn revoke_consent(services: &Services, user: &UserId) -> Result<(), ApiError> {
    let now = services.clock.now();
    let consent = services.consent_reader.current(user, now).await?.ok_or(ApiError::NotFound("no active consent"))?;
    let event = AuditEvent::new(AuditEventType::ConsentRevoked, now, Some(user.clone()), user_actor(user))
        .with_consent(&consent.consent_id, consent.scope, consent.expires_at);
    match services.consent_writer.revoke(&consent, event).await {
        Ok(_) => Ok(()),
        Err(StoreError::ConsentChanged) => {
            Err(ApiError::Conflict("the consent changed while it was being revoked; read it and try again"))
        }
        Err(e) => Err(e.into()),
    }
}
