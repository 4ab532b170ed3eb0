//! Incident response over the HTTP handlers, on both backends: the emergency stop refuses every
//! use, mint, grant and approval until it is lifted; revoking one agent's tokens refuses that
//! agent's live tokens and no one else's, and a token it mints afterwards works; every user
//! affected reads it on their log; only the operator group may do either.

use e2e::{Event, TestApp};
use serde_json::{Value, json};
use shared::domain::{AuditEvent, AuditEventType, Role};

const OPERATOR: (&str, &str) = ("op-1", "[operator]");

async fn mint_as(app: &TestApp, agent: &str, user: &str) -> String {
    let answer = app
        .call(
            Event::new("POST", "/tokens")
                .caller(agent, "[support]")
                .json(json!({"user_id": user, "reason": "ticket 4411: billing page broken"})),
        )
        .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    answer.str("access_token").to_owned()
}

async fn uses(app: &TestApp, token: &str) -> bool {
    app.authorize(token, "GET", "/app/orders").await.is_authorized
}

/// `user`'s stream (the unattributed one for `None`), newest first.
async fn log_of(app: &TestApp, user: Option<&str>) -> Vec<AuditEvent> {
    app.audit().await.into_iter().filter(|e| e.user_id.as_ref().map(|u| u.as_str()) == user).collect()
}

fn operator(method: &str, path: &str, body: Option<Value>) -> Event {
    let event = Event::new(method, path).caller(OPERATOR.0, OPERATOR.1);
    match body {
        Some(body) => event.json(body),
        None => event,
    }
}

