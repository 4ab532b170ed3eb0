//! The embedded consent store and audit log: one SQLite database (WAL, `synchronous=FULL`, so
//! a committed write survives a crash). Each port call is atomic (a savepoint in a group
//! commit), which gives the same guarantees the DynamoDB adapter gets from
//! `TransactWriteItems`. Triggers make the audit table append-only even for code that forgets.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

use support_access_verify::chain::GENESIS;

use super::group_commit::GroupCommit;
use super::readers::Readers;

use shared::domain::{Actor, AuditEvent, AuditEventType, Consent, ConsentId, Note, Scope, Timestamp, UserId};
use shared::ports::{
    AuditAppender, AuditPage, AuditQuery, AuditReader, ConsentReader, ConsentWriter, ExpirySweeper, StoreError,
    TokenLedger,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consents (
    user_id    TEXT PRIMARY KEY,
    consent_id TEXT NOT NULL,
    scope      TEXT NOT NULL,
    note       TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS consents_expiry ON consents (expires_at);
CREATE TABLE IF NOT EXISTS audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    user_id  TEXT,
    actor    TEXT NOT NULL,
    body     TEXT NOT NULL,
    hash     TEXT NOT NULL,
    UNIQUE (stream, seq)
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, at, stream, seq);
CREATE INDEX IF NOT EXISTS audit_by_time  ON audit (at, stream, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_intake (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    stream   TEXT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    at       INTEGER NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_intake_by_stream ON audit_intake (stream, id);
CREATE TABLE IF NOT EXISTS access_requests (
    request_id TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    agent      TEXT NOT NULL,
    status     TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS access_requests_by_user  ON access_requests (user_id, request_id);
CREATE INDEX IF NOT EXISTS access_requests_by_agent ON access_requests (agent, request_id);
CREATE INDEX IF NOT EXISTS access_requests_pending  ON access_requests (status, expires_at);
CREATE TABLE IF NOT EXISTS controls (
    key        TEXT PRIMARY KEY,
    expires_at INTEGER,
    body       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_positions (
    relay   TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS first_uses (
    jti        TEXT PRIMARY KEY,
    event_id   TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS first_uses_expiry ON first_uses (expires_at);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq    INTEGER PRIMARY KEY,
    claims TEXT NOT NULL,
    jws    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint_leaves (
    stream     TEXT NOT NULL,
    checkpoint INTEGER NOT NULL REFERENCES checkpoints (seq),
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,
    leaf_index INTEGER NOT NULL,
    proof      TEXT NOT NULL,
    PRIMARY KEY (stream, checkpoint)
);
CREATE INDEX IF NOT EXISTS checkpoint_leaves_by_checkpoint ON checkpoint_leaves (checkpoint, leaf_index);
CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoint_leaves_no_update BEFORE UPDATE ON checkpoint_leaves
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoint_leaves_no_delete BEFORE DELETE ON checkpoint_leaves
    BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
";

pub struct SqliteStore {
    writer: GroupCommit,
    /// `Some` once events go through the intake and the sequencer (#18; see
    /// [`super::intake`]); `None`: each write appends to its chain at once, as before.
    pub(super) sequencer: Option<Arc<super::intake::SequencerState>>,
    /// Query-only connections to the same file; `None` for a private in-memory database,
    /// which only its one connection can see (reads then go through the writer).
    readers: Option<Arc<Readers>>,
}

pub(super) fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

/// Keeps each cached statement's query plan whatever values are bound to it (SQLite's query
/// planner stability guarantee). Without it, a statement with `column = ?` in its WHERE
/// clause is marked to be planned again once its bindings are cleared, which the statement
/// cache does after every use: the chain-head read was parsed and planned anew on every
/// append (BENCHMARKS.md, "Load on local-api"). No query here has a plan that depends on a
/// bound value (no `LIKE`, no statistics tables).
pub(super) fn stable_plans(conn: &Connection) -> Result<(), StoreError> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map(|_| ()).map_err(unavailable)
}

impl SqliteStore {
    /// Opens (creating if needed, mode 0600, and so its `-wal` and `-shm` files too) the
    /// database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        super::files::create_private_file(path)
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        let conn = Connection::open(path).map_err(unavailable)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(unavailable)?;
        let mut store = Self::init(conn)?;
        let readers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(4);
        store.readers = Some(Readers::open(path, readers)?);
        Ok(store)
    }

    /// A private database in memory (tests).
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(unavailable)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.pragma_update(None, "synchronous", "FULL").map_err(unavailable)?;
        stable_plans(&conn)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(unavailable)?;
        conn.execute_batch(SCHEMA).map_err(unavailable)?;
        // Data directories from before the hash chain: their events keep an empty hash (and
        // so fail verification, truthfully); new events chain on from there.
        let has_hash: bool = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info('audit') WHERE name = 'hash'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(unavailable)?
            > 0;
        if !has_hash {
            conn.execute_batch("ALTER TABLE audit ADD COLUMN hash TEXT NOT NULL DEFAULT ''").map_err(unavailable)?;
        }
        Ok(Self { writer: GroupCommit::start(Arc::new(Mutex::new(conn)))?, readers: None, sequencer: None })
    }

    /// Runs `work` atomically (all its writes or none) and answers once they are durably
    /// committed; concurrent calls share one commit (see [`super::group_commit`]).
    pub(super) async fn transaction<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.run(work).await
    }

    /// Runs `work`, which only reads, on one committed snapshot without waiting for writers.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.readers {
            Some(readers) => readers.run(work).await,
            None => self.transaction(work).await,
        }
    }

    /// As [`Self::read`], for a lookup of a few rows by key: run on the calling thread when a
    /// reader is free (see [`Readers::lookup`]).
    pub(super) async fn lookup<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        match &self.readers {
            Some(readers) => readers.lookup(work).await,
            None => self.transaction(work).await,
        }
    }
}

