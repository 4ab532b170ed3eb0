//! The AWS adapters: DynamoDB for consents and the audit log, KMS for signing, EventBridge for
//! notifications, table and key provisioning, and (re-exported from `adapter-streams`) the
//! DynamoDB Streams records that become `consent.expired`; [`lambda`] is the cold-start wiring
//! every function starts with. No SDK type leaves this crate: everything crosses the ports as
//! domain values and `StoreError`/`SignerError`.

mod archive;
mod bundle;
mod controls;
mod der;
mod dynamodb;
mod identity;
mod index;
mod items;
mod kms;
pub mod lambda;
mod notify;
mod provision;
mod requests;
mod sequencer;
pub mod telemetry;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use shared::app::Services;
use shared::app::{CursorKey, CursorKeys};
use shared::domain::Policy;
use shared::ports::Clock;
use shared::ports::Signer;
use shared::token::KeyRing;

pub use adapter_streams::STALLED_PREFIX;
pub use archive::MOVED_SHARDS;
pub use der::{der_signature_to_raw, spki_to_uncompressed_point};
pub use dynamodb::{DynamoStore, Tables};
pub use identity::{SdkHttpGet, identity_from_env};
pub use items::audit_item;
pub use kms::{KmsSigner, kms_kid};
pub use notify::EventBridgePublisher;
pub use provision::{create_cursor_secret, create_signing_key, create_tables};
pub use sequencer::{
    INTAKE_RETENTION_SECONDS, LISTED_BYTES, SEQUENCER_EVENTS_PER_HEAD_MOVE, STALLED_LISTED_SECONDS, STALLED_SHARDS,
};
// The stream reader lives beside this module (feature `streams`, no SDK); the functions
// keep finding it here.
pub use adapter_streams::{ExpiryRecord, IntakeBatch, expiries_from_stream, intake_batch};

/// The SDK configuration every function builds once per cold start: the standard AWS
/// environment (region, credentials, `AWS_ENDPOINT_URL`), with explicit timeouts and a
/// bounded retry budget so no call can hang a Lambda to its own timeout, and one HTTPS client
/// that every SDK client made from it shares (one TLS configuration and connection pool per
/// process; each SDK client would otherwise build its own).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https_client())
        .timeout_config(timeouts())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
}

/// The SDKs' default HTTPS client (hyper 1, rustls on aws-lc, the proxy settings of the
/// environment), built once: it keeps one connector per timeout setting, which every client
/// of [`sdk_config`] has in common. It trusts [`aws_trust`]'s roots.
fn https_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = aws_smithy_http_client::ConnectorBuilder::default()
            .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(aws_trust());
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(aws_smithy_http_client::proxy::ProxyConfig::from_env()));
        connector.build()
    })
}

/// The roots AWS service endpoints' certificates chain to: Amazon Trust Services' four and
/// the Starfield Services root that cross-signs them, compiled in (`amazon-roots.pem`).
const AMAZON_ROOTS_PEM: &[u8] = include_bytes!("amazon-roots.pem");

/// What the SDK clients trust. Only [`AMAZON_ROOTS_PEM`], by default: the clients talk to AWS
/// endpoints alone, so no other CA of the platform's hundred and more can stand in for one,
/// and a cold start no longer reads and parses the platform's store before its first call
/// (about 140 certificates on Lambda, twice over on some systems: 1-4 ms of every first
/// response, BENCHMARKS.md "Cold start"). An operator who sets `SSL_CERT_FILE` or
/// `SSL_CERT_DIR` (the CA of a TLS-inspecting proxy, an endpoint of their own over HTTPS)
/// gets the platform's store with those, as the SDK's default does. The identity provider's
/// keys are fetched with the platform's store as ever ([`identity::SdkHttpGet`]): any CA
/// may serve them.
fn aws_trust() -> aws_smithy_http_client::tls::TlsContext {
    use aws_smithy_http_client::tls::{TlsContext, TrustStore};
    let named = ["SSL_CERT_FILE", "SSL_CERT_DIR"].iter().any(|name| std::env::var_os(name).is_some());
    let store = match named {
        true => TrustStore::default(),
        false => TrustStore::empty().with_pem_certificate(AMAZON_ROOTS_PEM),
    };
    TlsContext::builder().with_trust_store(store).build().unwrap_or_default()
}

/// 1 s to connect, 2 s per attempt, 5 s per operation (retries included).
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// What the notifier needs, on one SDK configuration: the DynamoDB store (its use history)
/// and the EventBridge publisher to the bus named by `NOTIFICATION_BUS` (checked at init, the
/// clients [`lambda::Deferred`]).
pub fn notifier_from_env() -> Result<lambda::Deferred<(DynamoStore, EventBridgePublisher)>, String> {
    let bus = std::env::var("NOTIFICATION_BUS").map_err(|_| "NOTIFICATION_BUS: required".to_owned())?;
    Ok(lambda::Deferred::start(move || {
        let bus = bus.clone();
        async move {
            let config = sdk_config().await;
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), Tables::from_env());
            Ok((store, EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&config), &bus)))
        }
    }))
}

