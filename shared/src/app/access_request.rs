use super::Services;
use crate::domain::{
    AccessRequest, Actor, AgentId, ApproveError, AuditEvent, AuditEventType, Consent, ConsentDuration, Reason,
    RequestId, RequestStatus, Role, Scope, UserId, agent_is_user,
};
use crate::ports::{RequestPage, RequestQuery, StoreError};
use serde::Serialize;

use super::ApiError;

/// One page of `GET /me/access-requests` or `GET /access-requests`.
#[derive(Debug, Clone, Serialize)]
pub struct RequestPageView {
    /// Newest first, statuses as of now.
    pub requests: Vec<AccessRequest>,
    /// Opaque; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Which requests a listing shows: everything, or only those pending now (so that no pile
/// of decided or expired requests can push a pending one out of sight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestListing {
    All,
    Pending,
}

/// What a request list's cursor is sealed with: whose list, and which of its requests. It
/// shares no field with an audit filter, so neither kind of cursor opens for the other.
#[derive(Serialize)]
struct ListFilter<'a> {
    requests_of: &'static str,
    id: &'a str,
    pending_only: bool,
}

impl ListFilter<'_> {
    /// The page to read: after the cursor's position, if this very list sealed it.
    async fn query(&self, services: &Services, limit: usize, cursor: Option<&str>) -> Result<RequestQuery, ApiError> {
        let after = services.cursor_key.open_cursor(cursor, self).await?;
        Ok(RequestQuery { limit, after, pending_at: self.pending_only.then(|| services.clock.now()) })
    }

    /// The page as answered: statuses as of now, the next position sealed for this list.
    async fn view(&self, services: &Services, page: RequestPage) -> Result<RequestPageView, ApiError> {
        let now = services.clock.now();
        Ok(RequestPageView {
            requests: page.requests.into_iter().map(|r| r.as_of(now)).collect(),
            next_cursor: services.cursor_key.seal_cursor(self, page.next).await?,
        })
    }
}

/// `POST /access-requests`: `agent` asks `user` for access with `scope` for `duration`.
pub async fn file_request(
    services: &Services,
    agent: &AgentId,
    user: UserId,
    reason: Reason,
    scope: Scope,
    duration: ConsentDuration,
) -> Result<AccessRequest, ApiError> {
    if !services.policy.enabled {
        return Err(ApiError::FeatureDisabled);
    }
    let now = services.clock.now();
    if agent_is_user(agent, &user) {
        // Refused like a mint for oneself, and on the same record: nothing is stored.
        let refused = AuditEvent::new(
            AuditEventType::TokenDenied,
            now,
            Some(user),
            Actor { sub: agent.clone(), role: Role::Support },
        )
        .with_reason(&reason)
        .with_detail("self-impersonation");
        services.audit_appender.append(refused).await?;
        return Err(ApiError::SelfImpersonation);
    }
    let request = AccessRequest::file(user, agent.clone(), reason, scope, duration, now, &services.policy);
    let event = request
        .event(AuditEventType::RequestFiled, Actor { sub: agent.clone(), role: Role::Support }, now)
        .with_detail(format!("duration_seconds={}", request.duration_seconds));
    services.request_writer.file(&request, event).await?;
    Ok(request)
}

/// `GET /me/access-requests`: one page of the user's requests, newest first, statuses as of
/// now; the cursor only works for this user's list with the same `listing`.
pub async fn user_requests(
    services: &Services,
    user: &UserId,
    listing: RequestListing,
    limit: usize,
    cursor: Option<&str>,
) -> Result<RequestPageView, ApiError> {
    let filter =
        ListFilter { requests_of: "user", id: user.as_str(), pending_only: listing == RequestListing::Pending };
    let page = services.request_reader.requests_for_user(user, &filter.query(services, limit, cursor).await?).await?;
    filter.view(services, page).await
}

/// `GET /access-requests`: one page of the requests `agent` filed, newest first, statuses as
/// of now; the cursor only works for this agent's list with the same `listing`.
pub async fn agent_requests(
    services: &Services,
    agent: &AgentId,
    listing: RequestListing,
    limit: usize,
    cursor: Option<&str>,
) -> Result<RequestPageView, ApiError> {
    let filter =
        ListFilter { requests_of: "agent", id: agent.as_str(), pending_only: listing == RequestListing::Pending };
    let page = services.request_reader.requests_by_agent(agent, &filter.query(services, limit, cursor).await?).await?;
    filter.view(services, page).await
}

async fn own_request(services: &Services, user: &UserId, id: &RequestId) -> Result<AccessRequest, ApiError> {
    // Someone else's request is as absent as one that never existed.
    services.request_reader.request(user, id).await?.ok_or(ApiError::NotFound("no such access request"))
}

