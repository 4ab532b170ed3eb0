//! The wiring every use case and handler runs on: one of each port, the verification keys,
//! the clock and the policy, built once per process (per Lambda cold start) by whoever owns
//! the adapters (`adapter-aws`'s Lambda wiring, local-api, the tests).

use std::sync::Arc;

use crate::app::CursorKeys;
use crate::domain::Policy;
use crate::ports::{
    AccessRequestReader, AccessRequestWriter, AuditAppender, AuditIntake, AuditReader, ChainArchive, Clock,
    ConsentReader, ConsentWriter, Controls, PendingRequests, Signer, SignerError, Store, TokenLedger,
};
use crate::token::KeyRing;
use jsonwebtoken::jwk::JwkSet;

/// Everything a handler may touch, each port named by its role.
#[derive(Clone)]
pub struct Services {
    pub consent_reader: Arc<dyn ConsentReader>,
    pub consent_writer: Arc<dyn ConsentWriter>,
    pub token_ledger: Arc<dyn TokenLedger>,
    pub audit_appender: Arc<dyn AuditAppender>,
    pub audit_reader: Arc<dyn AuditReader>,
    pub chain_archive: Arc<dyn ChainArchive>,
    pub request_reader: Arc<dyn AccessRequestReader>,
    pub request_writer: Arc<dyn AccessRequestWriter>,
    pub pending_requests: Arc<dyn PendingRequests>,
    /// The emergency stop and agent revocations; on AWS behind a short per-process cache
    /// ([`super::CachedControls`]).
    pub controls: Arc<dyn Controls>,
    /// Where a use is recorded when the store sequences its chains (#18): one durable write
    /// by a deadline, no condition. `None` (every store until its sequencer runs): a use is
    /// recorded on condition that the consent is still live ([`TokenLedger`]).
    pub audit_intake: Option<Arc<dyn AuditIntake>>,
    /// The unattributed refusals counted in this process and not yet written
    /// ([`super::RefusalTally`]): one per process, shared by every clone.
    pub refusals: Arc<super::RefusalTally>,
    /// Signs tokens.
    pub signer: Arc<dyn Signer>,
    /// The verification keys of tokens (the JWK Set), fetched once from the signer. Never a
    /// checkpoint key: a backend that trusts every key of this set must not accept a token
    /// signed by the checkpoint signer.
    pub keys: Arc<KeyRing>,
    /// Signs checkpoints. Where tokens are signed too (local-api), a key of its own
    /// ([`Services::with_checkpoint_signer`]); a Lambda signs only one kind, with its own
    /// `KMS_KEY_ID`, so there it defaults to `signer`.
    pub checkpoint_signer: Arc<dyn Signer>,
    /// The public keys that verify checkpoints (`GET /.well-known/checkpoint-keys.json`), the
    /// keys that signed checkpoints already stored included.
    pub checkpoint_keys: Arc<JwkSet>,
    /// Signs export receipts: a key of its own ([`Services::with_receipt_signer`]), never the
    /// checkpoint key, so that whoever runs the export cannot sign a checkpoint (on AWS only
    /// export-audit may sign with it, and it may sign nothing else). Defaults to `signer`,
    /// whose receipts no verifier accepts (it is no receipt key).
    pub receipt_signer: Arc<dyn Signer>,
    /// The public keys that verify receipts, published beside the checkpoint keys in their
    /// own member (`receipt_keys`, `support_access_verify::ExportKeySet`); none by default.
    pub receipt_keys: Arc<JwkSet>,
    /// Tokens whose signature already verified with `keys`, until their `exp`: a token used
    /// again skips the ECDSA check, never the clock, consent or scope checks.
    pub verified: Arc<support_access_verify::VerifiedCache>,
    pub clock: Arc<dyn Clock>,
    pub policy: Arc<Policy>,
    /// Authenticates audit cursors so a client cannot forge or edit one.
    pub cursor_key: Arc<dyn CursorKeys>,
    /// The bounds of an export page (the defaults everywhere but in tests that force pages).
    pub export_budget: super::ExportBudget,
    /// The app's identity provider, where the service verifies its tokens itself (the app
    /// API's authorizer, the demo route): `None` where only API Gateway's JWT authorizer does.
    pub identity: Option<Arc<crate::identity::IdentityVerifier>>,
}

