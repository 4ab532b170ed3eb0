//! Impersonation tokens: ES256 JWTs with an explicit `typ` (RFC 8725 §3.11) and the acting
//! agent in `act` (RFC 8693 §4.1). This module builds the claims, assembles a signed token
//! from any [`Signer`], and holds the one stateless verification path every entry point uses
//! (the live consent check comes after it, in `app::authorize`).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::{AgentId, Consent, ConsentId, Jti, Policy, Reason, Scope, Timestamp, UserId};
use crate::ports::{Signer, SignerError};

/// The explicit `typ` of an impersonation token; a verifier accepts nothing else.
pub const TOKEN_TYPE: &str = "support-access+jwt";

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// `act` (RFC 8693 §4.1): who is really acting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActClaim {
    pub sub: AgentId,
}

/// The claims of an impersonation token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImpersonationClaims {
    pub iss: String,
    pub sub: UserId,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Jti,
    pub act: ActClaim,
    pub cid: ConsentId,
    pub scope: Scope,
    pub reason: Reason,
}

impl ImpersonationClaims {
    /// Claims for `agent` acting on `consent`, issued at `now`: `exp` is the sooner of the
    /// token TTL and the consent's own expiry, so no token outlives its consent.
    pub fn new(consent: &Consent, agent: AgentId, reason: Reason, now: Timestamp, policy: &Policy) -> Self {
        let exp = now.plus_seconds(policy.token_ttl_seconds).min(consent.expires_at);
        Self {
            iss: policy.issuer.clone(),
            sub: consent.user_id.clone(),
            aud: policy.audience.clone(),
            iat: now.unix(),
            nbf: now.unix(),
            exp: exp.unix(),
            jti: Jti::generate(),
            act: ActClaim { sub: agent },
            cid: consent.consent_id.clone(),
            scope: consent.scope,
            reason,
        }
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::from_unix(self.exp)
    }
}

/// Signs `claims` into a compact JWS with the signer's current key.
pub async fn sign(claims: &ImpersonationClaims, signer: &dyn Signer) -> Result<String, SignerError> {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(TOKEN_TYPE.to_owned());
    header.kid = Some(signer.key_id().to_owned());
    let signing_input = format!("{}.{}", b64_json(&header), b64_json(claims));
    let signature = signer.sign(signing_input.as_bytes()).await?;
    if Some(&signature.kid) != header.kid.as_ref() {
        return Err(SignerError::Invalid(format!("signed with {} instead of {:?}", signature.kid, header.kid)));
    }
    Ok(format!("{signing_input}.{}", B64.encode(signature.raw)))
}

fn b64_json<T: Serialize>(value: &T) -> String {
    B64.encode(serde_json::to_vec(value).expect("header and claims always serialize"))
}

/// Why a token was refused. `code()` goes into the audit event; the caller only ever
/// learns that the token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("token larger than 8 KiB")]
    Oversized,
    #[error("token is not a compact JWS")]
    Malformed,
    #[error("algorithm is not ES256")]
    Algorithm,
    #[error("typ is not support-access+jwt")]
    Type,
    #[error("header carries a key or key reference")]
    EmbeddedKey,
    #[error("kid missing or not in the JWK Set")]
    UnknownKey,
    #[error("signature does not verify")]
    Signature,
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
}

impl Rejection {
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
            Self::Claims => "claims",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::NoConsent => "no-consent",
            Self::ConsentReplaced => "consent-replaced",
            Self::Scope => "scope",
        }
    }
}

/// The published JWK of a P-256 public key given as an uncompressed SEC1 point
/// (`0x04 || x || y`), with `alg ES256`, `use sig`, and its RFC 7638 thumbprint as `kid`
/// (so every signer, local or KMS, names its keys the same way).
pub fn es256_public_jwk(uncompressed_point: &[u8]) -> Result<Jwk, SignerError> {
    let [0x04, coordinates @ ..] = uncompressed_point else {
        return Err(SignerError::Invalid("public key is not an uncompressed P-256 point".into()));
    };
    if coordinates.len() != 64 {
        return Err(SignerError::Invalid("public key is not an uncompressed P-256 point".into()));
    }
    let (x, y) = coordinates.split_at(32);
    let mut jwk = Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::ES256),
            ..Default::default()
        },
        algorithm: AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
            key_type: EllipticCurveKeyType::EC,
            curve: EllipticCurve::P256,
            x: B64.encode(x),
            y: B64.encode(y),
        }),
    };
    let kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| SignerError::Invalid(e.to_string()))?;
    jwk.common.key_id = Some(kid);
    Ok(jwk)
}

/// The public keys a verifier accepts, by `kid`, and the JWK Set they came from.
pub struct KeyRing {
    jwks: JwkSet,
    keys: HashMap<String, DecodingKey>,
}

impl KeyRing {
    /// Keeps only P-256 keys with a `kid`; anything else in the set is never used to verify.
    pub fn from_jwks(jwks: JwkSet) -> Result<Self, SignerError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let (Some(kid), AlgorithmParameters::EllipticCurve(_)) = (&jwk.common.key_id, &jwk.algorithm) else {
                continue;
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| SignerError::Invalid(format!("JWK {kid}: {e}")))?;
            keys.insert(kid.clone(), key);
        }
        if keys.is_empty() {
            return Err(SignerError::Invalid("the JWK Set holds no usable P-256 key".into()));
        }
        Ok(Self { jwks, keys })
    }

    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }
}

/// The stateless checks: [`verify_signature`], then [`check_claims`]. The caller must still
/// check that the consent is live.
pub fn verify(token: &str, keys: &KeyRing, policy: &Policy, now: Timestamp) -> Result<ImpersonationClaims, Rejection> {
    let claims = verify_signature(token, keys)?;
    check_claims(&claims, policy, now)?;
    Ok(claims)
}