/// How a write records its audit events: appended to their chains at once, or recorded as
/// pending in the intake for the sequencer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Direct,
    Sequenced,
}

/// Records `event` inside `tx` as `mode` says: appended to its chain (returned sealed), or
/// pending in the intake (returned unsealed, `seq` 0).
pub(super) fn emit_in(tx: &Connection, mode: Mode, event: AuditEvent) -> Result<AuditEvent, StoreError> {
    match mode {
        Mode::Direct => append_in(tx, event),
        Mode::Sequenced => super::intake::record_in(tx, &event).map(|()| event),
    }
}

/// A stream's last `seq` and `hash`.
const CHAIN_HEAD: &str = "SELECT seq, hash FROM audit WHERE stream = ?1 ORDER BY seq DESC LIMIT 1";

/// Appends `event` at the end of its stream inside `tx`: the next `seq`, chained to the
/// stream's last event.
pub(super) fn append_in(tx: &Connection, event: AuditEvent) -> Result<AuditEvent, StoreError> {
    let stream = event.stream().to_owned();
    // Cached statements: the hot paths run these on every call; parsing SQL each time cost
    // more than executing it.
    let head: Option<(i64, String)> = tx
        .prepare_cached(CHAIN_HEAD)
        .and_then(|mut stmt| stmt.query_row([&stream], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(unavailable)?;
    let (last, prev_hash) = head.unwrap_or((0, GENESIS.to_owned()));
    let event = event.seal(last as u64 + 1, &prev_hash);
    let body = serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.prepare_cached(
        "INSERT INTO audit (stream, seq, event_id, type, at, user_id, actor, body, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            stream,
            event.seq as i64,
            event.event_id.as_str(),
            event.event_type.as_str(),
            event.at.unix(),
            event.user_id.as_ref().map(|u| u.as_str()),
            event.actor.sub.as_str(),
            body,
            event.hash
        ])
    })
    .map_err(unavailable)?;
    Ok(event)
}

fn consent_of(tx: &Connection, user: &UserId) -> Result<Option<Consent>, StoreError> {
    tx.prepare_cached(
        "SELECT consent_id, user_id, scope, note, granted_at, expires_at FROM consents WHERE user_id = ?1",
    )
    .and_then(|mut stmt| stmt.query_row([user.as_str()], |row| Ok(ConsentRow::try_from(row))).optional())
    .map_err(unavailable)?
    .transpose()
    .map(|c| c.map(|c| c.0))
}

/// If the user's stored consent ran out by `now`, deletes it and records `consent.expired`.
pub(super) fn settle_expiry(
    tx: &Connection,
    mode: Mode,
    user: &UserId,
    now: Timestamp,
) -> Result<Option<Consent>, StoreError> {
    let Some(consent) = consent_of(tx, user)? else { return Ok(None) };
    if consent.is_active(now) {
        return Ok(Some(consent));
    }
    tx.execute(
        "DELETE FROM consents WHERE user_id = ?1 AND consent_id = ?2",
        [user.as_str(), consent.consent_id.as_str()],
    )
    .map_err(unavailable)?;
    let expired = AuditEvent::new(AuditEventType::ConsentExpired, now, Some(user.clone()), Actor::system())
        .with_consent(&consent.consent_id, consent.scope, consent.expires_at);
    emit_in(tx, mode, expired)?;
    Ok(None)
}

