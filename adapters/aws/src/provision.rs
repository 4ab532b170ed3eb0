//! Creates the tables and the signing key on an endpoint (`local-api setup-aws`, and the
//! contract tests against a DynamoDB/KMS API server on loopback). The tables' shapes (keys,
//! attribute types, indexes, streams, TTL) are read from `infra/tables.json`, the one list of
//! them: the SAM template declares the same shapes for real deployments, and
//! `infra/tests/test_template.py` holds the template to that file, so what the tests run
//! against is what a stack deploys.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use serde::Deserialize;

use super::Tables;
use shared::ports::{SignerError, StoreError};

/// The tables' shapes, one entry a table of the template, named by its resource there.
const TABLE_SHAPES: &str = include_str!("../../../infra/tables.json");

/// A table as `infra/tables.json` describes it, in CloudFormation's terms.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableShape {
    /// Its logical id in `infra/template.yaml`.
    resource: String,
    /// The key and index attributes, each with its type (`S` or `N`).
    attributes: BTreeMap<String, String>,
    /// The partition key, then the sort key if it has one.
    key: Vec<String>,
    #[serde(default)]
    indexes: Vec<IndexShape>,
    /// The stream's view type (`NEW_IMAGE`, `OLD_IMAGE`), if it has a stream.
    stream: Option<String>,
    /// The TTL attribute (epoch seconds), if it has one.
    ttl: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexShape {
    name: String,
    key: Vec<String>,
    /// `ALL` or `KEYS_ONLY`.
    projection: String,
}

fn failed(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {e}"))
}

/// `infra/tables.json` says something this code cannot build.
fn malformed(e: impl std::fmt::Display) -> StoreError {
    failed("infra/tables.json", e)
}

fn shapes() -> Result<Vec<TableShape>, StoreError> {
    serde_json::from_str(TABLE_SHAPES).map_err(malformed)
}

/// The configured name of the table the template calls `resource`.
fn name_of<'a>(tables: &'a Tables, resource: &str) -> Result<&'a str, StoreError> {
    Ok(match resource {
        "ConsentsTable" => &tables.consents,
        "AuditTable" => &tables.audit,
        "ChainHeadsTable" => &tables.heads,
        "CheckpointsTable" => &tables.checkpoints,
        "AccessRequestsTable" => &tables.requests,
        "ControlsTable" => &tables.controls,
        "FirstUsesTable" => &tables.first_uses,
        "AuditIntakeTable" => &tables.intake,
        other => return Err(malformed(format!("no table is configured for {other}"))),
    })
}

/// `value` as the SDK's enum, if it is one of the enum's `values` (the SDK takes any other
/// string as an unknown variant, which only the API would refuse).
fn known<'a, T: From<&'a str>>(value: &'a str, values: &[&str]) -> Result<T, StoreError> {
    if values.contains(&value) {
        Ok(T::from(value))
    } else {
        Err(malformed(format!("{value:?} is none of {values:?}")))
    }
}

/// The key schema of a table or an index: the partition key, then the sort key.
fn key_schema(key: &[String]) -> Result<Vec<KeySchemaElement>, StoreError> {
    if key.is_empty() || key.len() > 2 {
        return Err(malformed(format!("a key of {} attributes", key.len())));
    }
    key.iter()
        .zip([KeyType::Hash, KeyType::Range])
        .map(|(name, kind)| {
            KeySchemaElement::builder().attribute_name(name).key_type(kind).build().map_err(|e| failed("key schema", e))
        })
        .collect()
}

/// Creates every table of `infra/tables.json` under its configured name, on demand, with
/// its stream and TTL.
pub async fn create_tables(client: &aws_sdk_dynamodb::Client, tables: &Tables) -> Result<(), StoreError> {
    for shape in shapes()? {
        let name = name_of(tables, &shape.resource)?;
        let mut create = client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest);
        for (attribute, kind) in &shape.attributes {
            let kind: ScalarAttributeType = known(kind, ScalarAttributeType::values())?;
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(kind)
                    .build()
                    .map_err(|e| failed("attribute", e))?,
            );
        }
        for element in key_schema(&shape.key)? {
            create = create.key_schema(element);
        }
        for index in &shape.indexes {
            let projection: ProjectionType = known(&index.projection, ProjectionType::values())?;
            create = create.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&index.name)
                    .set_key_schema(Some(key_schema(&index.key)?))
                    .projection(Projection::builder().projection_type(projection).build())
                    .build()
                    .map_err(|e| failed("index", e))?,
            );
        }
        if let Some(view) = &shape.stream {
            let view: StreamViewType = known(view, StreamViewType::values())?;
            create = create.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(view)
                    .build()
                    .map_err(|e| failed("stream", e))?,
            );
        }
        create
            .send()
            .await
            .map_err(|e| failed(&format!("create {name}"), aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        if let Some(attribute) = &shape.ttl {
            enable_ttl(client, name, attribute).await?;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_shapes_file_is_configured_and_every_configured_table_is_in_it() {
        let tables = Tables::from_env();
        let mut listed: Vec<&str> = shapes().unwrap().iter().map(|s| name_of(&tables, &s.resource).unwrap()).collect();
        listed.sort();
        // Every field, without `..`: a table added to `Tables` does not compile here until
        // it is in this list, and then fails until it has a shape.
        let Tables { consents, audit, heads, checkpoints, requests, controls, first_uses, intake } = &tables;
        let mut configured =
            [consents, audit, heads, checkpoints, requests, controls, first_uses, intake].map(String::as_str);
        configured.sort();
        assert_eq!(listed, configured);
    }

    #[test]
    fn the_indexes_the_queries_name_are_the_shapes_indexes() {
        let index = |resource: &str, name: &str| {
            shapes().unwrap().iter().any(|s| s.resource == resource && s.indexes.iter().any(|i| i.name == name))
        };
        assert!(index("AuditTable", Tables::ACTOR_INDEX));
        assert!(index("AuditTable", Tables::TIME_INDEX));
        assert!(index("AccessRequestsTable", Tables::AGENT_INDEX));
        assert!(index("AccessRequestsTable", Tables::PENDING_INDEX));
        assert!(index("ChainHeadsTable", Tables::MOVED_INDEX));
        assert!(index("CheckpointsTable", Tables::LEAVES_INDEX));
    }

    #[test]
    fn every_type_projection_and_stream_view_is_one_the_sdk_knows() {
        for shape in shapes().unwrap() {
            for kind in shape.attributes.values() {
                known::<ScalarAttributeType>(kind, ScalarAttributeType::values()).unwrap();
            }
            for index in &shape.indexes {
                known::<ProjectionType>(&index.projection, ProjectionType::values()).unwrap();
            }
            if let Some(view) = &shape.stream {
                known::<StreamViewType>(view, StreamViewType::values()).unwrap();
            }
        }
        assert!(known::<ProjectionType>("SOME", ProjectionType::values()).is_err());
    }

    #[test]
    fn every_key_attribute_is_defined_and_every_defined_attribute_is_a_key() {
        for shape in shapes().unwrap() {
            let keys: std::collections::BTreeSet<&String> =
                shape.key.iter().chain(shape.indexes.iter().flat_map(|i| &i.key)).collect();
            let defined: std::collections::BTreeSet<&String> = shape.attributes.keys().collect();
            assert_eq!(keys, defined, "{}", shape.resource);
        }
    }
}