/// The DynamoDB store on the tables named by the environment (see [`Tables::from_env`]),
/// on the audit path `SEQUENCED_AUDIT` names ([`sequenced_audit_from_env`]),
/// [`lambda::Deferred`].
pub fn store_from_env() -> Result<lambda::Deferred<DynamoStore>, String> {
    let sequenced = sequenced_audit_from_env()?;
    Ok(lambda::Deferred::start(move || async move {
        Ok(audit_store(aws_sdk_dynamodb::Client::new(&sdk_config().await), Tables::from_env(), sequenced))
    }))
}

/// Whether this deployment records its audit events through the intake and the `sequencer`
/// function (#18; the template's `SequencedAudit`): `SEQUENCED_AUDIT` is `1` (yes) or `0` or
/// unset (no: each write appends to its chain at once); anything else is an error that stops
/// the function at init. Read once per process.
pub fn sequenced_audit_from_env() -> Result<bool, String> {
    match std::env::var("SEQUENCED_AUDIT") {
        Err(_) => Ok(false),
        Ok(v) if v == "0" => Ok(false),
        Ok(v) if v == "1" => Ok(true),
        Ok(v) => Err(format!("SEQUENCED_AUDIT: 1 or 0, not {v:?}")),
    }
}

/// The store every function writes with: when `sequenced`, each audit event (grant, revoke,
/// mint, requests, expiry, appends) goes into the intake for the sequencer; else it is
/// appended to its chain in the write itself.
fn audit_store(client: aws_sdk_dynamodb::Client, tables: Tables, sequenced: bool) -> DynamoStore {
    let store = DynamoStore::new(client, tables);
    if sequenced { store.with_sequencer() } else { store }
}

/// The one switch between the two audit paths, for the functions' services and the AWS
/// bench's instances alike: `store` as [`audit_store`] makes it, and `services` built on it
/// with, when `sequenced`, the authorizer recording each use with one put into the intake
/// ([`Services::with_audit_intake`]) instead of a transaction on the chain head.
pub fn on_audit_path(
    client: aws_sdk_dynamodb::Client,
    tables: Tables,
    sequenced: bool,
    services: impl FnOnce(Arc<DynamoStore>) -> Services,
) -> Services {
    let store = Arc::new(audit_store(client, tables, sequenced));
    let built = services(store.clone());
    if sequenced { built.with_audit_intake(store) } else { built }
}

/// The DynamoDB store of [`store_from_env`] as the `sequencer` function runs it: sequencing
/// (its runs hold consent changes [`shared::ports::SEQUENCER_HOLD`]), [`lambda::Deferred`].
pub fn sequencer_from_env() -> lambda::Deferred<DynamoStore> {
    lambda::Deferred::start(|| async {
        Ok(audit_store(aws_sdk_dynamodb::Client::new(&sdk_config().await), Tables::from_env(), true))
    })
}

/// Where the key that seals audit cursors comes from.
pub enum CursorSource {
    /// This key (local-api's `cursor.key`; a random one where a function never pages).
    Key(Box<CursorKey>),
    /// The Secrets Manager secret of this ARN, whose `SecretString` is base64 of at least 32
    /// bytes: the same key in every instance of the functions that page.
    Secret(String),
}

/// The cursor key of `raw`, base64 of at least [`CursorKey::LEN`] bytes; `name` says where
/// it came from in the error.
pub fn cursor_key_from_base64(name: &str, raw: &str) -> Result<CursorKey, String> {
    use base64::Engine;
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(raw.trim()).map_err(|_| format!("{name}: not base64"))?;
    if bytes.len() < CursorKey::LEN {
        return Err(format!("{name}: at least {} bytes", CursorKey::LEN));
    }
    Ok(CursorKey::from_bytes(&bytes))
}

impl CursorSource {
    /// The key of this source: at hand, or the secret's, fetched in the background from now
    /// (a [`lambda::Deferred`]) so that the first request's own work runs beside the fetch
    /// and only a request that opens or seals a cursor waits for it.
    fn keys(self, config: &aws_config::SdkConfig) -> Arc<dyn CursorKeys> {
        let arn = match self {
            Self::Key(key) => return Arc::new(*key),
            Self::Secret(arn) => arn,
        };
        let client = aws_sdk_secretsmanager::Client::new(config);
        Arc::new(lambda::Deferred::start(move || {
            let (client, arn) = (client.clone(), arn.clone());
            async move {
                let out = client.get_secret_value().secret_id(&arn).send().await.map_err(|e| {
                    format!(
                        "SUPPORT_ACCESS_CURSOR_SECRET_ARN: {}",
                        aws_sdk_secretsmanager::error::DisplayErrorContext(e)
                    )
                })?;
                let raw =
                    out.secret_string().ok_or("SUPPORT_ACCESS_CURSOR_SECRET_ARN: the secret has no SecretString")?;
                cursor_key_from_base64("SUPPORT_ACCESS_CURSOR_SECRET_ARN", raw)
            }
        }))
    }
}

