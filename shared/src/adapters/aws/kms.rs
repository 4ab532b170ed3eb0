use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use jsonwebtoken::jwk::JwkSet;

use super::der::{der_signature_to_raw, spki_to_uncompressed_point};
use crate::ports::{Es256Signature, Signer, SignerError};
use crate::token::es256_public_jwk;

/// KMS accepts at most 4096 bytes of message with `MessageType::Raw`.
pub const KMS_MAX_RAW_MESSAGE: usize = 4096;

/// Signs with an asymmetric KMS key (ECC_NIST_P256, SIGN_VERIFY); the private key never
/// leaves KMS. Every configured key is published in the JWK Set (fetched once, at start-up),
/// and only the active one signs, so a new key can join the set before it signs.
pub struct KmsSigner {
    client: Client,
    /// The KMS key that signs (id, ARN or alias).
    kms_key_id: String,
    /// Its JWK thumbprint, the `kid` in token headers.
    kid: String,
    jwks: JwkSet,
}

/// The policy's length limits keep a token far below KMS's limit; a longer signing input is
/// refused with a clear error, never truncated.
fn check_message_len(message: &[u8]) -> Result<(), SignerError> {
    if message.len() > KMS_MAX_RAW_MESSAGE {
        return Err(SignerError::Invalid(format!(
            "signing input of {} bytes exceeds KMS's {KMS_MAX_RAW_MESSAGE}-byte limit",
            message.len()
        )));
    }
    Ok(())
}

fn sdk_error(e: impl std::error::Error) -> SignerError {
    SignerError::Unavailable(aws_sdk_kms::error::DisplayErrorContext(e).to_string())
}

impl KmsSigner {
    /// Fetches the public keys of `active` and `published` (`GetPublicKey`) and builds the
    /// JWK Set; `active` signs.
    pub async fn new(client: Client, active: &str, published: &[String]) -> Result<Self, SignerError> {
        let mut jwks = JwkSet { keys: Vec::new() };
        let mut active_kid = None;
        let mut ids: Vec<&str> = vec![active];
        ids.extend(published.iter().map(String::as_str).filter(|id| *id != active));
        for id in ids {
            let out = client.get_public_key().key_id(id).send().await.map_err(sdk_error)?;
            let spki =
                out.public_key().ok_or_else(|| SignerError::Invalid(format!("KMS key {id} has no public key")))?;
            let jwk = es256_public_jwk(&spki_to_uncompressed_point(spki.as_ref())?)?;
            if id == active {
                active_kid = jwk.common.key_id.clone();
            }
            jwks.keys.push(jwk);
        }
        let kid = active_kid.ok_or_else(|| SignerError::Invalid("the active key has no kid".into()))?;
        Ok(Self { client, kms_key_id: active.to_owned(), kid, jwks })
    }
}

#[async_trait]
impl Signer for KmsSigner {
    fn key_id(&self) -> &str {
        &self.kid
    }

    async fn sign(&self, message: &[u8]) -> Result<Es256Signature, SignerError> {
        check_message_len(message)?;
        // Raw, not Digest: KMS hashes the message itself (and moto's server re-hashes
        // digests, so Digest signatures from it would not verify).
        let out = self
            .client
            .sign()
            .key_id(&self.kms_key_id)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(sdk_error)?;
        let der = out.signature().ok_or_else(|| SignerError::Invalid("KMS returned no signature".into()))?;
        Ok(Es256Signature { kid: self.kid.clone(), raw: der_signature_to_raw(der.as_ref())? })
    }

    async fn public_keys(&self) -> Result<JwkSet, SignerError> {
        Ok(self.jwks.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_input_over_4096_bytes_is_refused_not_truncated() {
        assert!(check_message_len(&[b'a'; KMS_MAX_RAW_MESSAGE]).is_ok());
        let e = check_message_len(&[b'a'; KMS_MAX_RAW_MESSAGE + 1]).unwrap_err();
        assert!(e.to_string().contains("4097 bytes exceeds"), "{e}");
    }

    #[test]
    fn the_longest_token_the_policy_allows_fits_in_one_kms_message() {
        use crate::domain::{AgentId, Consent, ConsentDuration, Note, Policy, Reason, Scope, Timestamp, UserId};
        let policy = Policy::default();
        let id = "x".repeat(128);
        let consent = Consent::grant(
            UserId::parse(&id).unwrap(),
            Scope::Full,
            Note::parse(&"é".repeat(Note::MAX_CHARS)).unwrap(),
            ConsentDuration::parse(policy.max_duration_seconds, &policy).unwrap(),
            Timestamp::from_unix(1_795_600_800),
        );
        // Reasons are JSON-escaped in the claims: control-free text of the longest kind.
        let reason = Reason::parse(&"\u{1F600}\"".repeat(Reason::MAX_CHARS / 2)).unwrap();
        let claims =
            crate::token::new_claims(&consent, AgentId::parse(&id).unwrap(), reason, consent.granted_at, &policy);
        let header_and_claims = serde_json::to_vec(&claims).unwrap().len() + 200;
        let base64_len = header_and_claims.div_ceil(3) * 4;
        assert!(base64_len < KMS_MAX_RAW_MESSAGE, "{base64_len}");
    }
}
