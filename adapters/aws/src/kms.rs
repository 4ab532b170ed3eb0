use async_trait::async_trait;
use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use jsonwebtoken::jwk::JwkSet;

use super::der::{der_signature_to_raw, spki_to_uncompressed_point};
use shared::ports::{Es256Signature, Signer, SignerError};
use shared::token::es256_public_jwk;

/// KMS accepts at most 4096 bytes of message with `MessageType::Raw`.
pub const KMS_MAX_RAW_MESSAGE: usize = 4096;

/// Signs with an asymmetric KMS key (ECC_NIST_P256, SIGN_VERIFY); the private key never
/// leaves KMS. A KMS key's `kid` is its key id (the UUID), known without asking KMS, so the
/// mint function needs `kms:Sign` and nothing else; only the functions that publish or verify
/// call [`Signer::public_keys`] (`kms:GetPublicKey`). Every configured key is published, only
/// the active one signs, so a new key can join the set before it signs.
pub struct KmsSigner {
    client: Client,
    /// The KMS key that signs (id or ARN).
    kms_key_id: String,
    /// Its key id, the `kid` in token headers.
    kid: String,
    /// Keys published in the JWK Set beside the active one (rotation).
    published: Vec<String>,
}

/// The key id (UUID) of a KMS key named by id or key ARN. An alias is refused: it can move
/// to another key, and a `kid` must always name the same key.
pub fn kms_kid(key: &str) -> Result<String, SignerError> {
    let id = match key.rsplit_once(":key/") {
        Some((_, id)) => id,
        None => key,
    };
    if key.starts_with("alias/") || key.contains(":alias/") || id.is_empty() || id.contains([':', '/']) {
        return Err(SignerError::Invalid(format!("{key:?} is not a KMS key id or key ARN (aliases cannot be a kid)")));
    }
    Ok(id.to_owned())
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
    /// The public key of `key` (`GetPublicKey`) as a JWK whose `kid` is its key id.
    async fn public_key(&self, key: &str) -> Result<jsonwebtoken::jwk::Jwk, SignerError> {
        let out = self.client.get_public_key().key_id(key).send().await.map_err(sdk_error)?;
        let spki = out.public_key().ok_or_else(|| SignerError::Invalid(format!("KMS key {key} has no public key")))?;
        let mut jwk = es256_public_jwk(&spki_to_uncompressed_point(spki.as_ref())?)?;
        jwk.common.key_id = Some(kms_kid(key)?);
        Ok(jwk)
    }

    /// Signs with `active`, publishing `published` beside it. Makes no call to KMS.
    pub fn new(client: Client, active: &str, published: &[String]) -> Result<Self, SignerError> {
        let kid = kms_kid(active)?;
        for key in published {
            kms_kid(key)?;
        }
        Ok(Self { client, kms_key_id: active.to_owned(), kid, published: published.to_vec() })
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

    /// `GetPublicKey` for the active key and every published one, all at once (a cold start
    /// waits for one round trip, not one per key): each DER SPKI becomes a JWK whose `kid` is
    /// the key id, in the order the keys are configured.
    async fn public_keys(&self) -> Result<JwkSet, SignerError> {
        let mut keys = vec![self.kms_key_id.as_str()];
        keys.extend(self.published.iter().map(String::as_str).filter(|k| kms_kid(k).ok() != Some(self.kid.clone())));
        let keys = futures_util::future::try_join_all(keys.into_iter().map(|key| self.public_key(key))).await?;
        Ok(JwkSet { keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kid_of_a_kms_key_is_its_key_id() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(kms_kid(id).unwrap(), id);
        assert_eq!(kms_kid(&format!("arn:aws:kms:eu-west-1:111122223333:key/{id}")).unwrap(), id);
        for bad in ["alias/support-access", "arn:aws:kms:eu-west-1:111122223333:alias/support-access", "", "a/b"] {
            assert!(kms_kid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_signing_input_over_4096_bytes_is_refused_not_truncated() {
        assert!(check_message_len(&[b'a'; KMS_MAX_RAW_MESSAGE]).is_ok());
        let e = check_message_len(&[b'a'; KMS_MAX_RAW_MESSAGE + 1]).unwrap_err();
        assert!(e.to_string().contains("4097 bytes exceeds"), "{e}");
    }

    #[test]
    fn the_longest_token_the_policy_allows_fits_in_one_kms_message() {
        use shared::domain::{AgentId, Consent, ConsentDuration, Note, Policy, Reason, Scope, Timestamp, UserId};
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
            shared::token::new_claims(&consent, AgentId::parse(&id).unwrap(), reason, consent.granted_at, &policy);
        let header_and_claims = serde_json::to_vec(&claims).unwrap().len() + 200;
        let base64_len = header_and_claims.div_ceil(3) * 4;
        assert!(base64_len < KMS_MAX_RAW_MESSAGE, "{base64_len}");
    }
}