/// Proves the token authentic, in order: size, structure, header (ES256, exact `typ`, no
/// embedded key or key reference, a `kid` from the JWK Set), signature, claim shapes. Only
/// after this may anything in the claims be believed.
pub fn verify_signature(token: &str, keys: &KeyRing) -> Result<ImpersonationClaims, Rejection> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Rejection::Oversized);
    }
    if token.split('.').count() != 3 {
        return Err(Rejection::Malformed);
    }
    let header = check_header(token)?;
    let kid = header.kid.as_deref().ok_or(Rejection::UnknownKey)?;
    let key = keys.keys.get(kid).ok_or(Rejection::UnknownKey)?;

    // jsonwebtoken checks only the signature and alg here; the claims are checked in
    // `check_claims` against the injected clock, not the machine's.
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
    serde_json::from_value(data.claims).map_err(|_| Rejection::Claims)
}

/// Checks authentic claims against this deployment and `now`: `iss`, `aud`, then `exp` and
/// `nbf` with the policy's leeway.
pub fn check_claims(claims: &ImpersonationClaims, policy: &Policy, now: Timestamp) -> Result<(), Rejection> {
    if claims.iss != policy.issuer {
        return Err(Rejection::Issuer);
    }
    if claims.aud != policy.audience {
        return Err(Rejection::Audience);
    }
    let leeway = policy.leeway_seconds;
    if now.unix() >= claims.exp.saturating_add(leeway) {
        return Err(Rejection::Expired);
    }
    if now.unix() < claims.nbf.saturating_sub(leeway) {
        return Err(Rejection::NotYetValid);
    }
    Ok(())
}

fn check_header(token: &str) -> Result<Header, Rejection> {
    let header_b64 = token.split('.').next().ok_or(Rejection::Malformed)?;
    let raw = B64.decode(header_b64).map_err(|_| Rejection::Malformed)?;
    let value: serde_json::Value = serde_json::from_slice(&raw).map_err(|_| Rejection::Malformed)?;
    let obj = value.as_object().ok_or(Rejection::Malformed)?;
    // Checked on the raw JSON first: `alg: none` and unknown algorithms do not even parse
    // into jsonwebtoken's `Header`, and must still be reported as an algorithm refusal.
    if obj.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err(Rejection::Algorithm);
    }
    if obj.get("typ").and_then(|t| t.as_str()) != Some(TOKEN_TYPE) {
        return Err(Rejection::Type);
    }
    if ["jwk", "jku", "x5u", "x5c"].iter().any(|k| obj.contains_key(*k)) {
        return Err(Rejection::EmbeddedKey);
    }
    if obj.contains_key("crit") {
        return Err(Rejection::Malformed);
    }
    serde_json::from_value(value).map_err(|_| Rejection::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConsentDuration, Note};

    fn consent(now: Timestamp, seconds: i64) -> Consent {
        let p = Policy { min_duration_seconds: 60, ..Policy::default() };
        Consent::grant(
            UserId::parse("alice").unwrap(),
            Scope::Read,
            Note::default(),
            ConsentDuration::parse(seconds, &p).unwrap(),
            now,
        )
    }

    #[test]
    fn exp_is_the_token_ttl_when_the_consent_lasts_longer() {
        let now = Timestamp::from_unix(10_000);
        let c = consent(now, 3600);
        let claims = ImpersonationClaims::new(
            &c,
            AgentId::parse("agent").unwrap(),
            Reason::parse("ticket 1234").unwrap(),
            now,
            &Policy::default(),
        );
        assert_eq!(claims.exp, 10_900);
        assert_eq!((claims.iat, claims.nbf), (10_000, 10_000));
        assert_eq!(claims.cid, c.consent_id);
        assert_eq!(claims.sub, c.user_id);
        assert_eq!(claims.act.sub.as_str(), "agent");
    }

    #[test]
    fn exp_is_never_past_the_consent_expiry() {
        let granted = Timestamp::from_unix(10_000);
        let c = consent(granted, 900);
        // Minted 10 minutes into a 15-minute consent: 5 minutes left, TTL is 15.
        let now = granted.plus_seconds(600);
        let claims = ImpersonationClaims::new(
            &c,
            AgentId::parse("agent").unwrap(),
            Reason::parse("ticket 1234").unwrap(),
            now,
            &Policy::default(),
        );
        assert_eq!(claims.exp, c.expires_at.unix());
        assert!(claims.exp <= c.expires_at.unix());
    }

    #[test]
    fn claims_serialize_with_act_and_epoch_seconds() {
        let now = Timestamp::from_unix(10_000);
        let c = consent(now, 3600);
        let claims = ImpersonationClaims::new(
            &c,
            AgentId::parse("agent").unwrap(),
            Reason::parse("ticket 1234").unwrap(),
            now,
            &Policy::default(),
        );
        let v = serde_json::to_value(&claims).unwrap();
        assert_eq!(v["act"]["sub"], "agent");
        assert_eq!(v["exp"], 10_900);
        assert_eq!(v["scope"], "read");
        assert_eq!(v["aud"], "support-access-app");
    }

    #[test]
    fn rejection_codes_are_distinct() {
        use Rejection::*;
        let all = [
            Oversized,
            Malformed,
            Algorithm,
            Type,
            EmbeddedKey,
            UnknownKey,
            Signature,
            Claims,
            Issuer,
            Audience,
            Expired,
            NotYetValid,
            NoConsent,
            ConsentReplaced,
            Scope,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
    }
}
