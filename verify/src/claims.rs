//! The claims of an impersonation token, as the service signs them. Every value is a
//! validated type, so a token whose claims do not parse is refused as a whole.

use serde::{Deserialize, Serialize};

use crate::{AgentId, ConsentId, Jti, Reason, Scope, UserId};

/// The explicit `typ` of an impersonation token (RFC 8725 §3.11); a verifier accepts nothing
/// else, so no other JWT (an identity token, say) can be replayed as one.
pub const TOKEN_TYPE: &str = "support-access+jwt";

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// `act` (RFC 8693 §4.1): who is really acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActClaim {
    pub sub: AgentId,
}

/// The claims of an impersonation token. `exp` is never past the consent's own expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpersonationClaims {
    pub iss: String,
    /// The user being acted as.
    pub sub: UserId,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Jti,
    pub act: ActClaim,
    /// The consent the token was minted under; a new grant makes a new one.
    pub cid: ConsentId,
    pub scope: Scope,
    pub reason: Reason,
}
