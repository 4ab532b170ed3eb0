//! The two entry points besides the local demo route: the Lambda authorizer, driven by API
//! Gateway's authorizer event (payload 2.0), and `POST /introspect` (RFC 7662), on the
//! embedded store and a fixed clock. The attack matrix (`attacks.rs`) covers their refusals.

use e2e::{Event, RESOURCE_SERVER, T0, TestApp, authorizer_event, test_policy};
use serde_json::{Value, json};
use shared::domain::{AuditEventType, Policy};

async fn app_with_token(scope: &str) -> (TestApp, String) {
    let app = TestApp::new().await;
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600, "scope": scope})).await.status, 201);
    let token = app.mint("alice").await.str("access_token").to_owned();
    (app, token)
}

#[tokio::test]
async fn the_authorizer_allows_a_live_token_with_the_five_context_keys_in_the_simple_response() {
    let (app, token) = app_with_token("full").await;
    let consent_id = app.consent("alice").await.unwrap().consent_id;
    let response = app.authorize(&token, "DELETE", "/orders/42").await;
    let wire = serde_json::to_value(&response).unwrap();
    let jti = response.context["jti"].as_str().unwrap().to_owned();
    assert_eq!(
        wire,
        json!({
            "isAuthorized": true,
            "context": {
                "user_id": "alice", "acting_agent": "agent-7", "scope": "full",
                "consent_id": consent_id.as_str(), "jti": jti,
            }
        })
    );
    let keys: Vec<&str> = response.context.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = shared::http::CONTEXT_KEYS.to_vec();
    expected.sort();
    assert_eq!(keys, expected);
    let used = &app.audit().await[0];
    assert_eq!(used.event_type, AuditEventType::TokenUsed);
    assert_eq!(used.detail.as_deref(), Some("DELETE /orders/42"), "method and path come from the event");
    assert_eq!(used.jti.as_ref().unwrap().as_str(), jti);
}

#[tokio::test]
async fn the_authorizer_reads_the_token_from_the_header_when_the_identity_source_is_absent() {
    let (app, token) = app_with_token("read").await;
    let mut event = authorizer_event(None, "GET", "/orders");
    event.headers.insert("authorization", format!("bearer {token}").parse().unwrap());
    assert!(shared::http::authorize_request(event, app.services()).await.is_authorized);
}

#[tokio::test]
async fn the_bearer_scheme_is_read_in_any_case_by_the_authorizer_and_the_demo_route_alike() {
    // RFC 9110: the scheme's name is case-insensitive. Both entry points share one parser, so
    // a token either works (and its use is audited) at both, or at neither.
    let (app, token) = app_with_token("read").await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let mut event = authorizer_event(None, "GET", "/orders");
        event.headers.insert("authorization", format!("{scheme} {token}").parse().unwrap());
        assert!(shared::http::authorize_request(event, app.services()).await.is_authorized, "{scheme}");
        let answer = app
            .call(Event::new("GET", "/app/whoami").anonymous().header("authorization", &format!("{scheme} {token}")))
            .await;
        assert_eq!(answer.status, 200, "{scheme}: {}", answer.body);
    }
    let uses = app.audit().await.iter().filter(|e| e.event_type == AuditEventType::TokenUsed).count();
    assert_eq!(uses, 8, "every use audited, whatever the scheme's case");
    for not_bearer in [format!("Basic {token}"), format!("Bearer{token}"), token.clone(), "Bearer ".to_owned()] {
        let answer = app.call(Event::new("GET", "/app/whoami").anonymous().header("authorization", &not_bearer)).await;
        assert_eq!(answer.status, 401, "{not_bearer}");
    }
}

#[tokio::test]
async fn the_authorizer_denies_without_a_token_and_writes_nothing() {
    let (app, _) = app_with_token("read").await;
    let before = app.audit().await;
    for event in [authorizer_event(None, "GET", "/orders"), authorizer_event(Some(""), "GET", "/orders")] {
        let response = shared::http::authorize_request(event, app.services()).await;
        assert!(!response.is_authorized);
        assert_eq!(serde_json::to_value(&response).unwrap(), json!({"isAuthorized": false, "context": {}}));
    }
    assert_eq!(app.audit().await, before, "nothing was presented, so nothing was refused");
}

#[tokio::test]
async fn revocation_bites_on_the_very_next_authorizer_call() {
    let (app, token) = app_with_token("read").await;
    assert!(app.authorize(&token, "GET", "/orders").await.is_authorized);
    assert_eq!(app.call(Event::new("DELETE", "/consents/current").user("alice")).await.status, 204);
    assert!(!app.authorize(&token, "GET", "/orders").await.is_authorized);
}

#[tokio::test]
async fn introspection_of_a_live_token_answers_its_claims_and_writes_nothing() {
    let (app, token) = app_with_token("read").await;
    let consent_id = app.consent("alice").await.unwrap().consent_id;
    let before = app.audit().await;
    let answer = app.introspect(&token).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type, "application/json");
    let jti = answer.str("jti").to_owned();
    assert_eq!(
        answer.body,
        json!({
            "active": true, "sub": "alice", "act": {"sub": "agent-7"}, "scope": "read",
            "exp": T0 + 900, "iat": T0, "nbf": T0, "cid": consent_id.as_str(), "jti": jti,
            "iss": "support-access", "aud": "support-access-app", "token_type": "Bearer",
        })
    );
    assert_eq!(app.audit().await, before, "an introspection is not a use of the token");
}

