//! ECDSA is malleable: if `(r, s)` is a valid signature of a message, so is `(r, n - s)`, and
//! anyone can compute it without the key. A token with its signature flipped that way is a
//! different string (so it would miss any cache or log keyed by the token) that says the very
//! same thing. The service therefore issues only the "low-S" form (`s <= n/2`, as Bitcoin's
//! BIP 62 and most ECDSA libraries' `normalize_s`) and its verifier refuses the other one
//! ([`crate::Rejection::Malleable`]), so each set of claims has exactly one valid token.
//!
//! Checkpoints are not held to this: the ones already stored were signed before the rule, and
//! a checkpoint is identified by what it seals, not by its bytes alone.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// The order `n` of P-256's base point, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `floor(n / 2)`, big-endian: the largest low `s`.
const HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xde, 0x73, 0x7d,
    0x56, 0xd3, 0x8b, 0xcf, 0x42, 0x79, 0xdc, 0xe5, 0x61, 0x7e, 0x31, 0x92, 0xa8,
];

/// Whether a raw ES256 signature (`r || s`, 32 bytes each, big-endian) has `s <= n/2`.
pub fn is_low_s(signature: &[u8; 64]) -> bool {
    // Equal-length big-endian numbers compare as their bytes do.
    signature[32..] <= HALF_N[..]
}

/// The low-S form of a raw ES256 signature: itself if `s <= n/2`, else `(r, n - s)`, which
/// verifies for the same message and key.
pub fn low_s(signature: [u8; 64]) -> [u8; 64] {
    if is_low_s(&signature) {
        return signature;
    }
    let mut out = signature;
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let (n, s) = (u16::from(N[i]), u16::from(signature[32 + i]) + borrow);
        out[32 + i] = n.wrapping_sub(s) as u8;
        borrow = u16::from(n < s);
    }
    out
}

/// A compact JWS with its ES256 signature in low-S form, for code that signs tokens with a
/// library that does not normalise (`jsonwebtoken`, aws-lc, ring): what it signs then passes
/// [`crate::verify`]. Anything that is not a JWS with a 64-byte signature is returned as is.
pub fn with_low_s(jws: &str) -> String {
    let Some((input, signature)) = jws.rsplit_once('.') else { return jws.to_owned() };
    match B64.decode(signature).ok().and_then(|raw| <[u8; 64]>::try_from(raw).ok()) {
        Some(raw) => format!("{input}.{}", B64.encode(low_s(raw))),
        None => jws.to_owned(),
    }
}

/// The signature of a compact JWS as raw 64 bytes, if it is that.
pub(crate) fn raw_signature(jws: &str) -> Option<[u8; 64]> {
    let (_, signature) = jws.rsplit_once('.')?;
    B64.decode(signature).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};

    use super::*;

    #[test]
    fn half_n_is_n_shifted_right_by_one() {
        let mut shifted = [0u8; 32];
        for i in 0..32 {
            shifted[i] = (N[i] >> 1) | if i > 0 { N[i - 1] << 7 } else { 0 };
        }
        assert_eq!(shifted, HALF_N);
    }

    #[test]
    fn low_s_agrees_with_p256_on_real_signatures_both_ways() {
        for seed in 1..=64u8 {
            let key = SigningKey::from_slice(&[seed; 32]).unwrap();
            let sig: Signature = key.sign(&[seed; 3]);
            let low = sig.normalize_s().unwrap_or(sig);
            let high = Signature::from_scalars(low.r(), -*low.s()).unwrap();
            let (low, high): ([u8; 64], [u8; 64]) = (low.to_bytes().into(), high.to_bytes().into());
            assert!(is_low_s(&low) && !is_low_s(&high), "seed {seed}");
            assert_eq!(low_s(high), low, "seed {seed}");
            assert_eq!(low_s(low), low, "seed {seed}");
        }
    }

    #[test]
    fn the_boundary_is_n_over_2_inclusive() {
        let mut sig = [0u8; 64];
        sig[32..].copy_from_slice(&HALF_N);
        assert!(is_low_s(&sig));
        sig[63] += 1;
        assert!(!is_low_s(&sig));
        // n - (n/2 + 1) = n/2 (n is odd).
        assert_eq!(low_s(sig)[32..], HALF_N);
    }

    #[test]
    fn with_low_s_leaves_what_is_not_a_jws_signature_alone() {
        for text in ["", "a.b", "a.b.c", "a.b.!!!"] {
            assert_eq!(with_low_s(text), text);
        }
    }
}