/// Makes `c` the user's one consent; one that ran out unnoticed gets its expiry on the log
/// (at `now`) before it is replaced.
pub(super) fn put_consent(tx: &Connection, mode: Mode, c: &Consent, now: Timestamp) -> Result<(), StoreError> {
    settle_expiry(tx, mode, &c.user_id, now)?;
    tx.execute(
        "INSERT OR REPLACE INTO consents (user_id, consent_id, scope, note, granted_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            c.user_id.as_str(),
            c.consent_id.as_str(),
            c.scope.as_str(),
            c.note.as_str(),
            c.granted_at.unix(),
            c.expires_at.unix()
        ],
    )
    .map_err(unavailable)?;
    Ok(())
}

/// A consent row, mapped field by field; a missing or malformed column is corruption.
struct ConsentRow(Consent);

impl TryFrom<&Row<'_>> for ConsentRow {
    type Error = StoreError;

    fn try_from(row: &Row<'_>) -> Result<Self, StoreError> {
        let text =
            |i: usize| row.get::<_, String>(i).map_err(|e| StoreError::Corrupt(format!("consent column {i}: {e}")));
        let int = |i: usize| row.get::<_, i64>(i).map_err(|e| StoreError::Corrupt(format!("consent column {i}: {e}")));
        let corrupt = |e: shared::domain::ValidationError| StoreError::Corrupt(e.to_string());
        Ok(Self(Consent {
            consent_id: ConsentId::parse(&text(0)?).map_err(corrupt)?,
            user_id: UserId::parse(&text(1)?).map_err(corrupt)?,
            scope: Scope::parse(&text(2)?).map_err(corrupt)?,
            note: Note::parse(&text(3)?).map_err(corrupt)?,
            granted_at: Timestamp::from_unix(int(4)?),
            expires_at: Timestamp::from_unix(int(5)?),
        }))
    }
}

#[async_trait]
impl ConsentReader for SqliteStore {
    async fn current(&self, user: &UserId, now: Timestamp) -> Result<Option<Consent>, StoreError> {
        let (user, reading, mode) = (user.clone(), user.clone(), self.mode());
        match self.lookup(move |c| consent_of(c, &reading)).await? {
            // Only a consent that ran out needs the writer (to delete it and log the expiry).
            Some(consent) if !consent.is_active(now) => {
                self.transaction(move |tx| settle_expiry(tx, mode, &user, now)).await
            }
            seen => Ok(seen),
        }
    }
}

#[async_trait]
impl ConsentWriter for SqliteStore {
    async fn grant(&self, consent: &Consent, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let (c, mode) = (consent.clone(), self.mode());
        self.transaction(move |tx| {
            put_consent(tx, mode, &c, event.at)?;
            emit_in(tx, mode, event)
        })
        .await
    }

    async fn revoke(&self, consent: &Consent, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let (user, id, mode) = (consent.user_id.clone(), consent.consent_id.clone(), self.mode());
        self.transaction(move |tx| {
            let deleted = tx
                .execute(
                    "DELETE FROM consents WHERE user_id = ?1 AND consent_id = ?2 AND expires_at > ?3",
                    params![user.as_str(), id.as_str(), event.at.unix()],
                )
                .map_err(unavailable)?;
            if deleted == 0 {
                return Err(StoreError::ConsentChanged);
            }
            emit_in(tx, mode, event)
        })
        .await
    }
}

#[async_trait]
impl TokenLedger for SqliteStore {
    async fn record_under_consent(
        &self,
        consent: &Consent,
        now: Timestamp,
        event: AuditEvent,
    ) -> Result<AuditEvent, StoreError> {
        let (user, id, mode) = (consent.user_id.clone(), consent.consent_id.clone(), self.mode());
        self.transaction(move |tx| {
            let live: Option<i64> = tx
                .prepare_cached("SELECT 1 FROM consents WHERE user_id = ?1 AND consent_id = ?2 AND expires_at > ?3")
                .and_then(|mut stmt| {
                    stmt.query_row(params![user.as_str(), id.as_str(), now.unix()], |r| r.get(0)).optional()
                })
                .map_err(unavailable)?;
            if live.is_none() {
                return Err(StoreError::ConsentChanged);
            }
            emit_in(tx, mode, event)
        })
        .await
    }
}

#[async_trait]
impl AuditAppender for SqliteStore {
    async fn append(&self, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let mode = self.mode();
        self.transaction(move |tx| emit_in(tx, mode, event)).await
    }
}

