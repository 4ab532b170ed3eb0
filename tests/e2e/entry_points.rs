//! The entry points besides the local demo route: the Lambda authorizer, driven by API
//! Gateway's authorizer event (payload 2.0), `POST /introspect` (RFC 7662) and a resource
//! server's use report (`POST /introspect/uses`), on the embedded store and a fixed clock. The
//! attack matrix (`attacks.rs`) covers their refusals.

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

/// The fields of a recorded event that say what happened, leaving out its id, chain links
/// and detail.
fn what(e: &shared::domain::AuditEvent) -> Value {
    json!([e.event_type, e.at, e.user_id, e.actor, e.consent_id, e.jti, e.scope, e.expires_at])
}

#[tokio::test]
async fn a_reported_use_is_the_authorizers_use_with_its_reporter_and_reaches_the_users_access_log() {
    let (app, token) = app_with_token("full").await;
    let consent_id = app.consent("alice").await.unwrap().consent_id;
    let reported = app.report_use(&token, "DELETE", "/orders/42").await;
    assert_eq!((reported.status, reported.content_type.as_str()), (200, "application/json"), "{reported:?}");
    assert_eq!(reported.cache_control, "no-store");
    let jti = reported.str("jti").to_owned();
    assert_eq!(
        reported.body,
        json!({"user_id": "alice", "acting_agent": "agent-7", "scope": "full", "consent_id": consent_id.as_str(), "jti": jti}),
        "the authorizer's context, key for key"
    );
    let by_report = app.audit().await[0].clone();
    assert!(app.authorize(&token, "DELETE", "/orders/42").await.is_authorized);
    let by_authorizer = app.audit().await[0].clone();
    assert_eq!(by_report.event_type, AuditEventType::TokenUsed);
    assert_eq!(what(&by_report), what(&by_authorizer), "recorded as the authorizer records a use");
    assert_eq!(by_report.detail.as_deref(), Some("DELETE /orders/42 reported by rs-1"));
    assert_eq!(by_authorizer.detail.as_deref(), Some("DELETE /orders/42"));

    // The user sees it on their own access log.
    let log = app.call(Event::new("GET", "/me/access-log").user("alice")).await;
    assert_eq!(log.status, 200, "{log:?}");
    let reported_on_log = log.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "token.used" && e["detail"] == "DELETE /orders/42 reported by rs-1")
        .count();
    assert_eq!(reported_on_log, 1, "{}", log.body);
}

#[tokio::test]
async fn a_refused_report_is_use_refused_and_audited_as_the_authorizer_refuses() {
    let (app, token) = app_with_token("read").await;
    // A read token reported on a write: the scope rule of the authorizer.
    let write = app.report_use(&token, "POST", "/orders").await;
    assert_eq!((write.status, write.slug()), (403, "use-refused"), "{write:?}");
    assert_eq!(write.content_type, "application/problem+json");
    assert_eq!(write.str("detail"), "the token may not be used for this request; the refusal is on the audit log");
    let refused = app.audit().await[0].clone();
    assert_eq!(refused.event_type, AuditEventType::TokenRejected);
    assert_eq!(refused.detail.as_deref(), Some("scope POST /orders reported by rs-1"));
    assert!(!app.authorize(&token, "POST", "/orders").await.is_authorized);
    assert_eq!(what(&app.audit().await[0]), what(&refused), "refused as the authorizer refuses it");
    assert_eq!(app.report_use(&token, "HEAD", "/orders").await.status, 200, "read passes HEAD");

    // Revoked: refused on the very next report, on the user's log.
    assert_eq!(app.call(Event::new("DELETE", "/consents/current").user("alice")).await.status, 204);
    let after = app.report_use(&token, "GET", "/orders").await;
    assert_eq!((after.status, after.slug()), (403, "use-refused"), "{after:?}");
    let refused = app.audit().await[0].clone();
    assert_eq!(refused.detail.as_deref(), Some("no-consent GET /orders reported by rs-1"));
    assert_eq!(refused.user_id.as_ref().map(|u| u.as_str()), Some("alice"));
}