#[tokio::test]
async fn introspection_ignores_the_token_type_hint_and_trims_the_token() {
    let (app, token) = app_with_token("read").await;
    let padded = format!(" {token} ");
    let answer = app
        .call(
            Event::new("POST", "/introspect")
                .caller(RESOURCE_SERVER, "[introspect]")
                .form(&[("token", padded.as_str()), ("token_type_hint", "access_token")]),
        )
        .await;
    assert_eq!(answer.body["active"], true, "{answer:?}");
}

#[tokio::test]
async fn only_the_introspect_group_may_introspect_and_a_bad_request_is_refused_before_the_token_is_read() {
    let (app, token) = app_with_token("read").await;
    let before = app.audit().await;
    let form = [("token", token.as_str())];
    let cases: Vec<(&str, Event, u16, &str)> = vec![
        ("no identity", Event::new("POST", "/introspect").anonymous().form(&form), 401, "unauthenticated"),
        ("a plain user", Event::new("POST", "/introspect").user("alice").form(&form), 403, "forbidden"),
        (
            "a support agent",
            Event::new("POST", "/introspect").signed_in("agent-7", &["support", "auditor"]).form(&form),
            403,
            "forbidden",
        ),
        (
            "a JSON body",
            Event::new("POST", "/introspect").caller(RESOURCE_SERVER, "[introspect]").json(json!({"token": token})),
            400,
            "invalid-request",
        ),
        (
            "no token",
            Event::new("POST", "/introspect").caller(RESOURCE_SERVER, "[introspect]").form(&[("tok", "x")]),
            400,
            "invalid-request",
        ),
        ("GET", Event::new("GET", "/introspect").caller(RESOURCE_SERVER, "[introspect]"), 405, "method-not-allowed"),
    ];
    for (name, event, status, slug) in cases {
        let answer = app.call(event).await;
        assert_eq!((answer.status, answer.slug()), (status, slug), "{name}: {answer:?}");
        assert!(answer.body.get("active").is_none(), "{name}: nothing about the token");
    }
    assert_eq!(app.audit().await, before, "refused requests write nothing");
}

#[tokio::test]
async fn the_introspect_group_is_configurable() {
    let policy = Policy { introspect_group: "resource-servers".into(), ..test_policy() };
    let app = TestApp::with_policy(policy).await;
    app.grant("alice", json!({"duration_seconds": 900})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    let ask = |groups: &'static str| {
        Event::new("POST", "/introspect").caller(RESOURCE_SERVER, groups).form(&[("token", token.as_str())])
    };
    assert_eq!(app.call(ask("[introspect]")).await.status, 403);
    let answer = app.call(ask("[resource-servers]")).await;
    assert_eq!(answer.body["active"], Value::Bool(true));
}

#[tokio::test]
async fn scopes_are_enforced_identically_on_the_local_route_and_the_authorizer() {
    for (scope, method, allowed) in [
        ("read", "GET", true),
        ("read", "HEAD", true),
        ("read", "OPTIONS", true),
        ("read", "POST", false),
        ("read", "PUT", false),
        ("read", "PATCH", false),
        ("read", "DELETE", false),
        ("full", "GET", true),
        ("full", "POST", true),
        ("full", "DELETE", true),
    ] {
        let (app, token) = app_with_token(scope).await;
        let local = app.call(Event::new(method, "/app/whoami").anonymous().bearer(&token)).await;
        let authorizer = app.authorize(&token, method, "/app/whoami").await;
        assert_eq!(local.status == 200, allowed, "{scope} {method} locally: {local:?}");
        assert_eq!(authorizer.is_authorized, allowed, "{scope} {method} via the authorizer");
        if !allowed {
            assert_eq!(local.status, 403, "{scope} {method}");
        }
    }
}

struct BrokenStore;

#[async_trait::async_trait]
impl shared::ports::ConsentReader for BrokenStore {
    async fn current(
        &self,
        _: &shared::domain::UserId,
        _: shared::domain::Timestamp,
    ) -> Result<Option<shared::domain::Consent>, shared::ports::StoreError> {
        Err(shared::ports::StoreError::Unavailable("throttled".into()))
    }
}

#[tokio::test]
async fn when_the_consent_cannot_be_read_every_entry_point_fails_closed() {
    let (app, token) = app_with_token("full").await;
    let mut services = app.services().clone();
    services.consent_reader = std::sync::Arc::new(BrokenStore);
    let denied = shared::http::authorize_request(authorizer_event(Some(&token), "GET", "/orders"), &services).await;
    assert!(!denied.is_authorized);
    let event = Event::new("GET", "/app/whoami").anonymous().bearer(&token);
    let local = shared::http::route(event.to_request(), &services).await;
    assert_eq!(local.status(), 503);
    let event = Event::new("POST", "/introspect").caller(RESOURCE_SERVER, "[introspect]").form(&[("token", &token)]);
    let introspected = shared::http::route(event.to_request(), &services).await;
    assert_eq!(introspected.status(), 503, "unknown is not inactive: the resource server must not guess");
}
