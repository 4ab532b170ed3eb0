//! Impersonation tokens on the service side: building the claims for a consent and signing
//! them through any [`Signer`] (KMS, or the local key). Verification is the verifier crate's
//! (`support-access-verify`), re-exported here so that every entry point of the service and
//! every outside backend run the very same checks; the wrappers below only translate the
//! deployment's [`Policy`] and [`Timestamp`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
pub use support_access_verify::{
    ActClaim, Expected, ImpersonationClaims, KeyRing, MAX_TOKEN_BYTES, Rejection, TOKEN_TYPE, verify_signature,
};

use crate::domain::{AgentId, Consent, Jti, Policy, Reason, Timestamp};
use crate::ports::{Signer, SignerError};

/// Claims for `agent` acting on `consent`, issued at `now`: `exp` is the sooner of the token
/// TTL and the consent's own expiry, so no token outlives its consent.
pub fn new_claims(
    consent: &Consent,
    agent: AgentId,
    reason: Reason,
    now: Timestamp,
    policy: &Policy,
) -> ImpersonationClaims {
    let exp = now.plus_seconds(policy.token_ttl_seconds).min(consent.expires_at);
    ImpersonationClaims {
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

/// When the token stops working (before leeway).
pub fn expires_at(claims: &ImpersonationClaims) -> Timestamp {
    Timestamp::from_unix(claims.exp)
}

/// Signs `claims` into a compact JWS with the signer's current key.
pub async fn sign(claims: &ImpersonationClaims, signer: &dyn Signer) -> Result<String, SignerError> {
    sign_jws(TOKEN_TYPE, claims, signer).await
}

/// Signs any claims of this service (a token, a checkpoint) as an ES256 compact JWS of the
/// given `typ` with the signer's current key.
pub async fn sign_jws<T: Serialize + Sync>(typ: &str, claims: &T, signer: &dyn Signer) -> Result<String, SignerError> {
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(typ.to_owned());
    header.kid = Some(signer.key_id().to_owned());
    let signing_input = format!("{}.{}", b64_json(&header), b64_json(claims));
    let signature = signer.sign(signing_input.as_bytes()).await?;
    if Some(&signature.kid) != header.kid.as_ref() {
        return Err(SignerError::Invalid(format!("signed with {} instead of {:?}", signature.kid, header.kid)));
    }
    // The port's promise, held here for every signer: a high-S token would be refused by
    // every verifier, so it is never handed out.
    if !support_access_verify::ecdsa::is_low_s(&signature.raw) {
        return Err(SignerError::Invalid(format!("{} returned a high-S signature", signature.kid)));
    }
    Ok(format!("{signing_input}.{}", B64.encode(signature.raw)))
}

fn b64_json<T: Serialize>(value: &T) -> String {
    B64.encode(serde_json::to_vec(value).expect("header and claims always serialize"))
}

/// The published JWK of a P-256 public key (uncompressed SEC1 point), its RFC 7638
/// thumbprint as `kid`: see [`support_access_verify::es256_public_jwk`].
pub fn es256_public_jwk(uncompressed_point: &[u8]) -> Result<Jwk, SignerError> {
    Ok(support_access_verify::es256_public_jwk(uncompressed_point)?)
}

/// What this deployment's tokens must say, from its policy.
pub fn expected(policy: &Policy) -> Expected {
    Expected { issuer: policy.issuer.clone(), audience: policy.audience.clone(), leeway_seconds: policy.leeway_seconds }
}

/// The stateless checks: [`verify_signature`], then [`check_claims`]. The caller must still
/// check that the consent is live.
pub fn verify(token: &str, keys: &KeyRing, policy: &Policy, now: Timestamp) -> Result<ImpersonationClaims, Rejection> {
    support_access_verify::verify(token, keys, &expected(policy), now.unix())
}

/// Checks authentic claims against this deployment and `now`: `iss`, `aud`, then `exp` and
/// `nbf` with the policy's leeway.
pub fn check_claims(claims: &ImpersonationClaims, policy: &Policy, now: Timestamp) -> Result<(), Rejection> {
    support_access_verify::check_claims(claims, &expected(policy), now.unix())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConsentDuration, Note, Scope, UserId};

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

    fn claims(c: &Consent, now: Timestamp) -> ImpersonationClaims {
        new_claims(c, AgentId::parse("agent").unwrap(), Reason::parse("ticket 1234").unwrap(), now, &Policy::default())
    }

    #[test]
    fn exp_is_the_token_ttl_when_the_consent_lasts_longer() {
        let now = Timestamp::from_unix(10_000);
        let c = consent(now, 3600);
        let claims = claims(&c, now);
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
        let claims = claims(&c, granted.plus_seconds(600));
        assert_eq!(claims.exp, c.expires_at.unix());
        assert_eq!(expires_at(&claims), c.expires_at);
    }

    #[test]
    fn claims_serialize_with_act_and_epoch_seconds() {
        let now = Timestamp::from_unix(10_000);
        let v = serde_json::to_value(claims(&consent(now, 3600), now)).unwrap();
        assert_eq!(v["act"]["sub"], "agent");
        assert_eq!(v["exp"], 10_900);
        assert_eq!(v["scope"], "read");
        assert_eq!(v["aud"], "support-access-app");
    }

    /// A signer that returns a fixed signature, whatever the message.
    struct Fixed([u8; 64]);

    #[async_trait::async_trait]
    impl Signer for Fixed {
        fn key_id(&self) -> &str {
            "fixed"
        }
        async fn sign(&self, _: &[u8]) -> Result<crate::ports::Es256Signature, SignerError> {
            Ok(crate::ports::Es256Signature { kid: "fixed".into(), raw: self.0 })
        }
        async fn public_keys(&self) -> Result<jsonwebtoken::jwk::JwkSet, SignerError> {
            Ok(jsonwebtoken::jwk::JwkSet { keys: Vec::new() })
        }
    }

    #[tokio::test]
    async fn a_high_s_signature_is_never_handed_out() {
        let now = Timestamp::from_unix(10_000);
        let c = claims(&consent(now, 3600), now);
        let mut high = [0u8; 64];
        high[32] = 0x80; // above n/2, below n
        assert!(matches!(sign(&c, &Fixed(high)).await, Err(SignerError::Invalid(e)) if e.contains("high-S")));
        let low = support_access_verify::ecdsa::low_s(high);
        assert!(sign(&c, &Fixed(low)).await.is_ok());
    }

    #[test]
    fn the_leeway_of_the_policy_bounds_exp_and_nbf() {
        let now = Timestamp::from_unix(10_000);
        let c = claims(&consent(now, 3600), now);
        let policy = Policy { leeway_seconds: 5, ..Policy::default() };
        assert!(check_claims(&c, &policy, Timestamp::from_unix(c.exp + 4)).is_ok());
        assert_eq!(check_claims(&c, &policy, Timestamp::from_unix(c.exp + 5)), Err(Rejection::Expired));
        assert!(check_claims(&c, &policy, Timestamp::from_unix(c.nbf - 5)).is_ok());
        assert_eq!(check_claims(&c, &policy, Timestamp::from_unix(c.nbf - 6)), Err(Rejection::NotYetValid));
    }
}
