//! Access requests end to end, through the HTTP layer with API Gateway v2 events, on both
//! backends (the embedded store, and DynamoDB/KMS on moto): an agent files, the user approves
//! (exactly as asked, never wider), denies, or lets it expire; nobody else can decide it.

use e2e::{Answer, Event, T0, TestApp};
use serde_json::{Value, json};
use shared::domain::{
    AccessRequest, Actor, AgentId, AuditEvent, AuditEventType, ConsentDuration, Reason, Role, Scope, UserId,
};
use shared::ports::Clock;

const AGENT: &str = "agent-7";
const REASON: &str = "ticket 4411: billing page broken";

async fn file(app: &TestApp, user: &str, scope: &str, duration_seconds: i64) -> Answer {
    app.call(Event::new("POST", "/access-requests").caller(AGENT, "[support]").json(json!({
        "user_id": user,
        "reason": REASON,
        "scope": scope,
        "duration_seconds": duration_seconds,
    })))
    .await
}

async fn decide(app: &TestApp, user: &str, id: &str, decision: &str) -> Answer {
    app.call(Event::new("POST", &format!("/me/access-requests/{id}/{decision}")).user(user)).await
}

async fn my_requests(app: &TestApp, user: &str) -> Vec<Value> {
    let listed = app.call(Event::new("GET", "/me/access-requests").user(user)).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    listed.body["requests"].as_array().unwrap().clone()
}

async fn agent_requests(app: &TestApp, agent: &str) -> Vec<Value> {
    let listed = app.call(Event::new("GET", "/access-requests").caller(agent, "[support]")).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    listed.body["requests"].as_array().unwrap().clone()
}

/// The user's stream, oldest first.
async fn stream(app: &TestApp, user: &str) -> Vec<AuditEvent> {
    let mut events: Vec<AuditEvent> =
        app.audit().await.into_iter().filter(|e| e.user_id.as_ref().map(|u| u.as_str()) == Some(user)).collect();
    events.reverse();
    events
}

fn types(events: &[AuditEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

async fn an_approval_grants_exactly_what_was_asked_and_nothing_wider(app: TestApp) {
    let filed = file(&app, "alice", "read", 3600).await;
    assert_eq!(filed.status, 201, "{filed:?}");
    assert_eq!(filed.str("status"), "pending");
    assert_eq!((filed.str("user_id"), filed.str("agent"), filed.str("scope")), ("alice", AGENT, "read"));
    assert_eq!(filed.body["duration_seconds"], 3600);
    assert_eq!(filed.str("requested_at"), "2026-11-25T10:00:00Z");
    assert_eq!(filed.str("expires_at"), "2026-11-26T10:00:00Z", "24 h to decide, by default");
    let id = filed.str("request_id").to_owned();

    let listed = my_requests(&app, "alice").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0], filed.body, "the user sees the request as filed");
    assert_eq!(app.mint("alice").await.status, 403, "a pending request grants nothing");

    // A body cannot widen the approval: it is refused, and nothing changes.
    let widened = app
        .call(
            Event::new("POST", &format!("/me/access-requests/{id}/approve"))
                .user("alice")
                .json(json!({"scope": "full", "duration_seconds": 604800})),
        )
        .await;
    assert_eq!((widened.status, widened.slug()), (400, "invalid-request"));
    assert_eq!(app.consent("alice").await, None);

    app.clock.advance(600);
    let approved = decide(&app, "alice", &id, "approve").await;
    assert_eq!(approved.status, 201, "{approved:?}");
    assert_eq!(approved.str("scope"), "read");
    assert_eq!(approved.str("granted_at"), "2026-11-25T10:10:00Z");
    assert_eq!(approved.str("expires_at"), "2026-11-25T11:10:00Z", "the requested hour, from the approval");
    assert_eq!(approved.str("note"), REASON, "the agent's reason is the consent's note");
    let consent = app.consent("alice").await.expect("the approval granted a consent");
    assert_eq!((consent.scope, consent.consent_id.as_str()), (Scope::Read, approved.str("consent_id")));

    let minted = app.mint("alice").await;
    assert_eq!((minted.status, minted.str("scope")), (201, "read"));
    let token = minted.str("access_token").to_owned();
    let write = app.call(Event::new("POST", "/app/whoami").anonymous().bearer(&token)).await;
    assert_eq!(write.status, 403, "a read approval never lets the agent write");

    let again = decide(&app, "alice", &id, "approve").await;
    assert_eq!((again.status, again.slug()), (409, "request-not-pending"));
    let deny_after = decide(&app, "alice", &id, "deny").await;
    assert_eq!((deny_after.status, deny_after.slug()), (409, "request-not-pending"));

    let mine = agent_requests(&app, AGENT).await;
    assert_eq!(mine.len(), 1);
    assert_eq!(
        (mine[0]["status"].as_str(), mine[0]["consent_id"].as_str()),
        (Some("approved"), Some(consent.consent_id.as_str()))
    );
    assert_eq!(mine[0]["decided_at"], "2026-11-25T10:10:00Z");

    let events = stream(&app, "alice").await;
    assert_eq!(
        types(&events),
        ["request.filed", "token.denied", "request.approved", "consent.granted", "token.issued", "token.rejected"]
    );
    let (filed_event, approval, granted) = (&events[0], &events[2], &events[3]);
    assert_eq!((filed_event.actor.sub.as_str(), filed_event.detail.as_deref()), (AGENT, Some("duration_seconds=3600")));
    assert_eq!(filed_event.reason.as_ref().unwrap().as_str(), REASON);
    assert_eq!(approval.actor.sub.as_str(), "alice");
    for e in [filed_event, approval, granted] {
        assert_eq!(e.request_id.as_ref().map(|r| r.as_str()), Some(id.as_str()), "{e:?}");
    }
    assert_eq!(approval.consent_id, Some(consent.consent_id.clone()));
    assert_eq!(granted.consent_id, Some(consent.consent_id));
    assert_eq!(granted.expires_at.unwrap().unix(), T0 + 600 + 3600);
    assert_eq!(approval.seq + 1, granted.seq, "approval and grant are one atomic step, in order");
}

