//! RFC 8693 token exchange at the issuer's token endpoint, local-api over real loopback HTTP:
//! the metadata leads a client from the issuer to `POST /token`; the agent's identity token
//! (`subject_token`, form-encoded) is exchanged for an impersonation token that works on the
//! app's API and is audited as `POST /tokens` audits it; every refusal answers RFC 6749's
//! error JSON, and the ones `POST /tokens` audits are audited the same way here, the others
//! write nothing.

use std::sync::Arc;

use local_api::Runtime;
use reqwest::header;
use serde_json::{Value, json};
use shared::domain::{Policy, SignIn, StepUpPolicy};
use shared::ports::{Clock, SystemClock};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const REASON: &str = "ticket 4411: billing page broken";

async fn serve(dir: &std::path::Path, step_up: StepUpPolicy) -> (String, Arc<Runtime>) {
    e2e::local_api_bound_first(dir, |base| (Policy { issuer: base.to_owned(), step_up, ..Policy::default() }, None))
        .await
}

/// The form of a valid exchange by `subject_token` for alice, with `extra` pairs over it (an
/// empty value removes one).
fn form(subject_token: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = [
        ("grant_type", GRANT),
        ("subject_token", subject_token),
        ("subject_token_type", ID_TOKEN),
        ("requested_subject", "alice"),
        ("reason", REASON),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    for (k, v) in extra {
        pairs.retain(|(name, _)| name != k);
        if !v.is_empty() {
            pairs.push(((*k).to_owned(), (*v).to_owned()));
        }
    }
    pairs
}

type Form = Vec<(String, String)>;

struct Answer {
    status: u16,
    headers: header::HeaderMap,
    body: Value,
}

async fn exchange(endpoint: &str, pairs: &[(String, String)]) -> Answer {
    let res = reqwest::Client::new().post(endpoint).form(pairs).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    Answer { status, headers, body: res.json().await.unwrap() }
}

async fn audit_of(base: &str, runtime: &Runtime, user: &str) -> Vec<Value> {
    let auditor = e2e::dev_token(runtime, "aud-1", &["auditor"]);
    let res =
        reqwest::Client::new().get(format!("{base}/audit?user_id={user}")).bearer_auth(auditor).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["events"].as_array().unwrap().clone()
}

/// What an audit event says, without what differs from one event to the next.
fn gist(event: &Value) -> Value {
    json!([event["type"], event["user_id"], event["actor"], event["reason"], event["detail"]])
}

/// The whole path a support tool takes: the token endpoint found from the issuer's metadata,
/// the exchange answered in RFC 8693's shape (never cached), the token then used on the app's
/// API as the agent acting as alice, and both on alice's audit log as `POST /tokens` and the
/// authorizer write them.
#[tokio::test]
async fn a_support_tool_exchanges_its_agents_identity_token_for_a_token_that_works_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) = serve(dir.path(), StepUpPolicy::default()).await;
    let http = reqwest::Client::new();
    let metadata: Value =
        http.get(format!("{base}/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(metadata["grant_types_supported"], json!([GRANT]));
    assert_eq!(metadata["token_endpoint_auth_methods_supported"], json!(["none"]));
    let endpoint = metadata["token_endpoint"].as_str().unwrap().to_owned();
    assert_eq!(endpoint, format!("{base}/token"));

    let alice = e2e::dev_token(&runtime, "alice", &[]);
    let granted = http
        .post(format!("{base}/consents"))
        .bearer_auth(&alice)
        .json(&json!({"duration_seconds": 3600, "scope": "full"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let consent: Value = granted.json().await.unwrap();

    let agent = e2e::dev_token(&runtime, "agent-7", &["support"]);
    // `scope` and `audience` as a client may send them, and a parameter this endpoint does
    // not know, ignored (RFC 6749 section 3.2).
    let answer = exchange(
        &endpoint,
        &form(&agent, &[("scope", "full"), ("audience", "support-access-app"), ("client_id", "support-tool")]),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(
        (&answer.headers[header::CACHE_CONTROL], &answer.headers[header::PRAGMA]),
        (&"no-store".parse().unwrap(), &"no-cache".parse().unwrap())
    );
    let mut members: Vec<&str> = answer.body.as_object().unwrap().keys().map(String::as_str).collect();
    members.sort();
    assert_eq!(
        members,
        ["access_token", "consent_id", "expires_at", "expires_in", "issued_token_type", "jti", "scope", "token_type"]
    );
    assert_eq!(answer.body["issued_token_type"], "urn:ietf:params:oauth:token-type:access_token");
    assert_eq!((&answer.body["token_type"], &answer.body["scope"]), (&json!("Bearer"), &json!("full")));
    assert_eq!(answer.body["consent_id"], consent["consent_id"]);
    let expires_in = answer.body["expires_in"].as_i64().unwrap();
    assert!((1..=900).contains(&expires_in), "{expires_in}");
    let token = answer.body["access_token"].as_str().unwrap();

    let whoami = http.delete(format!("{base}/app/whoami")).bearer_auth(token).send().await.unwrap();
    assert_eq!(whoami.status(), 200);
    let context: Value = whoami.json().await.unwrap();
    assert_eq!((&context["user_id"], &context["acting_agent"]), (&json!("alice"), &json!("agent-7")));
    assert_eq!(context["jti"], answer.body["jti"]);

    // Asked for a JWT, it says it issued one.
    let jwt =
        exchange(&endpoint, &form(&agent, &[("requested_token_type", "urn:ietf:params:oauth:token-type:jwt")])).await;
    assert_eq!((jwt.status, &jwt.body["issued_token_type"]), (200, &json!("urn:ietf:params:oauth:token-type:jwt")));

    let events = audit_of(&base, &runtime, "alice").await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "token.issued").count(), 2, "{kinds:?}");
    assert!(kinds.contains(&"token.used"), "{kinds:?}");
    let issued = events.iter().find(|e| e["type"] == "token.issued" && e["jti"] == answer.body["jti"]).unwrap();
    assert_eq!(
        (issued["actor"]["sub"].as_str(), issued["reason"].as_str()),
        (Some("agent-7"), Some(REASON)),
        "{issued}"
    );
}

/// Every refusal in RFC 6749's shape, with its code: the request's own faults checked before
/// the subject token is read, a subject token that is not a valid identity token of the
/// provider (forged, another audience, an impersonation token), a subject outside the support
/// group, and what the consent refuses. The refusals `POST /tokens` audits (no consent,
/// self-impersonation) are audited exactly as it audits them; the others write nothing.
#[tokio::test]
async fn every_refusal_answers_its_oauth_error_and_is_audited_as_post_tokens_audits_it() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) = serve(dir.path(), StepUpPolicy::default()).await;
    let endpoint = format!("{base}/token");
    let http = reqwest::Client::new();
    let agent = e2e::dev_token(&runtime, "agent-7", &["support"]);
    let alice = e2e::dev_token(&runtime, "alice", &[]);
    let granted =
        http.post(format!("{base}/consents")).bearer_auth(&alice).json(&json!({"duration_seconds": 3600})).send().await;
    assert_eq!(granted.unwrap().status(), 201);
    let impersonation = exchange(&endpoint, &form(&agent, &[])).await.body["access_token"].as_str().unwrap().to_owned();
    let before = audit_of(&base, &runtime, "alice").await.len();

    // Another data directory's dev provider: a well-formed identity token this one never issued.
    let other_dir = tempfile::tempdir().unwrap();
    let (stranger, _) = Runtime::embedded_identity(other_dir.path()).unwrap();
    let forged = stranger.issue("agent-7", &["support".to_owned()], SystemClock.now(), 3600);
    // Each form, with the `error` and the `problem_type` slug it answers.
    let cases: Vec<(Form, &str, &str)> = vec![
        (form(&agent, &[("grant_type", "client_credentials")]), "unsupported_grant_type", "invalid-request"),
        (form(&agent, &[("grant_type", "")]), "invalid_request", "invalid-request"),
        (
            form(&agent, &[("actor_token", &agent), ("actor_token_type", ID_TOKEN)]),
            "invalid_request",
            "invalid-request",
        ),
        (form(&agent, &[("audience", "another-app")]), "invalid_target", "invalid-request"),
        (form(&agent, &[("resource", "https://app.example.com/")]), "invalid_target", "invalid-request"),
        (form(&agent, &[("scope", "admin")]), "invalid_scope", "invalid-request"),
        (
            form(&agent, &[("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")]),
            "invalid_request",
            "invalid-request",
        ),
        (form(&agent, &[("requested_subject", "")]), "invalid_request", "invalid-request"),
        (form(&agent, &[("reason", "x")]), "invalid_request", "invalid-request"),
        (form(&forged, &[]), "invalid_request", "invalid-request"),
        (form("not-a-jwt", &[]), "invalid_request", "invalid-request"),
        (form(&impersonation, &[]), "invalid_request", "invalid-request"),
        (form(&e2e::dev_token(&runtime, "agent-8", &["supporters"]), &[]), "invalid_request", "forbidden"),
        (form(&e2e::dev_token(&runtime, "support-access", &["support"]), &[]), "invalid_request", "forbidden"),
    ];
    for (pairs, error, problem) in &cases {
        let answer = exchange(&endpoint, pairs).await;
        assert_eq!((answer.status, answer.body["error"].as_str()), (400, Some(*error)), "{pairs:?}: {}", answer.body);
        assert_eq!(answer.headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
        assert!(answer.body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{}", answer.body);
        let slug = answer.body["problem_type"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
        assert_eq!(slug, *problem, "{pairs:?}");
    }
    // Not a form: JSON (the body `POST /tokens` takes), and a form without its content type.
    for (content_type, body) in [
        ("application/json", json!({"grant_type": GRANT, "subject_token": agent}).to_string()),
        ("text/plain", serde_urlencoded::to_string(form(&agent, &[])).unwrap()),
    ] {
        let res = http.post(&endpoint).header(header::CONTENT_TYPE, content_type).body(body).send().await.unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request", "{content_type}");
    }
    assert_eq!(audit_of(&base, &runtime, "alice").await.len(), before, "no refusal above is audited");

    // What `POST /tokens` audits, the exchange audits the same way: bob, who has no consent,
    // and the agent as themselves.
    let (exchanged, slug) = both(&base, "bob", &agent).await;
    assert_eq!((exchanged.status, exchanged.body["error"].as_str()), (400, Some("invalid_grant")));
    assert!(exchanged.body["problem_type"].as_str().unwrap().ends_with(&format!("/{slug}")), "{slug}");
    assert_eq!(slug, "no-consent");
    let bob = audit_of(&base, &runtime, "bob").await;
    assert_eq!(bob.len(), 2, "{bob:?}");
    assert_eq!(gist(&bob[0]), gist(&bob[1]));
    assert_eq!((bob[0]["type"].as_str(), bob[0]["detail"].as_str()), (Some("token.denied"), Some("no-consent")));

    let carol = e2e::dev_token(&runtime, "carol", &["support"]);
    let (exchanged, slug) = both(&base, "carol", &carol).await;
    assert_eq!((exchanged.body["error"].as_str(), slug.as_str()), (Some("invalid_grant"), "self-impersonation"));
    let carol = audit_of(&base, &runtime, "carol").await;
    assert_eq!((carol.len(), gist(&carol[0])), (2, gist(&carol[1])));
}

/// The same mint asked both ways, by `agent` for `user`: the exchange's answer and the
/// problem slug of `POST /tokens`.
async fn both(base: &str, user: &str, agent: &str) -> (Answer, String) {
    let exchanged = exchange(&format!("{base}/token"), &form(agent, &[("requested_subject", user)])).await;
    let minted = reqwest::Client::new()
        .post(format!("{base}/tokens"))
        .bearer_auth(agent)
        .json(&json!({"user_id": user, "reason": REASON}))
        .send()
        .await
        .unwrap();
    let problem: Value = minted.json().await.unwrap();
    (exchanged, problem["type"].as_str().unwrap().rsplit('/').next().unwrap().to_owned())
}

/// The step-up policy holds as on `POST /tokens`: a subject token whose sign-in lacks the
/// method is refused (`invalid_request`, RFC 8693 section 2.2.2: a subject token unacceptable
/// by policy, `problem_type` step-up-required) and audited as `token.denied`; one with it passes.
#[tokio::test]
async fn the_step_up_policy_holds_for_the_subject_token() {
    let dir = tempfile::tempdir().unwrap();
    let step_up = StepUpPolicy { amr: Some("mfa".into()), max_age_seconds: None };
    let (base, runtime) = serve(dir.path(), step_up).await;
    let alice = e2e::dev_token(&runtime, "alice", &[]);
    let granted = reqwest::Client::new()
        .post(format!("{base}/consents"))
        .bearer_auth(&alice)
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await;
    assert_eq!(granted.unwrap().status(), 201);
    let now = SystemClock.now();
    let support = ["support".to_owned()];
    let sign_in = |amr: &[&str]| SignIn { amr: amr.iter().map(|a| a.to_string()).collect(), auth_time: Some(now) };
    let weak = runtime.identity.issue_signed_in("agent-7", &support, &sign_in(&["pwd"]), now, 3600);
    let strong = runtime.identity.issue_signed_in("agent-7", &support, &sign_in(&["pwd", "mfa"]), now, 3600);

    let refused = exchange(&format!("{base}/token"), &form(&weak, &[])).await;
    assert_eq!((refused.status, refused.body["error"].as_str()), (400, Some("invalid_request")));
    assert!(refused.body["problem_type"].as_str().unwrap().ends_with("/step-up-required"), "{}", refused.body);
    let passed = exchange(&format!("{base}/token"), &form(&strong, &[])).await;
    assert_eq!(passed.status, 200, "{}", passed.body);
    let kinds: Vec<Value> =
        audit_of(&base, &runtime, "alice").await.iter().map(|e| json!([e["type"], e["detail"]])).collect();
    assert!(kinds.contains(&json!(["token.denied", "step-up-required: amr"])), "{kinds:?}");
    assert!(kinds.iter().any(|k| k[0] == "token.issued"), "{kinds:?}");
}
