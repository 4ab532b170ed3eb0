//! The whole consent flow through the HTTP layer, driven by API Gateway v2 events of the
//! shape AWS sends (claims in `requestContext.authorizer.jwt.claims`, all strings), on the
//! embedded store and a fixed clock.

use base64::Engine;
use e2e::{Answer, Event, T0, TestApp, test_policy};
use serde_json::{Value, json};
use shared::domain::{AuditEventType, Policy};

fn types(events: &[shared::domain::AuditEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event_type.as_str()).collect()
}

fn claims_of(token: &str) -> (Value, Value) {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let header = serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&b64.decode(parts.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

#[tokio::test]
async fn the_whole_flow_grant_mint_use_revoke_then_refusal_is_on_the_audit_log() {
    let app = TestApp::new().await;

    let granted = app.grant("alice", json!({"duration_seconds": 3600, "scope": "read", "note": "billing issue"})).await;
    assert_eq!(granted.status, 201, "{granted:?}");
    assert_eq!(granted.str("user_id"), "alice");
    assert_eq!(granted.str("scope"), "read");
    assert_eq!(granted.str("note"), "billing issue");
    assert_eq!(granted.str("granted_at"), "2026-11-25T10:00:00Z");
    assert_eq!(granted.str("expires_at"), "2026-11-25T11:00:00Z");
    let consent_id = granted.str("consent_id").to_owned();

    let current = app.call(Event::new("GET", "/consents/current").user("alice")).await;
    assert_eq!((current.status, current.str("consent_id")), (200, consent_id.as_str()));

    let minted = app.mint("alice").await;
    assert_eq!(minted.status, 201, "{minted:?}");
    assert_eq!(minted.str("token_type"), "Bearer");
    assert_eq!(minted.body["expires_in"], 900);
    assert_eq!(minted.str("consent_id"), consent_id);
    assert_eq!(minted.str("scope"), "read");
    let token = minted.str("access_token").to_owned();
    let (header, claims) = claims_of(&token);
    assert_eq!((header["alg"].as_str(), header["typ"].as_str()), (Some("ES256"), Some("support-access+jwt")));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "agent-7");
    assert_eq!(claims["cid"], consent_id.as_str());
    assert_eq!(claims["jti"], minted.body["jti"]);
    assert_eq!(claims["exp"], T0 + 900);

    let whoami = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
    assert_eq!(whoami.status, 200, "{whoami:?}");
    assert_eq!(
        whoami.body,
        json!({"user_id": "alice", "acting_agent": "agent-7", "scope": "read", "consent_id": consent_id,
               "jti": minted.body["jti"]})
    );

    let write = app.call(Event::new("POST", "/app/whoami").anonymous().bearer(&token)).await;
    assert_eq!((write.status, write.slug()), (403, "forbidden"), "a read token may not write");

    let revoked = app.call(Event::new("DELETE", "/consents/current").user("alice")).await;
    assert_eq!(revoked.status, 204);
    assert_eq!(revoked.body, Value::Null);

    let after = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
    assert_eq!((after.status, after.slug()), (401, "unauthenticated"), "refused at once after revoke");
    let remint = app.mint("alice").await;
    assert_eq!((remint.status, remint.slug()), (403, "no-consent"));

    let audit = app.call(Event::new("GET", "/audit").caller("auditor-1", "[auditor]").query("user_id=alice")).await;
    assert_eq!(audit.status, 200, "{audit:?}");
    let events: Vec<shared::domain::AuditEvent> = serde_json::from_value(audit.body["events"].clone()).unwrap();
    assert_eq!(
        types(&events),
        [
            "token.denied",
            "token.rejected",
            "consent.revoked",
            "token.rejected",
            "token.used",
            "token.issued",
            "consent.granted"
        ]
    );
    assert_eq!(audit.body["next_cursor"], Value::Null);
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [7, 6, 5, 4, 3, 2, 1], "the user's stream is gapless");
    assert_eq!(events[0].detail.as_deref(), Some("no-consent"));
    assert!(events[1].detail.as_deref().unwrap().starts_with("no-consent GET /app/whoami"));
    assert!(events[3].detail.as_deref().unwrap().starts_with("scope POST"));
    assert_eq!(events[4].detail.as_deref(), Some("GET /app/whoami"));
    assert_eq!(events[5].reason.as_ref().unwrap().as_str(), "ticket 4411: billing page broken");
    assert_eq!(events[5].jti.as_ref().unwrap().as_str(), claims["jti"].as_str().unwrap());

    let log = app.call(Event::new("GET", "/me/access-log").user("alice")).await;
    assert_eq!(log.status, 200);
    assert_eq!(log.body["events"], audit.body["events"], "the user sees every event about them");
}

