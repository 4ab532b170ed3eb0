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

/// Every page of the listing `path?query` as `who` sees it, following `next_cursor` to its
/// end: the pages' sizes and every request id, in the order listed.
async fn every_page(app: &TestApp, path: &str, query: &str, who: impl Fn(Event) -> Event) -> (Vec<usize>, Vec<String>) {
    let (mut sizes, mut ids) = (Vec::new(), Vec::new());
    let mut cursor: Option<String> = None;
    loop {
        let mut q = query.to_owned();
        if let Some(c) = &cursor {
            q = format!("{q}{}cursor={c}", if q.is_empty() { "" } else { "&" });
        }
        let page = app.call(who(Event::new("GET", path).query(&q))).await;
        assert_eq!(page.status, 200, "{page:?}");
        let requests = page.body["requests"].as_array().unwrap();
        sizes.push(requests.len());
        ids.extend(requests.iter().map(|r| r["request_id"].as_str().unwrap().to_owned()));
        assert!(sizes.len() <= 60, "the cursors never end");
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(page.body["next_cursor"].is_null(), "{page:?}");
                return (sizes, ids);
            }
        }
    }
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

/// 150 requests: each list (the user's, the agent's) pages through all of them, newest
/// first, none twice; a cursor works only for the very list it came from.
async fn long_lists_page_through_every_request_once_with_sealed_cursors(app: TestApp) {
    let mut filed = Vec::new();
    for _ in 0..150 {
        let answer = file(&app, "alice", "read", 900).await;
        assert_eq!(answer.status, 201, "{answer:?}");
        filed.push(answer.str("request_id").to_owned());
    }
    let mut newest_first = filed.clone();
    newest_first.sort_by(|a, b| b.cmp(a));
    let as_alice = |e: Event| e.user("alice");
    let as_agent = |e: Event| e.caller(AGENT, "[support]");

    let (sizes, ids) = every_page(&app, "/me/access-requests", "", as_alice).await;
    assert_eq!(ids, newest_first, "all 150, newest first, none twice");
    assert_eq!(sizes[..3], [50, 50, 50], "50 a page by default");
    let (sizes, ids) = every_page(&app, "/me/access-requests", "limit=100", as_alice).await;
    assert_eq!((sizes[..2].to_vec(), ids), (vec![100, 50], newest_first.clone()));
    let (sizes, ids) = every_page(&app, "/access-requests", "limit=7", as_agent).await;
    assert_eq!(ids, newest_first, "the agent's list too");
    assert!(sizes.iter().all(|n| *n <= 7) && sizes.len() >= 22, "{sizes:?}");

    let first = app.call(Event::new("GET", "/me/access-requests").query("limit=10").user("alice")).await;
    let cursor = first.str("next_cursor").to_owned();
    let second = app
        .call(Event::new("GET", "/me/access-requests").query(&format!("limit=10&cursor={cursor}")).user("alice"))
        .await;
    assert_eq!(second.body["requests"][0]["request_id"], newest_first[10].as_str());

    let (payload, tag) = cursor.split_once('.').unwrap();
    let edited_tag = format!("{payload}.{}{}", if tag.starts_with('A') { "B" } else { "A" }, &tag[1..]);
    let edited_payload = format!("{}{}.{tag}", if payload.starts_with('e') { "f" } else { "e" }, &payload[1..]);
    let log_cursor = {
        let log = app.call(Event::new("GET", "/me/access-log").query("limit=1").user("alice")).await;
        log.str("next_cursor").to_owned()
    };
    let agent_cursor = {
        let page = app.call(Event::new("GET", "/access-requests").query("limit=1").caller(AGENT, "[support]")).await;
        page.str("next_cursor").to_owned()
    };
    for (path, query, who, why) in [
        ("/me/access-requests", format!("cursor={edited_tag}"), "alice", "an edited tag"),
        ("/me/access-requests", format!("cursor={edited_payload}"), "alice", "an edited position"),
        ("/me/access-requests", "cursor=forged.cursor".to_owned(), "alice", "a forged cursor"),
        ("/me/access-requests", format!("cursor={cursor}"), "bob", "alice's cursor, as bob"),
        ("/me/access-requests", format!("status=pending&cursor={cursor}"), "alice", "another filter"),
        ("/me/access-requests", format!("cursor={log_cursor}"), "alice", "an access-log cursor"),
        ("/me/access-requests", format!("cursor={agent_cursor}"), "alice", "the agent's list's cursor"),
        ("/me/access-requests", "status=denied".to_owned(), "alice", "a status other than pending"),
        ("/me/access-requests", "limit=101".to_owned(), "alice", "a page over 100"),
        ("/me/access-requests", "user_id=bob".to_owned(), "alice", "an unknown parameter"),
    ] {
        let answer = app.call(Event::new("GET", path).query(&query).user(who)).await;
        assert_eq!((answer.status, answer.slug()), (400, "invalid-request"), "{why}: {answer:?}");
    }
    let stolen = app
        .call(Event::new("GET", "/access-requests").query(&format!("cursor={cursor}")).caller("agent-8", "[support]"))
        .await;
    assert_eq!((stolen.status, stolen.slug()), (400, "invalid-request"), "a user's cursor on an agent's list");
}

