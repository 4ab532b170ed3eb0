//! What the verifier's fuzz targets verify against: a fixed public key (its private half was
//! thrown away after signing the one valid seed token) and the service's default expectations.

use std::sync::LazyLock;

use support_access_verify::{Expected, KeyRing};

/// The `kid` of the fuzz key in `keys.json`.
pub const KID: &str = "fuzz-key-1";

/// The instant the valid seed token is checked at (inside its validity).
pub const EXPECTED_NOW: i64 = 1_795_600_800;

static KEYS: LazyLock<KeyRing> = LazyLock::new(|| {
    KeyRing::from_jwks(serde_json::from_str(include_str!("../keys.json")).expect("keys.json parses"))
        .expect("keys.json holds a P-256 key")
});

pub fn keys() -> &'static KeyRing {
    &KEYS
}

pub fn expected() -> Expected {
    Expected::new("support-access", "support-access-app")
}