impl Services {
    /// All storage ports from one store. `keys` are the verification keys: the signer's JWK Set
    /// (fetched once per process) where tokens are verified, [`KeyRing::empty`] where not.
    pub fn new<S: Store + 'static>(
        store: Arc<S>,
        signer: Arc<dyn Signer>,
        keys: KeyRing,
        clock: Arc<dyn Clock>,
        policy: Policy,
        cursor_key: impl Into<Arc<dyn CursorKeys>>,
    ) -> Self {
        Self {
            consent_reader: store.clone(),
            consent_writer: store.clone(),
            token_ledger: store.clone(),
            audit_appender: store.clone(),
            audit_reader: store.clone(),
            request_reader: store.clone(),
            request_writer: store.clone(),
            pending_requests: store.clone(),
            controls: store.clone(),
            audit_intake: None,
            refusals: Arc::default(),
            chain_archive: store,
            checkpoint_signer: signer.clone(),
            checkpoint_keys: Arc::new(keys.jwks().clone()),
            receipt_signer: signer.clone(),
            receipt_keys: Arc::new(JwkSet { keys: Vec::new() }),
            signer,
            keys: Arc::new(keys),
            verified: Arc::new(support_access_verify::VerifiedCache::default()),
            clock,
            policy: Arc::new(policy),
            cursor_key: cursor_key.into(),
            export_budget: super::ExportBudget::default(),
            identity: None,
        }
    }

    /// Checkpoints signed by `signer`, verified by `keys`. Refused if the token key ring
    /// holds the checkpoint signer's key: then a token signed by it would be accepted.
    pub fn with_checkpoint_signer(mut self, signer: Arc<dyn Signer>, keys: JwkSet) -> Result<Self, SignerError> {
        if self.keys.contains(signer.key_id()) {
            return Err(SignerError::Invalid(format!(
                "the checkpoint key {} is also a token key: give checkpoints a key of their own",
                signer.key_id()
            )));
        }
        if published(&self.receipt_keys, signer.key_id()) {
            return Err(SignerError::Invalid(format!(
                "the checkpoint key {} is also a receipt key: give each kind a key of its own",
                signer.key_id()
            )));
        }
        self.checkpoint_signer = signer;
        self.checkpoint_keys = Arc::new(keys);
        Ok(self)
    }

    /// Export receipts signed by `signer`, verified by `keys`. Refused if the key is also a
    /// token key or a checkpoint key: then its holder could sign that kind too.
    pub fn with_receipt_signer(mut self, signer: Arc<dyn Signer>, keys: JwkSet) -> Result<Self, SignerError> {
        let kid = signer.key_id();
        let other = if self.keys.contains(kid) {
            Some("token")
        } else if kid == self.checkpoint_signer.key_id() || published(&self.checkpoint_keys, kid) {
            Some("checkpoint")
        } else {
            None
        };
        if let Some(other) = other {
            return Err(SignerError::Invalid(format!(
                "the receipt key {kid} is also a {other} key: give receipts a key of their own"
            )));
        }
        self.receipt_signer = signer;
        self.receipt_keys = Arc::new(keys);
        Ok(self)
    }

    /// Identity tokens of the app's identity provider accepted beside impersonation tokens
    /// where the service verifies them itself ([`super::authorize_bearer`]).
    pub fn with_identity(mut self, verifier: crate::identity::IdentityVerifier) -> Self {
        self.identity = Some(Arc::new(verifier));
        self
    }

    /// Uses recorded through `intake` (a store whose sequencer runs, #18).
    pub fn with_audit_intake(mut self, intake: Arc<dyn AuditIntake>) -> Self {
        self.audit_intake = Some(intake);
        self
    }

    /// The operators' controls behind a per-process cache of `ttl` ([`super::CachedControls`]):
    /// a Lambda instance, where each read is a DynamoDB call on the hot path of every use.
    pub fn with_cached_controls(mut self, ttl: std::time::Duration) -> Self {
        self.controls = Arc::new(super::CachedControls::new(self.controls, ttl));
        self
    }

    /// The verification keys of `signer`: its JWK Set as a key ring.
    pub async fn keys_of(signer: &dyn Signer) -> Result<KeyRing, SignerError> {
        Ok(KeyRing::from_jwks(signer.public_keys().await?)?)
    }
}

/// Whether `set` publishes a key named `kid`.
fn published(set: &JwkSet, kid: &str) -> bool {
    set.keys.iter().any(|k| k.common.key_id.as_deref() == Some(kid))
}
