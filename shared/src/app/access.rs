//! One bearer token on the app's API, whichever kind it is: the user's own identity token (of
//! the app's identity provider, where the service is configured to verify them,
//! `Services::identity`) or an impersonation token ([`authorize`]). The integration gets one
//! answer, [`Access`], and tells the two apart by whether an agent is acting.

use http::Method;

use serde::Serialize;

use super::{AuthorizeError, Authorized, Services, authorize};
use crate::domain::{Actor, AgentId, ConsentId, Jti, Scope, UserId};
use crate::identity::{self, IdentityRejection};
use crate::ports::StoreError;

/// Who a request on the app's API acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The user themselves, with their own identity token.
    User(UserId),
    /// A support agent acting as a user, with an impersonation token.
    Impersonated(Authorized),
}

impl Access {
    pub fn user_id(&self) -> &UserId {
        match self {
            Self::User(user) => user,
            Self::Impersonated(who) => &who.user_id,
        }
    }

    /// The one context shape the integration gets (the authorizer's context, the demo
    /// route's answer): `user_id` always; `acting_agent`, `scope`, `consent_id` and `jti` only
    /// when an agent acts as the user, so the app branches on `acting_agent` alone.
    pub fn context(&self) -> AccessContext {
        match self {
            Self::User(user) => {
                AccessContext { user_id: user.clone(), acting_agent: None, scope: None, consent_id: None, jti: None }
            }
            Self::Impersonated(who) => AccessContext {
                user_id: who.user_id.clone(),
                acting_agent: Some(who.acting_agent.clone()),
                scope: Some(who.scope),
                consent_id: Some(who.consent_id.clone()),
                jti: Some(who.jti.clone()),
            },
        }
    }
}

/// See [`Access::context`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessContext {
    pub user_id: UserId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acting_agent: Option<AgentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<ConsentId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<Jti>,
}

/// Decides one request with `bearer` for `method` on `path`. A token with the impersonation
/// `typ` goes to [`authorize`] (its checks and its audit, unchanged). Any other token is
/// tried as an identity token when an identity provider is configured: a valid one acts as
/// its `sub` (a usable user id, never one of the service's own actor names), and is not
/// audited: it is the user's own request, on the app's own log. An identity token that does
/// not verify goes on to [`authorize`] too, which refuses it and audits the refusal as it
/// audits every token it cannot read. When the provider's keys cannot be fetched at all the
/// request is refused as unavailable (fail closed; nothing audited: no token was judged).
pub async fn authorize_bearer(
    services: &Services,
    bearer: &str,
    method: &Method,
    path: &str,
) -> Result<Access, AuthorizeError> {
    if let Some(verifier) = &services.identity
        && !identity::is_impersonation_token(bearer)
    {
        // A valid identity token writes a due window of unattributed refusals as an
        // impersonation token does (`authorize`), beside its own check.
        let verify = verifier.verify(bearer, services.clock.now().unix());
        match super::refusals::beside_due_refusals(services, verify).await {
            Ok(claims) => match UserId::parse(&claims.sub) {
                Ok(user) if !Actor::is_reserved(&claims.sub) => return Ok(Access::User(user)),
                _ => tracing::warn!("identity token whose sub is no usable user id; refused"),
            },
            Err(IdentityRejection::Unavailable(e)) => {
                return Err(AuthorizeError::Unavailable(StoreError::Unavailable(format!("identity provider: {e}"))));
            }
            Err(e) => tracing::info!(error = %e, "bearer is no valid identity token"),
        }
    }
    authorize(services, bearer, method, path).await.map(Access::Impersonated)
}
