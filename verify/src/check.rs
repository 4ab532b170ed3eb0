//! The checks themselves, split where trust changes: [`verify_signature`] proves a token
//! authentic without believing anything in it, and only then may [`check_claims`] read its
//! claims. Callers that audit refusals rely on that split to know whether a refused token
//! may be attributed to the user it names.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, Header, Validation};

use crate::ecdsa::is_low_s;
use crate::{ImpersonationClaims, KeyRing, MAX_TOKEN_BYTES, TOKEN_TYPE};

/// Header parameters that carry a key or point at one. A verifier that followed them would
/// let the token choose its own key, so a token that has any of them is refused outright.
const KEY_HEADERS: [&str; 4] = ["jwk", "jku", "x5u", "x5c"];

/// What this deployment's tokens must say: `iss`, `aud`, and the clock skew tolerated on
/// `exp`/`nbf` (kept small: the service bounds it to 0..=300 s, default 30 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub issuer: String,
    pub audience: String,
    pub leeway_seconds: i64,
}

impl Expected {
    /// The service's defaults for the leeway (30 s).
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self { issuer: issuer.into(), audience: audience.into(), leeway_seconds: 30 }
    }
}

/// Why a token was refused. [`Rejection::code`] goes into the audit event; the caller only
/// ever learns that the token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("token larger than 8 KiB")]
    Oversized,
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("algorithm is not ES256")]
    Algorithm,
    #[error("typ is not the one expected (support-access+jwt for a token)")]
    Type,
    #[error("header carries a key or key reference")]
    EmbeddedKey,
    #[error("kid missing or not in the JWK Set")]
    UnknownKey,
    #[error("signature does not verify")]
    Signature,
    /// The signature verifies, but in its high-S form `(r, n - s)`: the twin of a token the
    /// service signed, which anyone can compute without the key (see [`crate::ecdsa`]).
    #[error("signature is not in low-S form")]
    Malleable,
    #[error("claims are missing or malformed")]
    Claims,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("no active consent")]
    NoConsent,
    #[error("consent was replaced")]
    ConsentReplaced,
    #[error("scope does not allow this method")]
    Scope,
    /// The service's introspection answered `active: false` (revoked, replaced or expired
    /// consent; the service's own audit log says which).
    #[error("introspection says the token is not active")]
    Inactive,
    /// The service's emergency stop is engaged: no token works until an operator lifts it.
    #[error("the emergency stop is engaged")]
    EmergencyStop,
    /// An operator revoked every token the acting agent was issued up to a moment this token
    /// was issued at or before.
    #[error("the acting agent's tokens were revoked")]
    AgentRevoked,
}

impl Rejection {
    /// Every rejection, for tests and documentation.
    pub const ALL: [Self; 19] = [
        Self::Oversized,
        Self::Malformed,
        Self::Algorithm,
        Self::Type,
        Self::EmbeddedKey,
        Self::UnknownKey,
        Self::Signature,
        Self::Malleable,
        Self::Claims,
        Self::Issuer,
        Self::Audience,
        Self::Expired,
        Self::NotYetValid,
        Self::NoConsent,
        Self::ConsentReplaced,
        Self::Scope,
        Self::Inactive,
        Self::EmergencyStop,
        Self::AgentRevoked,
    ];

    /// A stable machine-readable code for the audit log.
    pub fn code(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::Type => "typ",
            Self::EmbeddedKey => "embedded-key",
            Self::UnknownKey => "unknown-kid",
            Self::Signature => "signature",
            Self::Malleable => "malleable",
            Self::Claims => "claims",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::NoConsent => "no-consent",
            Self::ConsentReplaced => "consent-replaced",
            Self::Scope => "scope",
            Self::Inactive => "inactive",
            Self::EmergencyStop => "emergency-stop",
            Self::AgentRevoked => "agent-revoked",
        }
    }

    /// Whether the token's signature verified before it was refused, i.e. whether its claims
    /// may be believed enough to name the user in an audit event.
    pub fn after_signature(self) -> bool {
        !matches!(
            self,
            Self::Oversized
                | Self::Malformed
                | Self::Algorithm
                | Self::Type
                | Self::EmbeddedKey
                | Self::UnknownKey
                | Self::Signature
                | Self::Malleable
                | Self::Claims
        )
    }
}

/// The stateless checks: [`verify_signature`], then [`check_claims`]. The caller must still
/// check that the consent is live (the service does; elsewhere, ask `/introspect`).
pub fn verify(
    token: &str,
    keys: &KeyRing,
    expected: &Expected,
    now_unix: i64,
) -> Result<ImpersonationClaims, Rejection> {
    let claims = verify_signature(token, keys)?;
    check_claims(&claims, expected, now_unix)?;
    Ok(claims)
}

