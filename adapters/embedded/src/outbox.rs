//! The embedded store's audit table as an outbox: its `id` is the commit order (one writer
//! assigns it), and each relay's position is a row beside it. A token's first use is claimed
//! in `first_uses`, a row per `jti`.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::store::{SqliteStore, unavailable};
use shared::domain::AuditEvent;
use shared::ports::{FirstUses, Outbox, OutboxEntry, StoreError, first_use_claim_expiry};

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
impl FirstUses for SqliteStore {
    /// One transaction: drop the claims that ran out before this use happened, insert this
    /// one unless the `jti` is claimed, and read who holds it. Claims run out by the log's own
    /// time (the use's `at`), not the wall clock: the relay may resume days behind, and a
    /// claim must outlive every use of its token that the relay has yet to read, which
    /// are all committed before `exp` plus the leeway.
    async fn claim_first_use(&self, used: &AuditEvent) -> Result<bool, StoreError> {
        let Some(jti) = used.jti.clone() else { return Ok(true) };
        let (event_id, at, expires_at) =
            (used.event_id.as_str().to_owned(), used.at.unix(), first_use_claim_expiry(used).unix());
        self.transaction(move |tx| {
            tx.execute("DELETE FROM first_uses WHERE expires_at < ?1", [at]).map_err(unavailable)?;
            tx.execute(
                "INSERT INTO first_uses (jti, event_id, expires_at) VALUES (?1, ?2, ?3) ON CONFLICT (jti) DO NOTHING",
                params![jti.as_str(), event_id, expires_at],
            )
            .map_err(unavailable)?;
            let holder: String = tx
                .query_row("SELECT event_id FROM first_uses WHERE jti = ?1", [jti.as_str()], |r| r.get(0))
                .map_err(unavailable)?;
            Ok(holder == event_id)
        })
        .await
    }
}
