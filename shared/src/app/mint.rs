use serde::Serialize;

use super::Services;
use crate::domain::{
    Actor, AgentId, AuditEvent, AuditEventType, ConsentId, Jti, Reason, Role, Scope, SignIn, Timestamp, UserId,
    agent_is_user,
};
use crate::ports::StoreError;
use crate::token;

use super::ApiError;

/// The `POST /tokens` answer.
#[derive(Debug, Clone, Serialize)]
pub struct MintedToken {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub expires_at: Timestamp,
    pub jti: Jti,
    pub consent_id: ConsentId,
    pub scope: Scope,
}

/// `POST /tokens`: an impersonation token for `agent` acting as `user`, if the user's consent
/// is live and the agent's sign-in meets the step-up policy. The token is released only after
/// its `token.issued` event is committed on condition that the consent is still the one that
/// was read; every refusal is itself audited (`token.denied`, on the user's stream, so the
/// user sees that someone tried).
pub async fn mint_token(
    services: &Services,
    agent: &AgentId,
    sign_in: &SignIn,
    user: &UserId,
    reason: Reason,
) -> Result<MintedToken, ApiError> {
    let now = services.clock.now();
    let actor = Actor { sub: agent.clone(), role: Role::Support };
    let denied = |code: &str| {
        AuditEvent::new(AuditEventType::TokenDenied, now, Some(user.clone()), actor.clone())
            .with_reason(&reason)
            .with_detail(code)
    };
    if !services.policy.enabled {
        services.audit_appender.append(denied("feature-disabled")).await?;
        return Err(ApiError::FeatureDisabled);
    }
    if super::stopped(services).await? {
        services.audit_appender.append(denied("emergency-stop")).await?;
        return Err(ApiError::EmergencyStop);
    }
    if agent_is_user(agent, user) {
        services.audit_appender.append(denied("self-impersonation")).await?;
        return Err(ApiError::SelfImpersonation);
    }
    if let Err(missing) = services.policy.step_up.check(sign_in, now, services.policy.leeway_seconds) {
        services.audit_appender.append(denied(missing.code())).await?;
        return Err(ApiError::StepUpRequired(missing));
    }
    let Some(consent) = services.consent_reader.current(user, now).await? else {
        services.audit_appender.append(denied("no-consent")).await?;
        return Err(ApiError::NoConsent);
    };

    let claims = token::new_claims(&consent, agent.clone(), reason.clone(), now, &services.policy);
    let access_token = token::sign(&claims, services.signer.as_ref()).await?;

    let issued = AuditEvent::new(AuditEventType::TokenIssued, now, Some(user.clone()), actor.clone())
        .with_consent(&consent.consent_id, consent.scope, token::expires_at(&claims))
        .with_jti(&claims.jti)
        .with_reason(&reason);
    match services.token_ledger.record_under_consent(&consent, now, issued).await {
        Ok(_) => {}
        Err(StoreError::ConsentChanged) => {
            // Revoked or replaced between the read and the commit: the signed token is dropped.
            services.audit_appender.append(denied("consent-changed")).await?;
            return Err(ApiError::NoConsent);
        }
        Err(e) => return Err(e.into()),
    }

    Ok(MintedToken {
        access_token,
        token_type: "Bearer",
        expires_in: claims.exp - now.unix(),
        expires_at: token::expires_at(&claims),
        jti: claims.jti,
        consent_id: claims.cid,
        scope: claims.scope,
    })
}