/// The settings of [`services_from_env`], read and checked without any call: the tables
/// from `CONSENTS_TABLE`, `AUDIT_TABLE`, `CHAIN_HEADS_TABLE`, ..., `CONTROLS_TABLE` (see
/// [`Tables::from_env`]); the signing key from `KMS_KEY_ID` (a key id or key ARN) and keys
/// to publish beside it from `KMS_PUBLISHED_KEY_IDS` (comma-separated). With
/// `CHECKPOINT_KEY_ID`, checkpoints are signed by that key, published with
/// `CHECKPOINT_PUBLISHED_KEY_IDS` in the checkpoint keys' own set, never in the tokens' one
/// (without it, by `KMS_KEY_ID`: the checkpoint function's only key). With `RECEIPT_KEY_ID`,
/// export receipts are signed by that key, published with `RECEIPT_PUBLISHED_KEY_IDS` in the
/// checkpoint keys' document, in its own member (`receipt_keys`). The audit path from
/// `SEQUENCED_AUDIT` ([`sequenced_audit_from_env`]).
#[derive(Debug, Clone)]
pub struct AwsSettings {
    key_id: String,
    published: Vec<String>,
    checkpoint: Option<(String, Vec<String>)>,
    receipt: Option<(String, Vec<String>)>,
    tables: Tables,
    sequenced: bool,
}

impl AwsSettings {
    pub fn from_env() -> Result<Self, String> {
        let key_id = std::env::var("KMS_KEY_ID").map_err(|_| "KMS_KEY_ID: required".to_owned())?;
        let (key_id, published) = checked_keys(key_id, "KMS_KEY_ID", "KMS_PUBLISHED_KEY_IDS")?;
        let optional = |key_var: &str, published_var: &str| match std::env::var(key_var) {
            Ok(key) => checked_keys(key, key_var, published_var).map(Some),
            Err(_) => Ok(None),
        };
        let checkpoint = optional("CHECKPOINT_KEY_ID", "CHECKPOINT_PUBLISHED_KEY_IDS")?;
        let receipt = optional("RECEIPT_KEY_ID", "RECEIPT_PUBLISHED_KEY_IDS")?;
        let sequenced = sequenced_audit_from_env()?;
        Ok(Self { key_id, published, checkpoint, receipt, tables: Tables::from_env(), sequenced })
    }

    /// Whether export receipts are signed by a key of their own.
    pub fn has_receipt_key(&self) -> bool {
        self.receipt.is_some()
    }
}

/// The signing key `key` (from the variable `key_var`) and the keys published beside it
/// (from `published_var`), each checked to be a KMS key id or ARN.
fn checked_keys(key: String, key_var: &str, published_var: &str) -> Result<(String, Vec<String>), String> {
    let published = key_list(published_var);
    for id in std::iter::once(&key).chain(&published) {
        kms_kid(id).map_err(|e| format!("{key_var} / {published_var}: {e}"))?;
    }
    Ok((key, published))
}

/// Every port on DynamoDB and KMS from the environment ([`AwsSettings::from_env`]).
pub async fn services_from_env(
    policy: Policy,
    clock: Arc<dyn Clock>,
    cursor_key: CursorKey,
    verifies: bool,
) -> Result<Services, String> {
    let settings = AwsSettings::from_env()?;
    services(&settings, &sdk_config().await, policy, clock, CursorSource::Key(Box::new(cursor_key)), verifies).await
}

