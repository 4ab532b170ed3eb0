//! A role or a step-up is never read from words inside a claim value: API Gateway renders an
//! array claim as `[a b]`, so a group named `tier1 support` once made its members support
//! agents, `read-only auditor` auditors, and an `amr` value `weak mfa` passed a required
//! `mfa`. Both entry points are held to it: the Lambda handler on API Gateway v2 events built
//! from the real fixture (token in the `authorization` header, claims rendered in the
//! context), and local-api over loopback HTTP with dev identity tokens.

use e2e::{Event, T0, TestApp, test_policy};
use serde_json::{Value, json};
use shared::domain::{Policy, SignIn, StepUpPolicy};
use shared::ports::{Clock, SystemClock};

fn step_up() -> StepUpPolicy {
    StepUpPolicy { amr: Some("mfa".into()), max_age_seconds: Some(600) }
}

fn mint(event: Event) -> Event {
    event.json(json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}))
}

#[tokio::test]
async fn on_the_lambda_path_look_alike_groups_and_amr_give_nothing_and_real_arrays_work() {
    let app = TestApp::with_policy(Policy { step_up: step_up(), ..test_policy() }).await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let signed_in = |event: Event, groups: &[&str], amr: &[&str]| {
        event.signed_in("agent-7", groups).token_claim("amr", json!(amr)).claim("auth_time", &(T0 - 60).to_string())
    };

    let before = app.snapshot(&["alice"]).await;
    for (why, event) in [
        ("tier1 support, with its token", signed_in(mint(Event::new("POST", "/tokens")), &["tier1 support"], &["mfa"])),
        ("tier1 support, rendered only", mint(Event::new("POST", "/tokens")).caller("agent-7", "[tier1 support]")),
        ("read-only auditor, with its token", signed_in(Event::new("GET", "/audit"), &["read-only auditor"], &["mfa"])),
        ("read-only auditor, rendered only", Event::new("GET", "/audit").caller("aud-1", "[read-only auditor]")),
    ] {
        let refused = app.call(event).await;
        assert_eq!((refused.status, refused.slug()), (403, "forbidden"), "{why}: {refused:?}");
    }
    assert_eq!(app.snapshot(&["alice"]).await, before, "no token was issued");

    for (why, event) in [
        ("weak mfa, with its token", signed_in(mint(Event::new("POST", "/tokens")), &["support"], &["weak mfa"])),
        (
            "weak mfa, rendered only",
            mint(Event::new("POST", "/tokens"))
                .caller("agent-7", "[support]")
                .claim("amr", "[weak mfa]")
                .claim("auth_time", &(T0 - 60).to_string()),
        ),
    ] {
        let refused = app.call(event).await;
        assert_eq!((refused.status, refused.slug()), (403, "step-up-required"), "{why}: {refused:?}");
    }

    let minted =
        app.call(signed_in(mint(Event::new("POST", "/tokens")), &["support", "auditor"], &["pwd", "mfa"])).await;
    assert_eq!(minted.status, 201, "{minted:?}");
    let audit = app.call(signed_in(Event::new("GET", "/audit"), &["support", "auditor"], &["pwd", "mfa"])).await;
    assert_eq!(audit.status, 200, "{audit:?}");
}

#[tokio::test]
async fn on_the_lambda_path_a_bearer_other_than_the_validated_token_is_refused() {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    // The context says agent-7 in no group; a token of another sub claims support.
    let forged = Event::new("POST", "/tokens").signed_in("agent-8", &["support"]).to_json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .to_owned();
    let event = mint(Event::new("POST", "/tokens")).caller("agent-7", "[]").header("authorization", &forged);
    let refused = app.call(event).await;
    assert_eq!((refused.status, refused.slug()), (401, "unauthenticated"), "{refused:?}");
}

fn slug(problem: &Value) -> &str {
    problem["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("")
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn on_local_api_over_http_look_alike_groups_and_amr_give_nothing_and_real_arrays_work() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) =
        e2e::local_api_on_loopback(dir.path(), Policy { step_up: step_up(), ..Policy::default() }).await;
    let http = reqwest::Client::new();
    let token = |sub: &str, groups: &[&str], amr: &[&str]| {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        let now = SystemClock.now();
        let sign_in =
            SignIn { amr: amr.iter().map(|a| a.to_string()).collect(), auth_time: Some(now.plus_seconds(-60)) };
        runtime.identity.issue_signed_in(sub, &groups, &sign_in, now, 3600)
    };
    let alice = e2e::dev_token(&runtime, "alice", &[]);
    let (status, _) =
        send(http.post(format!("{base}/consents")).bearer_auth(&alice).json(&json!({"duration_seconds": 3600}))).await;
    assert_eq!(status, 201);
    let mint = |token: String| {
        http.post(format!("{base}/tokens"))
            .bearer_auth(token)
            .json(&json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}))
    };

    let (status, body) = send(mint(token("agent-7", &["tier1 support"], &["mfa"]))).await;
    assert_eq!((status, slug(&body)), (403, "forbidden"), "tier1 support: {body}");
    let (status, body) =
        send(http.get(format!("{base}/audit")).bearer_auth(token("aud-1", &["read-only auditor"], &["mfa"]))).await;
    assert_eq!((status, slug(&body)), (403, "forbidden"), "read-only auditor: {body}");
    let (status, body) = send(mint(token("agent-7", &["support"], &["weak mfa"]))).await;
    assert_eq!((status, slug(&body)), (403, "step-up-required"), "weak mfa: {body}");

    let (status, body) = send(mint(token("agent-7", &["support", "auditor"], &["pwd", "mfa"]))).await;
    assert_eq!(status, 201, "support and auditor: {body}");
    let (status, body) =
        send(http.get(format!("{base}/audit")).bearer_auth(token("agent-7", &["support", "auditor"], &["mfa"]))).await;
    assert_eq!(status, 200, "{body}");
}
