//! The keys that verify an export, each bound to the one kind of JWS it may sign.
//!
//! Checkpoints and receipts are signed by keys of their own (on AWS, the checkpoint function
//! alone may sign with the checkpoint key, export-audit alone with the receipt key), so that
//! whoever runs code in one of those functions cannot forge the other kind: a `typ` tells
//! honest objects apart, but a key's holder can sign any `typ`. Both are published in one
//! document, `/.well-known/checkpoint-keys.json` ([`ExportKeySet`]): a JWK Set of the
//! checkpoint keys (`keys`, all any JWK Set reader sees), and the receipt keys in a member
//! of their own, `receipt_keys` (RFC 7517 §5: a member a reader does not know is ignored, so
//! no reader takes a receipt key for a checkpoint key). A verifier holds them apart
//! ([`ExportKeys`]): a checkpoint signed by a receipt key, or a receipt signed by a
//! checkpoint key, is refused.

use jsonwebtoken::jwk::{Jwk, JwkSet};
use serde::{Deserialize, Serialize};

use crate::{KeyError, KeyRing};

/// The document `/.well-known/checkpoint-keys.json`, as published and as saved beside an
/// export.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportKeySet {
    /// The checkpoint keys (a JWK Set's `keys`).
    pub keys: Vec<Jwk>,
    /// The receipt keys. Absent in a document saved before receipts had a key of their own:
    /// then no receipt verifies.
    #[serde(default)]
    pub receipt_keys: Vec<Jwk>,
}

/// The checkpoint keys and the receipt keys of a verifier, apart.
#[derive(Debug, Clone)]
pub struct ExportKeys {
    /// Verify checkpoints, and nothing else.
    pub checkpoints: KeyRing,
    /// Verify receipts, and nothing else.
    pub receipts: KeyRing,
}

impl ExportKeys {
    /// The two rings of `set`. Fails if it holds no usable checkpoint key, or if one `kid`
    /// is in both (then the binding would mean nothing); no receipt key is no error (every
    /// receipt is then refused).
    pub fn from_set(set: ExportKeySet) -> Result<Self, KeyError> {
        let checkpoints = KeyRing::from_jwks(JwkSet { keys: set.keys })?;
        let receipts = match set.receipt_keys.is_empty() {
            true => KeyRing::empty(),
            false => KeyRing::from_jwks(JwkSet { keys: set.receipt_keys })?,
        };
        Self::new(checkpoints, receipts)
    }

    /// The two rings, refused if a `kid` is in both.
    pub fn new(checkpoints: KeyRing, receipts: KeyRing) -> Result<Self, KeyError> {
        if let Some(kid) = receipts.keys.keys().find(|kid| checkpoints.contains(kid)) {
            return Err(KeyError::BadJwk {
                kid: kid.clone(),
                problem: "is both a checkpoint key and a receipt key: each kind needs keys of its own".into(),
            });
        }
        Ok(Self { checkpoints, receipts })
    }

    /// No keys at all: every checkpoint and every receipt is refused (chain checks only).
    pub fn empty() -> Self {
        Self { checkpoints: KeyRing::empty(), receipts: KeyRing::empty() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(kid: &str) -> Jwk {
        let mut jwk: Jwk = serde_json::from_str(
            r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0","alg":"ES256","use":"sig"}"#,
        )
        .unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    #[test]
    fn each_kind_has_its_own_ring_and_no_kid_is_in_both() {
        let set = ExportKeySet { keys: vec![jwk("c1")], receipt_keys: vec![jwk("r1")] };
        let keys = ExportKeys::from_set(set.clone()).unwrap();
        assert!(keys.checkpoints.contains("c1") && !keys.checkpoints.contains("r1"));
        assert!(keys.receipts.contains("r1") && !keys.receipts.contains("c1"));
        // A JWK Set reader sees the checkpoint keys alone.
        let text = serde_json::to_string(&set).unwrap();
        let plain: JwkSet = serde_json::from_str(&text).unwrap();
        assert_eq!(plain.keys.len(), 1);
        // A document saved before receipts had keys: no receipt verifies.
        let old: ExportKeySet = serde_json::from_str(r#"{"keys":[]}"#).unwrap();
        assert!(old.receipt_keys.is_empty());
        let both = ExportKeySet { keys: vec![jwk("k")], receipt_keys: vec![jwk("k")] };
        assert!(matches!(ExportKeys::from_set(both), Err(KeyError::BadJwk { .. })));
    }
}
