//! Identity tokens of the app's own identity provider (Cognito, Keycloak, ...), verified by
//! the service itself wherever API Gateway's JWT authorizer is not in front: the app API's
//! authorizer (which takes both a user's own identity token and an impersonation token) and,
//! locally, the demo route. One verifier, configured by the issuer and the audience alone:
//! the keys come from the issuer's discovery document (`/.well-known/openid-configuration`,
//! then its `jwks_uri`), cached for [`JWKS_TTL`] and fetched again early when a token names a
//! `kid` the cache lacks (a rotation), at most once per [`MIN_REFETCH`] so that tokens with
//! made-up `kid`s cannot turn the verifier into a load on the provider.
//!
//! What is checked, in order: size ([`MAX_IDENTITY_TOKEN_BYTES`]); the header: `alg` RS256
//! or ES256 only (never `none`, `HS*`, or anything a key or a token could choose instead), a
//! `kid` present in the provider's set, a key usable with that `alg` (a JWK naming another
//! `alg` is refused), no `crit`; the signature; `iss` exactly the issuer; the audience: `aud`
//! (a string or a list) holds it, or, for an access token without `aud` (Cognito's), its
//! `client_id` is it, as API Gateway's JWT authorizer accepts; `exp` required, `nbf` and `iat`
//! when present, each with [`LEEWAY_SECONDS`]; `sub` present and not empty. An impersonation
//! token never passes here: its issuer and keys are the service's, not the provider's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Identity tokens larger than this are refused before parsing (Cognito's ID tokens with many
/// groups stay well below it).
pub const MAX_IDENTITY_TOKEN_BYTES: usize = 16 * 1024;
/// The only algorithms an identity token may be signed with.
pub const ALGORITHMS: [Algorithm; 2] = [Algorithm::RS256, Algorithm::ES256];
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: i64 = 30;
/// How long a fetched key set is used before it is fetched again.
pub const JWKS_TTL: Duration = Duration::from_secs(600);
/// The least time between two fetches of the key set (an unknown `kid` asks for one).
pub const MIN_REFETCH: Duration = Duration::from_secs(60);
/// The largest discovery document or key set read from the provider.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// Why an identity token was refused. The text is for logs only.
#[derive(Debug, thiserror::Error)]
pub enum IdentityRejection {
    #[error("identity token over {MAX_IDENTITY_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("identity token malformed: {0}")]
    Malformed(String),
    #[error("identity token algorithm {0:?} not allowed (RS256, ES256)")]
    Algorithm(Algorithm),
    #[error("identity token names no key of the identity provider")]
    UnknownKey,
    #[error("identity token invalid: {0}")]
    Invalid(String),
    /// The provider's keys could not be fetched: nothing can be decided (fail closed).
    #[error("identity provider keys unavailable: {0}")]
    Unavailable(String),
}

/// A verified identity token: its `sub` and every claim, as the provider wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityClaims {
    pub sub: String,
    pub claims: Map<String, Value>,
}

impl IdentityClaims {
    /// The entries of a list claim (the groups claim, `amr`): a JSON array's strings, each
    /// whole, or a string read as a comma list.
    pub fn list(&self, claim: &str) -> Vec<String> {
        crate::http::token_list(self.claims.get(claim))
    }
}

/// Where the provider's keys come from.
#[async_trait::async_trait]
pub trait JwksSource: Send + Sync {
    async fn fetch(&self) -> Result<JwkSet, String>;
}

/// An HTTP GET of a public document (the adapter's HTTPS client): the body of a 200, or why not.
#[async_trait::async_trait]
pub trait HttpGet: Send + Sync {
    async fn get(&self, url: &str) -> Result<Vec<u8>, String>;
}

/// The keys of `issuer`, found as OpenID Connect Discovery says: its discovery document at
/// `<issuer>/.well-known/openid-configuration`, whose `issuer` must be exactly the issuer,
/// then the key set at its `jwks_uri` (https, or http only for an http issuer: a local one).
pub struct Discovery {
    issuer: String,
    http: Arc<dyn HttpGet>,
}