fn user_actor(user: &UserId) -> Actor {
    Actor { sub: user.clone().into(), role: Role::User }
}

/// `POST /me/access-requests/{id}/approve`: grants the consent exactly as requested (scope,
/// duration from now, the reason as its note), replacing any active consent, in one write
/// with `request.approved` and `consent.granted`. A request past its deadline is recorded
/// as expired and refused.
pub async fn approve_request(services: &Services, user: &UserId, id: &RequestId) -> Result<Consent, ApiError> {
    if !services.policy.enabled {
        return Err(ApiError::FeatureDisabled);
    }
    if super::stopped(services).await? {
        return Err(ApiError::EmergencyStop);
    }
    let now = services.clock.now();
    let request = own_request(services, user, id).await?;
    if agent_is_user(&request.agent, user) {
        // Only a request stored before filing refused this could be one; it stays pending.
        let refused = request.event(AuditEventType::TokenDenied, user_actor(user), now).with_detail("self-approval");
        services.audit_appender.append(refused).await?;
        return Err(ApiError::SelfApproval);
    }
    let (approved, consent) = match request.approve(now, &services.policy) {
        Ok(pair) => pair,
        Err(ApproveError::NotPending(e)) => {
            record_expiry_if_due(services, &request).await?;
            return Err(ApiError::RequestNotPending(e.0));
        }
        Err(ApproveError::Duration(e)) => {
            return Err(ApiError::InvalidRequest(format!(
                "the request cannot be approved under this deployment's policy: {e}"
            )));
        }
    };
    let actor = user_actor(user);
    let approval = approved.event(AuditEventType::RequestApproved, actor.clone(), now).with_consent(
        &consent.consent_id,
        consent.scope,
        consent.expires_at,
    );
    let granted = AuditEvent::new(AuditEventType::ConsentGranted, now, Some(user.clone()), actor)
        .with_consent(&consent.consent_id, consent.scope, consent.expires_at)
        .with_request(&approved.request_id);
    decide(services, &approved, Some(&consent), vec![approval, granted]).await?;
    Ok(consent)
}

/// `POST /me/access-requests/{id}/deny`: the request ends without access.
pub async fn deny_request(services: &Services, user: &UserId, id: &RequestId) -> Result<AccessRequest, ApiError> {
    let now = services.clock.now();
    let request = own_request(services, user, id).await?;
    let denied = match request.settle(RequestStatus::Denied, now) {
        Ok(denied) => denied,
        Err(e) => {
            record_expiry_if_due(services, &request).await?;
            return Err(ApiError::RequestNotPending(e.0));
        }
    };
    let event = denied.event(AuditEventType::RequestDenied, user_actor(user), now);
    decide(services, &denied, None, vec![event]).await?;
    Ok(denied)
}

/// How many requests one sweep settles at most (the next sweep takes the rest).
pub const MAX_SWEPT_REQUESTS: usize = 500;

/// The sweep (local-api's timer; the `request-expiry` function's schedule on AWS): records
/// `request.expired` for every request still pending past its deadline, so an unanswered
/// request's end is on the log whether or not anyone looks at it again. Returns how many.
pub async fn expire_requests(services: &Services) -> Result<usize, ApiError> {
    let now = services.clock.now();
    let due = services.pending_requests.pending_due(now, MAX_SWEPT_REQUESTS).await?;
    let mut recorded = 0;
    for request in &due {
        if record_expiry_if_due(services, request).await? {
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// Records `request.expired` for a stored pending request whose deadline passed (the sweep
/// may not have reached it yet); nothing when it is not due or someone else recorded it.
/// Returns whether it wrote.
async fn record_expiry_if_due(services: &Services, request: &AccessRequest) -> Result<bool, ApiError> {
    let now = services.clock.now();
    let Ok(expired) = request.settle(RequestStatus::Expired, now) else { return Ok(false) };
    let event = expired.event(AuditEventType::RequestExpired, Actor::system(), now);
    match services.request_writer.decide(&expired, None, vec![event]).await {
        Ok(_) => Ok(true),
        Err(StoreError::Conflict(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn decide(
    services: &Services,
    decided: &AccessRequest,
    grant: Option<&Consent>,
    events: Vec<AuditEvent>,
) -> Result<(), ApiError> {
    match services.request_writer.decide(decided, grant, events).await {
        Ok(_) => Ok(()),
        Err(StoreError::Conflict(_)) => {
            Err(ApiError::Conflict("the request was decided while this decision ran; read it again"))
        }
        Err(e) => Err(e.into()),
    }
}