/// Where a page ended: the sort key of its last event, in the order of the query.
enum Position {
    /// A query on a sequenced store, still among the pending events (which come first,
    /// newest first): the intake `id` of the last one shown.
    Pending(i64),
    /// A query by user: that user's `seq`.
    Seq(i64),
    /// Any other query: `(at, stream, seq)`.
    Time(i64, String, i64),
}

impl Position {
    fn parse(raw: &str, by_user: bool) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("position {raw:?}"));
        if let Some(id) = raw.strip_prefix('p') {
            return id.parse().map(Self::Pending).map_err(|_| corrupt());
        }
        if by_user {
            return raw.parse().map(Self::Seq).map_err(|_| corrupt());
        }
        let mut parts = raw.splitn(3, '|');
        let (Some(at), Some(seq), Some(stream)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(corrupt());
        };
        Ok(Self::Time(at.parse().map_err(|_| corrupt())?, stream.to_owned(), seq.parse().map_err(|_| corrupt())?))
    }

    fn of(event: &AuditEvent, stream: &str, by_user: bool) -> String {
        if by_user { event.seq.to_string() } else { format!("{}|{}|{}", event.at.unix(), event.seq, stream) }
    }
}

#[async_trait]
impl AuditReader for SqliteStore {
    async fn query(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        let q = query.clone();
        let by_user = q.filter.user_id.is_some();
        let after = q.after.as_deref().map(|p| Position::parse(p, by_user)).transpose()?;
        let (from, to) = q.window();
        // The pending events (a sequenced store) come first, newest first: on the first page,
        // and on the pages that continue among them. A user's, or everyone's for a query by
        // actor or by time.
        let pending_before = match (&after, self.mode()) {
            (None, Mode::Sequenced) => Some(i64::MAX),
            (Some(Position::Pending(id)), _) => Some(*id),
            _ => None,
        };
        self.read(move |tx| {
            let f = &q.filter;
            let mut events: Vec<(AuditEvent, String)> = Vec::new();
            // The intake id of the last pending event on the page, if it holds any.
            let mut last_pending = None;
            if let Some(before) = pending_before {
                let stream = f.user_id.as_ref().map(UserId::as_str);
                for (id, event) in super::intake::pending_newest_first(tx, stream, before)? {
                    if !f.matches(&event) || event.at < from || event.at > to {
                        continue;
                    }
                    if events.len() == q.limit {
                        return Ok(AuditPage {
                            events: events.into_iter().map(|(e, _)| e).collect(),
                            next: last_pending.map(|last: i64| format!("p{last}")),
                        });
                    }
                    let stream = event.stream().to_owned();
                    events.push((event, stream));
                    last_pending = Some(id);
                }
            }
            let pending = events.len();
            let mut sql = String::from("SELECT stream, body FROM audit WHERE at >= ?1 AND at <= ?2");
            let mut args: Vec<rusqlite::types::Value> = vec![from.unix().into(), to.unix().into()];
            // Each `?` of a clause becomes the numbered parameter of its value.
            let mut push = |clause: &str, values: Vec<rusqlite::types::Value>| {
                sql.push_str(" AND ");
                let mut pieces = clause.split('?');
                sql.push_str(pieces.next().unwrap_or_default());
                for (piece, value) in pieces.zip(values) {
                    args.push(value);
                    sql.push_str(&format!("?{}{piece}", args.len()));
                }
            };
            if let Some(u) = &f.user_id {
                push("stream = ?", vec![u.as_str().to_owned().into()]);
            }
            if let Some(a) = &f.actor {
                push("actor = ?", vec![a.as_str().to_owned().into()]);
            }
            if let Some(t) = f.event_type {
                push("type = ?", vec![t.as_str().to_owned().into()]);
            }
            match after {
                Some(Position::Pending(_)) | None => {}
                Some(Position::Seq(seq)) => push("seq < ?", vec![seq.into()]),
                Some(Position::Time(at, stream, seq)) => {
                    push("(at, stream, seq) < (?, ?, ?)", vec![at.into(), stream.into(), seq.into()])
                }
            }
            sql.push_str(if by_user { " ORDER BY seq DESC" } else { " ORDER BY at DESC, stream DESC, seq DESC" });
            sql.push_str(&format!(" LIMIT {}", q.limit - events.len() + 1));
            let mut stmt = tx.prepare(&sql).map_err(unavailable)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(unavailable)?;
            let mut next = None;
            for row in rows {
                let (stream, body) = row.map_err(unavailable)?;
                let event: AuditEvent = serde_json::from_str(&body)
                    .map_err(|e| StoreError::Corrupt(format!("audit event in {stream}: {e}")))?;
                if events.len() == q.limit {
                    next = match (events.len() == pending, last_pending, events.last()) {
                        // The page ends among the pending events: the sequenced ones follow.
                        (true, Some(last), _) => Some(format!("p{last}")),
                        (_, _, last) => last.map(|last| Position::of(&last.0, &last.1, by_user)),
                    };
                    break;
                }
                events.push((event, stream));
            }
            Ok(AuditPage { events: events.into_iter().map(|(e, _)| e).collect(), next })
        })
        .await
    }
}

