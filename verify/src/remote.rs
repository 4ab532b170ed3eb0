//! Verification from outside the service (feature `fetch`): the JWK Set fetched over HTTP and
//! cached, and, for the live consent check, the service's `POST /introspect` (RFC 7662).
//!
//! The cache refreshes when a token names a `kid` it does not hold (the service publishes a
//! new key before signing with it), but at most once per refresh interval, so a stream of
//! tokens with made-up `kid`s cannot turn every request into a fetch. Keys are also re-fetched
//! once they are older than the maximum age, so a key the service withdrew stops working; if
//! that re-fetch fails the old keys are kept (an outage of the JWK Set must not refuse every
//! token) and the next request tries again after the refresh interval.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{
    ActClaim, Clock, ConsentId, Expected, ImpersonationClaims, Jti, KeyRing, Rejection, Scope, SystemClock, UserId,
    check_claims, verify_signature,
};

/// Largest JWK Set or introspection answer read (a real one is well under 4 KiB).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why a remote verification did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The token must not be accepted.
    #[error("token refused: {0}")]
    Rejected(Rejection),
    /// The JWK Set or the introspection endpoint could not be used; refuse the request (fail
    /// closed) and let the client retry.
    #[error("verification unavailable: {0}")]
    Unavailable(String),
}

impl From<Rejection> for RemoteError {
    fn from(r: Rejection) -> Self {
        Self::Rejected(r)
    }
}

struct Cache {
    keys: Option<Arc<KeyRing>>,
    /// When the keys were last fetched successfully.
    fetched_at: i64,
    /// When a fetch was last attempted (successful or not): the refresh interval counts from it.
    attempted_at: Option<i64>,
    fetches: u64,
}

/// Verifies tokens against a JWK Set fetched from `jwks_url`, optionally asking
/// `/introspect` whether the consent behind a token still lives.
pub struct RemoteVerifier {
    http: reqwest::Client,
    jwks_url: String,
    expected: Expected,
    clock: Arc<dyn Clock>,
    refresh_interval: i64,
    max_age: i64,
    introspector: Option<Introspector>,
    cache: Mutex<Cache>,
}

impl RemoteVerifier {
    /// A verifier for tokens that must match `expected`, with keys from `jwks_url` (the
    /// service's `/.well-known/jwks.json`). Defaults: refresh on unknown `kid` at most once a
    /// minute, keys re-fetched after an hour, 5 s HTTP timeout, the system clock.
    pub fn new(jwks_url: impl Into<String>, expected: Expected) -> Self {
        Self {
            http: default_client(),
            jwks_url: jwks_url.into(),
            expected,
            clock: Arc::new(SystemClock),
            refresh_interval: 60,
            max_age: 3600,
            introspector: None,
            cache: Mutex::new(Cache { keys: None, fetched_at: 0, attempted_at: None, fetches: 0 }),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The least time between two fetches of the JWK Set caused by unknown `kid`s.
    pub fn with_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval.as_secs() as i64;
        self
    }

    /// How long fetched keys are used before they are fetched again.
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age.as_secs() as i64;
        self
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Also asks the service, for every token, whether its consent still lives: without
    /// this, a revoked consent's tokens keep verifying here until they expire (minutes).
    pub fn with_introspection(mut self, introspector: Introspector) -> Self {
        self.introspector = Some(introspector);
        self
    }

    /// How many times the JWK Set was fetched (successfully or not).
    pub async fn fetches(&self) -> u64 {
        self.cache.lock().await.fetches
    }

    /// Verifies `token`: signature against the cached (or refreshed) JWK Set, then `iss`,
    /// `aud`, `exp`, `nbf`, then, if configured, introspection. The caller still enforces
    /// the scope for its request (`claims.scope.allows(method)`).
    pub async fn verify(&self, token: &str) -> Result<ImpersonationClaims, RemoteError> {
        let keys = self.keys(false).await?;
        let claims = match verify_signature(token, &keys) {
            Err(Rejection::UnknownKey) => verify_signature(token, self.keys(true).await?.as_ref())?,
            other => other?,
        };
        check_claims(&claims, &self.expected, self.clock.now_unix())?;
        if let Some(introspector) = &self.introspector {
            let answer = introspector.introspect(token).await?;
            if !answer.active || answer.jti.as_ref() != Some(&claims.jti) {
                return Err(RemoteError::Rejected(Rejection::Inactive));
            }
        }
        Ok(claims)
    }

    /// The keys to verify with: fetched when there are none yet or they are older than the
    /// maximum age, or (`unknown_kid`) when a token named a key the set lacks; never more than
    /// once per refresh interval after a first fetch.
    async fn keys(&self, unknown_kid: bool) -> Result<Arc<KeyRing>, RemoteError> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now_unix();
        let stale = now.saturating_sub(cache.fetched_at) >= self.max_age;
        let want = cache.keys.is_none() || stale || unknown_kid;
        let allowed = cache.attempted_at.is_none_or(|at| now.saturating_sub(at) >= self.refresh_interval);
        if want && allowed {
            cache.attempted_at = Some(now);
            cache.fetches += 1;
            match self.fetch().await {
                Ok(keys) => {
                    cache.keys = Some(Arc::new(keys));
                    cache.fetched_at = now;
                }
                Err(e) if cache.keys.is_none() => return Err(e),
                Err(_) => {} // keep the old keys until the next attempt
            }
        }
        cache.keys.clone().ok_or_else(|| RemoteError::Unavailable("the JWK Set has not been fetched yet".into()))
    }

    async fn fetch(&self) -> Result<KeyRing, RemoteError> {
        let bytes = get_bytes(self.http.get(&self.jwks_url)).await?;
        let jwks = serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Unavailable(format!("the JWK Set is not valid JSON: {e}")))?;
        KeyRing::from_jwks(jwks).map_err(|e| RemoteError::Unavailable(e.to_string()))
    }
}

/// A client of the service's `POST /introspect` (RFC 7662), authenticated with an identity
/// token of a caller in the introspect group.
pub struct Introspector {
    http: reqwest::Client,
    url: String,
    bearer: String,
}

/// The service's introspection answer. Inactive answers carry nothing but `active: false`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(default)]
    pub sub: Option<UserId>,
    #[serde(default)]
    pub act: Option<ActClaim>,
    #[serde(default)]
    pub scope: Option<Scope>,
    #[serde(default)]
    pub exp: Option<i64>,
    #[serde(default)]
    pub cid: Option<ConsentId>,
    #[serde(default)]
    pub jti: Option<Jti>,
}

impl Introspector {
    /// `url` is the service's `/introspect`; `bearer` an identity token in its introspect group.
    pub fn new(url: impl Into<String>, bearer: impl Into<String>) -> Self {
        Self { http: default_client(), url: url.into(), bearer: bearer.into() }
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Asks whether `token` is active now: signature, claims and the user's live consent.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, RemoteError> {
        let request = self.http.post(&self.url).bearer_auth(&self.bearer).form(&[("token", token)]);
        let bytes = get_bytes(request).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RemoteError::Unavailable(format!("the introspection answer is not valid: {e}")))
    }
}

fn default_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default()
}

async fn get_bytes(request: reqwest::RequestBuilder) -> Result<Vec<u8>, RemoteError> {
    let unavailable = |e: reqwest::Error| RemoteError::Unavailable(e.to_string());
    let mut response = request.send().await.map_err(unavailable)?;
    if !response.status().is_success() {
        return Err(RemoteError::Unavailable(format!("answered {}", response.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(RemoteError::Unavailable(format!("answer larger than {MAX_ANSWER_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