async fn a_denial_grants_nothing_and_is_final(app: TestApp) {
    let filed = file(&app, "alice", "full", 900).await;
    assert_eq!(filed.status, 201, "{filed:?}");
    let id = filed.str("request_id").to_owned();
    let denied = decide(&app, "alice", &id, "deny").await;
    assert_eq!(denied.status, 200, "{denied:?}");
    assert_eq!((denied.str("status"), denied.str("decided_at")), ("denied", "2026-11-25T10:00:00Z"));
    assert_eq!(app.consent("alice").await, None);
    let approve = decide(&app, "alice", &id, "approve").await;
    assert_eq!((approve.status, approve.slug()), (409, "request-not-pending"));
    assert_eq!(app.consent("alice").await, None, "a denied request can never be approved");
    assert_eq!(my_requests(&app, "alice").await[0]["status"], "denied");
    assert_eq!(agent_requests(&app, AGENT).await[0]["status"], "denied");
    assert_eq!(types(&stream(&app, "alice").await), ["request.filed", "request.denied"]);
}

async fn an_unanswered_request_expires_and_cannot_be_approved_after(app: TestApp) {
    let filed = file(&app, "alice", "read", 900).await;
    let id = filed.str("request_id").to_owned();
    app.clock.advance(24 * 3600 - 1);
    assert_eq!(my_requests(&app, "alice").await[0]["status"], "pending", "pending until the last second");
    app.clock.advance(1);
    assert_eq!(my_requests(&app, "alice").await[0]["status"], "expired");
    assert_eq!(agent_requests(&app, AGENT).await[0]["status"], "expired");

    let late = decide(&app, "alice", &id, "approve").await;
    assert_eq!((late.status, late.slug()), (409, "request-not-pending"));
    assert!(late.str("detail").contains("expired"), "{late:?}");
    assert_eq!(app.consent("alice").await, None);
    let late_deny = decide(&app, "alice", &id, "deny").await;
    assert_eq!(late_deny.status, 409);
    assert_eq!(
        types(&stream(&app, "alice").await),
        ["request.filed", "request.expired"],
        "the expiry is recorded once, by the system"
    );
    let expired = stream(&app, "alice").await.pop().unwrap();
    assert_eq!(expired.actor.sub.as_str(), "support-access");
}