#[tokio::test]
async fn the_reporter_always_fits_in_the_detail_however_long_the_path() {
    let (app, token) = app_with_token("read").await;
    let server = "r".repeat(128);
    let path = format!("/{}", "p".repeat(2047));
    let report = json!({"token": token, "method": "GET", "path": path});
    let answer = app.call(Event::new("POST", "/introspect/uses").caller(&server, "[introspect]").json(report)).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let detail = app.audit().await[0].detail.clone().unwrap();
    let suffix = format!(" reported by {server}");
    assert!(detail.ends_with(&suffix), "{detail}");
    assert_eq!(detail.len(), "GET ".len() + 256, "the path cut to make room: {detail}");
    assert!(detail.starts_with(&format!("GET /{}", "p".repeat(114))), "at least 115 characters of the path");
}

#[tokio::test]
async fn only_the_introspect_group_may_report_a_use_and_a_bad_report_is_refused_before_the_token_is_read() {
    let (app, token) = app_with_token("full").await;
    let before = app.audit().await;
    let report = |method: &str, path: &str| json!({"token": token, "method": method, "path": path});
    let rs = || Event::new("POST", "/introspect/uses").caller(RESOURCE_SERVER, "[introspect]");
    let ok = report("GET", "/orders");
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        rs().json(body)
    };
    let long = format!("/{}", "a".repeat(2048));
    let cases: Vec<(&str, Event, u16, &str)> = vec![
        ("no identity", Event::new("POST", "/introspect/uses").anonymous().json(ok.clone()), 401, "unauthenticated"),
        ("a plain user", Event::new("POST", "/introspect/uses").user("alice").json(ok.clone()), 403, "forbidden"),
        (
            "a support agent",
            Event::new("POST", "/introspect/uses").signed_in("agent-7", &["support", "auditor"]).json(ok.clone()),
            403,
            "forbidden",
        ),
        (
            "a form body",
            rs().form(&[("token", token.as_str()), ("method", "GET"), ("path", "/orders")]),
            400,
            "invalid-request",
        ),
        ("no body", rs(), 400, "invalid-request"),
        ("an array", rs().json(json!([ok.clone()])), 400, "invalid-request"),
        ("an unknown field", with("user_id", json!("bob")), 400, "invalid-request"),
        ("no path", rs().json(json!({"token": token, "method": "GET"})), 400, "invalid-request"),
        ("a method in lowercase", with("method", json!("get")), 400, "invalid-request"),
        ("an unknown method", with("method", json!("TRACE")), 400, "invalid-request"),
        ("a method not a string", with("method", json!(1)), 400, "invalid-request"),
        ("a relative path", with("path", json!("orders")), 400, "invalid-request"),
        ("a query", with("path", json!("/orders?token=secret")), 400, "invalid-request"),
        ("a fragment", with("path", json!("/orders#x")), 400, "invalid-request"),
        ("a space", with("path", json!("/a reported by rs-2")), 400, "invalid-request"),
        ("a newline", with("path", json!("/a\nb")), 400, "invalid-request"),
        ("non-ASCII", with("path", json!("/caf\u{e9}")), 400, "invalid-request"),
        ("a path over 2048 bytes", with("path", json!(long)), 400, "invalid-request"),
        ("an empty token", with("token", json!("")), 400, "invalid-request"),
        (
            "GET",
            Event::new("GET", "/introspect/uses").caller(RESOURCE_SERVER, "[introspect]"),
            405,
            "method-not-allowed",
        ),
    ];
    for (name, event, status, slug) in cases {
        let answer = app.call(event).await;
        assert_eq!((answer.status, answer.slug()), (status, slug), "{name}: {answer:?}");
        assert!(answer.body.get("user_id").is_none(), "{name}: nothing about the token");
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
    let report = json!({"token": token, "method": "GET", "path": "/orders"});
    let event = Event::new("POST", "/introspect/uses").caller(RESOURCE_SERVER, "[introspect]").json(report);
    let reported = shared::http::route(event.to_request(), &services).await;
    assert_eq!(reported.status(), 503, "a use that cannot be checked is neither recorded nor refused");
}