/// Proves the token authentic, in order: size, structure, header (ES256, exact `typ`, no
/// embedded key or key reference, a `kid` from the JWK Set), signature (in low-S form, so
/// that no one can make a second valid token from a first), claim shapes (times within
/// 1970..=9999 and a lifetime of at most [`crate::MAX_TOKEN_LIFETIME_SECONDS`]). Only after
/// this may anything in the claims be believed.
pub fn verify_signature(token: &str, keys: &KeyRing) -> Result<ImpersonationClaims, Rejection> {
    let claims: ImpersonationClaims = verify_jws(token, keys, TOKEN_TYPE, SignatureForm::LowS)?;
    if !claims.lifetime_is_possible() {
        return Err(Rejection::Claims);
    }
    Ok(claims)
}

/// Which of a valid ECDSA signature's two forms a JWS may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureForm {
    /// Only `s <= n/2`: tokens, which the service has always signed that way.
    LowS,
    /// Either: checkpoints, some of which were stored before the service normalised `s`.
    Either,
}

/// The checks of [`verify_signature`] for any compact JWS this service signs, told apart by
/// `typ`, so that one kind can never pass for the other.
pub(crate) fn verify_jws<T: serde::de::DeserializeOwned>(
    token: &str,
    keys: &KeyRing,
    typ: &str,
    form: SignatureForm,
) -> Result<T, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Oversized);
    }
    if token.split('.').count() != 3 {
        return Err(Rejection::Malformed);
    }
    let header = check_header(token, typ)?;
    let kid = header.kid.as_deref().ok_or(Rejection::UnknownKey)?;
    let key = keys.keys.get(kid).ok_or(Rejection::UnknownKey)?;

    // jsonwebtoken checks only the signature and alg here; the claims are checked in
    // `check_claims` against the caller's clock, not the machine's.
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey => Rejection::Signature,
            ErrorKind::InvalidAlgorithm => Rejection::Algorithm,
            _ => Rejection::Malformed,
        }
    })?;
    // Checked once the signature verified, so `malleable` on the audit log means exactly "a
    // real signature of ours, flipped": someone holds a token and tried its twin.
    if form == SignatureForm::LowS && !crate::ecdsa::raw_signature(token).is_some_and(|raw| is_low_s(&raw)) {
        return Err(Rejection::Malleable);
    }
    serde_json::from_value(data.claims).map_err(|_| Rejection::Claims)
}

/// Checks authentic claims against this deployment and `now_unix`: `iss`, `aud`, then `exp`
/// and `nbf` with the leeway. A token is dead from `exp + leeway` on, and live from
/// `nbf - leeway`.
pub fn check_claims(claims: &ImpersonationClaims, expected: &Expected, now_unix: i64) -> Result<(), Rejection> {
    if claims.iss != expected.issuer {
        return Err(Rejection::Issuer);
    }
    if claims.aud != expected.audience {
        return Err(Rejection::Audience);
    }
    let leeway = expected.leeway_seconds.max(0);
    if now_unix >= claims.exp.saturating_add(leeway) {
        return Err(Rejection::Expired);
    }
    if now_unix < claims.nbf.saturating_sub(leeway) {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

fn check_header(token: &str, typ: &str) -> Result<Header, Rejection> {
    let header_b64 = token.split('.').next().ok_or(Rejection::Malformed)?;
    let raw = B64.decode(header_b64).map_err(|_| Rejection::Malformed)?;
    let value: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| Rejection::Malformed)?;
    let obj = value.as_object().ok_or(Rejection::Malformed)?;
    // Checked on the raw JSON first: `alg: none` and unknown algorithms do not even parse
    // into jsonwebtoken's `Header`, and must still be reported as an algorithm refusal.
    if obj.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err(Rejection::Algorithm);
    }
    if obj.get("typ").and_then(|t| t.as_str()) != Some(typ) {
        return Err(Rejection::Type);
    }
    if KEY_HEADERS.iter().any(|k| obj.contains_key(*k)) {
        return Err(Rejection::EmbeddedKey);
    }
    // No extension this verifier understands, so any critical one must fail (RFC 7515 §4.1.11).
    if obj.contains_key("crit") {
        return Err(Rejection::Malformed);
    }
    serde_json::from_value(value).map_err(|_| Rejection::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_codes_are_distinct() {
        let codes: std::collections::HashSet<_> = Rejection::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), Rejection::ALL.len());
    }

    #[test]
    fn only_refusals_after_the_signature_may_name_the_user() {
        assert!(!Rejection::Signature.after_signature());
        assert!(!Rejection::Claims.after_signature());
        assert!(Rejection::Issuer.after_signature());
        assert!(Rejection::ConsentReplaced.after_signature());
    }
}