#[async_trait]
impl ExpirySweeper for SqliteStore {
    async fn expire_due(&self, now: Timestamp) -> Result<usize, StoreError> {
        let mode = self.mode();
        self.transaction(move |tx| {
            let users: Vec<String> = {
                let mut stmt =
                    tx.prepare("SELECT user_id FROM consents WHERE expires_at <= ?1").map_err(unavailable)?;
                let rows = stmt.query_map([now.unix()], |r| r.get(0)).map_err(unavailable)?;
                rows.collect::<Result<_, _>>().map_err(unavailable)?
            };
            for user in &users {
                let user = UserId::parse(user).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                settle_expiry(tx, mode, &user, now)?;
            }
            Ok(users.len())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::domain::{AgentId, Role};

    fn event(t: AuditEventType, user: Option<&str>, at: i64) -> AuditEvent {
        AuditEvent::new(
            t,
            Timestamp::from_unix(at),
            user.map(|u| UserId::parse(u).unwrap()),
            Actor { sub: AgentId::parse("agent").unwrap(), role: Role::Support },
        )
    }

    #[tokio::test]
    async fn the_database_and_its_wal_and_shm_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("support-access.db");
        let s = SqliteStore::open(&path).unwrap();
        s.append(event(AuditEventType::TokenDenied, Some("alice"), 1)).await.unwrap();
        for name in ["support-access.db", "support-access.db-wal", "support-access.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
    }

    #[tokio::test]
    async fn sequences_are_gapless_per_stream() {
        let s = SqliteStore::in_memory().unwrap();
        let a1 = s.append(event(AuditEventType::TokenDenied, Some("alice"), 1)).await.unwrap();
        let b1 = s.append(event(AuditEventType::TokenDenied, Some("bob"), 2)).await.unwrap();
        let a2 = s.append(event(AuditEventType::TokenDenied, Some("alice"), 3)).await.unwrap();
        let u1 = s.append(event(AuditEventType::TokenRejected, None, 4)).await.unwrap();
        assert_eq!((a1.seq, b1.seq, a2.seq, u1.seq), (1, 1, 2, 1));
    }

    #[tokio::test]
    async fn the_chain_head_read_is_planned_once_not_on_every_append() {
        let s = SqliteStore::in_memory().unwrap();
        for at in 1..=3 {
            s.append(event(AuditEventType::TokenDenied, Some("alice"), at)).await.unwrap();
        }
        // The writer's cached statement, after three appends.
        let replanned = s
            .transaction(|c| Ok(c.prepare_cached(CHAIN_HEAD).unwrap().get_status(rusqlite::StatementStatus::RePrepare)))
            .await
            .unwrap();
        assert_eq!(replanned, 0);
    }

    #[tokio::test]
    async fn the_audit_table_refuses_updates_and_deletes() {
        let s = SqliteStore::in_memory().unwrap();
        s.append(event(AuditEventType::TokenDenied, Some("alice"), 1)).await.unwrap();
        let (updated, deleted, n) = s
            .transaction(|c| {
                let updated = c.execute("UPDATE audit SET type = 'x'", []).is_ok();
                let deleted = c.execute("DELETE FROM audit", []).is_ok();
                Ok((updated, deleted, c.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0)).unwrap()))
            })
            .await
            .unwrap();
        assert!(!updated && !deleted);
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn a_corrupt_consent_row_is_reported_not_served() {
        let s = SqliteStore::in_memory().unwrap();
        s.transaction(|c| Ok(c.execute("INSERT INTO consents VALUES ('alice', 'c 1', 'read', '', 0, 9999999999)", [])))
            .await
            .unwrap()
            .unwrap();
        let r = s.current(&UserId::parse("alice").unwrap(), Timestamp::from_unix(1)).await;
        assert!(matches!(r, Err(StoreError::Corrupt(_))), "{r:?}");
    }
}
