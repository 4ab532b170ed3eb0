//! KMS speaks DER, JOSE speaks raw: KMS returns ECDSA signatures as a DER `SEQUENCE` of two
//! `INTEGER`s and public keys as DER SubjectPublicKeyInfo; an ES256 JWS wants the fixed
//! 64-byte `r || s` and a JWK wants the curve point. The `p256` crate does both conversions.

use p256::pkcs8::DecodePublicKey;

use shared::ports::SignerError;

/// A DER ECDSA P-256 signature as JOSE's raw `r || s` (each left-padded to 32 bytes), with
/// `s` normalised to the lower half of the order: KMS returns either, and the verifier refuses
/// a high `s` (its twin `(r, n - s)` would be a second valid token for the same claims).
pub fn der_signature_to_raw(der: &[u8]) -> Result<[u8; 64], SignerError> {
    let signature = p256::ecdsa::Signature::from_der(der)
        .map_err(|e| SignerError::Invalid(format!("KMS signature is not DER ECDSA P-256: {e}")))?;
    let signature = signature.normalize_s().unwrap_or(signature);
    Ok(signature.to_bytes().into())
}

/// The uncompressed SEC1 point (`0x04 || x || y`) of a DER SubjectPublicKeyInfo P-256 key.
pub fn spki_to_uncompressed_point(spki: &[u8]) -> Result<Vec<u8>, SignerError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let key = p256::PublicKey::from_public_key_der(spki)
        .map_err(|e| SignerError::Invalid(format!("KMS public key is not a P-256 SPKI: {e}")))?;
    Ok(key.to_encoded_point(false).as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{Signature, SigningKey, VerifyingKey};

    use super::*;

    fn raw(r: [u8; 32], s: [u8; 32]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r);
        out[32..].copy_from_slice(&s);
        out
    }

    #[test]
    fn a_real_signature_survives_der_and_back_and_still_verifies() {
        let key = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sig: Signature = key.sign(b"header.payload");
        let back = der_signature_to_raw(sig.to_der().as_bytes()).unwrap();
        let back = Signature::from_slice(&back).unwrap();
        assert!(VerifyingKey::from(&key).verify(b"header.payload", &back).is_ok());
    }

    #[test]
    fn r_and_s_with_leading_zeros_are_left_padded_to_32_bytes() {
        let mut r = [0u8; 32];
        r[2..].copy_from_slice(&[0x11; 30]); // DER drops the two leading zero bytes
        let mut s = [0u8; 32];
        s[31] = 0x05; // a one-byte INTEGER in DER
        let sig = Signature::from_slice(&raw(r, s)).unwrap();
        let der = sig.to_der();
        assert!(der.as_bytes().len() < 70, "the DER form is shorter than the padded one");
        assert_eq!(der_signature_to_raw(der.as_bytes()).unwrap(), raw(r, s));
    }

    #[test]
    fn a_high_bit_r_keeps_its_value_though_der_adds_a_sign_byte() {
        let r = [0x80u8; 32];
        let mut s = [0u8; 32];
        s[31] = 1;
        let sig = Signature::from_slice(&raw(r, s)).unwrap();
        assert_eq!(sig.to_der().as_bytes()[3], 33, "DER adds a 0x00 byte to keep r positive");
        assert_eq!(der_signature_to_raw(sig.to_der().as_bytes()).unwrap(), raw(r, s));
    }

    #[test]
    fn a_high_s_is_normalised_to_low_s() {
        let key = SigningKey::from_slice(&[9u8; 32]).unwrap();
        let sig: Signature = key.sign(b"m");
        let low = sig.normalize_s().unwrap_or(sig);
        let high = Signature::from_scalars(low.r(), -*low.s()).unwrap();
        assert_eq!(der_signature_to_raw(high.to_der().as_bytes()).unwrap(), <[u8; 64]>::from(low.to_bytes()));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&b""[..], b"\x30\x00", b"\x30\x06\x02\x01\x00\x02\x01\x01", &[0xff; 72]] {
            assert!(der_signature_to_raw(bad).is_err());
        }
        assert!(spki_to_uncompressed_point(b"not a key").is_err());
    }

    #[test]
    fn an_spki_key_becomes_its_uncompressed_point() {
        let key = SigningKey::from_slice(&[3u8; 32]).unwrap();
        let verifying = VerifyingKey::from(&key);
        // SubjectPublicKeyInfo for id-ecPublicKey / prime256v1, as KMS GetPublicKey returns it.
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
            0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(verifying.to_encoded_point(false).as_bytes());
        let point = spki_to_uncompressed_point(&spki).unwrap();
        assert_eq!(point, verifying.to_encoded_point(false).as_bytes());
        assert_eq!(point.len(), 65);
    }
}