impl Discovery {
    pub fn new(issuer: impl Into<String>, http: Arc<dyn HttpGet>) -> Self {
        Self { issuer: issuer.into(), http }
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

#[async_trait::async_trait]
impl JwksSource for Discovery {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let url = format!("{}/.well-known/openid-configuration", self.issuer.trim_end_matches('/'));
        let document: DiscoveryDocument = parse_document(&self.http.get(&url).await?, "discovery document")?;
        if document.issuer != self.issuer {
            return Err(format!("the discovery document names issuer {:?}, not {:?}", document.issuer, self.issuer));
        }
        let local = self.issuer.starts_with("http://") && document.jwks_uri.starts_with("http://");
        if !(document.jwks_uri.starts_with("https://") || local) {
            return Err(format!("jwks_uri {:?} is not https", document.jwks_uri));
        }
        let set: Value = parse_document(&self.http.get(&document.jwks_uri).await?, "JWK Set")?;
        Ok(usable_keys(&set))
    }
}

fn parse_document<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, String> {
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("the {what} is over {MAX_DOCUMENT_BYTES} bytes"));
    }
    serde_json::from_slice(body).map_err(|e| format!("the {what} does not parse: {e}"))
}

/// The keys of a JWK Set that parse; one key of a kind this crate does not know (an
/// encryption key, a new curve) does not spoil the others.
fn usable_keys(set: &Value) -> JwkSet {
    let keys = set.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    JwkSet { keys: keys.iter().filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok()).collect() }
}

/// A fixed key set (local-api's dev identity provider, whose key the process holds).
pub struct StaticJwks(pub JwkSet);

#[async_trait::async_trait]
impl JwksSource for StaticJwks {
    async fn fetch(&self) -> Result<JwkSet, String> {
        Ok(self.0.clone())
    }
}

/// Verifies identity tokens of one issuer for one audience.
pub struct IdentityVerifier {
    issuer: String,
    audience: String,
    source: Arc<dyn JwksSource>,
    cache: tokio::sync::Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    keys: Option<JwkSet>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityVerifier").field("issuer", &self.issuer).field("audience", &self.audience).finish()
    }
}

impl IdentityVerifier {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, source: Arc<dyn JwksSource>) -> Self {
        Self { issuer: issuer.into(), audience: audience.into(), source, cache: Default::default() }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The claims of `token` if it is a valid identity token of this issuer and audience at
    /// `now_unix`.
    pub async fn verify(&self, token: &str, now_unix: i64) -> Result<IdentityClaims, IdentityRejection> {
        if token.len() > MAX_IDENTITY_TOKEN_BYTES {
            return Err(IdentityRejection::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| IdentityRejection::Malformed(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(IdentityRejection::Algorithm(header.alg));
        }
        if has_crit(token) {
            return Err(IdentityRejection::Malformed("a crit header is not understood".into()));
        }
        let kid = header.kid.as_deref().ok_or(IdentityRejection::UnknownKey)?;
        let jwk = self.key(kid).await?;
        if jwk.common.key_algorithm.is_some_and(|a| a != header.alg.into()) {
            return Err(IdentityRejection::Invalid(format!("key {kid} is not for {:?}", header.alg)));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| IdentityRejection::Invalid(e.to_string()))?;
        // The signature and `iss` here; the times and the audience below, on the service's clock.
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["iss", "exp", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| IdentityRejection::Invalid(e.to_string()))?
            .claims;
        self.check_claims(claims, now_unix)
    }

    fn check_claims(&self, claims: Map<String, Value>, now: i64) -> Result<IdentityClaims, IdentityRejection> {
        let time =
            |name: &str| claims.get(name).map(|v| v.as_i64().ok_or_else(|| invalid(format!("{name} not a number"))));
        let exp = time("exp").ok_or_else(|| invalid("no exp"))??;
        if now > exp + LEEWAY_SECONDS {
            return Err(invalid("expired"));
        }
        if let Some(nbf) = time("nbf").transpose()?
            && now + LEEWAY_SECONDS < nbf
        {
            return Err(invalid("not yet valid (nbf)"));
        }
        if let Some(iat) = time("iat").transpose()?
            && now + LEEWAY_SECONDS < iat
        {
            return Err(invalid("issued in the future (iat)"));
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.audience,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(&self.audience)),
            Some(_) => false,
            None => claims.get("client_id").and_then(Value::as_str) == Some(&self.audience),
        };
        if !audience_ok {
            return Err(invalid("not for this audience"));
        }
        let sub =
            claims.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| invalid("no sub"))?;
        Ok(IdentityClaims { sub: sub.to_owned(), claims })
    }

