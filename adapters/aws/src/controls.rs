//! The operators' controls (`ports::Controls`) in their own table (`Controls`), so that only
//! the operator function may write them while the functions on the use, mint and grant paths
//! only read: `key` = `stop` for the emergency stop, `agent#<id>` for an agent's revocation
//! (TTL on `expires_at`, past which it can refuse no token), each with its JSON `body`.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;

use super::dynamodb::{DynamoStore, n, s, unavailable};
use shared::domain::{AgentId, AgentRevocation, ControlState, EmergencyStop};
use shared::ports::{Controls, StoreError};

const STOP: &str = "stop";

fn agent_key(agent: &AgentId) -> String {
    format!("agent#{agent}")
}

fn key(k: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([("key".to_owned(), s(k))])
}

impl DynamoStore {
    /// The body of control `k`, read consistently (a stop just engaged is seen at once).
    async fn control<T: DeserializeOwned>(&self, k: &str) -> Result<Option<T>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.controls)
            .set_key(Some(key(k)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item() else { return Ok(None) };
        let body = item
            .get("body")
            .and_then(|b| b.as_s().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("control {k}: no body")))?;
        serde_json::from_str(body).map(Some).map_err(|e| StoreError::Corrupt(format!("control {k}: {e}")))
    }

    async fn put_control(
        &self,
        k: &str,
        body: &impl serde::Serialize,
        expires_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let body = serde_json::to_string(body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut item = key(k);
        item.insert("body".to_owned(), s(&body));
        if let Some(at) = expires_at {
            item.insert("expires_at".to_owned(), n(at));
        }
        self.client
            .put_item()
            .table_name(&self.tables.controls)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl Controls for DynamoStore {
    async fn read(&self, agent: Option<&AgentId>) -> Result<ControlState, StoreError> {
        // Two single-item reads at once rather than a BatchGetItem: the same latency, and no
        // unprocessed keys to retry.
        let revocation = async {
            match agent {
                Some(a) => self.control::<AgentRevocation>(&agent_key(a)).await,
                None => Ok(None),
            }
        };
        let (stop, revocation) = tokio::join!(self.control::<EmergencyStop>(STOP), revocation);
        Ok(ControlState { stop: stop?, revocation: revocation? })
    }

    async fn set_stop(&self, stop: Option<&EmergencyStop>) -> Result<(), StoreError> {
        match stop {
            Some(stop) => self.put_control(STOP, stop, None).await,
            None => {
                self.client
                    .delete_item()
                    .table_name(&self.tables.controls)
                    .set_key(Some(key(STOP)))
                    .send()
                    .await
                    .map_err(unavailable)?;
                Ok(())
            }
        }
    }

    async fn revoke_agent(&self, revocation: &AgentRevocation) -> Result<(), StoreError> {
        self.put_control(&agent_key(&revocation.agent), revocation, Some(revocation.expires_at.unix())).await
    }
}
