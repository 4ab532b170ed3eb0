//! Access requests in SQLite: one row per request, its domain value as JSON in `body`, with
//! the columns the lookups and the conditioned decision need beside it.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::store::{Mode, SqliteStore, emit_in, put_consent, unavailable};
use shared::domain::{AccessRequest, AgentId, AuditEvent, Consent, RequestId, Timestamp, UserId};
use shared::ports::{AccessRequestReader, AccessRequestWriter, PendingRequests, RequestPage, RequestQuery, StoreError};

fn body_of(request: &AccessRequest) -> Result<String, StoreError> {
    serde_json::to_string(request).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn parse_body(body: &str) -> Result<AccessRequest, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("access request: {e}")))
}

/// One page of the requests whose `column` (`user_id` or `agent`, each indexed with
/// `request_id`) is `key`, by `request_id` descending, after the query's position. One row
/// more than the page is read to tell whether another page follows.
fn page_where(
    conn: &Connection,
    column: &'static str,
    key: &str,
    query: &RequestQuery,
) -> Result<RequestPage, StoreError> {
    let sql = format!(
        "SELECT body FROM access_requests WHERE {column} = ?1
           AND (?2 IS NULL OR request_id < ?2)
           AND (?3 IS NULL OR (status = 'pending' AND expires_at > ?3))
         ORDER BY request_id DESC LIMIT ?4"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(unavailable)?;
    let pending_at = query.pending_at.map(|t| t.unix());
    let bodies = stmt
        .query_map(params![key, query.after, pending_at, query.limit as i64 + 1], |r| r.get::<_, String>(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    let mut requests = bodies.iter().map(|b| parse_body(b)).collect::<Result<Vec<_>, _>>()?;
    let next = if requests.len() > query.limit {
        requests.truncate(query.limit);
        requests.last().map(|r| r.request_id.as_str().to_owned())
    } else {
        None
    };
    Ok(RequestPage { requests, next })
}

fn decide_in(
    tx: &Connection,
    mode: Mode,
    decided: &AccessRequest,
    grant: Option<&Consent>,
    events: Vec<AuditEvent>,
) -> Result<Vec<AuditEvent>, StoreError> {
    let at = decided.decided_at.ok_or_else(|| StoreError::Corrupt("a decision without decided_at".into()))?;
    let deadline_floor = decided.decided_before_deadline().map_or(i64::MIN, |t| t.unix());
    let updated = tx
        .execute(
            "UPDATE access_requests SET status = ?1, body = ?2
             WHERE request_id = ?3 AND user_id = ?4 AND status = 'pending' AND expires_at > ?5",
            params![
                decided.status.as_str(),
                body_of(decided)?,
                decided.request_id.as_str(),
                decided.user_id.as_str(),
                deadline_floor
            ],
        )
        .map_err(unavailable)?;
    if updated == 0 {
        return Err(StoreError::Conflict(format!("access request {} is no longer pending", decided.request_id)));
    }
    if let Some(consent) = grant {
        put_consent(tx, mode, consent, at)?;
    }
    events.into_iter().map(|e| emit_in(tx, mode, e)).collect()
}

#[async_trait]
impl AccessRequestReader for SqliteStore {
    async fn request(&self, user: &UserId, id: &RequestId) -> Result<Option<AccessRequest>, StoreError> {
        let (user, id) = (user.clone(), id.clone());
        self.read(move |c| {
            let body: Option<String> = c
                .prepare_cached("SELECT body FROM access_requests WHERE request_id = ?1 AND user_id = ?2")
                .and_then(|mut s| s.query_row([id.as_str(), user.as_str()], |r| r.get(0)).optional())
                .map_err(unavailable)?;
            body.as_deref().map(parse_body).transpose()
        })
        .await
    }

    async fn requests_for_user(&self, user: &UserId, query: &RequestQuery) -> Result<RequestPage, StoreError> {
        let (user, query) = (user.clone(), query.clone());
        self.read(move |c| page_where(c, "user_id", user.as_str(), &query)).await
    }

    async fn requests_by_agent(&self, agent: &AgentId, query: &RequestQuery) -> Result<RequestPage, StoreError> {
        let (agent, query) = (agent.clone(), query.clone());
        self.read(move |c| page_where(c, "agent", agent.as_str(), &query)).await
    }
}

#[async_trait]
impl AccessRequestWriter for SqliteStore {
    async fn file(&self, request: &AccessRequest, event: AuditEvent) -> Result<AuditEvent, StoreError> {
        let (request, mode) = (request.clone(), self.mode());
        self.transaction(move |tx| {
            tx.execute(
                "INSERT INTO access_requests (request_id, user_id, agent, status, expires_at, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    request.request_id.as_str(),
                    request.user_id.as_str(),
                    request.agent.as_str(),
                    request.status.as_str(),
                    request.expires_at.unix(),
                    body_of(&request)?
                ],
            )
            .map_err(unavailable)?;
            emit_in(tx, mode, event)
        })
        .await
    }

    async fn decide(
        &self,
        decided: &AccessRequest,
        grant: Option<&Consent>,
        events: Vec<AuditEvent>,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let (decided, grant, mode) = (decided.clone(), grant.cloned(), self.mode());
        self.transaction(move |tx| decide_in(tx, mode, &decided, grant.as_ref(), events)).await
    }
}

#[async_trait]
impl PendingRequests for SqliteStore {
    async fn pending_due(&self, now: Timestamp, limit: usize) -> Result<Vec<AccessRequest>, StoreError> {
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT body FROM access_requests WHERE status = 'pending' AND expires_at <= ?1
                     ORDER BY expires_at LIMIT ?2",
                )
                .map_err(unavailable)?;
            let bodies = stmt
                .query_map(params![now.unix(), limit as i64], |r| r.get::<_, String>(0))
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            bodies.iter().map(|b| parse_body(b)).collect()
        })
        .await
    }
}