    /// The provider's key `kid`: from the cache while it is fresh; else, or when the cache
    /// lacks `kid`, from a new fetch, at most one per [`MIN_REFETCH`].
    async fn key(&self, kid: &str) -> Result<Jwk, IdentityRejection> {
        let mut cache = self.cache.lock().await;
        let find = |cache: &Cache| cache.keys.as_ref().and_then(|s| s.find(kid).cloned());
        let fresh = cache.fetched_at.is_some_and(|at| at.elapsed() < JWKS_TTL);
        if fresh && let Some(jwk) = find(&cache) {
            return Ok(jwk);
        }
        // Until a first set arrives, a failed fetch is retried after a second, not a minute.
        let interval = if cache.keys.is_some() { MIN_REFETCH } else { Duration::from_secs(1) };
        if cache.attempted_at.is_none_or(|at| at.elapsed() >= interval) {
            cache.attempted_at = Some(Instant::now());
            match self.source.fetch().await {
                Ok(keys) => {
                    cache.keys = Some(keys);
                    cache.fetched_at = Some(Instant::now());
                }
                // A stale set still serves its keys while the provider is unreachable.
                Err(e) if cache.keys.is_some() => {
                    tracing::warn!(error = %e, "identity provider keys could not be refreshed; using the last set")
                }
                Err(e) => return Err(IdentityRejection::Unavailable(e)),
            }
        } else if cache.keys.is_none() {
            return Err(IdentityRejection::Unavailable("the last fetch of the keys failed".into()));
        }
        find(&cache).ok_or(IdentityRejection::UnknownKey)
    }
}

fn invalid(why: impl Into<String>) -> IdentityRejection {
    IdentityRejection::Invalid(why.into())
}

/// Whether the token's header has a `crit` member (jsonwebtoken's header ignores it).
fn has_crit(token: &str) -> bool {
    use base64::Engine;
    let header = token.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .is_some_and(|h| h.contains_key("crit"))
}

