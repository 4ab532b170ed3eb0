//! The claims of an impersonation token, as the service signs them. Every value is a
//! validated type, so a token whose claims do not parse is refused as a whole.

use serde::{Deserialize, Deserializer, Serialize};

use crate::{AgentId, ConsentId, Jti, Reason, Scope, UserId};

/// The explicit `typ` of an impersonation token (RFC 8725 §3.11); a verifier accepts nothing
/// else, so no other JWT (an identity token, say) can be replayed as one.
pub const TOKEN_TYPE: &str = "support-access+jwt";

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The latest instant a token may name (`exp`, `nbf`, `iat`): 9999-12-31T23:59:59Z, the last
/// second RFC 3339 can write. Earlier than 0 (the epoch) is refused too: no token of this
/// service was made before it. A number out of this range is a `claims` refusal, so it never
/// reaches the audit log, whose times are written as RFC 3339.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The longest a token may live (`exp - iat`): the upper bound of the service's
/// `SUPPORT_ACCESS_TOKEN_TTL_SECONDS`. The service never signs a longer one, so a longer one
/// is refused as malformed claims whatever signed it.
pub const MAX_TOKEN_LIFETIME_SECONDS: i64 = 3600;

/// Seconds since the epoch within `0..=MAX_UNIX_SECONDS`.
fn unix_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let seconds = i64::deserialize(d)?;
    if (0..=MAX_UNIX_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(serde::de::Error::custom("a time outside 1970..=9999"))
    }
}

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
    #[serde(deserialize_with = "unix_seconds")]
    pub iat: i64,
    #[serde(deserialize_with = "unix_seconds")]
    pub nbf: i64,
    #[serde(deserialize_with = "unix_seconds")]
    pub exp: i64,
    pub jti: Jti,
    pub act: ActClaim,
    /// The consent the token was minted under; a new grant makes a new one.
    pub cid: ConsentId,
    pub scope: Scope,
    pub reason: Reason,
}

impl ImpersonationClaims {
    /// Whether `exp - iat` is a lifetime the service could have given: `0..=`
    /// [`MAX_TOKEN_LIFETIME_SECONDS`].
    pub fn lifetime_is_possible(&self) -> bool {
        (0..=MAX_TOKEN_LIFETIME_SECONDS).contains(&(self.exp - self.iat))
    }
}
