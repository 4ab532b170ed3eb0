//! The embedded store's audit table as an outbox: its `id` is the commit order (one writer
//! assigns it), and each relay's position is a row beside it. The token uses in a stream
//! tell a first use from a repeat.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::store::{SqliteStore, unavailable};
use shared::domain::AuditEvent;
use shared::ports::{Outbox, OutboxEntry, StoreError, UseHistory};

#[async_trait]
impl Outbox for SqliteStore {
    async fn committed_after(&self, position: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached("SELECT id, body FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![position as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            rows.into_iter()
                .map(|(id, body)| {
                    let event: AuditEvent =
                        serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("audit body: {e}")))?;
                    Ok(OutboxEntry { position: id as u64, event })
                })
                .collect()
        })
        .await
    }

    async fn position(&self, relay: &str) -> Result<Option<u64>, StoreError> {
        let relay = relay.to_owned();
        self.read(move |c| {
            let at: Option<i64> = c
                .prepare_cached("SELECT last_id FROM outbox_positions WHERE relay = ?1")
                .and_then(|mut s| s.query_row([&relay], |r| r.get(0)).optional())
                .map_err(unavailable)?;
            Ok(at.map(|id| id as u64))
        })
        .await
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            let last: Option<i64> = c.query_row("SELECT MAX(id) FROM audit", [], |r| r.get(0)).map_err(unavailable)?;
            Ok(last.unwrap_or(0) as u64)
        })
        .await
    }

    async fn save_position(&self, relay: &str, position: u64) -> Result<(), StoreError> {
        let relay = relay.to_owned();
        self.transaction(move |tx| {
            tx.execute(
                "INSERT INTO outbox_positions (relay, last_id) VALUES (?1, ?2)
                 ON CONFLICT (relay) DO UPDATE SET last_id = excluded.last_id",
                params![relay, position as i64],
            )
            .map_err(unavailable)?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl UseHistory for SqliteStore {
    async fn is_first_use(&self, used: &AuditEvent) -> Result<bool, StoreError> {
        let Some(jti) = used.jti.clone() else { return Ok(true) };
        let (stream, seq) = (used.stream().to_owned(), used.seq as i64);
        self.read(move |c| {
            let earlier: Option<i64> = c
                .prepare_cached(
                    "SELECT 1 FROM audit WHERE stream = ?1 AND seq < ?2 AND type = 'token.used'
                       AND json_extract(body, '$.jti') = ?3 LIMIT 1",
                )
                .and_then(|mut s| s.query_row(params![stream, seq, jti.as_str()], |r| r.get(0)).optional())
                .map_err(unavailable)?;
            Ok(earlier.is_none())
        })
        .await
    }
}
