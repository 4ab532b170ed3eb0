//! `GET /audit/export` and `support-access verify`: an untouched export verifies clean, and
//! each way of tampering with it (edit a field, delete an event, reorder two, splice another
//! user's event in) is caught, naming the first bad line.

use std::path::PathBuf;
use std::process::Command;

use e2e::{Event, TestApp};
use serde_json::json;
use support_access_cli::{VerifyFailure, verify_export};
use support_access_verify::chain::ChainError;

async fn export(app: &TestApp, user: &str) -> String {
    let (status, content_type, body) = app
        .call_raw(Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query(&format!("user_id={user}")))
        .await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"), "{body}");
    body
}

/// A few days of alice's account: grant, two tokens, uses, a refused write, a revoke, a denial.
async fn busy_app() -> TestApp {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    app.grant("bob", json!({"duration_seconds": 3600})).await;
    for _ in 0..2 {
        let token = app.mint("alice").await.str("access_token").to_owned();
        app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
        app.call(Event::new("POST", "/app/whoami").anonymous().bearer(&token)).await;
        app.clock.advance(60);
    }
    app.mint("bob").await;
    app.call(Event::new("DELETE", "/consents/current").user("alice")).await;
    app.mint("alice").await;
    app
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

fn broken_at(result: Result<support_access_cli::Report, VerifyFailure>) -> (usize, ChainError) {
    match result {
        Err(VerifyFailure::Broken { line, error, .. }) => (line, error),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[tokio::test]
async fn an_untouched_export_verifies_clean() {
    let app = busy_app().await;
    let text = export(&app, "alice").await;
    let report = verify_export(&text).unwrap();
    assert_eq!(report.events, 9);
    assert_eq!(report.heads["alice"].0, 9);
    // Streams do not interfere: two users' exports in one file verify too.
    let both = text + &export(&app, "bob").await;
    assert_eq!(verify_export(&both).unwrap().heads.len(), 2);
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_at_its_line() {
    let app = busy_app().await;
    let original = lines(&export(&app, "alice").await);

    let mut edited = original.clone();
    edited[3] = edited[3].replace("\"read\"", "\"full\"");
    assert_ne!(edited[3], original[3]);
    assert!(matches!(broken_at(verify_export(&join(&edited))), (4, ChainError::Hash { .. })));

    let mut deleted = original.clone();
    deleted.remove(4);
    assert!(matches!(broken_at(verify_export(&join(&deleted))), (5, ChainError::Sequence { seq: 6, expected: 5, .. })));

    let mut reordered = original.clone();
    reordered.swap(2, 3);
    assert!(matches!(broken_at(verify_export(&join(&reordered))), (3, ChainError::Sequence { .. })));

    // An edit whose hash is recomputed still breaks the next event's link.
    let mut rehashed: Vec<serde_json::Value> = original.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    rehashed[5]["detail"] = json!("GET /app/nothing-to-see");
    rehashed[5]["hash"] = json!(support_access_verify::chain::event_hash(&rehashed[5]));
    let rehashed: Vec<String> = rehashed.iter().map(|v| v.to_string()).collect();
    assert!(matches!(broken_at(verify_export(&join(&rehashed))), (7, ChainError::Link { .. })));

    // Bob's event spliced into alice's chain, renamed to her.
    let bob = lines(&export(&app, "bob").await);
    let mut spliced = original.clone();
    spliced[1] = bob[1].replace("\"user_id\":\"bob\"", "\"user_id\":\"alice\"");
    let (line, _) = broken_at(verify_export(&join(&spliced)));
    assert_eq!(line, 2);

    let mut garbage = original.clone();
    garbage[6] = "{not json".into();
    assert!(matches!(verify_export(&join(&garbage)), Err(VerifyFailure::NotJson { line: 7, .. })));
}

#[tokio::test]
async fn only_an_auditor_exports_and_only_a_valid_user() {
    let app = busy_app().await;
    let (status, _, _) = app.call_raw(Event::new("GET", "/audit/export").user("alice").query("user_id=alice")).await;
    assert_eq!(status, 403);
    for query in ["", "user_id=al%20ice", "user_id=alice&extra=1"] {
        let (status, _, body) =
            app.call_raw(Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query(query)).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
}

fn cli() -> PathBuf {
    let dir = std::env::var_os("SUPPORT_ACCESS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join("support-access");
    assert!(path.exists(), "{} is missing: build the workspace binaries first (scripts/test does)", path.display());
    path
}

#[tokio::test]
async fn the_cli_exits_0_for_an_intact_export_1_naming_the_bad_event_and_2_for_no_file() {
    let app = busy_app().await;
    let original = lines(&export(&app, "alice").await);
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, join(&original)).unwrap();
    let out = Command::new(cli()).arg("verify").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("OK: 9 events in 1 streams"));

    let mut tampered = original.clone();
    tampered.remove(2);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, join(&tampered)).unwrap();
    let out = Command::new(cli()).arg("verify").arg(&bad).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let bad_id =
        serde_json::from_str::<serde_json::Value>(&tampered[2]).unwrap()["event_id"].as_str().unwrap().to_owned();
    assert!(stdout.contains("BROKEN: line 3") && stdout.contains(&bad_id), "{stdout}");

    let out = Command::new(cli()).arg("verify").arg(dir.path().join("missing.jsonl")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