async fn the_emergency_stop_refuses_every_use_mint_grant_and_approval(app: TestApp) {
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    let token = mint_as(&app, "agent-7", "alice").await;
    assert!(uses(&app, &token).await);
    let filed = app
        .call(Event::new("POST", "/access-requests").caller("agent-7", "[support]").json(json!({
            "user_id": "carol", "reason": "ticket 4412", "duration_seconds": 3600
        })))
        .await;
    assert_eq!(filed.status, 201, "{filed:?}");

    // A support agent (even one also in other groups) cannot touch the controls.
    for event in [
        Event::new("PUT", "/operator/emergency-stop").json(json!({"reason": "x"})),
        Event::new("GET", "/operator/emergency-stop"),
        Event::new("DELETE", "/operator/emergency-stop"),
    ] {
        let refused = app.call(event.caller("agent-7", "[support auditor introspect]")).await;
        assert_eq!((refused.status, refused.slug()), (403, "forbidden"));
    }
    let status = app.call(operator("GET", "/operator/emergency-stop", None)).await;
    assert_eq!((status.status, &status.body), (200, &json!({"engaged": false})));

    let engaged =
        app.call(operator("PUT", "/operator/emergency-stop", Some(json!({"reason": "incident 42: key leak"})))).await;
    assert_eq!(engaged.status, 200, "{engaged:?}");
    assert_eq!((engaged.body["engaged"].as_bool(), engaged.str("by")), (Some(true), "op-1"));
    let status = app.call(operator("GET", "/operator/emergency-stop", None)).await;
    assert_eq!((status.body["engaged"].as_bool(), status.str("reason")), (Some(true), "incident 42: key leak"));

    // Every use is refused, on every entry point, and lands on the user's log.
    assert!(!uses(&app, &token).await, "the authorizer refuses a live token");
    let whoami = app.call(Event::new("GET", "/app/whoami").bearer(&token)).await;
    assert_eq!((whoami.status, whoami.slug()), (401, "unauthenticated"));
    assert_eq!(app.introspect(&token).await.body, json!({"active": false}));
    let mint = app.mint("alice").await;
    assert_eq!((mint.status, mint.slug()), (403, "emergency-stop"));
    let grant = app.grant("bob", json!({"duration_seconds": 3600})).await;
    assert_eq!((grant.status, grant.slug()), (403, "emergency-stop"));
    let approve = app
        .call(Event::new("POST", &format!("/me/access-requests/{}/approve", filed.str("request_id"))).user("carol"))
        .await;
    assert_eq!((approve.status, approve.slug()), (403, "emergency-stop"));
    assert_eq!(app.consent("bob").await, None);
    assert_eq!(app.consent("carol").await, None);

    let alice = log_of(&app, Some("alice")).await;
    let refusals: Vec<_> = alice
        .iter()
        .filter(|e| e.event_type == AuditEventType::TokenRejected)
        .map(|e| e.detail.as_deref().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(refusals, ["emergency-stop", "emergency-stop", "emergency-stop"], "authorizer, whoami, introspect");
    assert_eq!(alice[0].event_type, AuditEventType::TokenDenied);
    assert_eq!(alice[0].detail.as_deref(), Some("emergency-stop"));
    let stop = &log_of(&app, None).await[0];
    assert_eq!(
        (stop.event_type, stop.actor.sub.as_str(), stop.actor.role),
        (AuditEventType::StopEngaged, "op-1", Role::Operator)
    );
    assert_eq!(stop.reason.as_ref().unwrap().as_str(), "incident 42: key leak");

    // Lifted: the same token works again; lifting twice is 404.
    let lifted = app.call(operator("DELETE", "/operator/emergency-stop", None)).await;
    assert_eq!(lifted.status, 204, "{lifted:?}");
    assert!(uses(&app, &token).await, "the stop refused uses; it did not revoke anything");
    let again = app.call(operator("DELETE", "/operator/emergency-stop", None)).await;
    assert_eq!((again.status, again.slug()), (404, "not-found"));
    let lift = &log_of(&app, None).await[0];
    assert_eq!((lift.event_type, lift.actor.role), (AuditEventType::StopLifted, Role::Operator));
    assert_eq!(app.grant("bob", json!({"duration_seconds": 3600})).await.status, 201);
}

async fn revoking_an_agent_kills_its_live_tokens_and_no_one_elses(app: TestApp) {
    // carol's token from agent-7 ran out long ago: her log is not told.
    assert_eq!(app.grant("carol", json!({"duration_seconds": 10800})).await.status, 201);
    let stale = mint_as(&app, "agent-7", "carol").await;
    app.clock.advance(2000);
    assert!(!uses(&app, &stale).await);
    for user in ["alice", "bob"] {
        assert_eq!(app.grant(user, json!({"duration_seconds": 3600})).await.status, 201);
    }
    let (a7_alice, a7_bob, a8_alice) = (
        mint_as(&app, "agent-7", "alice").await,
        mint_as(&app, "agent-7", "bob").await,
        mint_as(&app, "agent-8", "alice").await,
    );

    let path = "/operator/agents/agent-7/revoke-tokens";
    let refused = app.call(Event::new("POST", path).caller("agent-8", "[support]").json(json!({"reason": "x"}))).await;
    assert_eq!((refused.status, refused.slug()), (403, "forbidden"));
    assert!(uses(&app, &a7_alice).await, "a refused revocation revokes nothing");

    let revoked = app.call(operator("POST", path, Some(json!({"reason": "laptop stolen"})))).await;
    assert_eq!(revoked.status, 200, "{revoked:?}");
    assert_eq!((revoked.str("agent"), &revoked.body["users_notified"]), ("agent-7", &json!(2)));
    assert_eq!(revoked.body["complete"], json!(true));

    assert!(!uses(&app, &a7_alice).await && !uses(&app, &a7_bob).await, "agent-7's tokens are dead");
    assert_eq!(app.introspect(&a7_bob).await.body, json!({"active": false}));
    assert!(uses(&app, &a8_alice).await, "another agent's token on the same user still works");

    for user in ["alice", "bob"] {
        let log = log_of(&app, Some(user)).await;
        let told = log.iter().find(|e| e.event_type == AuditEventType::TokenRevoked).expect("told");
        assert_eq!((told.actor.sub.as_str(), told.actor.role), ("op-1", Role::Operator));
        assert_eq!(
            (told.reason.as_ref().unwrap().as_str(), told.detail.as_deref()),
            ("laptop stolen", Some("agent=agent-7"))
        );
        assert!(log.iter().any(|e| e.event_type == AuditEventType::TokenRejected
            && e.detail.as_deref().unwrap().starts_with("agent-revoked")));
    }
    assert!(log_of(&app, Some("carol")).await.iter().all(|e| e.event_type != AuditEventType::TokenRevoked));
    let summary = &log_of(&app, None).await[0];
    assert_eq!((summary.event_type, summary.detail.as_deref()), (AuditEventType::TokenRevoked, Some("agent=agent-7")));

    // A token minted after the revocation's second works (removing the agent from the
    // support group is what stops new ones).
    app.clock.advance(1);
    let fresh = mint_as(&app, "agent-7", "alice").await;
    assert!(uses(&app, &fresh).await);
    assert!(!uses(&app, &a7_alice).await, "the old one stays dead");

    // An id that is not one is a 400, not a revocation of nobody.
    let bad = app
        .call(operator("POST", "/operator/agents/a%2Fb/revoke-tokens", Some(json!({"reason": "bad agent id"}))))
        .await;
    assert_eq!((bad.status, bad.slug()), (400, "invalid-request"));
    let escaped = app
        .call(operator("POST", "/operator/agents/agent%2D8/revoke-tokens", Some(json!({"reason": "second incident"}))))
        .await;
    assert_eq!((escaped.status, escaped.str("agent")), (200, "agent-8"));
    assert!(!uses(&app, &a8_alice).await);
}

e2e::on_both_backends!(
    the_emergency_stop_refuses_every_use_mint_grant_and_approval,
    revoking_an_agent_kills_its_live_tokens_and_no_one_elses,
);
