//! Export receipts: what makes an export prove it is whole.
//!
//! Every export (`GET /audit/export`, all its pages concatenated) ends with one line
//! `{"type":"receipt","jws":…}`: a compact JWS (ES256, `typ` [`RECEIPT_TYPE`], signed with
//! the receipt key, a key of its own that verifiers accept for receipts alone, see
//! [`crate::ExportKeys`]; its `typ` keeps it from passing for a checkpoint or a token) whose
//! claims ([`ReceiptClaims`]) say what the service sent: the stream exported (or every
//! stream), how many streams and events, the newest checkpoint when the export began, and [`LineDigest`], a hash chain over every line before the receipt.
//! Events cut off with the checkpoints that sealed them, a checkpoint dropped or emptied of
//! its leaves, a line edited, or a file cut short (no receipt at all) no longer match it.
//! `tests/vectors/receipt.json` holds golden vectors from an independent implementation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::{GENESIS, canonical_json};
use crate::check::{SignatureForm, verify_jws};
use crate::{KeyRing, Rejection};

/// The `typ` of a receipt JWS.
pub const RECEIPT_TYPE: &str = "support-access-receipt+jwt";

/// What a receipt signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptClaims {
    /// The service that signed it (the tokens' issuer).
    pub iss: String,
    /// When the export's last page was made (Unix seconds).
    pub iat: i64,
    /// The one stream exported (a user's id, or `~unattributed`); `null` for a full export,
    /// which also holds every checkpoint `1..=checkpoint` with all its leaves.
    pub stream: Option<String>,
    /// How many streams have events in the export.
    pub streams: u64,
    /// How many events the export holds.
    pub events: u64,
    /// The newest checkpoint when the export began (0: none); no later one is in the export.
    pub checkpoint: u64,
    /// [`LineDigest`] over every line before the receipt, lowercase hex.
    pub digest: String,
}

/// The hash chain over an export's lines: it starts at 32 zero bytes and each line makes it
/// `SHA-256(digest || item)`, where the item of an event is its `hash` member (hex, which
/// the chain check holds to the event's canonical content) and that of any other line (a
/// checkpoint) its canonical JSON ([`canonical_json`]); blank lines are skipped. Items, not
/// the line's bytes, so that an export written with other JSON escapes (the CLI escapes
/// what a terminal could act on) keeps its receipt; a chain rather than one hash of the
/// file, so that the service carries it from one page to the next inside the cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineDigest([u8; 32]);

impl LineDigest {
    /// Takes in an event, by its `hash`.
    pub fn push_event(&mut self, hash: &str) {
        self.push(hash.as_bytes());
    }

    /// Takes in a line that is not an event (a checkpoint), by its canonical JSON.
    pub fn push_line(&mut self, line: &serde_json::Value) {
        self.push(canonical_json(line).as_bytes());
    }

    /// Takes in one item.
    pub fn push(&mut self, item: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.0);
        hasher.update(item);
        self.0 = hasher.finalize().into();
    }

    /// Lowercase hex.
    pub fn hex(&self) -> String {
        crate::chain::hex(&self.0)
    }

    /// The digest written as [`LineDigest::hex`]; `None` if it is not 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }
}

/// The digest before any line, as hex: the same as the chains' [`GENESIS`].
pub fn empty_digest() -> &'static str {
    GENESIS
}

/// Verifies a receipt's signature (ES256, `typ` [`RECEIPT_TYPE`], a key of `keys`, the
/// receipt keys alone ([`crate::ExportKeys::receipts`]), either
/// ECDSA form: the receipt seals the lines through its claims, not its bytes) and returns
/// its claims.
pub fn verify_receipt(jws: &str, keys: &KeyRing) -> Result<ReceiptClaims, Rejection> {
    verify_jws(jws, keys, RECEIPT_TYPE, SignatureForm::Either)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written out independently of `push`: SHA-256(SHA-256(0^32 || "a") || "b").
    #[test]
    fn the_digest_chains_sha256_over_the_lines() {
        let mut d = LineDigest::default();
        assert_eq!(d.hex(), empty_digest());
        d.push(b"a");
        d.push(b"b");
        let first: [u8; 32] = Sha256::digest([[0u8; 32].as_slice(), b"a"].concat()).into();
        let second: [u8; 32] = Sha256::digest([first.as_slice(), b"b"].concat()).into();
        assert_eq!(d, LineDigest(second));
        assert_eq!(LineDigest::from_hex(&d.hex()), Some(d));
        assert_eq!(LineDigest::from_hex("zz"), None);
        assert_eq!(LineDigest::from_hex(&d.hex().to_uppercase()), None);
    }
}