async fn nobody_but_the_user_decides_and_agents_see_only_their_own(app: TestApp) {
    let filed = file(&app, "alice", "read", 900).await;
    let id = filed.str("request_id").to_owned();
    let before = app.snapshot(&["alice", "bob"]).await;

    for decision in ["approve", "deny"] {
        let by_bob = decide(&app, "bob", &id, decision).await;
        assert_eq!((by_bob.status, by_bob.slug()), (404, "not-found"), "someone else's request does not exist for bob");
        let by_agent = app
            .call(Event::new("POST", &format!("/me/access-requests/{id}/{decision}")).caller(AGENT, "[support]"))
            .await;
        assert_eq!(by_agent.status, 404, "the agent who filed it cannot decide it");
    }
    for bad in ["not-a-request", "00000000-0000-0000-0000-000000000000", &id.to_uppercase()] {
        let answer = decide(&app, "alice", bad, "approve").await;
        assert_eq!((answer.status, answer.slug()), (404, "not-found"), "{bad}");
    }
    assert!(my_requests(&app, "bob").await.is_empty());
    assert!(agent_requests(&app, "agent-8").await.is_empty(), "another agent sees none of agent-7's requests");

    let by_user = app
        .call(Event::new("POST", "/access-requests").user("mallory").json(json!({
            "user_id": "alice", "reason": REASON, "scope": "full", "duration_seconds": 900
        })))
        .await;
    assert_eq!((by_user.status, by_user.slug()), (403, "forbidden"), "only support files requests");
    let listing = app.call(Event::new("GET", "/access-requests").user("mallory")).await;
    assert_eq!(listing.status, 403);

    for (body, why) in [
        (json!({"user_id": "alice", "reason": REASON, "duration_seconds": 60}), "duration below the policy"),
        (json!({"user_id": "alice", "reason": "short", "duration_seconds": 900}), "reason too short"),
        (json!({"user_id": "alice", "reason": REASON, "scope": "admin", "duration_seconds": 900}), "unknown scope"),
        (json!({"user_id": "al ice", "reason": REASON, "duration_seconds": 900}), "bad user id"),
        (json!({"user_id": "alice", "reason": REASON, "duration_seconds": 900, "extra": 1}), "unknown field"),
    ] {
        let answer = app.call(Event::new("POST", "/access-requests").caller(AGENT, "[support]").json(body)).await;
        assert_eq!((answer.status, answer.slug()), (400, "invalid-request"), "{why}");
    }
    assert_eq!(app.snapshot(&["alice", "bob"]).await, before, "nothing refused wrote anything");
    assert_eq!(my_requests(&app, "alice").await[0]["status"], "pending");
}

async fn approving_replaces_a_wider_consent_with_the_one_requested(app: TestApp) {
    let wide = app.grant("alice", json!({"duration_seconds": 604800, "scope": "full"})).await;
    assert_eq!(wide.status, 201);
    let id = file(&app, "alice", "read", 900).await.str("request_id").to_owned();
    let approved = decide(&app, "alice", &id, "approve").await;
    assert_eq!(approved.status, 201, "{approved:?}");
    let consent = app.consent("alice").await.unwrap();
    assert_eq!((consent.scope, consent.expires_at.unix()), (Scope::Read, T0 + 900), "what she approved, no more");
    assert_ne!(consent.consent_id.as_str(), wide.str("consent_id"));
}

