//! The AWS adapters: DynamoDB for consents and the audit log, KMS for signing, EventBridge for
//! notifications, table and key provisioning, and (re-exported from `adapter-streams`) the
//! DynamoDB Streams records that become `consent.expired`; [`lambda`] is the cold-start wiring
//! every function starts with. No SDK type leaves this crate: everything crosses the ports as
//! domain values and `StoreError`/`SignerError`.

mod archive;
mod controls;
mod der;
mod dynamodb;
mod items;
mod kms;
pub mod lambda;
mod notify;
mod provision;
mod requests;

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use shared::app::CursorKey;
use shared::app::Services;
use shared::domain::Policy;
use shared::ports::Clock;
use shared::ports::Signer;
use shared::token::KeyRing;

pub use der::{der_signature_to_raw, spki_to_uncompressed_point};
pub use dynamodb::{DynamoStore, Tables};
pub use items::audit_item;
pub use kms::{KmsSigner, kms_kid};
pub use notify::{EventBridgePublisher, audit_events_from_stream};
pub use provision::{create_signing_key, create_tables};
// The stream reader lives beside this module (feature `streams`, no SDK); the functions
// keep finding it here.
pub use adapter_streams::{ExpiryRecord, expiries_from_stream};

/// The SDK configuration every function builds once per cold start: the standard AWS
/// environment (region, credentials, `AWS_ENDPOINT_URL`), with explicit timeouts and a
/// bounded retry budget so no call can hang a Lambda to its own timeout.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .load()
        .await
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
/// and the EventBridge publisher to the bus named by `NOTIFICATION_BUS`.
pub async fn notifier_from_env() -> Result<(DynamoStore, EventBridgePublisher), String> {
    let bus = std::env::var("NOTIFICATION_BUS").map_err(|_| "NOTIFICATION_BUS: required".to_owned())?;
    let config = sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), Tables::from_env());
    Ok((store, EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&config), &bus)))
}

/// The DynamoDB store on the tables named by the environment (see [`Tables::from_env`]).
pub async fn store_from_env() -> DynamoStore {
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk_config().await), Tables::from_env())
}

/// Every port on DynamoDB and KMS from the environment: tables from `CONSENTS_TABLE`,
/// `AUDIT_TABLE`, `CHAIN_HEADS_TABLE`, ..., `CONTROLS_TABLE` (see [`Tables::from_env`]); the signing key from `KMS_KEY_ID` (a key id or key
/// ARN) and keys to publish beside it from `KMS_PUBLISHED_KEY_IDS` (comma-separated). With
/// `CHECKPOINT_KEY_ID`, checkpoints are signed by that key, published with
/// `CHECKPOINT_PUBLISHED_KEY_IDS` in the checkpoint keys' own set, never in the tokens' one
/// (without it, by `KMS_KEY_ID`: the checkpoint function's only key). The
/// public keys are fetched (`kms:GetPublicKey`) only when `verifies`: a process that never
/// verifies or publishes tokens never reads public keys.
pub async fn services_from_env(
    policy: Policy,
    clock: Arc<dyn Clock>,
    cursor_key: CursorKey,
    verifies: bool,
) -> Result<Services, String> {
    let key_id = std::env::var("KMS_KEY_ID").map_err(|_| "KMS_KEY_ID: required".to_owned())?;
    let published = key_list("KMS_PUBLISHED_KEY_IDS");
    let config = sdk_config().await;
    let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), Tables::from_env()));
    let signer = KmsSigner::new(aws_sdk_kms::Client::new(&config), &key_id, &published)
        .map_err(|e| format!("KMS_KEY_ID / KMS_PUBLISHED_KEY_IDS: {e}"))?;
    let keys = if verifies {
        Services::keys_of(&signer).await.map_err(|e| format!("KMS public keys: {e}"))?
    } else {
        KeyRing::empty()
    };
    // Each read of the controls is a DynamoDB call on the hot path: a warm instance answers
    // from its last read for at most `CONTROLS_CACHE_TTL` (docs/operators.md, incident response).
    let services = Services::new(store, Arc::new(signer), keys, clock, policy, cursor_key)
        .with_cached_controls(shared::app::CONTROLS_CACHE_TTL);
    let Ok(checkpoint_key) = std::env::var("CHECKPOINT_KEY_ID") else {
        return Ok(services);
    };
    let checkpoint_signer =
        KmsSigner::new(aws_sdk_kms::Client::new(&config), &checkpoint_key, &key_list("CHECKPOINT_PUBLISHED_KEY_IDS"))
            .map_err(|e| format!("CHECKPOINT_KEY_ID / CHECKPOINT_PUBLISHED_KEY_IDS: {e}"))?;
    let checkpoint_keys = if verifies {
        checkpoint_signer.public_keys().await.map_err(|e| format!("KMS checkpoint public keys: {e}"))?
    } else {
        JwkSet { keys: Vec::new() }
    };
    services.with_checkpoint_signer(Arc::new(checkpoint_signer), checkpoint_keys).map_err(|e| e.to_string())
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