/// Every port on DynamoDB and KMS as `settings` say, on `config`'s clients. The public keys
/// are fetched (`kms:GetPublicKey`) only when `verifies`: a process that never verifies or
/// publishes tokens never reads public keys. The public keys of every set are fetched at
/// once (the wait is the slowest call's, not their sum); the cursor secret is not waited for
/// here at all, but fetched beside the first request's own work ([`CursorSource::keys`]).
pub async fn services(
    settings: &AwsSettings,
    config: &aws_config::SdkConfig,
    policy: Policy,
    clock: Arc<dyn Clock>,
    cursor: CursorSource,
    verifies: bool,
) -> Result<Services, String> {
    let kms = aws_sdk_kms::Client::new(config);
    let signer = KmsSigner::new(kms.clone(), &settings.key_id, &settings.published)
        .map_err(|e| format!("KMS_KEY_ID / KMS_PUBLISHED_KEY_IDS: {e}"))?;
    let other_signer = |keys: &Option<(String, Vec<String>)>, vars: &str| match keys {
        Some((key, published)) => {
            KmsSigner::new(kms.clone(), key, published).map(Some).map_err(|e| format!("{vars}: {e}"))
        }
        None => Ok(None),
    };
    let checkpoint_signer = other_signer(&settings.checkpoint, "CHECKPOINT_KEY_ID / CHECKPOINT_PUBLISHED_KEY_IDS")?;
    let receipt_signer = other_signer(&settings.receipt, "RECEIPT_KEY_ID / RECEIPT_PUBLISHED_KEY_IDS")?;
    let keys = async {
        if !verifies {
            return Ok(KeyRing::empty());
        }
        Services::keys_of(&signer).await.map_err(|e| format!("KMS public keys: {e}"))
    };
    let cursor_key = cursor.keys(config);
    let (keys, checkpoint_keys, receipt_keys) = tokio::try_join!(
        keys,
        public_keys_of(checkpoint_signer.as_ref(), verifies, "checkpoint"),
        public_keys_of(receipt_signer.as_ref(), verifies, "receipt"),
    )?;
    // Each read of the controls is a DynamoDB call on the hot path: a warm instance answers
    // from its last read for at most `CONTROLS_CACHE_TTL` (docs/operators.md, incident response).
    let client = aws_sdk_dynamodb::Client::new(config);
    let mut services = on_audit_path(client, settings.tables.clone(), settings.sequenced, |store| {
        Services::new(store, Arc::new(signer), keys, clock, policy, cursor_key)
    })
    .with_cached_controls(shared::app::CONTROLS_CACHE_TTL);
    if let (Some(signer), Some(keys)) = (checkpoint_signer, checkpoint_keys) {
        services = services.with_checkpoint_signer(Arc::new(signer), keys).map_err(|e| e.to_string())?;
    }
    if let (Some(signer), Some(keys)) = (receipt_signer, receipt_keys) {
        services = services.with_receipt_signer(Arc::new(signer), keys).map_err(|e| e.to_string())?;
    }
    Ok(services)
}

/// The public keys of a signer of checkpoints or receipts (`kind`): `None` without one, none
/// where the process never verifies or publishes (so it never calls `kms:GetPublicKey`).
async fn public_keys_of(signer: Option<&KmsSigner>, verifies: bool, kind: &str) -> Result<Option<JwkSet>, String> {
    match signer {
        Some(signer) if verifies => {
            signer.public_keys().await.map(Some).map_err(|e| format!("KMS {kind} public keys: {e}"))
        }
        Some(_) => Ok(Some(JwkSet { keys: Vec::new() })),
        None => Ok(None),
    }
}

/// The comma-separated key ids of the variable `name` (none when unset).
fn key_list(name: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    /// SHA-256 of each root, as https://www.amazontrust.com/repository/ publishes them, in the
    /// file's order: Amazon Root CA 1-4, Starfield Services Root Certificate Authority - G2.
    const FINGERPRINTS: [&str; 5] = [
        "8ecde6884f3d87b1125ba31ac3fcb13d7016de7f57cc904fe1cb97c6ae98196e",
        "1ba5b2aa8c65401a82960118f80bec4f62304d83cec4713a19c39c011ea46db4",
        "18ce6cfe7bf14e60b2e347b8dfe868cb31d02ebb3ada271569f50343b46db3a4",
        "e35d28419ed02025cfa69038cd623962458da5c695fbdea3c22b0bfb25897092",
        "568d6905a2c88708a4b3025190edcfedb1974a606a13c6e5290fcb2ae63edab5",
    ];

    #[test]
    fn the_aws_clients_trust_amazon_trust_services_five_roots_each_one_of_mozillas() {
        let certs = CertificateDer::pem_slice_iter(super::AMAZON_ROOTS_PEM)
            .collect::<Result<Vec<_>, _>>()
            .expect("the compiled-in roots parse as PEM");
        let fingerprints: Vec<String> = certs
            .iter()
            .map(|cert| {
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert)
                    .as_ref()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        assert_eq!(fingerprints, FINGERPRINTS);
        for (cert, fingerprint) in certs.iter().zip(FINGERPRINTS) {
            let anchor = webpki::anchor_from_trusted_cert(cert).expect("a root certificate");
            assert!(
                webpki_roots::TLS_SERVER_ROOTS.iter().any(|mozilla| mozilla.subject == anchor.subject
                    && mozilla.subject_public_key_info == anchor.subject_public_key_info),
                "{fingerprint} is not one of Mozilla's roots"
            );
        }
    }
}
