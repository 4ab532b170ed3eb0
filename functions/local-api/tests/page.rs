//! The consent screen example page and its dev sign-in, on the real `local-api` binary: the
//! page's files come with their content types and the strict CSP, and `/dev/sign-in` issues
//! user tokens only (no group: a support route refuses it) and refuses a bad user id.

mod common;

use std::path::Path;
use std::process::Child;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use common::serve_with;
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The server on a free port, killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path) -> Server {
    let (child, base) = serve_with(data_dir, &[]);
    Server { child, base }
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn the_page_files_come_with_their_types_and_a_strict_csp() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let http = reqwest::Client::new();
    for (path, content_type, marker) in [
        ("/", "text/html; charset=utf-8", "<script src=\"/consent.js\""),
        ("/consent.js", "text/javascript; charset=utf-8", "textContent"),
        ("/consent.css", "text/css; charset=utf-8", "font"),
        ("/favicon.svg", "image/svg+xml", "<svg"),
    ] {
        let res = http.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(header(&res, "content-type"), content_type, "{path}");
        assert_eq!(header(&res, "content-security-policy"), CSP, "{path}");
        assert_eq!(header(&res, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&res, "cache-control"), "no-store", "{path}");
        assert!(res.text().await.unwrap().contains(marker), "{path}");
    }
    let res = http.post(format!("{}/", server.base)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(header(&res, "allow"), "GET, HEAD");
    // The API is untouched: an unknown path is still the API's 404 problem.
    let res = http.get(format!("{}/consent.html", server.base)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(header(&res, "content-type"), "application/problem+json");
}

#[tokio::test]
async fn dev_sign_in_issues_a_user_token_without_groups_and_refuses_a_bad_sub() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let http = reqwest::Client::new();
    let sign_in = |body: Value| http.post(format!("{}/dev/sign-in", server.base)).json(&body).send();

    let res = sign_in(json!({"sub": "alice"})).await.unwrap();
    assert_eq!(res.status(), 200);
    let token = res.json::<Value>().await.unwrap()["token"].as_str().expect("a token").to_owned();
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["groups"], json!([]), "never any group");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600, "one hour");

    let res = http.get(format!("{}/consents/current", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 404, "a valid identity with no consent yet");
    let res = http
        .post(format!("{}/tokens", server.base))
        .bearer_auth(&token)
        .json(&json!({"user_id": "bob", "reason": "ticket 1: let me in"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "a signed-in user is no support agent");
    let problem: Value = res.json().await.unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/forbidden"), "{problem}");
    let res = http.get(format!("{}/audit", server.base)).bearer_auth(&token).send().await.unwrap();
    assert_eq!(res.status(), 403, "nor an auditor");

    for bad in [
        json!({"sub": "auth0|abc"}),
        json!({"sub": ""}),
        json!({"sub": "x".repeat(129)}),
        json!({"sub": 7}),
        json!({}),
        json!(["alice"]),
        json!({"sub": "alice", "groups": ["support"]}),
    ] {
        let res = sign_in(bad.clone()).await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(header(&res, "content-type"), "application/problem+json", "{bad}");
        let problem: Value = res.json().await.unwrap();
        assert!(problem["type"].as_str().unwrap().ends_with("/invalid-request"), "{problem}");
        assert_eq!(problem["status"], 400);
        assert!(!problem["detail"].as_str().unwrap().is_empty());
    }
    let res = http.get(format!("{}/dev/sign-in", server.base)).send().await.unwrap();
    assert_eq!(res.status(), 405);

    // A page elsewhere that rebinds its own name to 127.0.0.1 still sends that name as Host.
    let rebound = http
        .post(format!("{}/dev/sign-in", server.base))
        .header("host", "attacker.example")
        .json(&json!({"sub": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let problem: Value = rebound.json().await.unwrap();
    assert!(problem.get("token").is_none() && problem["type"].as_str().unwrap().ends_with("/forbidden"), "{problem}");
}