/// Whether `token` claims to be an impersonation token (its header's `typ` is ours). Only
/// routes a token to its verifier: each verifier then checks everything itself.
pub fn is_impersonation_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token).is_ok_and(|h| h.typ.as_deref() == Some(crate::token::TOKEN_TYPE))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example.com/pool";
    const AUDIENCE: &str = "app-client";
    const NOW: i64 = 1_764_064_800;

    struct Key {
        encoding: EncodingKey,
        jwk: Jwk,
    }

    fn key() -> Key {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &aws_lc_rs::rand::SystemRandom::new())
                .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let jwk = crate::token::es256_public_jwk(pair.public_key().as_ref()).unwrap();
        Key { encoding: EncodingKey::from_ec_der(pkcs8.as_ref()), jwk }
    }

    fn sign(key: &Key, header: Header, claims: Value) -> String {
        jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
    }

    fn claims(extra: Value) -> Value {
        let mut all = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW, "exp": NOW + 3600});
        let map = all.as_object_mut().unwrap();
        map.extend(extra.as_object().unwrap().clone());
        map.retain(|_, v| !v.is_null());
        all
    }

    fn token(key: &Key, extra: Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = key.jwk.common.key_id.clone();
        sign(key, header, claims(extra))
    }

    /// A source that counts its fetches and serves what `keys` holds at the time.
    struct Counting {
        keys: std::sync::Mutex<Vec<Jwk>>,
        fetches: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl JwksSource for Counting {
        async fn fetch(&self) -> Result<JwkSet, String> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            Ok(JwkSet { keys: self.keys.lock().unwrap().clone() })
        }
    }

    fn verifier(keys: &[&Key]) -> (IdentityVerifier, Arc<Counting>) {
        let source = Arc::new(Counting {
            keys: std::sync::Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect()),
            fetches: AtomicUsize::new(0),
        });
        (IdentityVerifier::new(ISSUER, AUDIENCE, source.clone()), source)
    }

    #[tokio::test]
    async fn a_valid_token_gives_its_sub_and_claims_and_the_keys_are_fetched_once() {
        let k = key();
        let (v, source) = verifier(&[&k]);
        let claims = v.verify(&token(&k, json!({"groups": ["support", "tier1 support"]})), NOW).await.unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.list("groups"), ["support", "tier1 support"]);
        v.verify(&token(&k, json!({"aud": ["other", AUDIENCE]})), NOW).await.unwrap();
        // A Cognito access token: no `aud`, the client id in `client_id`.
        v.verify(&token(&k, json!({"aud": null, "client_id": AUDIENCE})), NOW).await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn wrong_issuer_audience_times_or_sub_are_refused() {
        let k = key();
        let (v, _) = verifier(&[&k]);
        for extra in [
            json!({"iss": "https://idp.example.com/other"}),
            json!({"iss": null}),
            json!({"aud": "another-app"}),
            json!({"aud": null}),
            json!({"aud": null, "client_id": "another-app"}),
            json!({"exp": NOW - LEEWAY_SECONDS - 1}),
            json!({"exp": null}),
            json!({"exp": "soon"}),
            json!({"nbf": NOW + LEEWAY_SECONDS + 1}),
            json!({"iat": NOW + LEEWAY_SECONDS + 1}),
            json!({"sub": ""}),
            json!({"sub": null}),
        ] {
            let refused = v.verify(&token(&k, extra.clone()), NOW).await;
            assert!(matches!(refused, Err(IdentityRejection::Invalid(_))), "{extra}: {refused:?}");
        }
        // Within the leeway: accepted.
        v.verify(&token(&k, json!({"exp": NOW - LEEWAY_SECONDS, "nbf": NOW + LEEWAY_SECONDS})), NOW).await.unwrap();
    }

    #[tokio::test]
    async fn only_rs256_and_es256_with_a_published_kid_and_no_crit() {
        let k = key();
        let (v, _) = verifier(&[&k]);
        let kid = k.jwk.common.key_id.clone();
        // HS256 with the public key's bytes as the secret: the classic confusion, refused on `alg`.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.clone();
        let hs = jsonwebtoken::encode(&header, &claims(json!({})), &EncodingKey::from_secret(b"x")).unwrap();
        assert!(matches!(v.verify(&hs, NOW).await, Err(IdentityRejection::Algorithm(Algorithm::HS256))));
        // `none`: not even a header jsonwebtoken parses as an algorithm it knows.
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, br#"{"alg":"none"}"#),
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims(json!({})).to_string())
        );
        assert!(v.verify(&none, NOW).await.is_err());
        // RS256 claimed over an EC key: the key does not fit the algorithm.
        let mut rs = token(&k, json!({})).split('.').map(str::to_owned).collect::<Vec<_>>();
        let rs_header = json!({"alg": "RS256", "kid": kid});
        rs[0] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, rs_header.to_string());
        assert!(matches!(v.verify(&rs.join("."), NOW).await, Err(IdentityRejection::Invalid(_))));
        // No kid, an unknown kid, a crit header, another key's signature, too large.
        assert!(matches!(
            v.verify(&sign(&k, Header::new(Algorithm::ES256), claims(json!({}))), NOW).await,
            Err(IdentityRejection::UnknownKey)
        ));
        let mut crit = token(&k, json!({})).split('.').map(str::to_owned).collect::<Vec<_>>();
        let crit_header = json!({"alg": "ES256", "kid": kid, "crit": ["exp"], "exp": 1});
        crit[0] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, crit_header.to_string());
        assert!(matches!(v.verify(&crit.join("."), NOW).await, Err(IdentityRejection::Malformed(_))));
        let other = key();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid;
        let forged = sign(&other, header, claims(json!({})));
        assert!(matches!(v.verify(&forged, NOW).await, Err(IdentityRejection::Invalid(_))));
        let big = token(&k, json!({"pad": "x".repeat(MAX_IDENTITY_TOKEN_BYTES)}));
        assert!(matches!(v.verify(&big, NOW).await, Err(IdentityRejection::TooLarge)));
    }

    #[tokio::test]
    async fn an_unknown_kid_fetches_again_at_most_once_a_minute_and_a_rotation_is_picked_up() {
        let (old, new) = (key(), key());
        let (v, source) = verifier(&[&old]);
        v.verify(&token(&old, json!({})), NOW).await.unwrap();
        // The provider rotates: the first token of the new key fetches the set again.
        source.keys.lock().unwrap().push(new.jwk.clone());
        // Not within the minute after the last fetch, though: made-up kids cost one fetch.
        assert!(matches!(v.verify(&token(&new, json!({})), NOW).await, Err(IdentityRejection::UnknownKey)));
        for _ in 0..10 {
            let _ = v.verify(&token(&new, json!({})), NOW).await;
        }
        assert_eq!(source.fetches.load(Ordering::SeqCst), 1, "no fetch per unknown kid");
        v.cache.lock().await.attempted_at = Some(Instant::now() - MIN_REFETCH);
        v.verify(&token(&new, json!({})), NOW).await.unwrap();
        assert_eq!(source.fetches.load(Ordering::SeqCst), 2);
    }

    /// A discovery source over a fake HTTP.
    struct Pages(Vec<(&'static str, String)>);

    #[async_trait::async_trait]
    impl HttpGet for Pages {
        async fn get(&self, url: &str) -> Result<Vec<u8>, String> {
            self.0.iter().find(|(u, _)| *u == url).map(|(_, b)| b.clone().into_bytes()).ok_or(format!("404 {url}"))
        }
    }

    #[tokio::test]
    async fn discovery_finds_the_keys_from_the_issuer_and_checks_the_document() {
        let k = key();
        let set = json!({"keys": [k.jwk, {"kty": "ML-DSA", "pub": "AA", "kid": "new-kind"}]}).to_string();
        let document = |issuer: &str, jwks_uri: &str| json!({"issuer": issuer, "jwks_uri": jwks_uri}).to_string();
        let at = "https://idp.example.com/pool/.well-known/openid-configuration";
        let ok = Pages(vec![
            (at, document(ISSUER, "https://idp.example.com/keys")),
            ("https://idp.example.com/keys", set.clone()),
        ]);
        let keys = Discovery::new(ISSUER, Arc::new(ok)).fetch().await.unwrap();
        assert!(
            keys.find(k.jwk.common.key_id.as_deref().unwrap()).is_some(),
            "a key of an unknown kind spoils nothing"
        );
        let other_issuer = Pages(vec![(at, document("https://evil.example.com", "https://idp.example.com/keys"))]);
        assert!(Discovery::new(ISSUER, Arc::new(other_issuer)).fetch().await.unwrap_err().contains("names issuer"));
        let plain = Pages(vec![(at, document(ISSUER, "http://idp.example.com/keys"))]);
        assert!(Discovery::new(ISSUER, Arc::new(plain)).fetch().await.unwrap_err().contains("not https"));
        // Unreachable on the first use: unavailable, not a refusal of the token.
        let (v, _) =
            (IdentityVerifier::new(ISSUER, AUDIENCE, Arc::new(Discovery::new(ISSUER, Arc::new(Pages(vec![]))))), ());
        assert!(matches!(v.verify(&token(&k, json!({})), NOW).await, Err(IdentityRejection::Unavailable(_))));
    }
}
