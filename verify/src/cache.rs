//! A bounded cache of tokens whose signature already verified, so that a token presented
//! again (every request of an impersonation session carries the same one) skips the ECDSA
//! check. Only [`verify_signature`]'s result is cached: the caller must still run
//! [`check_claims`](crate::check_claims) against its clock, and the service still checks the
//! live consent, on every use.
//!
//! An entry is keyed by the SHA-256 of the whole token (so any other token, even one that
//! differs in its signature alone, never hits), remembers which key verified it, and lives
//! until the token's `exp`. A hit is served only while that same key (same `kid`, same
//! public point) is still in the key ring the caller passes, so a key removed from the JWK
//! Set stops its tokens at once. Failures are never cached.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
use sha2::{Digest, Sha256};

use crate::{ImpersonationClaims, KeyRing, MAX_TOKEN_BYTES, Rejection, verify_signature};

/// Verified tokens, at most `capacity` of them, each until its `exp`.
pub struct VerifiedCache {
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

struct Entry {
    claims: ImpersonationClaims,
    /// The key that verified the token: its `kid` and public point (`x`, `y`).
    key: (String, String, String),
}

impl VerifiedCache {
    /// What the service uses: enough for every live session of a busy deployment, a few MB
    /// at most (claims are small; tokens are not stored, only their hash).
    pub const DEFAULT_CAPACITY: usize = 10_000;

    /// A cache of at most `capacity` tokens (0 turns caching off).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// [`verify_signature`], answered from the cache when this very token already verified
    /// with a key still in `keys` and `now_unix` is before its `exp`. The claims are not
    /// checked against the clock here: call [`check_claims`](crate::check_claims) after.
    pub fn verify_signature(
        &self,
        token: &str,
        keys: &KeyRing,
        now_unix: i64,
    ) -> Result<ImpersonationClaims, Rejection> {
        if self.capacity == 0 || token.len() > MAX_TOKEN_BYTES {
            return verify_signature(token, keys);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        {
            let mut entries = self.lock();
            if let Some(entry) = entries.get(&digest) {
                let (kid, x, y) = &entry.key;
                if now_unix < entry.claims.exp && point_of(keys, kid) == Some((x.as_str(), y.as_str())) {
                    return Ok(entry.claims.clone());
                }
                entries.remove(&digest);
            }
        }
        let claims = verify_signature(token, keys)?;
        if now_unix < claims.exp {
            let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
            if let Some(kid) = kid
                && let Some((x, y)) = point_of(keys, &kid)
            {
                let key = (kid, x.to_owned(), y.to_owned());
                self.insert(digest, Entry { claims: claims.clone(), key }, now_unix);
            }
        }
        Ok(claims)
    }

    /// How many tokens are cached (expired ones included until they are evicted).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, digest: [u8; 32], entry: Entry, now_unix: i64) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            entries.retain(|_, e| now_unix < e.claims.exp);
            // Still full of live tokens: drop the one that expires first.
            while entries.len() >= self.capacity {
                let Some(soonest) = entries.iter().min_by_key(|(_, e)| e.claims.exp).map(|(k, _)| *k) else {
                    break;
                };
                entries.remove(&soonest);
            }
        }
        entries.insert(digest, entry);
    }

