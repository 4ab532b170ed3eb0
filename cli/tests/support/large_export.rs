//! An export of any size, made directly (not through the service): valid chains over many
//! streams and one long one, interleaved, and checkpoints signed by a fresh ES256 key, each
//! sealing the heads that moved since the one before, with their inclusion proofs, after the
//! events as `GET /audit/export` writes them, and the receipt that ends it. For `tests/large_export.rs` and the
//! `verify_throughput` example (`scripts/bench-verify`).

use std::io::{self, Write};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support_access_verify::chain::{GENESIS, event_hash};
use support_access_verify::checkpoint::{CHECKPOINT_TYPE, CheckpointClaims, Leaf, link_of, seal_leaves};
use support_access_verify::receipt::{LineDigest, RECEIPT_TYPE, ReceiptClaims};
use support_access_verify::{ExportKeySet, es256_public_jwk};

/// The shape of an export.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Streams of `per_stream` events each.
    pub streams: usize,
    pub per_stream: u64,
    /// Events of the one long stream (`long`).
    pub long: u64,
    /// Checkpoints, evenly spread over the events; the last seals every head.
    pub checkpoints: usize,
}

impl Shape {
    /// `events` in all: a tenth in one stream, the rest over 1,000 streams (fewer for a
    /// small export), 10 checkpoints.
    pub fn of(events: u64) -> Self {
        let long = events / 10;
        let streams = 1000.min((events - long) as usize / 90).max(1);
        let per_stream = (events - long) / streams as u64;
        Shape { streams, per_stream, long: events - per_stream * streams as u64, checkpoints: 10 }
    }

    pub fn events(&self) -> u64 {
        self.streams as u64 * self.per_stream + self.long
    }
}

/// A fresh ES256 key: its public JWK, and a header of `typ` naming it.
fn fresh_key(typ: &str) -> (jsonwebtoken::jwk::Jwk, EncodingKey, Header) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let jwk = es256_public_jwk(key.public_key().as_ref()).unwrap();
    let encoding = EncodingKey::from_ec_der(key.to_pkcs8v1().unwrap().as_ref());
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(typ.into());
    header.kid = jwk.common.key_id.clone();
    (jwk, encoding, header)
}

/// Writes the export to `out`; returns the key set that verifies it (checkpoint-keys.json:
/// the checkpoints' key, and the receipt's, a key of its own).
pub fn write_export(shape: Shape, out: &mut impl Write) -> io::Result<ExportKeySet> {
    let (jwk, encoding, header) = fresh_key(CHECKPOINT_TYPE);

    let names: Vec<String> = (0..shape.streams).map(|i| format!("user-{i:05}")).chain(["long".into()]).collect();
    let sizes: Vec<u64> = names.iter().map(|_| shape.per_stream).take(shape.streams).chain([shape.long]).collect();
    // In each round every stream with events left writes one, the long one its share.
    let long_per_round = shape.long.div_ceil(shape.per_stream.max(1)).max(1);
    let mut heads: Vec<(u64, String)> = vec![(0, GENESIS.to_owned()); names.len()];
    let mut moved = vec![false; names.len()];
    let (total, every) = (shape.events(), shape.events().div_ceil(shape.checkpoints as u64).max(1));
    let (mut written, mut checkpoint_lines, mut prev_jws) = (0u64, Vec::new(), None::<String>);
    let mut digest = LineDigest::default();
    let line = |out: &mut dyn Write, text: &str| {
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")
    };
    while written < total {
        for (s, name) in names.iter().enumerate() {
            let burst = if s == shape.streams { long_per_round } else { 1 };
            for _ in 0..burst {
                let (seq, prev) = &heads[s];
                if *seq == sizes[s] {
                    break;
                }
                let seq = seq + 1;
                let mut event = json!({
                    "event_id": format!("7f1c2d3e-0000-4000-8000-{written:012}"),
                    "type": "token.used",
                    "at": "2026-11-25T10:00:00Z",
                    "user_id": name,
                    "actor": {"sub": "agent-7", "role": "support"},
                    "seq": seq,
                    "prev_hash": prev,
                    "consent_id": "26c16f5d-a412-44a7-af22-870826a0f133",
                    "jti": format!("8e2f1a0c-0000-4000-8000-{written:012}"),
                    "scope": "read",
                    "detail": "GET /app/whoami",
                });
                let hash = event_hash(&event);
                event["hash"] = json!(hash);
                line(&mut *out, &event.to_string())?;
                digest.push_event(&hash);
                heads[s] = (seq, hash);
                moved[s] = true;
                written += 1;
                if written % every == 0 || written == total {
                    let leaves: Vec<Leaf> = (0..names.len())
                        .filter(|&i| std::mem::take(&mut moved[i]))
                        .map(|i| Leaf { stream: names[i].clone(), seq: heads[i].0, hash: heads[i].1.clone() })
                        .collect();
                    let tree = seal_leaves(leaves);
                    let claims = CheckpointClaims {
                        iss: "support-access".into(),
                        seq: checkpoint_lines.len() as u64 + 1,
                        iat: 1_795_000_000,
                        prev: link_of(prev_jws.as_deref()),
                        root: tree.root,
                        size: tree.leaves.len() as u64,
                    };
                    let jws = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
                    checkpoint_lines
                        .push(json!({"type": "checkpoint", "seq": claims.seq, "jws": jws, "leaves": tree.leaves}));
                    prev_jws = Some(jws);
                }
            }
        }
    }
    for checkpoint in &checkpoint_lines {
        line(&mut *out, &checkpoint.to_string())?;
        digest.push_line(checkpoint);
    }
    let receipt = ReceiptClaims {
        iss: "support-access".into(),
        iat: 1_795_000_000,
        stream: None,
        streams: names.len() as u64,
        events: total,
        checkpoint: checkpoint_lines.len() as u64,
        digest: digest.hex(),
    };
    let (receipt_jwk, receipt_encoding, receipt_header) = fresh_key(RECEIPT_TYPE);
    let jws = jsonwebtoken::encode(&receipt_header, &receipt, &receipt_encoding).unwrap();
    writeln!(out, "{}", json!({"type": "receipt", "jws": jws}))?;
    out.flush()?;
    Ok(ExportKeySet { keys: vec![jwk], receipt_keys: vec![receipt_jwk] })
}
