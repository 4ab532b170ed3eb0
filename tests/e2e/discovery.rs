//! The issuer over real loopback HTTP: local-api's tokens carry its base URL as `iss`; the
//! issuer's metadata is at both well-known paths and leads a verifier from the issuer alone
//! to the keys that verify its tokens; a verifier pinned to the old bare-name issuer refuses
//! the new tokens and keeps verifying a deployment that still uses it. And CORS: preflights
//! answered as the Fetch standard wants, allow headers only for listed origins, never
//! credentials.

use std::sync::Arc;

use base64::Engine;
use local_api::Runtime;
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use shared::domain::Policy;
use shared::http::Cors;
use support_access_verify::remote::{RemoteError, RemoteVerifier};
use support_access_verify::{Expected, Rejection};

/// local-api as its binary starts it: the bound base URL its issuer (unless `issuer` says
/// otherwise), with `cors`.
async fn serve(dir: &std::path::Path, issuer: Option<&str>, cors: Option<Cors>) -> (String, Arc<Runtime>) {
    e2e::local_api_bound_first(dir, |base| {
        (Policy { issuer: issuer.unwrap_or(base).to_owned(), ..Policy::default() }, cors)
    })
    .await
}

async fn mint(base: &str, runtime: &Runtime) -> String {
    let http = reqwest::Client::new();
    let alice = e2e::dev_token(runtime, "alice", &[]);
    let agent = e2e::dev_token(runtime, "agent-7", &["support"]);
    let res = http
        .post(format!("{base}/consents"))
        .bearer_auth(alice)
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = http
        .post(format!("{base}/tokens"))
        .bearer_auth(agent)
        .json(&json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

#[tokio::test]
async fn the_issuer_is_local_apis_url_and_its_metadata_leads_to_the_keys_that_verify_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) = serve(dir.path(), None, None).await;
    let token = mint(&base, &runtime).await;
    assert_eq!(claims_of(&token)["iss"], base.as_str());

    // Both well-known paths, the same document, whose issuer is the one the client started from.
    let http = reqwest::Client::new();
    let mut documents = Vec::new();
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let res = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()[header::CACHE_CONTROL], "public, max-age=300");
        documents.push(res.json::<Value>().await.unwrap());
    }
    assert_eq!(documents[0], documents[1]);
    let metadata = &documents[0];
    assert_eq!(metadata["issuer"], base.as_str());
    assert_eq!(metadata["jwks_uri"], format!("{base}/.well-known/jwks.json"));
    assert_eq!(metadata["introspection_endpoint"], format!("{base}/introspect"));
    assert_eq!(metadata["grant_types_supported"], json!(["urn:ietf:params:oauth:grant-type:token-exchange"]));
    assert_eq!(metadata["id_token_signing_alg_values_supported"], json!(["ES256"]));
    assert_eq!(metadata["token_endpoint"], format!("{base}/token"), "RFC 8693 token exchange");

    // An issuer-only verifier: the issuer, then its metadata, then the keys.
    let verifier =
        RemoteVerifier::new(metadata["jwks_uri"].as_str().unwrap(), Expected::new(&base, "support-access-app"));
    assert_eq!(verifier.verify(&token).await.unwrap().sub.as_str(), "alice");
    // A verifier still pinned to the old bare name refuses the new tokens: the migration note.
    let pinned = RemoteVerifier::new(
        format!("{base}/.well-known/jwks.json"),
        Expected::new("support-access", "support-access-app"),
    );
    assert!(matches!(pinned.verify(&token).await, Err(RemoteError::Rejected(Rejection::Issuer))));
}

#[tokio::test]
async fn a_deployment_on_the_old_bare_name_keeps_its_tokens_and_verifiers_and_has_no_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) = serve(dir.path(), Some("support-access"), None).await;
    let token = mint(&base, &runtime).await;
    assert_eq!(claims_of(&token)["iss"], "support-access");
    let old = RemoteVerifier::new(
        format!("{base}/.well-known/jwks.json"),
        Expected::new("support-access", "support-access-app"),
    );
    assert!(old.verify(&token).await.is_ok());
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"] {
        let res = reqwest::get(format!("{base}{path}")).await.unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let problem: Value = res.json().await.unwrap();
        assert!(problem["type"].as_str().unwrap().ends_with("/not-found"), "{problem}");
    }
}

fn preflight(http: &reqwest::Client, url: &str, origin: &str) -> reqwest::RequestBuilder {
    http.request(reqwest::Method::OPTIONS, url)
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type")
}

fn assert_no_credentials(headers: &HeaderMap) {
    assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), "{headers:?}");
}

#[tokio::test]
async fn cors_answers_preflights_for_listed_origins_only_and_never_allows_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let app = "http://localhost:5173";
    let (base, runtime) = serve(dir.path(), None, Cors::parse(app).unwrap()).await;
    let http = reqwest::Client::new();

    // A preflight on an identity route, with no identity: answered before any check.
    let res = preflight(&http, &format!("{base}/tokens"), app).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], app);
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "authorization, content-type");
    assert!(h[header::VARY].to_str().unwrap().contains("Origin"));
    assert_no_credentials(h);

    // Another origin: no allow headers, so the browser stops there.
    let res = preflight(&http, &format!("{base}/tokens"), "https://evil.example").send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert!(!res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    assert_no_credentials(res.headers());

    // The real request: the listed origin is named, and the answer varies on Origin.
    let alice = e2e::dev_token(&runtime, "alice", &[]);
    let res = http
        .get(format!("{base}/consents/current"))
        .bearer_auth(&alice)
        .header(header::ORIGIN, app)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], app);
    assert!(res.headers()[header::VARY].to_str().unwrap().contains("Origin"));
    assert_no_credentials(res.headers());
    let res = http
        .get(format!("{base}/.well-known/jwks.json"))
        .header(header::ORIGIN, "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
}

#[tokio::test]
async fn cors_is_off_by_default_and_a_star_never_comes_with_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _runtime) = serve(dir.path(), None, None).await;
    let http = reqwest::Client::new();
    let res = preflight(&http, &format!("{base}/tokens"), "http://localhost:5173").send().await.unwrap();
    assert_eq!(res.status(), 405, "off: an OPTIONS is routed as before");
    assert!(!res.headers().contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));

    let dir = tempfile::tempdir().unwrap();
    let (base, _runtime) = serve(dir.path(), None, Cors::parse("*").unwrap()).await;
    let res = preflight(&http, &format!("{base}/tokens"), "https://anyone.example").send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_no_credentials(res.headers());
}
