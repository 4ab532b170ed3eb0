//! Verifies support-access impersonation tokens: ES256 JWTs with `typ` `support-access+jwt`,
//! the acting agent in `act` (RFC 8693) and the consent in `cid`. This crate is the one
//! verification path of the service (the local API, the Lambda authorizer and `/introspect`
//! all call it) and is usable by any Rust backend, with no AWS dependency.
//!
//! The checks, in order: size (at most [`MAX_TOKEN_BYTES`], before any parsing), compact JWS
//! shape, header (`alg` exactly ES256, `typ` exactly [`TOKEN_TYPE`], no `jwk`/`jku`/`x5u`/`x5c`
//! and no `crit`, a `kid` found in the JWK Set), the signature (low-S only, see [`ecdsa`]), the
//! claim shapes, then `iss`, `aud`, `exp` and `nbf` with a small leeway. What no token can show by itself is whether the
//! user's consent still lives: the service checks that on every use, and a backend outside
//! AWS asks `/introspect` (see [`remote`], feature `fetch`).
//!
//! ```
//! use support_access_verify::{Expected, KeyRing, Rejection, verify};
//!
//! let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(r#"{"keys":[{"kty":"EC","crv":"P-256",
//!     "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
//!     "kid":"k1","alg":"ES256","use":"sig"}]}"#).unwrap();
//! let keys = KeyRing::from_jwks(jwks).unwrap();
//! let expected = Expected::new("support-access", "support-access-app");
//! let now = 1_795_600_800;
//! assert_eq!(verify("not.a.token", &keys, &expected, now).unwrap_err(), Rejection::Malformed);
//! ```

mod cache;
pub mod chain;
mod check;
pub mod checkpoint;
mod claims;
pub mod ecdsa;
mod error;
pub mod export_keys;
mod ids;
mod keys;
pub mod receipt;
mod scope;
mod text;

#[cfg(feature = "fetch")]
pub mod remote;

pub use cache::VerifiedCache;
pub use check::{Expected, Rejection, check_claims, verify, verify_signature};
pub use claims::{
    ActClaim, ImpersonationClaims, MAX_TOKEN_BYTES, MAX_TOKEN_LIFETIME_SECONDS, MAX_UNIX_SECONDS, TOKEN_TYPE,
};
pub use error::ValidationError;
pub use export_keys::{ExportKeySet, ExportKeys};
pub use ids::{AgentId, ConsentId, EventId, Jti, UserId};
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use keys::{KeyError, KeyRing, es256_public_jwk};
pub use scope::Scope;
pub use text::{Note, Reason, is_refused_in_text, is_unprintable};

/// Seconds since the Unix epoch, injected so that tests (and callers with their own time
/// source) decide what "now" is.
pub trait Clock: Send + Sync {
    fn now_unix(&self) -> i64;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }
}
