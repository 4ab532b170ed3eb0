//! Incident response, for callers in the operator group: the emergency stop (engage, read,
//! lift) and the revocation of every live token of one agent. Each is audited: the stop on the
//! unattributed stream (it is no one user's), a revocation on it too and on the stream of
//! every user for whom the agent holds a token that may still be live, so each of them reads
//! who cut the agent off and why.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;

use super::{ApiError, Services};
use crate::domain::{
    Actor, AgentId, AgentRevocation, AuditEvent, AuditEventType, AuditFilter, ControlState, EmergencyStop, Policy,
    Reason, Role, Timestamp, UserId,
};
use crate::ports::{AuditQuery, Controls, StoreError};

/// How long a process may answer from its last read of the controls: a use, mint or grant
/// sees an engaged stop or a revocation at most this late. Set on AWS (where each read is a
/// DynamoDB call on the hot path); local-api reads its SQLite file every time.
pub const CONTROLS_CACHE_TTL: Duration = Duration::from_secs(1);

/// How many `token.issued` events of the agent a revocation reads to find the users it
/// affects (pages of 100): an hour of one agent's mints, many times over. Past it the
/// tokens are revoked all the same; the answer says the users' logs were not all told.
pub const MAX_REVOCATION_SCAN: usize = 5_000;

/// How many user streams a revocation writes to at once.
const REVOCATION_FANOUT: usize = 16;

/// The controls read through a short per-process cache ([`CONTROLS_CACHE_TTL`]); writes go
/// straight through and clear it, so the process that writes reads its own writes.
pub struct CachedControls {
    inner: Arc<dyn Controls>,
    ttl: Duration,
    seen: Mutex<HashMap<Option<AgentId>, (Instant, ControlState)>>,
}

/// How many agents' states one process remembers (cleared when full: it is only a cache).
const CACHED_AGENTS: usize = 10_000;

impl CachedControls {
    pub fn new(inner: Arc<dyn Controls>, ttl: Duration) -> Self {
        Self { inner, ttl, seen: Mutex::new(HashMap::new()) }
    }

    fn clear(&self) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[async_trait]
impl Controls for CachedControls {
    async fn read(&self, agent: Option<&AgentId>) -> Result<ControlState, StoreError> {
        let key = agent.cloned();
        if let Some((at, state)) = self.seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(state.clone());
        }
        let state = self.inner.read(agent).await?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= CACHED_AGENTS {
            seen.clear();
        }
        seen.insert(key, (Instant::now(), state.clone()));
        Ok(state)
    }

    async fn set_stop(&self, stop: Option<&EmergencyStop>) -> Result<(), StoreError> {
        self.clear();
        self.inner.set_stop(stop).await
    }

    async fn revoke_agent(&self, revocation: &AgentRevocation) -> Result<(), StoreError> {
        self.clear();
        self.inner.revoke_agent(revocation).await
    }
}

/// Whether the emergency stop is engaged (for the mint, grant and approval use cases, which
/// refuse with [`ApiError::EmergencyStop`] while it is).
pub async fn stopped(services: &Services) -> Result<bool, ApiError> {
    Ok(services.controls.read(None).await?.stop.is_some())
}

fn operator(sub: &AgentId) -> Actor {
    Actor { sub: sub.clone(), role: Role::Operator }
}

/// The `/operator/emergency-stop` answer.
#[derive(Debug, Clone, Serialize)]
pub struct StopView {
    pub engaged: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stop: Option<EmergencyStop>,
}

/// `GET /operator/emergency-stop`.
pub async fn emergency_stop(services: &Services) -> Result<StopView, ApiError> {
    let stop = services.controls.read(None).await?.stop;
    Ok(StopView { engaged: stop.is_some(), stop })
}

/// `PUT /operator/emergency-stop`: from now on every grant, mint, approval and token use is
/// refused (`emergency-stop`) until an operator lifts it. Engaging it again replaces who,
/// when and why. The stop is stored before `stop.engaged` is written: if the audit write
/// fails the answer is 503 with the stop in force, and engaging again is safe.
pub async fn engage_stop(services: &Services, by: &AgentId, reason: Reason) -> Result<StopView, ApiError> {
    let now = services.clock.now();
    let stop = EmergencyStop { by: by.clone(), at: now, reason: reason.clone() };
    services.controls.set_stop(Some(&stop)).await?;
    let event = AuditEvent::new(AuditEventType::StopEngaged, now, None, operator(by)).with_reason(&reason);
    services.audit_appender.append(event).await?;
    Ok(StopView { engaged: true, stop: Some(stop) })
}

/// `DELETE /operator/emergency-stop`: lifts the stop (404 when it is not engaged), and
/// records `stop.lifted`, whose detail names the stop it ends.
pub async fn lift_stop(services: &Services, by: &AgentId) -> Result<(), ApiError> {
    let Some(stop) = services.controls.read(None).await?.stop else {
        return Err(ApiError::NotFound("the emergency stop is not engaged"));
    };
    let now = services.clock.now();
    services.controls.set_stop(None).await?;
    let event = AuditEvent::new(AuditEventType::StopLifted, now, None, operator(by))
        .with_reason(&stop.reason)
        .with_detail(format!("engaged by {} at {}", stop.by, stop.at.rfc3339()));
    services.audit_appender.append(event).await?;
    Ok(())
}