/// An agent whose `sub` is also a user's (here `agent-7`, who granted a consent as a user)
/// files for, mints as, and approves for their own account: each is refused with its own
/// slug and one `token.denied` on that account's stream, and nothing else is written.
async fn nobody_files_for_mints_as_or_approves_their_own_account(app: TestApp) {
    assert_eq!(app.grant(AGENT, json!({"duration_seconds": 3600, "scope": "full"})).await.status, 201);
    let consent = app.consent(AGENT).await.expect("agent-7 consented as a user");

    let filed = file(&app, AGENT, "full", 3600).await;
    assert_eq!((filed.status, filed.slug()), (403, "self-impersonation"), "{filed:?}");
    assert!(my_requests(&app, AGENT).await.is_empty(), "no request stored");

    let minted = app.mint(AGENT).await;
    assert_eq!((minted.status, minted.slug()), (403, "self-impersonation"), "a live consent changes nothing");
    assert!(minted.body.get("access_token").is_none());

    // A request for oneself stored before filing one was refused: approving it is refused too.
    let planted = AccessRequest::file(
        UserId::parse(AGENT).unwrap(),
        AgentId::parse(AGENT).unwrap(),
        Reason::parse(REASON).unwrap(),
        Scope::Full,
        ConsentDuration::parse(7200, &app.services().policy).unwrap(),
        app.clock.now(),
        &app.services().policy,
    );
    let actor = Actor { sub: AgentId::parse(AGENT).unwrap(), role: Role::Support };
    let filing = planted.event(AuditEventType::RequestFiled, actor, app.clock.now());
    app.services().request_writer.file(&planted, filing).await.unwrap();
    let id = planted.request_id.as_str();
    let approved = decide(&app, AGENT, id, "approve").await;
    assert_eq!((approved.status, approved.slug()), (403, "self-approval"), "{approved:?}");
    assert_eq!(app.consent(AGENT).await, Some(consent), "the consent is the one granted, not the request's");
    assert_eq!(my_requests(&app, AGENT).await[0]["status"], "pending", "the request stays as it was");

    let events = stream(&app, AGENT).await;
    assert_eq!(
        types(&events),
        ["consent.granted", "token.denied", "token.denied", "request.filed", "token.denied"],
        "one refusal each, no request stored, no token issued, no consent granted"
    );
    let refusals: Vec<_> = [&events[1], &events[2], &events[4]]
        .iter()
        .map(|e| (e.actor.role, e.detail.as_deref(), e.request_id.as_ref().map(|r| r.as_str())))
        .collect();
    assert_eq!(
        refusals,
        [
            (Role::Support, Some("self-impersonation"), None),
            (Role::Support, Some("self-impersonation"), None),
            (Role::User, Some("self-approval"), Some(id)),
        ]
    );
    for e in [&events[1], &events[2], &events[4]] {
        assert_eq!(e.actor.sub.as_str(), AGENT);
        assert_eq!(e.reason.as_ref().map(|r| r.as_str()), Some(REASON));
    }

    // Another agent is not the user: the same steps for agent-7's account go through.
    let other = app
        .call(Event::new("POST", "/access-requests").caller("agent-8", "[support]").json(json!({
            "user_id": AGENT, "reason": REASON, "scope": "read", "duration_seconds": 900,
        })))
        .await;
    assert_eq!(other.status, 201, "{other:?}");
    assert_eq!(decide(&app, AGENT, other.str("request_id"), "approve").await.status, 201);
}

e2e::on_both_backends!(
    nobody_files_for_mints_as_or_approves_their_own_account,
    an_approval_grants_exactly_what_was_asked_and_nothing_wider,
    a_denial_grants_nothing_and_is_final,
    an_unanswered_request_expires_and_cannot_be_approved_after,
    nobody_but_the_user_decides_and_agents_see_only_their_own,
    approving_replaces_a_wider_consent_with_the_one_requested,
    the_sweep_records_unanswered_requests_as_expired_once,
);

async fn the_sweep_records_unanswered_requests_as_expired_once(app: TestApp) {
    file(&app, "alice", "read", 900).await;
    file(&app, "bob", "read", 900).await;
    let decided = file(&app, "dave", "read", 900).await.str("request_id").to_owned();
    assert_eq!(decide(&app, "dave", &decided, "deny").await.status, 200);
    app.clock.advance(3600);
    file(&app, "carol", "read", 900).await;
    app.clock.advance(23 * 3600);
    assert_eq!(
        shared::app::expire_requests(app.services()).await.unwrap(),
        2,
        "alice's and bob's: not carol's yet, not dave's"
    );
    assert_eq!(shared::app::expire_requests(app.services()).await.unwrap(), 0, "each once");
    assert_eq!(types(&stream(&app, "alice").await), ["request.filed", "request.expired"]);
    assert_eq!(types(&stream(&app, "carol").await), ["request.filed"]);
    assert_eq!(types(&stream(&app, "dave").await), ["request.filed", "request.denied"]);
    assert_eq!(my_requests(&app, "alice").await[0]["status"], "expired");
    let late =
        decide(&app, "alice", my_requests(&app, "alice").await[0]["request_id"].as_str().unwrap(), "approve").await;
    assert_eq!(late.status, 409);
    assert_eq!(types(&stream(&app, "alice").await), ["request.filed", "request.expired"], "still once");
    app.clock.advance(3600);
    assert_eq!(shared::app::expire_requests(app.services()).await.unwrap(), 1, "carol's now");
}
