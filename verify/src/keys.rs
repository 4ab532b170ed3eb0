//! The public keys a verifier trusts: a JWK Set, reduced to the P-256 keys that have a `kid`.
//! A token names its key by `kid` only; a key carried in the token itself is never used.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash,
};

/// Why a key or a JWK Set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key is not an uncompressed P-256 point")]
    NotP256Point,
    #[error("JWK {kid}: {problem}")]
    BadJwk { kid: String, problem: String },
    #[error("the JWK Set holds no usable P-256 key")]
    NoUsableKey,
}

/// The published JWK of a P-256 public key given as an uncompressed SEC1 point
/// (`0x04 || x || y`), with `alg ES256`, `use sig`, and its RFC 7638 thumbprint as `kid`
/// (so every signer, local or KMS, names its keys the same way).
pub fn es256_public_jwk(uncompressed_point: &[u8]) -> Result<Jwk, KeyError> {
    let [0x04, coordinates @ ..] = uncompressed_point else {
        return Err(KeyError::NotP256Point);
    };
    if coordinates.len() != 64 {
        return Err(KeyError::NotP256Point);
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
    let kid = jwk
        .thumbprint(ThumbprintHash::SHA256)
        .map_err(|e| KeyError::BadJwk { kid: "(new)".into(), problem: e.to_string() })?;
    jwk.common.key_id = Some(kid);
    Ok(jwk)
}

/// The public keys a verifier accepts, by `kid`, and the JWK Set they came from.
#[derive(Clone)]
pub struct KeyRing {
    jwks: JwkSet,
    pub(crate) keys: HashMap<String, DecodingKey>,
}

impl KeyRing {
    /// Keeps only P-256 keys with a `kid` (an RSA or symmetric key in the set is never used
    /// to verify, so no algorithm confusion can pick it); fails if none is left.
    pub fn from_jwks(jwks: JwkSet) -> Result<Self, KeyError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let (Some(kid), AlgorithmParameters::EllipticCurve(ec)) = (&jwk.common.key_id, &jwk.algorithm) else {
                continue;
            };
            if ec.curve != EllipticCurve::P256 {
                continue;
            }
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError::BadJwk { kid: kid.clone(), problem: e.to_string() })?;
            keys.insert(kid.clone(), key);
        }
        if keys.is_empty() {
            return Err(KeyError::NoUsableKey);
        }
        Ok(Self { jwks, keys })
    }

    /// No keys at all: for a process that never verifies (and so may not read public keys),
    /// where every token is refused as naming an unknown key.
    pub fn empty() -> Self {
        Self { jwks: JwkSet { keys: Vec::new() }, keys: HashMap::new() }
    }

    /// The JWK Set as published.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Whether `kid` names a key of this ring.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Whether the header of the compact JWS `jws` names a key of this ring, whatever its
    /// signature: to say which key a refused JWS claims, never to accept one.
    pub fn is_named_by(&self, jws: &str) -> bool {
        jsonwebtoken::decode_header(jws).ok().and_then(|h| h.kid).is_some_and(|kid| self.contains(&kid))
    }
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeyRing").field("kids", &kids).finish()
    }
}