/// The `POST /operator/agents/{agent_id}/revoke-tokens` answer.
#[derive(Debug, Clone, Serialize)]
pub struct RevocationView {
    pub agent: AgentId,
    /// Every token of the agent issued at or before this second is refused.
    pub revoked_before: Timestamp,
    /// How many users' logs got `token.revoked` (those the agent held a possibly live token for).
    pub users_notified: usize,
    /// False when the agent minted more than the scan reads: every token is revoked all the
    /// same, but some users' logs were not told (the auditor finds them by actor and time).
    pub complete: bool,
}

/// Revokes every token `agent` holds: stored first (so the tokens die before anything else
/// happens), then `token.revoked` on the unattributed stream (always, so the act is on the log
/// even when no user is affected) and on the stream of every user for whom the agent was
/// issued a token that may still be accepted. Tokens the agent mints afterwards work: removing
/// the agent from the support group at the identity provider is what stops new ones.
pub async fn revoke_agent_tokens(
    services: &Services,
    by: &AgentId,
    agent: &AgentId,
    reason: Reason,
) -> Result<RevocationView, ApiError> {
    let now = services.clock.now();
    let revocation = AgentRevocation::at(agent.clone(), now, by.clone(), reason.clone());
    services.controls.revoke_agent(&revocation).await?;
    let (users, complete) = users_with_live_tokens(services, agent, now).await?;
    let revoked = |user: Option<UserId>| {
        AuditEvent::new(AuditEventType::TokenRevoked, now, user, operator(by))
            .with_reason(&reason)
            .with_detail(format!("agent={agent}"))
    };
    services.audit_appender.append(revoked(None)).await?;
    let users: Vec<UserId> = users.into_iter().collect();
    for chunk in users.chunks(REVOCATION_FANOUT) {
        let mut writes = tokio::task::JoinSet::new();
        for user in chunk {
            let (appender, event) = (services.audit_appender.clone(), revoked(Some(user.clone())));
            writes.spawn(async move { appender.append(event).await });
        }
        while let Some(done) = writes.join_next().await {
            done.map_err(|e| ApiError::Unavailable(format!("audit write task: {e}")))??;
        }
    }
    Ok(RevocationView { agent: agent.clone(), revoked_before: now, users_notified: users.len(), complete })
}

/// The users `agent` was issued a token for that may still be accepted at `now` (its `exp`
/// plus the leeway not yet past), and whether the scan read every candidate.
async fn users_with_live_tokens(
    services: &Services,
    agent: &AgentId,
    now: Timestamp,
) -> Result<(BTreeSet<UserId>, bool), ApiError> {
    let leeway = services.policy.leeway_seconds;
    let filter = AuditFilter {
        actor: Some(agent.clone()),
        event_type: Some(AuditEventType::TokenIssued),
        from: Some(now.plus_seconds(-(Policy::MAX_TOKEN_TTL_SECONDS + Policy::MAX_LEEWAY_SECONDS))),
        to: Some(now),
        ..AuditFilter::default()
    };
    let (mut users, mut read, mut after) = (BTreeSet::new(), 0, None);
    loop {
        let page = services.audit_reader.query(&AuditQuery { filter: filter.clone(), limit: 100, after, now }).await?;
        read += page.events.len();
        for e in page.events {
            let live = e.expires_at.is_none_or(|exp| exp.plus_seconds(leeway) > now);
            if let (true, Some(user)) = (live, e.user_id) {
                users.insert(user);
            }
        }
        match page.next {
            Some(next) if read < MAX_REVOCATION_SCAN => after = Some(next),
            Some(_) => return Ok((users, false)),
            None => return Ok((users, true)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counting {
        reads: AtomicUsize,
        stop: Mutex<Option<EmergencyStop>>,
    }

    #[async_trait]
    impl Controls for Counting {
        async fn read(&self, _: Option<&AgentId>) -> Result<ControlState, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(ControlState { stop: self.stop.lock().unwrap().clone(), revocation: None })
        }
        async fn set_stop(&self, stop: Option<&EmergencyStop>) -> Result<(), StoreError> {
            *self.stop.lock().unwrap() = stop.cloned();
            Ok(())
        }
        async fn revoke_agent(&self, _: &AgentRevocation) -> Result<(), StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_cache_answers_within_its_ttl_and_a_write_clears_it() {
        let inner = Arc::new(Counting::default());
        let cached = CachedControls::new(inner.clone(), Duration::from_secs(60));
        let agent = AgentId::parse("agent-7").unwrap();
        cached.read(Some(&agent)).await.unwrap();
        cached.read(Some(&agent)).await.unwrap();
        assert_eq!(inner.reads.load(Ordering::SeqCst), 1, "the second read is cached");
        let stop = EmergencyStop {
            by: AgentId::parse("op-1").unwrap(),
            at: Timestamp::from_unix(1),
            reason: Reason::parse("incident 42").unwrap(),
        };
        cached.set_stop(Some(&stop)).await.unwrap();
        assert_eq!(cached.read(Some(&agent)).await.unwrap().stop, Some(stop), "the writer reads its own write");
        let uncached = CachedControls::new(inner.clone(), Duration::ZERO);
        uncached.read(None).await.unwrap();
        uncached.read(None).await.unwrap();
        assert_eq!(inner.reads.load(Ordering::SeqCst), 4, "a zero TTL reads every time");
    }
}