/// A real request behind 100 newer junk ones is still found: on the next page, and first of
/// all with `?status=pending` once the junk is no longer pending.
async fn a_pending_request_behind_a_hundred_junk_ones_is_found(app: TestApp) {
    let real = app
        .call(Event::new("POST", "/access-requests").caller("agent-8", "[support]").json(json!({
            "user_id": "alice", "reason": "ticket 9000: the real one", "scope": "read", "duration_seconds": 900,
        })))
        .await;
    assert_eq!(real.status, 201, "{real:?}");
    let real = real.str("request_id").to_owned();
    let mut junk = Vec::new();
    for _ in 0..100 {
        junk.push(file(&app, "alice", "full", 900).await.str("request_id").to_owned());
    }
    let as_alice = |e: Event| e.user("alice");
    let first = app.call(Event::new("GET", "/me/access-requests").query("limit=100").user("alice")).await;
    assert!(!first.body["requests"].as_array().unwrap().iter().any(|r| r["request_id"] == real.as_str()));
    let (_, ids) = every_page(&app, "/me/access-requests", "limit=100", as_alice).await;
    assert_eq!(ids.last(), Some(&real), "on the next page, not hidden");
    let (_, pending) = every_page(&app, "/me/access-requests", "status=pending", as_alice).await;
    assert_eq!(pending.len(), 101, "all pending now");

    for id in &junk {
        assert_eq!(decide(&app, "alice", id, "deny").await.status, 200);
    }
    let (sizes, pending) = every_page(&app, "/me/access-requests", "status=pending&limit=1", as_alice).await;
    assert_eq!(pending, [real.as_str()], "{sizes:?}");
    let only = app.call(Event::new("GET", "/me/access-requests").query("status=pending").user("alice")).await;
    assert_eq!(only.body["requests"][0]["request_id"], real.as_str(), "first of all, on the first page");
    assert_eq!(only.body["requests"][0]["status"], "pending");
    assert!(only.body["next_cursor"].is_null());
    let (_, agents) =
        every_page(&app, "/access-requests", "status=pending", |e| e.caller("agent-8", "[support]")).await;
    assert_eq!(agents, [real.as_str()], "the agent's list filters the same way");
    assert!(
        every_page(&app, "/access-requests", "status=pending", |e| e.caller(AGENT, "[support]")).await.1.is_empty()
    );

    app.clock.advance(24 * 3600);
    let (_, pending) = every_page(&app, "/me/access-requests", "status=pending", as_alice).await;
    assert!(pending.is_empty(), "past its deadline a request is no longer pending, whatever storage says");
}

e2e::on_both_backends!(
    long_lists_page_through_every_request_once_with_sealed_cursors,
    a_pending_request_behind_a_hundred_junk_ones_is_found,
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
