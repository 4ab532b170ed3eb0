//! Whole chains and signed checkpoints on the embedded store: two more append-only tables
//! (`checkpoints`, and `checkpoint_leaves` with each sealed head's inclusion proof), written
//! in one transaction so a checkpoint is never stored without its leaves.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::store::{SqliteStore, unavailable};
use shared::domain::AuditEvent;
use shared::ports::{
    ChainArchive, Checkpoint, CheckpointClaims, Leaf, MovedHead, MovedHeads, ProvenLeaf, StoreError, StreamsPage,
};

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn checkpoint_row(claims: &str, jws: String) -> Result<Checkpoint, StoreError> {
    let claims: CheckpointClaims = serde_json::from_str(claims).map_err(|e| corrupt("checkpoint claims", e))?;
    Ok(Checkpoint { claims, jws })
}

fn leaves_where(
    tx: &Connection,
    clause: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<(u64, ProvenLeaf)>, StoreError> {
    let sql = format!(
        "SELECT checkpoint, stream, seq, hash, leaf_index, proof FROM checkpoint_leaves WHERE {clause}
         ORDER BY checkpoint, leaf_index"
    );
    let mut stmt = tx.prepare(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map(args, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        })
        .map_err(unavailable)?;
    let mut out = Vec::new();
    for row in rows {
        let (checkpoint, stream, seq, hash, index, proof) = row.map_err(unavailable)?;
        let proof: Vec<String> = serde_json::from_str(&proof).map_err(|e| corrupt("leaf proof", e))?;
        out.push((
            checkpoint as u64,
            ProvenLeaf { leaf: Leaf { stream, seq: seq as u64, hash }, index: index as u64, proof },
        ));
    }
    Ok(out)
}

#[async_trait]
impl ChainArchive for SqliteStore {
    /// The next `limit` stream names past `after`, by name: one index seek each (the
    /// `(stream, seq)` key's), never a walk of the events of a long stream.
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<StreamsPage, StoreError> {
        let after = after.unwrap_or_default().to_owned();
        self.read(move |tx| {
            let mut stmt = tx
                .prepare(
                    "WITH RECURSIVE listed(stream, n) AS (
                         SELECT (SELECT MIN(stream) FROM audit WHERE stream > ?1), 1
                         UNION ALL
                         SELECT (SELECT MIN(stream) FROM audit WHERE stream > listed.stream), n + 1 FROM listed
                         WHERE listed.stream IS NOT NULL AND n < ?2
                     )
                     SELECT stream FROM listed WHERE stream IS NOT NULL",
                )
                .map_err(unavailable)?;
            let rows = stmt.query_map(params![after, limit as i64], |r| r.get(0)).map_err(unavailable)?;
            let streams: Vec<String> = rows.collect::<Result<_, _>>().map_err(unavailable)?;
            let next = (streams.len() >= limit).then(|| streams.last().cloned()).flatten();
            Ok(StreamsPage { streams, next })
        })
        .await
    }

    async fn stream_events(&self, stream: &str, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let stream = stream.to_owned();
        self.read(move |tx| {
            let mut stmt = tx
                .prepare("SELECT body FROM audit WHERE stream = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![stream, after_seq as i64, limit as i64], |r| r.get::<_, String>(0))
                .map_err(unavailable)?;
            let mut events = Vec::new();
            for body in rows {
                let body = body.map_err(unavailable)?;
                events.push(serde_json::from_str(&body).map_err(|e| corrupt(&format!("audit event in {stream}"), e))?);
            }
            Ok(events)
        })
        .await
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.read(|tx| {
            let row: Option<(String, String)> = tx
                .query_row("SELECT claims, jws FROM checkpoints ORDER BY seq DESC LIMIT 1", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
                .map_err(unavailable)?;
            row.map(|(claims, jws)| checkpoint_row(&claims, jws)).transpose()
        })
        .await
    }

    /// Every stream whose last `seq` is past the last one sealed for it, by the time of its
    /// first unsealed event; SQLite answers this in one query over the leaves, so nothing is
    /// marked or unmarked (nor sealed twice: `latest` is not needed).
    async fn moved_heads(&self, _latest: Option<&Checkpoint>, limit: usize) -> Result<MovedHeads, StoreError> {
        self.read(move |tx| {
            let mut stmt = tx
                .prepare(
                    "WITH h AS (SELECT stream, MAX(seq) AS seq FROM audit GROUP BY stream),
                          s AS (SELECT stream, MAX(seq) AS sealed FROM checkpoint_leaves GROUP BY stream)
                     SELECT a.stream, a.seq, a.hash, f.at FROM h
                     JOIN audit a ON a.stream = h.stream AND a.seq = h.seq
                     LEFT JOIN s ON s.stream = h.stream
                     JOIN audit f ON f.stream = h.stream AND f.seq = COALESCE(s.sealed, 0) + 1
                     WHERE h.seq > COALESCE(s.sealed, 0)
                     ORDER BY f.at, a.stream LIMIT ?1",
                )
                .map_err(unavailable)?;
            let rows = stmt
                .query_map(params![limit.saturating_add(1) as i64], |r| {
                    Ok(MovedHead {
                        head: Leaf { stream: r.get(0)?, seq: r.get::<_, i64>(1)? as u64, hash: r.get(2)? },
                        moved_at: r.get(3)?,
                    })
                })
                .map_err(unavailable)?;
            let mut heads: Vec<MovedHead> = rows.collect::<Result<_, _>>().map_err(unavailable)?;
            let more = heads.len() > limit;
            heads.truncate(limit);
            Ok(MovedHeads { heads, more })
        })
        .await
    }

    async fn unmark_sealed(&self, _heads: &[Leaf]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint, leaves: &[ProvenLeaf]) -> Result<(), StoreError> {
        let checkpoint = checkpoint.clone();
        let leaves = leaves.to_vec();
        self.transaction(move |tx| {
            let last: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM checkpoints", [], |r| r.get(0)).map_err(unavailable)?;
            let seq = checkpoint.claims.seq as i64;
            if seq != last + 1 {
                return Err(StoreError::Conflict(format!("checkpoint {seq} made after {last}")));
            }
            let claims = serde_json::to_string(&checkpoint.claims).expect("claims serialize");
            tx.execute(
                "INSERT INTO checkpoints (seq, claims, jws) VALUES (?1, ?2, ?3)",
                params![seq, claims, checkpoint.jws],
            )
            .map_err(unavailable)?;
            for l in &leaves {
                tx.execute(
                    "INSERT INTO checkpoint_leaves (stream, checkpoint, seq, hash, leaf_index, proof)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        l.leaf.stream,
                        seq,
                        l.leaf.seq as i64,
                        l.leaf.hash,
                        l.index as i64,
                        serde_json::to_string(&l.proof).expect("hex strings serialize")
                    ],
                )
                .map_err(unavailable)?;
            }
            Ok(())
        })
        .await
    }

    async fn checkpoints(
        &self,
        stream: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(Checkpoint, Vec<ProvenLeaf>)>, StoreError> {
        let stream = stream.map(str::to_owned);
        self.read(move |tx| {
            // The checkpoints first (at most `limit`), then the leaves of those alone.
            let sql = match &stream {
                Some(_) => {
                    "SELECT seq, claims, jws FROM checkpoints WHERE seq > ?2 AND seq IN
                     (SELECT checkpoint FROM checkpoint_leaves WHERE stream = ?1 AND checkpoint > ?2)
                     ORDER BY seq LIMIT ?3"
                }
                None => "SELECT seq, claims, jws FROM checkpoints WHERE ?1 IS NULL AND seq > ?2 ORDER BY seq LIMIT ?3",
            };
            let mut stmt = tx.prepare(sql).map_err(unavailable)?;
            let rows = stmt
                .query_map(params![stream, after as i64, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })
                .map_err(unavailable)?;
            let rows = rows.collect::<Result<Vec<_>, _>>().map_err(unavailable)?;
            let Some(last) = rows.last().map(|(seq, _, _)| *seq) else { return Ok(Vec::new()) };
            let leaves = match &stream {
                Some(s) => leaves_where(
                    tx,
                    "stream = ?1 AND checkpoint > ?2 AND checkpoint <= ?3",
                    params![s, after as i64, last],
                )?,
                None => leaves_where(tx, "checkpoint > ?1 AND checkpoint <= ?2", params![after as i64, last])?,
            };
            let mut out = Vec::with_capacity(rows.len());
            for (seq, claims, jws) in rows {
                let mine = leaves.iter().filter(|(c, _)| *c == seq as u64).map(|(_, l)| l.clone()).collect();
                out.push((checkpoint_row(&claims, jws)?, mine));
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{Actor, AuditEventType, Timestamp, UserId};
    use shared::ports::AuditAppender;

    async fn append(s: &SqliteStore, user: &str) {
        let e = AuditEvent::new(
            AuditEventType::TokenDenied,
            Timestamp::from_unix(1),
            Some(UserId::parse(user).unwrap()),
            Actor::system(),
        );
        s.append(e).await.unwrap();
    }

    async fn unsealed(s: &SqliteStore) -> Vec<Leaf> {
        let moved = s.moved_heads(None, 100).await.unwrap();
        assert!(!moved.more);
        moved.heads.into_iter().map(|m| m.head).collect()
    }

    fn checkpoint(seq: u64) -> Checkpoint {
        let claims =
            CheckpointClaims { iss: "x".into(), seq, iat: 0, prev: String::new(), root: String::new(), size: 1 };
        Checkpoint { claims, jws: format!("jws-{seq}") }
    }

    #[tokio::test]
    async fn sealed_heads_stop_being_unsealed_until_their_stream_moves() {
        let s = SqliteStore::in_memory().unwrap();
        append(&s, "alice").await;
        append(&s, "alice").await;
        append(&s, "bob").await;
        let first = s.moved_heads(None, 1).await.unwrap();
        assert_eq!(
            first.heads.iter().map(|h| (h.head.stream.as_str(), h.head.seq)).collect::<Vec<_>>(),
            [("alice", 2)]
        );
        assert!(first.more, "bob is left past the limit");
        let heads = unsealed(&s).await;
        assert_eq!(heads.iter().map(|h| (h.stream.as_str(), h.seq)).collect::<Vec<_>>(), [("alice", 2), ("bob", 1)]);
        let leaves: Vec<_> = heads
            .into_iter()
            .enumerate()
            .map(|(i, leaf)| ProvenLeaf { leaf, index: i as u64, proof: vec![] })
            .collect();
        s.append_checkpoint(&checkpoint(1), &leaves).await.unwrap();
        assert!(unsealed(&s).await.is_empty());
        append(&s, "bob").await;
        let heads = unsealed(&s).await;
        assert_eq!(heads.iter().map(|h| (h.stream.as_str(), h.seq)).collect::<Vec<_>>(), [("bob", 2)]);
        let for_bob = s.checkpoints(Some("bob"), 0, 10).await.unwrap();
        assert_eq!(for_bob.len(), 1);
        assert_eq!(for_bob[0].1.iter().map(|l| l.leaf.stream.as_str()).collect::<Vec<_>>(), ["bob"]);
        assert_eq!(s.checkpoints(None, 0, 10).await.unwrap()[0].1.len(), 2);
        assert!(s.checkpoints(None, 1, 10).await.unwrap().is_empty(), "none past the last");
    }

    #[tokio::test]
    async fn a_checkpoint_out_of_turn_is_a_conflict_and_stored_ones_cannot_change() {
        let s = SqliteStore::in_memory().unwrap();
        s.append_checkpoint(&checkpoint(1), &[]).await.unwrap();
        assert!(matches!(s.append_checkpoint(&checkpoint(1), &[]).await, Err(StoreError::Conflict(_))));
        assert!(matches!(s.append_checkpoint(&checkpoint(3), &[]).await, Err(StoreError::Conflict(_))));
        assert_eq!(s.latest_checkpoint().await.unwrap().unwrap().claims.seq, 1);
        let (updated, deleted) = s
            .transaction(|c| {
                Ok((
                    c.execute("UPDATE checkpoints SET jws = 'x'", []).is_ok(),
                    c.execute("DELETE FROM checkpoints", []).is_ok(),
                ))
            })
            .await
            .unwrap();
        assert!(!updated && !deleted);
    }
}