    #[cfg(test)]
    fn holds(&self, token: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.lock().contains_key(&digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the lock cannot leave an entry half-written (inserts and
        // removes are single HashMap calls), so a poisoned cache is still sound.
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for VerifiedCache {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache").field("capacity", &self.capacity).field("len", &self.len()).finish()
    }
}

/// The public point (`x`, `y`) of the key `keys` uses for `kid`: the last P-256 JWK of that
/// `kid` in its set, as [`KeyRing`] keeps it.
fn point_of<'k>(keys: &'k KeyRing, kid: &str) -> Option<(&'k str, &'k str)> {
    if !keys.contains(kid) {
        return None;
    }
    keys.jwks().keys.iter().rev().find_map(|jwk| match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec)
            if ec.curve == EllipticCurve::P256 && jwk.common.key_id.as_deref() == Some(kid) =>
        {
            Some((ec.x.as_str(), ec.y.as_str()))
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::{Expected, check_claims, es256_public_jwk};

    const T: i64 = 1_795_600_800;

    struct Key {
        pkcs8: Vec<u8>,
        jwk: Jwk,
    }

    fn key() -> Key {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let jwk = es256_public_jwk(pair.public_key().as_ref()).unwrap();
        Key { pkcs8: pair.to_pkcs8v1().unwrap().as_ref().to_vec(), jwk }
    }

    fn ring(keys: &[&Jwk]) -> KeyRing {
        KeyRing::from_jwks(JwkSet { keys: keys.iter().map(|k| (*k).clone()).collect() }).unwrap()
    }

    fn token(key: &Key, exp: i64, jti: &str) -> String {
        let claims = json!({
            "iss": "support-access", "sub": "alice", "aud": "support-access-app",
            "iat": T, "nbf": T, "exp": exp, "jti": jti, "act": {"sub": "agent-7"},
            "cid": "26c16f5d-a412-44a7-af22-870826a0f133", "scope": "read", "reason": "ticket 4411",
        });
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some(crate::TOKEN_TYPE.into());
        header.kid = key.jwk.common.key_id.clone();
        crate::ecdsa::with_low_s(
            &jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap(),
        )
    }

    /// The same token with `s` replaced by `n - s`: a valid ECDSA signature of the same
    /// input, made without the key.
    fn twin(token: &str) -> String {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = p256::ecdsa::Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
        let flipped = p256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
        format!("{input}.{}", B64.encode(flipped.to_bytes()))
    }

    const JTI: [&str; 3] = [
        "b39a3570-8352-4429-a24a-6cec08a9c1a5",
        "c39a3570-8352-4429-a24a-6cec08a9c1a5",
        "d39a3570-8352-4429-a24a-6cec08a9c1a5",
    ];

    #[test]
    fn a_verified_token_is_served_from_the_cache_until_its_exp() {
        let k = key();
        let keys = ring(&[&k.jwk]);
        let cache = VerifiedCache::new(10);
        let t = token(&k, T + 900, JTI[0]);
        let first = cache.verify_signature(&t, &keys, T).unwrap();
        assert!(cache.holds(&t));
        assert_eq!(cache.verify_signature(&t, &keys, T + 899).unwrap(), first);
        assert_eq!(first, verify_signature(&t, &keys).unwrap());
        // At `exp` the entry is gone; the signature alone still verifies (the cache is no
        // clock check), but the claims check refuses, and nothing is cached again.
        let late = cache.verify_signature(&t, &keys, T + 900).unwrap();
        assert!(!cache.holds(&t));
        let expected = Expected { leeway_seconds: 0, ..Expected::new("support-access", "support-access-app") };
        assert_eq!(check_claims(&late, &expected, T + 900), Err(Rejection::Expired));
    }

    #[test]
    fn an_expired_token_is_never_cached() {
        let k = key();
        let keys = ring(&[&k.jwk]);
        let cache = VerifiedCache::new(10);
        let t = token(&k, T + 10, JTI[0]);
        cache.verify_signature(&t, &keys, T + 10).unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_different_token_never_hits() {
        let k = key();
        let keys = ring(&[&k.jwk]);
        let cache = VerifiedCache::new(10);
        let t = token(&k, T + 900, JTI[0]);
        cache.verify_signature(&t, &keys, T).unwrap();
        // The same header and claims with another signature: a cache keyed by the claims or
        // the signing input would accept it.
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(cache.verify_signature(&flipped, &keys, T), Err(Rejection::Signature));
        // Another valid token gets its own claims.
        let other = token(&k, T + 900, JTI[1]);
        assert_eq!(cache.verify_signature(&other, &keys, T).unwrap().jti.as_str(), JTI[1]);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_twin_of_a_valid_token_is_refused_as_malleable() {
        let k = key();
        let keys = ring(&[&k.jwk]);
        let t = token(&k, T + 900, JTI[0]);
        let twin = twin(&t);
        assert_ne!(twin, t);
        // The twin really is a valid ECDSA signature of the same input by the same key.
        let (input, sig) = twin.rsplit_once('.').unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&k.jwk).unwrap();
        assert!(jsonwebtoken::crypto::verify(sig, input.as_bytes(), &key, jsonwebtoken::Algorithm::ES256).unwrap());
        assert!(verify_signature(&t, &keys).is_ok());
        assert_eq!(verify_signature(&twin, &keys), Err(Rejection::Malleable));
        assert!(!Rejection::Malleable.after_signature(), "a refused twin names no one");
    }

    #[test]
    fn the_twin_of_a_cached_token_is_refused_and_never_cached() {
        let k = key();
        let keys = ring(&[&k.jwk]);
        let cache = VerifiedCache::new(10);
        let t = token(&k, T + 900, JTI[0]);
        cache.verify_signature(&t, &keys, T).unwrap();
        assert!(cache.holds(&t));
        let flipped = twin(&t);
        assert_eq!(cache.verify_signature(&flipped, &keys, T), Err(Rejection::Malleable));
        assert!(!cache.holds(&flipped) && cache.len() == 1);
        // And the other way round: a twin presented first caches nothing for the original.
        let other = token(&k, T + 900, JTI[1]);
        assert_eq!(cache.verify_signature(&twin(&other), &keys, T), Err(Rejection::Malleable));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_hit_needs_the_same_key_still_in_the_ring() {
        let (k, other) = (key(), key());
        let cache = VerifiedCache::new(10);
        let t = token(&k, T + 900, JTI[0]);
        cache.verify_signature(&t, &ring(&[&k.jwk]), T).unwrap();
        // The key left the JWK Set: refused although the token is cached.
        assert_eq!(cache.verify_signature(&t, &ring(&[&other.jwk]), T), Err(Rejection::UnknownKey));
        // Cached again, then a ring whose key of that kid is another point.
        cache.verify_signature(&t, &ring(&[&k.jwk]), T).unwrap();
        let mut impostor = other.jwk.clone();
        impostor.common.key_id = k.jwk.common.key_id.clone();
        assert_eq!(cache.verify_signature(&t, &ring(&[&impostor]), T), Err(Rejection::Signature));
        assert!(!cache.holds(&t));
    }

    #[test]
    fn the_cache_is_bounded_and_drops_the_soonest_expiry_first() {
        let k = key();
        let keys = ring(&[&k.jwk]);
        let cache = VerifiedCache::new(2);
        let soon = token(&k, T + 100, JTI[0]);
        let later = token(&k, T + 900, JTI[1]);
        let latest = token(&k, T + 800, JTI[2]);
        for t in [&soon, &later, &latest] {
            cache.verify_signature(t, &keys, T).unwrap();
        }
        assert_eq!(cache.len(), 2);
        assert!(!cache.holds(&soon));
        assert!(cache.holds(&later) && cache.holds(&latest));
        // Expired entries go first when room is needed.
        let fresh = token(&k, T + 2000, JTI[0]);
        cache.verify_signature(&fresh, &keys, T + 850).unwrap();
        assert!(cache.holds(&later) && cache.holds(&fresh) && !cache.holds(&latest));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let k = key();
        let cache = VerifiedCache::new(0);
        let t = token(&k, T + 900, JTI[0]);
        cache.verify_signature(&t, &ring(&[&k.jwk]), T).unwrap();
        assert!(cache.is_empty());
    }
}
