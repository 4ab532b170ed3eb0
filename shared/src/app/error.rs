use thiserror::Error;

use crate::domain::ValidationError;
use crate::ports::{SignerError, StoreError};

/// Every way a request can fail, mapped to problem+json in one place (`http::problem`).
/// `Unavailable` keeps its cause for the log; the client only sees the slug.
#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("a valid identity token is required")]
    Unauthenticated,
    /// As `Unauthenticated`, with a hint for the developer of why. Only local-api answers it
    /// (a `dev-token` minted from another data directory); on AWS, API Gateway's JWT
    /// authorizer refuses identity tokens before any function runs.
    #[error("a valid identity token is required: {0}")]
    UnauthenticatedHint(String),
    /// An impersonation token was refused; why is on the audit log, not in the answer.
    #[error("the impersonation token was refused")]
    TokenRefused,
    /// A resource server reported a use (`POST /introspect/uses`) of a token that may not be
    /// used for it: refused exactly as the authorizer refuses it, and audited as
    /// `token.rejected`; why is on the audit log, not in the answer (as an introspection's
    /// `"active": false`). The caller's own identity was fine, hence 403 and not 401.
    #[error("the token may not be used for this request; the refusal is on the audit log")]
    UseRefused,
    #[error("{0}")]
    Forbidden(&'static str),
    /// The caller is not in the group the route needs (`Caller::require_group`). The group is
    /// named in the problem's own member `required_group` (not in `detail`, which a client
    /// would have to parse): a refused agent then knows which membership to ask their
    /// administrator for, instead of guessing among the deployment's groups.
    #[error("the caller lacks the group this route needs")]
    MissingGroup(String),
    #[error("the user has no active consent")]
    NoConsent,
    #[error("{0}")]
    NotFound(&'static str),
    #[error("this route does not take that method")]
    MethodNotAllowed { allow: String },
    #[error("{0}")]
    Conflict(&'static str),
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("support access is disabled in this deployment")]
    FeatureDisabled,
    /// An operator engaged the emergency stop (`PUT /operator/emergency-stop`).
    #[error("support access is stopped by an operator (emergency stop)")]
    EmergencyStop,
    /// The agent's sign-in does not meet the step-up policy (`Policy::step_up`).
    #[error("{0}; sign in again with the required method and retry")]
    StepUpRequired(crate::domain::StepUpMissing),
    /// A support agent asked for access to their own account (filing a request for it, or
    /// minting a token as it): `domain::agent_is_user`.
    #[error("a support agent cannot ask for or use access to their own account")]
    SelfImpersonation,
    /// A user approved a request that they filed themselves, as an agent.
    #[error("this request was filed by you: nobody approves their own request for access")]
    SelfApproval,
    /// A decision on an access request that is no longer pending.
    #[error("the access request is {0}, not pending")]
    RequestNotPending(crate::domain::RequestStatus),
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
    /// Token exchange (`POST /token`): a `grant_type` other than RFC 8693's, the only grant
    /// this issuer serves (RFC 6749 `unsupported_grant_type`).
    #[error("grant_type must be urn:ietf:params:oauth:grant-type:token-exchange, the only grant served")]
    UnsupportedGrantType,
    /// Token exchange: an `audience` or `resource` this issuer mints no token for (RFC 8693
    /// `invalid_target`).
    #[error("{0}")]
    InvalidTarget(String),
    /// Token exchange: a `scope` that is none of this service's (RFC 6749 `invalid_scope`).
    #[error("{0}")]
    InvalidScope(String),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::InvalidRequest(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::ConsentChanged => Self::Conflict("the consent changed while the request ran; read it again"),
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<SignerError> for ApiError {
    fn from(e: SignerError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
