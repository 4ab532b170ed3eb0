//! What local-api runs on. The dev identity provider and the cursor key always live in the
//! data directory (local-api plays API Gateway's JWT authorizer, and the demo route takes
//! its identity tokens as the app API's authorizer takes the real provider's); the stores and the signer
//! are either the embedded default (SQLite and a local key there too) or DynamoDB and KMS at
//! the standard AWS endpoint settings (`AWS_ENDPOINT_URL`, region, credentials).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use adapter_aws::{self as aws, Tables};
use adapter_embedded::{DevIdentityProvider, LocalSigner, SqliteStore, prepare_data_dir, read_or_create_secret};
use shared::app::CursorKey;
use shared::app::Services;
use shared::domain::Policy;
use shared::ports::{Clock, ExpirySweeper, FirstUses, Outbox};

pub struct Runtime {
    pub services: Services,
    pub identity: DevIdentityProvider,
    /// Where the dev identity key lives: named to a developer whose identity token another
    /// data directory's key signed.
    pub data_dir: PathBuf,
    /// Records expiries on a timer where storage does not (the embedded store; on AWS,
    /// DynamoDB TTL and the stream do it).
    pub sweeper: Option<Arc<dyn ExpirySweeper>>,
    /// The committed audit log as an outbox for the notification webhook (the embedded
    /// store; on AWS, the Audit table's stream feeds EventBridge instead).
    pub outbox: Option<Arc<dyn Outbox>>,
    /// Claims each token's first use, for the relay to announce it once (with the outbox).
    pub first_uses: Option<Arc<dyn FirstUses>>,
    /// Which browser origins may call the API (`--cors-allowed-origins`); `None`: CORS off.
    pub cors: Option<shared::http::Cors>,
}

/// The dev identity provider's key, in the data directory.
const DEV_IDP_KEY_FILE: &str = "dev-idp-key.p8";

/// The dev identity provider of `data_dir` (created there on first use; see
/// [`prepare_data_dir`] for the directory itself).
fn identity(data_dir: &Path) -> Result<DevIdentityProvider, String> {
    if let Some(warning) = prepare_data_dir(data_dir)? {
        tracing::warn!("{warning}");
    }
    DevIdentityProvider::load_or_create(&data_dir.join(DEV_IDP_KEY_FILE))
}

/// What every backend keeps in `data_dir`: the dev identity provider and the cursor key.
fn prepare(data_dir: &Path) -> Result<(DevIdentityProvider, CursorKey), String> {
    let identity = identity(data_dir)?;
    let cursor_key =
        CursorKey::from_bytes(&read_or_create_secret(&data_dir.join("cursor.key"), &CursorKey::random_bytes())?);
    Ok((identity, cursor_key))
}

impl Runtime {
    /// The dev identity provider of `data_dir` alone (for `dev-token`), and whether its key
    /// was created just now (then no server on another data directory accepts its tokens).
    pub fn embedded_identity(data_dir: &Path) -> Result<(DevIdentityProvider, bool), String> {
        let created = !data_dir.join(DEV_IDP_KEY_FILE).exists();
        Ok((identity(data_dir)?, created))
    }

    /// The embedded default: everything in `data_dir`.
    pub async fn embedded(data_dir: &Path, policy: Policy, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let (identity, cursor_key) = prepare(data_dir)?;
        let store = Arc::new(SqliteStore::open(&data_dir.join("support-access.db")).map_err(|e| e.to_string())?);
        let signer = Arc::new(LocalSigner::load_or_create(&data_dir.join("signing-key.p8"))?);
        let keys = Services::keys_of(signer.as_ref()).await.map_err(|e| e.to_string())?;
        // Checkpoints have a key of their own, never in the tokens' JWK Set; checkpoints made
        // before it existed were signed by the token key, which stays in their set.
        let checkpoint_signer = Arc::new(LocalSigner::load_or_create(&data_dir.join("checkpoint-key.p8"))?);
        let checkpoint_keys = shared::app::checkpoint_keys(store.as_ref(), checkpoint_signer.as_ref(), keys.jwks())
            .await
            .map_err(|e| e.to_string())?;
        // Export receipts too, so that no key signs both kinds (SECURITY.md, who signs what).
        let receipt_signer = Arc::new(LocalSigner::load_or_create(&data_dir.join("receipt-key.p8"))?);
        let receipt_keys =
            shared::ports::Signer::public_keys(receipt_signer.as_ref()).await.map_err(|e| e.to_string())?;
        let services = Services::new(store.clone(), signer, keys, clock, policy, cursor_key)
            .with_checkpoint_signer(checkpoint_signer, checkpoint_keys)
            .and_then(|s| s.with_receipt_signer(receipt_signer, receipt_keys))
            .map_err(|e| e.to_string())?
            .with_identity(identity.verifier());
        Ok(Self {
            services,
            identity,
            data_dir: data_dir.to_owned(),
            sweeper: Some(store.clone()),
            outbox: Some(store.clone()),
            first_uses: Some(store),
            cors: None,
        })
    }

