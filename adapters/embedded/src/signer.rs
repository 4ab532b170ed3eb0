use std::path::Path;

use async_trait::async_trait;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::jwk::JwkSet;

use super::files::{new_p256_pkcs8, p256_key_file, secret_file_error};
use shared::ports::{Es256Signature, Signer, SignerError};
use shared::token::es256_public_jwk;
use support_access_verify::ecdsa::low_s;

/// Signs with a P-256 key kept in a PKCS#8 file (mode 0600) in the data directory: the
/// embedded stand-in for KMS. aws-lc's FIXED algorithm yields JOSE's raw `r || s` directly,
/// with either `s`: it is normalised to low-S, the only form verifiers accept.
pub struct LocalSigner {
    key: EcdsaKeyPair,
    kid: String,
    jwks: JwkSet,
}

impl LocalSigner {
    /// The key in `path`, created on first run.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        let der = p256_key_file(path)?;
        Self::from_pkcs8(&der).map_err(|e| secret_file_error(path, e))
    }

    /// A throwaway key in memory (tests).
    pub fn generate() -> Self {
        Self::from_pkcs8(&new_p256_pkcs8()).expect("a fresh key loads")
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|e| format!("not a PKCS#8 P-256 key: {e}"))?;
        let jwk = es256_public_jwk(key.public_key().as_ref()).map_err(|e| e.to_string())?;
        let kid = jwk.common.key_id.clone().expect("es256_public_jwk sets the kid");
        Ok(Self { key, kid, jwks: JwkSet { keys: vec![jwk] } })
    }
}

#[async_trait]
impl Signer for LocalSigner {
    fn key_id(&self) -> &str {
        &self.kid
    }

    async fn sign(&self, message: &[u8]) -> Result<Es256Signature, SignerError> {
        let sig = self
            .key
            .sign(&SystemRandom::new(), message)
            .map_err(|_| SignerError::Unavailable("local signing failed".into()))?;
        let raw: [u8; 64] =
            sig.as_ref().try_into().map_err(|_| SignerError::Invalid("signature is not 64 bytes".into()))?;
        Ok(Es256Signature { kid: self.kid.clone(), raw: low_s(raw) })
    }

    async fn public_keys(&self) -> Result<JwkSet, SignerError> {
        Ok(self.jwks.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[tokio::test]
    async fn the_key_survives_a_reload_and_its_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing-key.p8");
        let first = LocalSigner::load_or_create(&path).unwrap();
        let again = LocalSigner::load_or_create(&path).unwrap();
        assert_eq!(first.key_id(), again.key_id());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn signatures_are_raw_64_bytes_that_verify() {
        let signer = LocalSigner::generate();
        let sig = signer.sign(b"hello").await.unwrap();
        assert_eq!(sig.kid, signer.key_id());
        let public = signer.key.public_key().as_ref().to_vec();
        let verifier =
            aws_lc_rs::signature::UnparsedPublicKey::new(&aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED, public);
        assert!(verifier.verify(b"hello", &sig.raw).is_ok());
        assert!(verifier.verify(b"hellO", &sig.raw).is_err());
    }

    #[tokio::test]
    async fn every_signature_is_low_s() {
        // aws-lc returns a high `s` about half the time: 64 in a row low is the normalising.
        let signer = LocalSigner::generate();
        for i in 0..64u8 {
            let sig = signer.sign(&[i]).await.unwrap();
            assert!(support_access_verify::ecdsa::is_low_s(&sig.raw), "signature {i}");
        }
    }
}
