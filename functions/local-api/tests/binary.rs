//! The real `local-api` binary: `dev-token`, serving on a free port, a hard kill, and a
//! restart on the same data directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_local-api");

fn dev_token(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN).arg("--data-dir").arg(data_dir).arg("dev-token").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts the server on a free port and returns it with its base URL (read from its first line).
fn serve(data_dir: &Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("a listening line").to_owned();
    (child, base)
}

#[tokio::test]
async fn dev_tokens_work_and_a_killed_server_restarts_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let alice = dev_token(dir.path(), &["--sub", "alice"]);
    let agent = dev_token(dir.path(), &["--sub", "agent-7", "--groups", "support,auditor"]);
    let http = reqwest::Client::new();

    let (mut child, base) = serve(dir.path());
    let res = http
        .post(format!("{base}/consents"))
        .bearer_auth(&alice)
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let consent: Value = res.json().await.unwrap();
    let res = http
        .post(format!("{base}/tokens"))
        .bearer_auth(&agent)
        .json(&json!({"user_id": "alice", "reason": "ticket 99: login loop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "the comma-separated --groups reach the handler");
    child.kill().unwrap(); // SIGKILL: no chance to flush anything
    child.wait().unwrap();

    let (mut child, base) = serve(dir.path());
    let res = http.get(format!("{base}/consents/current")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), consent);
    let audit: Value =
        http.get(format!("{base}/audit?user_id=alice")).bearer_auth(&agent).send().await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["token.issued", "consent.granted"]);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_bad_policy_variable_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("SUPPORT_ACCESS_MAX_DURATION_SECONDS", "a week")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SUPPORT_ACCESS_MAX_DURATION_SECONDS"));
}