    /// DynamoDB and KMS, as configured by the standard AWS environment and the variables of
    /// [`aws::services_from_env`].
    pub async fn aws(data_dir: &Path, policy: Policy, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let (identity, cursor_key) = prepare(data_dir)?;
        let services =
            aws::services_from_env(policy, clock, cursor_key, true).await?.with_identity(identity.verifier());
        Ok(Self {
            services,
            identity,
            data_dir: data_dir.to_owned(),
            sweeper: None,
            outbox: None,
            first_uses: None,
            cors: None,
        })
    }
}

/// `local-api mark-unsealed-heads`: once after upgrading a deployment from a version whose
/// writers did not mark the chain heads they moved, marks every head past what a checkpoint
/// sealed of it (docs/operators.md, "Checkpoints"); returns how many.
pub async fn mark_unsealed_heads(now: i64) -> Result<usize, String> {
    let config = aws::sdk_config().await;
    let store = aws::DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), Tables::from_env());
    store.mark_unsealed_heads(now).await.map_err(|e| e.to_string())
}

/// `local-api setup-aws`: creates the tables, a token key, a checkpoint key and a receipt key at the configured endpoint and
/// returns the settings as `export NAME=value` lines, for `eval "$(local-api setup-aws)"`.
pub async fn setup_aws() -> Result<String, String> {
    let config = aws::sdk_config().await;
    let tables = Tables::from_env();
    aws::create_tables(&aws_sdk_dynamodb::Client::new(&config), &tables).await.map_err(|e| e.to_string())?;
    let kms = aws_sdk_kms::Client::new(&config);
    let key = aws::create_signing_key(&kms).await.map_err(|e| e.to_string())?;
    // Checkpoints get a key of their own, as on the stack: never one the tokens' set holds.
    let checkpoint_key = aws::create_signing_key(&kms).await.map_err(|e| e.to_string())?;
    // And receipts one of theirs.
    let receipt_key = aws::create_signing_key(&kms).await.map_err(|e| e.to_string())?;
    // The key the Lambda functions that page seal cursors with (local-api keeps its own).
    let cursor_secret =
        aws::create_cursor_secret(&config, &format!("support-access-cursor-{}", uuid::Uuid::new_v4().simple())).await?;
    Ok(format!(
        "export SUPPORT_ACCESS_BACKEND=aws\nexport CONSENTS_TABLE={}\nexport AUDIT_TABLE={}\nexport CHAIN_HEADS_TABLE={}\nexport CHECKPOINTS_TABLE={}\nexport ACCESS_REQUESTS_TABLE={}\nexport CONTROLS_TABLE={}\nexport FIRST_USES_TABLE={}\nexport AUDIT_INTAKE_TABLE={}\nexport KMS_KEY_ID={key}\nexport CHECKPOINT_KEY_ID={checkpoint_key}\nexport RECEIPT_KEY_ID={receipt_key}\nexport SUPPORT_ACCESS_CURSOR_SECRET_ARN={cursor_secret}\n",
        tables.consents,
        tables.audit,
        tables.heads,
        tables.checkpoints,
        tables.requests,
        tables.controls,
        tables.first_uses,
        tables.intake
    ))
}
