//! What local-api runs on. The dev identity provider and the cursor key always live in the
//! data directory (local-api plays API Gateway's JWT authorizer); the stores and the signer
//! are either the embedded default (SQLite and a local key there too) or DynamoDB and KMS at
//! the standard AWS endpoint settings (`AWS_ENDPOINT_URL`, region, credentials).

use std::path::Path;
use std::sync::Arc;

use shared::adapters::aws::{self, DynamoStore, KmsSigner, Tables};
use shared::adapters::embedded::{DevIdentityProvider, LocalSigner, SqliteStore, read_or_create_secret};
use shared::app::CursorKey;
use shared::domain::Policy;
use shared::ports::{Clock, ExpirySweeper, Ports};

pub struct Runtime {
    pub ports: Ports,
    pub identity: DevIdentityProvider,
    /// Records expiries on a timer where storage does not (the embedded store; on AWS,
    /// DynamoDB TTL and the stream do it).
    pub sweeper: Option<Arc<dyn ExpirySweeper>>,
}

fn prepare(data_dir: &Path) -> Result<(DevIdentityProvider, CursorKey), String> {
    std::fs::create_dir_all(data_dir).map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let identity = DevIdentityProvider::load_or_create(&data_dir.join("dev-idp-key.p8"))?;
    let cursor_key =
        CursorKey::from_bytes(&read_or_create_secret(&data_dir.join("cursor.key"), &CursorKey::random_bytes())?);
    Ok((identity, cursor_key))
}

impl Runtime {
    /// The dev identity provider of `data_dir` alone (for `dev-token`).
    pub fn embedded_identity(data_dir: &Path) -> Result<DevIdentityProvider, String> {
        prepare(data_dir).map(|(identity, _)| identity)
    }

    /// The embedded default: everything in `data_dir`.
    pub async fn embedded(data_dir: &Path, policy: Policy, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let (identity, cursor_key) = prepare(data_dir)?;
        let store = Arc::new(SqliteStore::open(&data_dir.join("support-access.db")).map_err(|e| e.to_string())?);
        let signer = Arc::new(LocalSigner::load_or_create(&data_dir.join("signing-key.p8"))?);
        let ports = Ports::new(store.clone(), signer, clock, policy, cursor_key).await.map_err(|e| e.to_string())?;
        Ok(Self { ports, identity, sweeper: Some(store) })
    }

    /// DynamoDB and KMS: tables from `CONSENTS_TABLE`, `AUDIT_TABLE`, `CHAIN_HEADS_TABLE`,
    /// the signing key from `KMS_KEY_ID` (plus any in `KMS_PUBLISHED_KEY_IDS`, comma-separated,
    /// published in the JWK Set but not signing).
    pub async fn aws(data_dir: &Path, policy: Policy, clock: Arc<dyn Clock>) -> Result<Self, String> {
        let (identity, cursor_key) = prepare(data_dir)?;
        let key_id = std::env::var("KMS_KEY_ID").map_err(|_| "KMS_KEY_ID: required with --backend aws".to_owned())?;
        let published: Vec<String> = std::env::var("KMS_PUBLISHED_KEY_IDS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect();
        let config = aws::sdk_config().await;
        let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), Tables::from_env()));
        let signer = KmsSigner::new(aws_sdk_kms::Client::new(&config), &key_id, &published)
            .await
            .map_err(|e| format!("KMS key {key_id}: {e}"))?;
        let ports = Ports::new(store, Arc::new(signer), clock, policy, cursor_key).await.map_err(|e| e.to_string())?;
        Ok(Self { ports, identity, sweeper: None })
    }
}

/// `local-api setup-aws`: creates the tables and a signing key at the configured endpoint and
/// returns the settings as `export NAME=value` lines, for `eval "$(local-api setup-aws)"`.
pub async fn setup_aws() -> Result<String, String> {
    let config = aws::sdk_config().await;
    let tables = Tables::from_env();
    aws::create_tables(&aws_sdk_dynamodb::Client::new(&config), &tables).await.map_err(|e| e.to_string())?;
    let key = aws::create_signing_key(&aws_sdk_kms::Client::new(&config)).await.map_err(|e| e.to_string())?;
    Ok(format!(
        "export SUPPORT_ACCESS_BACKEND=aws\nexport CONSENTS_TABLE={}\nexport AUDIT_TABLE={}\nexport CHAIN_HEADS_TABLE={}\nexport KMS_KEY_ID={key}\n",
        tables.consents, tables.audit, tables.heads
    ))
}