#[tokio::test]
async fn the_groups_claim_is_read_in_every_form_api_gateway_and_idps_send() {
    // On AWS the identity token is in the Authorization header: its groups array is read.
    // Without it, only renderings that cannot be misread: `[a b]` is two groups or one named
    // `a b`, so it carries none.
    let mint = |event: Event| event.json(json!({"user_id": "alice", "reason": "ticket 12345"}));
    let accepted = [
        mint(Event::new("POST", "/tokens").signed_in("agent-7", &["support", "auditor"])),
        mint(Event::new("POST", "/tokens").signed_in("agent-7", &["support"])),
        mint(Event::new("POST", "/tokens").caller("agent-7", "[support]")),
        mint(Event::new("POST", "/tokens").caller("agent-7", r#"["support","auditor"]"#)),
        mint(Event::new("POST", "/tokens").caller("agent-7", "support,auditor")),
        mint(Event::new("POST", "/tokens").caller("agent-7", "auditor, support")),
    ];
    for event in accepted {
        let app = TestApp::new().await;
        app.grant("alice", json!({"duration_seconds": 900})).await;
        let minted = app.call(event.clone()).await;
        assert_eq!(minted.status, 201, "{:?}: {minted:?}", event.to_json()["requestContext"]["authorizer"]);
    }
    let refused = ["[supporters]", "[]", "", "[auditor]", "support-lead", "[support auditor]", "[tier1 support]"]
        .map(|groups| mint(Event::new("POST", "/tokens").caller("agent-7", groups)));
    for event in refused {
        let app = TestApp::new().await;
        app.grant("alice", json!({"duration_seconds": 900})).await;
        let before = app.snapshot(&["alice"]).await;
        let refused = app.call(event.clone()).await;
        let context = &event.to_json()["requestContext"]["authorizer"];
        assert_eq!((refused.status, refused.slug()), (403, "forbidden"), "{context:?}");
        assert_eq!(app.snapshot(&["alice"]).await, before);
    }
}

#[tokio::test]
async fn the_groups_claim_name_and_group_names_are_configurable() {
    let policy = Policy { groups_claim: "roles".into(), support_group: "helpdesk".into(), ..test_policy() };
    let app = TestApp::with_policy(policy).await;
    app.grant("alice", json!({"duration_seconds": 900})).await;
    let event = Event::new("POST", "/tokens")
        .caller("agent-7", "[support]")
        .claim("roles", "[helpdesk]")
        .json(json!({"user_id": "alice", "reason": "ticket 12345"}));
    assert_eq!(app.call(event).await.status, 201);
}

/// One bad request: who sends it, what it is, and the answer it must get.
struct Bad {
    name: &'static str,
    event: Event,
    status: u16,
    slug: &'static str,
}

fn bad(name: &'static str, event: Event, status: u16, slug: &'static str) -> Bad {
    Bad { name, event, status, slug }
}

fn grant(body: &str) -> Event {
    Event::new("POST", "/consents").user("alice").body(body)
}

fn mint(body: Value) -> Event {
    Event::new("POST", "/tokens").caller("agent-7", "[support]").json(body)
}

fn audit(query: &str) -> Event {
    Event::new("GET", "/audit").caller("auditor-1", "[auditor]").query(query)
}

#[tokio::test]
async fn bad_input_gets_its_problem_and_writes_nothing() {
    let app = TestApp::new().await;
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    assert_eq!(app.mint("alice").await.status, 201);

    let huge_note = "n".repeat(501);
    let over_16k = format!(r#"{{"duration_seconds": 900, "note": "{}"}}"#, "x".repeat(16 * 1024));
    let cases = vec![
        bad("malformed JSON", grant(r#"{"duration_seconds": "#), 400, "invalid-request"),
        bad("not an object", grant("[900]"), 400, "invalid-request"),
        bad("wrong type", grant(r#"{"duration_seconds": "900"}"#), 400, "invalid-request"),
        bad("fractional duration", grant(r#"{"duration_seconds": 900.5}"#), 400, "invalid-request"),
        bad("unknown field", grant(r#"{"duration_seconds": 900, "admin": true}"#), 400, "invalid-request"),
        bad("missing duration", grant(r#"{"scope": "read"}"#), 400, "invalid-request"),
        bad("empty body", grant(""), 400, "invalid-request"),
        bad("duration below policy", grant(r#"{"duration_seconds": 899}"#), 400, "invalid-request"),
        bad("duration above policy", grant(r#"{"duration_seconds": 604801}"#), 400, "invalid-request"),
        bad("negative duration", grant(r#"{"duration_seconds": -900}"#), 400, "invalid-request"),
        bad("unknown scope", grant(r#"{"duration_seconds": 900, "scope": "admin"}"#), 400, "invalid-request"),
        bad(
            "note too long",
            grant(&json!({"duration_seconds": 900, "note": huge_note}).to_string()),
            400,
            "invalid-request",
        ),
        bad(
            "control characters in note",
            grant(r#"{"duration_seconds": 900, "note": "a\u001b[2Jb"}"#),
            400,
            "invalid-request",
        ),
        bad("body over 16 KiB", grant(&over_16k), 413, "payload-too-large"),
        bad(
            "no identity",
            Event::new("POST", "/consents").anonymous().body(r#"{"duration_seconds": 900}"#),
            401,
            "unauthenticated",
        ),
        bad(
            "sub with forbidden characters",
            Event::new("POST", "/consents").user("auth0|abc").body(r#"{"duration_seconds": 900}"#),
            403,
            "forbidden",
        ),
        bad("revoke without identity", Event::new("DELETE", "/consents/current").anonymous(), 401, "unauthenticated"),
        bad(
            "mint by a plain user",
            Event::new("POST", "/tokens").user("mallory").json(json!({"user_id": "alice", "reason": "ticket 12345"})),
            403,
            "forbidden",
        ),
        bad(
            "mint by an auditor",
            Event::new("POST", "/tokens")
                .caller("aud-1", "[auditor]")
                .json(json!({"user_id": "alice", "reason": "ticket 12345"})),
            403,
            "forbidden",
        ),
        bad(
            "mint without identity",
            Event::new("POST", "/tokens").anonymous().json(json!({"user_id": "alice", "reason": "ticket 12345"})),
            401,
            "unauthenticated",
        ),
        bad(
            "user id with a space",
            mint(json!({"user_id": "al ice", "reason": "ticket 12345"})),
            400,
            "invalid-request",
        ),
        bad(
            "user id with a slash",
            mint(json!({"user_id": "../alice", "reason": "ticket 12345"})),
            400,
            "invalid-request",
        ),
        bad(
            "user id too long",
            mint(json!({"user_id": "a".repeat(129), "reason": "ticket 12345"})),
            400,
            "invalid-request",
        ),
        bad("reason too short", mint(json!({"user_id": "alice", "reason": "fix it"})), 400, "invalid-request"),
        bad("reason too long", mint(json!({"user_id": "alice", "reason": "r".repeat(501)})), 400, "invalid-request"),
        bad("reason missing", mint(json!({"user_id": "alice"})), 400, "invalid-request"),
        bad(
            "mint with unknown field",
            mint(json!({"user_id": "alice", "reason": "ticket 12345", "scope": "full"})),
            400,
            "invalid-request",
        ),
        bad("audit by a support agent", Event::new("GET", "/audit").caller("agent-7", "[support]"), 403, "forbidden"),
        bad("audit by a plain user", Event::new("GET", "/audit").user("alice"), 403, "forbidden"),
        bad("audit limit 0", audit("limit=0"), 400, "invalid-request"),
        bad("audit limit 101", audit("limit=101"), 400, "invalid-request"),
        bad("audit limit not a number", audit("limit=ten"), 400, "invalid-request"),
        bad("audit from not a time", audit("from=yesterday"), 400, "invalid-request"),
        bad("audit from after to", audit("from=2026-11-25T10:00:00Z&to=2026-11-25T09:00:00Z"), 400, "invalid-request"),
        bad("audit unknown type", audit("type=token.stolen"), 400, "invalid-request"),
        bad("audit unknown parameter", audit("user=alice"), 400, "invalid-request"),
        bad("audit bad user id", audit("user_id=al%20ice"), 400, "invalid-request"),
        bad("audit forged cursor", audit("cursor=eyJmIjp7fSwicCI6IjEifQ.AAAA"), 400, "invalid-request"),
        bad(
            "access log with unknown parameter",
            Event::new("GET", "/me/access-log").user("alice").query("user_id=bob"),
            400,
            "invalid-request",
        ),
        bad("unknown route", Event::new("GET", "/admin").user("alice"), 404, "not-found"),
        bad("wrong method", Event::new("PUT", "/consents").user("alice"), 405, "method-not-allowed"),
    ];
    for case in cases {
        let before = app.snapshot(&["alice", "bob"]).await;
        let answer = app.call(case.event).await;
        assert_eq!(answer.status, case.status, "{}: {answer:?}", case.name);
        assert_eq!(answer.slug(), case.slug, "{}", case.name);
        assert_eq!(answer.body["status"], case.status, "{}", case.name);
        assert_eq!(
            answer.body["request_id"], "KxUq2jGBjoEEJZQ=",
            "{}: the request id comes from API Gateway",
            case.name
        );
        assert!(answer.body["title"].is_string() && answer.body["detail"].is_string(), "{}", case.name);
        assert_eq!(app.snapshot(&["alice", "bob"]).await, before, "{}: nothing may be written", case.name);
    }
}

#[tokio::test]
async fn a_user_only_ever_touches_their_own_consent_and_log() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    app.mint("alice").await;
    let before = app.snapshot(&["alice", "bob"]).await;

    let read = app.call(Event::new("GET", "/consents/current").user("bob")).await;
    assert_eq!((read.status, read.slug()), (404, "not-found"));
    let revoke = app.call(Event::new("DELETE", "/consents/current").user("bob")).await;
    assert_eq!((revoke.status, revoke.slug()), (404, "not-found"));
    let log = app.call(Event::new("GET", "/me/access-log").user("bob")).await;
    assert_eq!(log.body["events"], json!([]));
    assert_eq!(app.snapshot(&["alice", "bob"]).await, before, "bob changed nothing of alice's");

    // A cursor from alice's log does not open bob's view onto it.
    let page = app.call(Event::new("GET", "/me/access-log").user("alice").query("limit=1")).await;
    let cursor = page.str("next_cursor").to_owned();
    let stolen =
        app.call(Event::new("GET", "/me/access-log").user("bob").query(&format!("limit=1&cursor={cursor}"))).await;
    assert_eq!((stolen.status, stolen.slug()), (400, "invalid-request"));
    let own =
        app.call(Event::new("GET", "/me/access-log").user("alice").query(&format!("limit=1&cursor={cursor}"))).await;
    assert_eq!(own.status, 200);

    // A support agent cannot change a consent: the consent routes act only on the caller's own.
    let agent = app.call(Event::new("DELETE", "/consents/current").signed_in("agent-7", &["support", "auditor"])).await;
    assert_eq!(agent.status, 404);
    assert!(app.consent("alice").await.is_some());
}

#[tokio::test]
async fn a_consent_ends_at_its_expiry_second_and_its_expiry_is_recorded() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 900})).await;

    app.clock.advance(899);
    let minted = app.mint("alice").await;
    assert_eq!(minted.status, 201);
    assert_eq!(minted.str("expires_at"), "2026-11-25T10:15:00Z", "exp is capped at the consent's expiry");
    assert_eq!(minted.body["expires_in"], 1);
    let token = minted.str("access_token").to_owned();
    assert_eq!(app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await.status, 200);

    app.clock.advance(1);
    let gone = app.call(Event::new("GET", "/consents/current").user("alice")).await;
    assert_eq!(gone.status, 404);
    let refused = app.mint("alice").await;
    assert_eq!((refused.status, refused.slug()), (403, "no-consent"));
    let used = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
    assert_eq!(used.status, 401, "the token's leeway does not outlive the consent");

    let events = app.audit().await;
    let expired: Vec<_> = events.iter().filter(|e| e.event_type == AuditEventType::ConsentExpired).collect();
    assert_eq!(expired.len(), 1, "recorded once: {:?}", types(&events));
    assert_eq!(expired[0].actor.role, shared::domain::Role::System);
    assert_eq!(expired[0].expires_at.unwrap().unix(), T0 + 900);
}

#[tokio::test]
async fn the_sweep_records_expiry_without_anyone_reading() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 900})).await;
    app.grant("bob", json!({"duration_seconds": 1800})).await;
    app.clock.advance(900);
    let n = app.sweeper().expire_due(shared::ports::Clock::now(app.clock.as_ref())).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(app.sweeper().expire_due(shared::ports::Clock::now(app.clock.as_ref())).await.unwrap(), 0, "idempotent");
    let events = app.audit().await;
    assert_eq!(types(&events)[0], "consent.expired");
    assert_eq!(events[0].user_id.as_ref().unwrap().as_str(), "alice");
    assert!(app.consent("bob").await.is_some());
}

#[tokio::test]
async fn a_new_grant_replaces_the_consent_and_kills_its_tokens() {
    let app = TestApp::new().await;
    let first = app.grant("alice", json!({"duration_seconds": 3600})).await;
    let old_token = app.mint("alice").await.str("access_token").to_owned();
    let second = app.grant("alice", json!({"duration_seconds": 3600, "scope": "full"})).await;
    assert_ne!(first.str("consent_id"), second.str("consent_id"));

    let refused = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&old_token)).await;
    assert_eq!(refused.status, 401);
    let rejected = app.audit().await.into_iter().find(|e| e.event_type == AuditEventType::TokenRejected).unwrap();
    assert!(rejected.detail.unwrap().starts_with("consent-replaced"));

    let new_token = app.mint("alice").await.str("access_token").to_owned();
    let write = app.call(Event::new("DELETE", "/app/whoami").anonymous().bearer(&new_token)).await;
    assert_eq!(write.status, 200, "a full token may write");
    assert_eq!(write.str("scope"), "full");
}

#[tokio::test]
async fn forged_tokens_are_refused_and_audited_without_naming_anyone() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (_, claims) = claims_of(&token);
    let none =
        format!("{}.{}.", b64.encode(r#"{"alg":"none","typ":"support-access+jwt"}"#), b64.encode(claims.to_string()));
    let mut parts: Vec<&str> = token.split('.').collect();
    let tampered_claims = b64.encode(claims.to_string().replace("\"read\"", "\"full\""));
    parts[1] = &tampered_claims;
    let tampered = parts.join(".");

    for forged in [none.as_str(), tampered.as_str(), "garbage", "a.b.c", &"x".repeat(9000)] {
        let before = app.audit().await.len();
        let answer = app.call(Event::new("POST", "/app/whoami").anonymous().bearer(forged)).await;
        assert_eq!((answer.status, answer.slug()), (401, "unauthenticated"));
        // Counted in this process's window (the first at once), written by the window's flush.
        shared::app::flush_refusals(app.services()).await.unwrap();
        let events = app.audit().await;
        assert_eq!(events.len(), before + 1);
        assert_eq!(events[0].event_type, AuditEventType::TokenRejected);
        assert_eq!(events[0].user_id, None, "an unverified token names no user");
        assert_eq!(shared::app::refused_in(&events[0]), Some(1), "{:?}", events[0].detail);
    }
    let missing = app.call(Event::new("GET", "/app/whoami").anonymous()).await;
    assert_eq!((missing.status, missing.slug()), (401, "unauthenticated"));
}

#[tokio::test]
async fn audit_pages_with_an_opaque_cursor_and_filters() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    for _ in 0..3 {
        app.mint("alice").await;
        app.clock.advance(60);
    }
    app.mint("bob").await; // denied: bob never consented
    app.grant("bob", json!({"duration_seconds": 3600})).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".into(),
        };
        let page = app.call(audit(&q)).await;
        assert_eq!(page.status, 200, "{page:?}");
        pages += 1;
        seen.extend(page.body["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(pages, 3);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 6, "no event twice");

    let by_agent = app.call(audit("actor=agent-7&type=token.issued")).await;
    assert_eq!(by_agent.body["events"].as_array().unwrap().len(), 3);
    let denied = app.call(audit("type=token.denied")).await;
    assert_eq!(denied.body["events"][0]["user_id"], "bob");
    let window = app.call(audit("from=2026-11-25T10:01:00Z&to=2026-11-25T10:02:00Z")).await;
    let times: Vec<_> = window.body["events"].as_array().unwrap().iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert_eq!(times, ["2026-11-25T10:02:00Z", "2026-11-25T10:01:00Z"]);

    // A cursor made for one filter does not work for another.
    let first = app.call(audit("limit=1&user_id=alice")).await;
    let c = first.str("next_cursor");
    let other = app.call(audit(&format!("limit=1&user_id=bob&cursor={c}"))).await;
    assert_eq!((other.status, other.slug()), (400, "invalid-request"));
}

#[tokio::test]
async fn the_kill_switch_disables_grant_and_mint() {
    let app = TestApp::with_policy(Policy { enabled: false, ..test_policy() }).await;
    let before = app.snapshot(&["alice"]).await;
    let g = app.grant("alice", json!({"duration_seconds": 900})).await;
    assert_eq!((g.status, g.slug()), (403, "feature-disabled"));
    assert_eq!(app.snapshot(&["alice"]).await, before);
    let m = app.mint("alice").await;
    assert_eq!((m.status, m.slug()), (403, "feature-disabled"));
    let events = app.audit().await;
    assert_eq!(types(&events), ["token.denied"], "the attempt is audited");
}

#[tokio::test]
async fn the_jwk_set_is_public_and_names_the_signing_key() {
    let app = TestApp::new().await;
    let jwks = app.call(Event::new("GET", "/.well-known/jwks.json").anonymous()).await;
    assert_eq!(jwks.status, 200);
    let key = &jwks.body["keys"][0];
    assert_eq!(
        (key["kty"].as_str(), key["crv"].as_str(), key["alg"].as_str(), key["use"].as_str()),
        (Some("EC"), Some("P-256"), Some("ES256"), Some("sig"))
    );
    assert!(key["d"].is_null(), "never the private key");
    // Both key sets may be cached (for five minutes: the rotation runbook waits longer than
    // that between publishing a key and signing with it); everything else never is.
    assert_eq!(jwks.cache_control, "public, max-age=300");
    let checkpoint_keys = app.call(Event::new("GET", "/.well-known/checkpoint-keys.json").anonymous()).await;
    assert_eq!((checkpoint_keys.status, checkpoint_keys.cache_control.as_str()), (200, "public, max-age=300"));
    let g = app.grant("alice", json!({"duration_seconds": 900})).await;
    assert_eq!(g.cache_control, "no-store");
    let token = app.mint("alice").await.str("access_token").to_owned();
    assert_eq!(claims_of(&token).0["kid"], key["kid"]);
}

#[tokio::test]
async fn revoking_twice_answers_404_the_second_time() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 900})).await;
    assert_eq!(app.call(Event::new("DELETE", "/consents/current").user("alice")).await.status, 204);
    let again: Answer = app.call(Event::new("DELETE", "/consents/current").user("alice")).await;
    assert_eq!((again.status, again.slug()), (404, "not-found"));
}

#[tokio::test]
async fn with_step_up_on_a_mint_needs_a_recent_mfa_sign_in_and_every_refusal_is_audited() {
    use shared::domain::StepUpPolicy;
    let step_up = StepUpPolicy { amr: Some("mfa".into()), max_age_seconds: Some(600) };
    let app = TestApp::with_policy(Policy { step_up, ..test_policy() }).await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let mint = |amr: Option<&[&str]>, auth_time: Option<i64>| {
        let mut event = Event::new("POST", "/tokens")
            .signed_in("agent-7", &["support"])
            .json(json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}));
        if let Some(amr) = amr {
            event = event.token_claim("amr", json!(amr));
        }
        if let Some(at) = auth_time {
            event = event.claim("auth_time", &at.to_string());
        }
        event
    };

    // No amr at all, a password-only sign-in, an MFA sign-in an hour ago: all refused.
    for (amr, auth_time, why) in [
        (None, Some(T0 - 10), "step-up-required: amr"),
        (Some(&["pwd"][..]), Some(T0 - 10), "step-up-required: amr"),
        (Some(&["weak mfa"][..]), Some(T0 - 10), "step-up-required: amr"),
        (Some(&["pwd", "mfa"][..]), Some(T0 - 3600), "step-up-required: auth_time"),
        (Some(&["pwd", "mfa"][..]), None, "step-up-required: auth_time"),
    ] {
        let response = shared::http::route(mint(amr, auth_time).to_request(), app.services()).await;
        assert_eq!(response.status(), 403, "{amr:?} {auth_time:?}");
        assert_eq!(response.headers()["www-authenticate"], r#"Bearer error="insufficient_user_authentication""#);
        let refused = app.call(mint(amr, auth_time)).await;
        assert_eq!(refused.slug(), "step-up-required");
        let last = app.audit().await.into_iter().max_by_key(|e| e.seq).unwrap();
        assert_eq!((last.event_type, last.detail.as_deref()), (AuditEventType::TokenDenied, Some(why)));
    }
    let issued_before = app.audit().await.iter().filter(|e| e.event_type == AuditEventType::TokenIssued).count();
    assert_eq!(issued_before, 0, "no token for a sign-in that did not step up");

    // A recent MFA sign-in mints: read from the token, or from a rendering that cannot be
    // misread when there is no token; `[pwd mfa]` without the token is ambiguous and refused.
    let minted = app.call(mint(Some(&["pwd", "mfa"]), Some(T0 - 60))).await;
    assert_eq!(minted.status, 201, "{minted:?}");
    let rendered = |amr: &str| {
        Event::new("POST", "/tokens")
            .caller("agent-7", "[support]")
            .claim("amr", amr)
            .claim("auth_time", &(T0 - 60).to_string())
            .json(json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}))
    };
    for amr in ["[mfa]", r#"["pwd","mfa"]"#, "mfa,pwd"] {
        let minted = app.call(rendered(amr)).await;
        assert_eq!(minted.status, 201, "{amr}: {minted:?}");
    }
    for amr in ["[pwd mfa]", "[weak mfa]"] {
        let refused = app.call(rendered(amr)).await;
        assert_eq!(refused.slug(), "step-up-required", "{amr}");
    }
}

#[tokio::test]
async fn step_up_is_off_by_default() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    assert_eq!(app.mint("alice").await.status, 201, "no amr, no auth_time, no step-up policy");
}
