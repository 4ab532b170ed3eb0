//! The operators' controls (`ports::Controls`) in the `controls` table, keyed as on DynamoDB:
//! `stop` for the emergency stop, `agent#<id>` for an agent's revocation, each a JSON body.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use serde::de::DeserializeOwned;

use super::store::{SqliteStore, unavailable};
use shared::domain::{AgentId, AgentRevocation, ControlState, EmergencyStop};
use shared::ports::{Controls, StoreError};

const STOP: &str = "stop";

fn agent_key(agent: &AgentId) -> String {
    format!("agent#{agent}")
}

fn body_of<T: DeserializeOwned>(tx: &Connection, key: &str) -> Result<Option<T>, StoreError> {
    let body: Option<String> = tx
        .prepare_cached("SELECT body FROM controls WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
        .map_err(unavailable)?;
    body.map(|b| serde_json::from_str(&b).map_err(|e| StoreError::Corrupt(format!("control {key}: {e}")))).transpose()
}

fn put(tx: &Connection, key: &str, expires_at: Option<i64>, body: &impl serde::Serialize) -> Result<(), StoreError> {
    let body = serde_json::to_string(body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "INSERT OR REPLACE INTO controls (key, expires_at, body) VALUES (?1, ?2, ?3)",
        params![key, expires_at, body],
    )
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl Controls for SqliteStore {
    async fn read(&self, agent: Option<&AgentId>) -> Result<ControlState, StoreError> {
        let key = agent.map(agent_key);
        self.lookup(move |tx| {
            let stop = body_of::<EmergencyStop>(tx, STOP)?;
            let revocation = key.map(|k| body_of::<AgentRevocation>(tx, &k)).transpose()?.flatten();
            Ok(ControlState { stop, revocation })
        })
        .await
    }

    async fn set_stop(&self, stop: Option<&EmergencyStop>) -> Result<(), StoreError> {
        let stop = stop.cloned();
        self.transaction(move |tx| match stop {
            Some(stop) => put(tx, STOP, None, &stop),
            None => tx.execute("DELETE FROM controls WHERE key = ?1", [STOP]).map(|_| ()).map_err(unavailable),
        })
        .await
    }

    async fn revoke_agent(&self, revocation: &AgentRevocation) -> Result<(), StoreError> {
        let r = revocation.clone();
        self.transaction(move |tx| {
            // Entries that can no longer refuse any token go, so the table stays small.
            tx.execute(
                "DELETE FROM controls WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [r.revoked_before.unix()],
            )
            .map_err(unavailable)?;
            put(tx, &agent_key(&r.agent), Some(r.expires_at.unix()), &r)
        })
        .await
    }
}
