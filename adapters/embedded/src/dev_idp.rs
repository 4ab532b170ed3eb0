//! The dev identity provider of the embedded default: it mints identity tokens
//! (`local-api dev-token`) and validates them the way API Gateway's JWT authorizer would,
//! then hands the claims over as API Gateway does: every value a string, arrays as `[a b]`.
//! It is a stand-in for the app's real IdP and is never deployed.

use std::collections::HashMap;
use std::path::Path;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::files::{new_p256_pkcs8, p256_key_file, secret_file_error};
use shared::domain::{SignIn, Timestamp};
use shared::identity::{IdentityVerifier, StaticJwks};
use shared::token::es256_public_jwk;

pub const DEV_ISSUER: &str = "support-access-dev-idp";
pub const DEV_AUDIENCE: &str = "support-access-local";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A dev identity token (this provider's issuer and audience) whose signature is another
    /// key's: in practice one `dev-token` minted from another data directory.
    #[error("identity token refused: signed by another dev identity key")]
    OtherKey,
    #[error("identity token refused: {0}")]
    Invalid(String),
}

pub struct DevIdentityProvider {
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Its public key, `kid` its thumbprint (which every token it issues names).
    jwk: Jwk,
}

impl DevIdentityProvider {
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let der = p256_key_file(path)?;
        Self::from_pkcs8(&der).map_err(|e| secret_file_error(path, e))
    }

    pub fn generate() -> Self {
        Self::from_pkcs8(&new_p256_pkcs8()).expect("a fresh key loads")
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        let jwk = es256_public_jwk(key.public_key().as_ref()).map_err(|e| e.to_string())?;
        let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
            unreachable!("es256_public_jwk makes EC keys")
        };
        let decoding = DecodingKey::from_ec_components(&ec.x, &ec.y).map_err(|e| e.to_string())?;
        Ok(Self { encoding: EncodingKey::from_ec_der(der), decoding, jwk })
    }

    /// An identity token for `sub` in `groups`, valid for `ttl_seconds` from `now`, signed in
    /// at `now` with no particular method.
    pub fn issue(&self, sub: &str, groups: &[String], now: Timestamp, ttl_seconds: i64) -> String {
        self.issue_signed_in(sub, groups, &SignIn { amr: Vec::new(), auth_time: Some(now) }, now, ttl_seconds)
    }

    /// As [`Self::issue`], with the sign-in's `amr` and `auth_time` (for step-up).
    pub fn issue_signed_in(
        &self,
        sub: &str,
        groups: &[String],
        sign_in: &SignIn,
        now: Timestamp,
        ttl_seconds: i64,
    ) -> String {
        let mut claims = serde_json::json!({
            "iss": DEV_ISSUER,
            "aud": DEV_AUDIENCE,
            "sub": sub,
            "groups": groups,
            "iat": now.unix(),
            "exp": now.unix() + ttl_seconds,
        });
        if !sign_in.amr.is_empty() {
            claims["amr"] = serde_json::json!(sign_in.amr);
        }
        if let Some(at) = sign_in.auth_time {
            claims["auth_time"] = serde_json::json!(at.unix());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = self.jwk.common.key_id.clone();
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("ES256 signing with a valid key")
    }

    /// The verifier of this provider's tokens as the service runs it where it verifies identity
    /// tokens itself (the demo route; the app API's authorizer on AWS), on this provider's key.
    pub fn verifier(&self) -> IdentityVerifier {
        let keys = StaticJwks(JwkSet { keys: vec![self.jwk.clone()] });
        IdentityVerifier::new(DEV_ISSUER, DEV_AUDIENCE, std::sync::Arc::new(keys))
    }

    /// The claims of a valid identity token (signature, `iss`, `aud`, `exp`), or why not.
    pub fn validate(&self, token: &str) -> Result<Map<String, Value>, IdentityError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[DEV_ISSUER]);
        validation.set_audience(&[DEV_AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &validation).map(|data| data.claims).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature if Self::is_dev_token(token) => {
                    IdentityError::OtherKey
                }
                _ => IdentityError::Invalid(e.to_string()),
            },
        )
    }

    /// Whether `token`'s unverified claims name this kind of provider as issuer and audience
    /// (only to tell a developer why it was refused: nothing here is trusted).
    fn is_dev_token(token: &str) -> bool {
        jsonwebtoken::dangerous::insecure_decode_claims::<Map<String, Value>>(token).is_ok_and(|claims| {
            claims.get("iss").and_then(Value::as_str) == Some(DEV_ISSUER)
                && claims.get("aud").and_then(Value::as_str) == Some(DEV_AUDIENCE)
        })
    }
}

/// The claims as API Gateway's JWT authorizer passes them to Lambda: strings as they are,
/// numbers and booleans as text, arrays as `[a b]`, objects as JSON.
pub fn stringify_claims(claims: &Map<String, Value>) -> HashMap<String, String> {
    fn text(v: &Value) -> String {
        match v {
            Value::String(s) => s.clone(),
            Value::Array(items) => format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(" ")),
            other => other.to_string(),
        }
    }
    claims.iter().map(|(k, v)| (k.clone(), text(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::http::parse_groups;

    fn now() -> Timestamp {
        shared::ports::Clock::now(&shared::ports::SystemClock)
    }

    #[test]
    fn an_issued_token_validates_and_groups_arrive_as_api_gateway_sends_them() {
        let idp = DevIdentityProvider::generate();
        let token = idp.issue("alice", &["support".into(), "auditor".into()], now(), 3600);
        let claims = idp.validate(&token).unwrap();
        let flat = stringify_claims(&claims);
        assert_eq!(flat["sub"], "alice");
        assert_eq!(flat["groups"], "[support auditor]");
        // Two groups or one named `support auditor`: the handler reads the token's array.
        assert!(parse_groups(&flat["groups"]).is_empty());
    }

    #[test]
    fn a_stepped_up_sign_in_arrives_with_amr_and_auth_time() {
        let idp = DevIdentityProvider::generate();
        let sign_in = SignIn { amr: vec!["pwd".into(), "mfa".into()], auth_time: Some(now().plus_seconds(-60)) };
        let flat = stringify_claims(&idp.validate(&idp.issue_signed_in("agent-7", &[], &sign_in, now(), 600)).unwrap());
        assert_eq!(flat["amr"], "[pwd mfa]");
        assert_eq!(flat["auth_time"], now().plus_seconds(-60).unix().to_string());
    }

    #[test]
    fn a_token_from_another_idp_or_expired_is_refused() {
        let idp = DevIdentityProvider::generate();
        let other = DevIdentityProvider::generate();
        assert!(matches!(idp.validate(&other.issue("alice", &[], now(), 3600)), Err(IdentityError::OtherKey)));
        let expired = idp.validate(&idp.issue("alice", &[], now().plus_seconds(-7200), 3600));
        assert!(matches!(expired, Err(IdentityError::Invalid(_))), "{expired:?}");
        assert!(matches!(idp.validate("not.a.token"), Err(IdentityError::Invalid(_))));
        // Another issuer's token (here with a foreign key too) is not taken for a stray dev token.
        let foreign = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &serde_json::json!({"iss": "someone-else", "aud": DEV_AUDIENCE, "sub": "alice", "exp": now().unix() + 60}),
            &EncodingKey::from_ec_der(&new_p256_pkcs8()),
        )
        .unwrap();
        assert!(matches!(idp.validate(&foreign), Err(IdentityError::Invalid(_))));
    }
}
