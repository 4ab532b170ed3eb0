//! Creates the tables and the signing key on an endpoint (`local-api setup-aws`, and the
//! contract tests against a DynamoDB/KMS API server on loopback). The SAM template declares
//! the same shapes for real deployments.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};

use super::Tables;
use shared::ports::{SignerError, StoreError};

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|e| failed("key schema", e))
}

fn attr(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().map_err(|e| failed("attribute", e))
}

fn gsi(name: &str, pk: &str, sk: &str) -> Result<GlobalSecondaryIndex, StoreError> {
    gsi_of(name, pk, sk, ProjectionType::All)
}

fn gsi_of(name: &str, pk: &str, sk: &str, projection: ProjectionType) -> Result<GlobalSecondaryIndex, StoreError> {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(pk, KeyType::Hash)?)
        .key_schema(key(sk, KeyType::Range)?)
        .projection(Projection::builder().projection_type(projection).build())
        .build()
        .map_err(|e| failed("index", e))
}

/// Creates `Consents` (TTL on `expires_at`, stream of old images), `Audit` (by user stream and
/// `seq`, with the actor and time indexes, stream of new images), `ChainHeads` (with the sparse index of moved heads), `Checkpoints` (with the index of leaves by
/// checkpoint) and `AccessRequests`
/// (by user and id, with the agent index and the sparse index of pending requests; TTL on
/// `purge_at`), `Controls` (the operators' switches, TTL on `expires_at`) and `FirstUses` (each
/// token's first-use claim by `jti`, TTL on `expires_at`) and `AuditIntake` (decided events
/// not yet on their chains, by stream and `order`, stream of new images, TTL on `expires_at`
/// once sequenced), all on-demand.
pub async fn create_tables(client: &aws_sdk_dynamodb::Client, tables: &Tables) -> Result<(), StoreError> {
    use ScalarAttributeType::{N, S};
    client
        .create_table()
        .table_name(&tables.consents)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("user_id", S)?)
        .key_schema(key("user_id", KeyType::Hash)?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::OldImage)
                .build()
                .map_err(|e| failed("stream", e))?,
        )
        .send()
        .await
        .map_err(|e| failed("create consents table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    enable_ttl(client, &tables.consents, "expires_at").await?;
    client
        .create_table()
        .table_name(&tables.audit)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("stream", S)?)
        .attribute_definitions(attr("seq", N)?)
        .attribute_definitions(attr("actor", S)?)
        .attribute_definitions(attr("at_key", S)?)
        .attribute_definitions(attr("time_bucket", S)?)
        .key_schema(key("stream", KeyType::Hash)?)
        .key_schema(key("seq", KeyType::Range)?)
        .global_secondary_indexes(gsi(Tables::ACTOR_INDEX, "actor", "at_key")?)
        .global_secondary_indexes(gsi(Tables::TIME_INDEX, "time_bucket", "at_key")?)
        // New images feed the notifier (see `notify`).
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(|e| failed("stream", e))?,
        )
        .send()
        .await
        .map_err(|e| failed("create audit table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    client
        .create_table()
        .table_name(&tables.heads)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("stream", S)?)
        .attribute_definitions(attr("moved_shard", N)?)
        .attribute_definitions(attr("moved_at", N)?)
        .key_schema(key("stream", KeyType::Hash)?)
        // The heads that moved since a checkpoint sealed them (sparse: only marked heads).
        .global_secondary_indexes(gsi_of(Tables::MOVED_INDEX, "moved_shard", "moved_at", ProjectionType::KeysOnly)?)
        .send()
        .await
        .map_err(|e| failed("create chain heads table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    client
        .create_table()
        .table_name(&tables.checkpoints)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk", S)?)
        .attribute_definitions(attr("sk", S)?)
        .attribute_definitions(attr("checkpoint", N)?)
        .attribute_definitions(attr("leaf_index", N)?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        // The leaves by checkpoint (sparse: only leaves have these attributes), whole.
        .global_secondary_indexes(gsi(Tables::LEAVES_INDEX, "checkpoint", "leaf_index")?)
        .send()
        .await
        .map_err(|e| failed("create checkpoints table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    client
        .create_table()
        .table_name(&tables.requests)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("user_id", S)?)
        .attribute_definitions(attr("request_id", S)?)
        .attribute_definitions(attr("agent", S)?)
        .attribute_definitions(attr("pending", S)?)
        .attribute_definitions(attr("pending_deadline", N)?)
        .key_schema(key("user_id", KeyType::Hash)?)
        .key_schema(key("request_id", KeyType::Range)?)
        .global_secondary_indexes(gsi(Tables::AGENT_INDEX, "agent", "request_id")?)
        .global_secondary_indexes(gsi(Tables::PENDING_INDEX, "pending", "pending_deadline")?)
        .send()
        .await
        .map_err(|e| failed("create access requests table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    enable_ttl(client, &tables.requests, "purge_at").await?;
    client
        .create_table()
        .table_name(&tables.controls)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("key", S)?)
        .key_schema(key("key", KeyType::Hash)?)
        .send()
        .await
        .map_err(|e| failed("create controls table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    enable_ttl(client, &tables.controls, "expires_at").await?;
    client
        .create_table()
        .table_name(&tables.first_uses)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("jti", S)?)
        .key_schema(key("jti", KeyType::Hash)?)
        .send()
        .await
        .map_err(|e| failed("create first uses table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    enable_ttl(client, &tables.first_uses, "expires_at").await?;
    client
        .create_table()
        .table_name(&tables.intake)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("stream", S)?)
        .attribute_definitions(attr("order", S)?)
        .key_schema(key("stream", KeyType::Hash)?)
        .key_schema(key("order", KeyType::Range)?)
        // New images trigger the sequencer (function `sequencer`).
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewImage)
                .build()
                .map_err(|e| failed("stream", e))?,
        )
        .send()
        .await
        .map_err(|e| failed("create audit intake table", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    enable_ttl(client, &tables.intake, "expires_at").await?;
    Ok(())
}

/// Turns on TTL for `table` on the epoch-seconds attribute `attribute`.
async fn enable_ttl(client: &aws_sdk_dynamodb::Client, table: &str, attribute: &str) -> Result<(), StoreError> {
    let ttl = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(attribute)
        .build()
        .map_err(|e| failed("ttl", e))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| failed("enable TTL", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    Ok(())
}

/// Creates an ECC_NIST_P256 SIGN_VERIFY key and returns its id.
pub async fn create_signing_key(client: &aws_sdk_kms::Client) -> Result<String, SignerError> {
    let out = client
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .description("support-access impersonation token signing key")
        .send()
        .await
        .map_err(|e| SignerError::Unavailable(aws_sdk_kms::error::DisplayErrorContext(e).to_string()))?;
    out.key_metadata()
        .map(|m| m.key_id().to_owned())
        .ok_or_else(|| SignerError::Invalid("CreateKey returned no key id".into()))
}

/// Creates the Secrets Manager secret `name` holding a fresh cursor key (base64 of 32 random
/// bytes, as `SUPPORT_ACCESS_CURSOR_SECRET_ARN` wants it) and returns its ARN.
pub async fn create_cursor_secret(config: &aws_config::SdkConfig, name: &str) -> Result<String, String> {
    use base64::Engine;
    let key = shared::app::CursorKey::random_bytes();
    let out = aws_sdk_secretsmanager::Client::new(config)
        .create_secret()
        .name(name)
        .description("support-access audit cursor key")
        .secret_string(base64::engine::general_purpose::STANDARD.encode(key))
        .send()
        .await
        .map_err(|e| format!("create cursor secret: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(e)))?;
    out.arn().map(str::to_owned).ok_or_else(|| "CreateSecret returned no ARN".to_owned())
}
