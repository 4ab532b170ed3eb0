use http::Method;
use serde::Serialize;

use crate::domain::{Actor, AgentId, AuditEvent, AuditEventType, ConsentId, Jti, Role, Scope, UserId};
use crate::ports::{Ports, StoreError};
use crate::token::{self, ImpersonationClaims, Rejection};

/// Who is acting, once a token passed every check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Authorized {
    pub user_id: UserId,
    pub acting_agent: AgentId,
    pub scope: Scope,
    pub consent_id: ConsentId,
    pub jti: Jti,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The token must not work; the reason is on the audit log, not for the caller.
    #[error("token refused: {0}")]
    Rejected(Rejection),
    /// The check or its audit write could not complete; refuse and let the caller retry.
    #[error(transparent)]
    Unavailable(StoreError),
}

/// Decides one use of an impersonation token for `method` on `path`: the stateless checks,
/// then the live ones (the user's consent exists, is unexpired and is the token's `cid`;
/// the scope allows the method). Every decision is audited, `token.used` or
/// `token.rejected`, and the audit write is committed before the answer.
pub async fn authorize(ports: &Ports, bearer: &str, method: &Method, path: &str) -> Result<Authorized, AuthorizeError> {
    let now = ports.clock.now();
    // Nothing in a token whose signature fails can be trusted to name a user: such refusals
    // go to the unattributed stream. Past the signature, refusals are the user's events.
    let claims = match token::verify_signature(bearer, &ports.keys) {
        Ok(claims) => claims,
        Err(rejection) => return Err(reject(ports, rejection, None, method, path).await),
    };
    if let Err(rejection) = token::check_claims(&claims, &ports.policy, now) {
        return Err(reject(ports, rejection, Some(&claims), method, path).await);
    }

    let live = match ports.consents.current(&claims.sub, now).await {
        Ok(live) => live,
        Err(e) => return Err(AuthorizeError::Unavailable(e)),
    };
    let verdict = match live {
        None => Err(Rejection::NoConsent),
        Some(c) if c.consent_id != claims.cid => Err(Rejection::ConsentReplaced),
        Some(_) if !claims.scope.allows(method) => Err(Rejection::Scope),
        Some(_) => Ok(()),
    };
    if let Err(rejection) = verdict {
        return Err(reject(ports, rejection, Some(&claims), method, path).await);
    }

    let used = AuditEvent::new(AuditEventType::TokenUsed, now, Some(claims.sub.clone()), agent(&claims))
        .with_consent(&claims.cid, claims.scope, claims.expires_at())
        .with_jti(&claims.jti)
        .with_detail(format!("{method} {path}"));
    ports.audit.append(used).await.map_err(AuthorizeError::Unavailable)?;
    Ok(Authorized {
        user_id: claims.sub,
        acting_agent: claims.act.sub,
        scope: claims.scope,
        consent_id: claims.cid,
        jti: claims.jti,
    })
}

fn agent(claims: &ImpersonationClaims) -> Actor {
    Actor { sub: claims.act.sub.clone(), role: Role::Support }
}

async fn reject(
    ports: &Ports,
    rejection: Rejection,
    claims: Option<&ImpersonationClaims>,
    method: &Method,
    path: &str,
) -> AuthorizeError {
    let now = ports.clock.now();
    let detail = format!("{} {method} {}", rejection.code(), truncate(path, 256));
    let event = match claims {
        Some(c) => AuditEvent::new(AuditEventType::TokenRejected, now, Some(c.sub.clone()), agent(c))
            .with_consent(&c.cid, c.scope, c.expires_at())
            .with_jti(&c.jti),
        None => AuditEvent::new(AuditEventType::TokenRejected, now, None, Actor::unknown()),
    }
    .with_detail(detail);
    match ports.audit.append(event).await {
        Ok(_) => AuthorizeError::Rejected(rejection),
        Err(e) => AuthorizeError::Unavailable(e),
    }
}

fn truncate(s: &str, max_chars: usize) -> &str {
    s.char_indices().nth(max_chars).map_or(s, |(i, _)| &s[..i])
}
