//! local-api over real loopback HTTP: the curl walk-through of the README as a test, the
//! minted token verified by PyJWT (another language) against the served JWK Set, and a
//! restart on the same data directory that loses nothing.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use e2e::send_json;
use local_api::Runtime;
use serde_json::{Value, json};
use shared::domain::Policy;
use shared::ports::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

struct Running {
    base: String,
    runtime: Arc<Runtime>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// local-api as its binary starts it: bound first, its base URL the tokens' issuer.
async fn start(data_dir: &Path) -> Running {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let policy = Policy { issuer: base.clone(), ..Policy::default() };
    let runtime = Arc::new(Runtime::embedded(data_dir, policy, Arc::new(SystemClock)).await.unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(local_api::serve(listener, runtime.clone(), async {
        let _ = stopped.await;
    }));
    Running { base, runtime, stop, task }
}

impl Running {
    fn token(&self, sub: &str, groups: &[&str]) -> String {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        self.runtime.identity.issue(sub, &groups, SystemClock.now(), 3600)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

fn pyjwt_verify(jwks: &Value, token: &str, issuer: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
    std::fs::write(dir.path().join("token"), token).unwrap();
    let out = Command::new(e2e::python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("pyjwt_verify.py"))
        .arg(dir.path().join("jwks.json"))
        .arg(dir.path().join("token"))
        .args(["support-access-app", issuer])
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn the_readme_walkthrough_works_over_http_and_pyjwt_verifies_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let api = start(dir.path()).await;
    let http = reqwest::Client::new();
    let (alice, agent, auditor) =
        (api.token("alice", &[]), api.token("agent-7", &["support"]), api.token("aud-1", &["auditor"]));

    let (status, consent) = send_json(
        http.post(format!("{}/consents", api.base))
            .bearer_auth(&alice)
            .json(&json!({"duration_seconds": 3600, "scope": "read", "note": "billing ticket 4411"})),
    )
    .await;
    assert_eq!(status, 201, "{consent}");

    let (status, minted) = send_json(
        http.post(format!("{}/tokens", api.base))
            .bearer_auth(&agent)
            .json(&json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let token = minted["access_token"].as_str().unwrap().to_owned();

    // From the issuer alone, as an issuer-only configuration does: its metadata, then the keys.
    let (status, metadata) = send_json(http.get(format!("{}/.well-known/openid-configuration", api.base))).await;
    assert_eq!((status, metadata["issuer"].as_str()), (200, Some(api.base.as_str())));
    let (status, jwks) = send_json(http.get(metadata["jwks_uri"].as_str().unwrap())).await;
    assert_eq!(status, 200);
    let (ok, out) = pyjwt_verify(&jwks, &token, &api.base);
    assert!(ok, "PyJWT refused our token: {out}");
    let claims: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["act"]["sub"], "agent-7");
    assert_eq!(claims["cid"], consent["consent_id"]);

    // PyJWT is a real check: it refuses a token whose payload was edited.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].chars().rev().collect();
    let (ok, _) = pyjwt_verify(&jwks, &parts.join("."), &api.base);
    // PyJWT pinned to the old bare-name issuer refuses the token: the migration note.
    let (ok_pinned, _) = pyjwt_verify(&jwks, &token, "support-access");
    assert!(!ok_pinned, "a verifier pinned to the old issuer must refuse the new one");
    assert!(!ok, "PyJWT must refuse a tampered token");

    let (status, who) = send_json(http.get(format!("{}/app/whoami", api.base)).bearer_auth(&token)).await;
    assert_eq!((status, who["acting_agent"].as_str()), (200, Some("agent-7")));
    let (status, _) = send_json(http.post(format!("{}/app/whoami", api.base)).bearer_auth(&token)).await;
    assert_eq!(status, 403, "read scope refuses POST");

    let (status, _) = send_json(http.delete(format!("{}/consents/current", api.base)).bearer_auth(&alice)).await;
    assert_eq!(status, 204);
    let (status, refused) = send_json(http.get(format!("{}/app/whoami", api.base)).bearer_auth(&token)).await;
    assert_eq!(status, 401, "{refused}");
    let (status, denied) = send_json(
        http.post(format!("{}/tokens", api.base))
            .bearer_auth(&agent)
            .json(&json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"})),
    )
    .await;
    assert_eq!((status, denied["type"].as_str().unwrap().rsplit('/').next()), (403, Some("no-consent")));

    let (status, audit) = send_json(http.get(format!("{}/audit?user_id=alice", api.base)).bearer_auth(&auditor)).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
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
    let (status, log) = send_json(http.get(format!("{}/me/access-log", api.base)).bearer_auth(&alice)).await;
    assert_eq!((status, &log["events"]), (200, &audit["events"]));

    // An identity token from elsewhere is not an identity here.
    let foreign = adapter_embedded::DevIdentityProvider::generate().issue("alice", &[], SystemClock.now(), 3600);
    let (status, _) = send_json(http.get(format!("{}/consents/current", api.base)).bearer_auth(&foreign)).await;
    assert_eq!(status, 401);

    // A body over 16 KiB is refused without being read whole.
    let big = "x".repeat(64 * 1024);
    let (status, problem) = send_json(
        http.post(format!("{}/consents", api.base))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_eq!((status, problem["type"].as_str().unwrap().rsplit('/').next()), (413, Some("payload-too-large")));
    api.stop().await;
}

/// The demo route, as the app API's authorizer: the user's own identity token and an agent's
/// impersonation token both pass, each answered in the one context shape (`acting_agent` and
/// the rest only when impersonated); only the impersonation token's use is audited.
#[tokio::test]
async fn the_demo_route_takes_the_user_s_identity_token_and_the_impersonation_token_in_one_shape() {
    let dir = tempfile::tempdir().unwrap();
    let api = start(dir.path()).await;
    let http = reqwest::Client::new();
    let (alice, agent, auditor) =
        (api.token("alice", &[]), api.token("agent-7", &["support"]), api.token("aud-1", &["auditor"]));
    let whoami = format!("{}/app/whoami", api.base);

    // Alice's own token: her identity, every method (her own request has no scope).
    for request in [http.get(&whoami), http.post(&whoami), http.delete(&whoami)] {
        let (status, who) = send_json(request.bearer_auth(&alice)).await;
        assert_eq!((status, &who), (200, &json!({"user_id": "alice"})));
    }

    let (status, consent) = send_json(
        http.post(format!("{}/consents", api.base))
            .bearer_auth(&alice)
            .json(&json!({"duration_seconds": 3600, "scope": "read"})),
    )
    .await;
    assert_eq!(status, 201, "{consent}");
    let (status, minted) = send_json(
        http.post(format!("{}/tokens", api.base))
            .bearer_auth(&agent)
            .json(&json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"})),
    )
    .await;
    assert_eq!(status, 201, "{minted}");
    let (status, who) = send_json(http.get(&whoami).bearer_auth(minted["access_token"].as_str().unwrap())).await;
    assert_eq!(
        (status, who),
        (
            200,
            json!({"user_id": "alice", "acting_agent": "agent-7", "scope": "read",
                   "consent_id": consent["consent_id"], "jti": minted["jti"]})
        )
    );

    // Refused: another provider's token (another key), a reserved sub, an expired token.
    let foreign = adapter_embedded::DevIdentityProvider::generate().issue("alice", &[], SystemClock.now(), 3600);
    let reserved = api.token("support-access", &[]);
    let expired = api.runtime.identity.issue("alice", &[], SystemClock.now().plus_seconds(-7200), 3600);
    for token in [&foreign, &reserved, &expired] {
        let (status, _) = send_json(http.get(&whoami).bearer_auth(token)).await;
        assert_eq!(status, 401);
    }

    // Alice's own requests are not on her log: the one use there is the agent's.
    let (status, audit) = send_json(http.get(format!("{}/audit?user_id=alice", api.base)).bearer_auth(&auditor)).await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["token.used", "token.issued", "consent.granted"]);
    api.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_data_directory_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let api = start(dir.path()).await;
    let alice = api.token("alice", &[]);
    let (_, consent) = send_json(
        http.post(format!("{}/consents", api.base)).bearer_auth(&alice).json(&json!({"duration_seconds": 7200})),
    )
    .await;
    let (_, jwks_before) = send_json(http.get(format!("{}/.well-known/jwks.json", api.base))).await;
    api.stop().await;

    let api = start(dir.path()).await;
    let (status, again) = send_json(http.get(format!("{}/consents/current", api.base)).bearer_auth(&alice)).await;
    assert_eq!(status, 200, "the identity token and the consent survive the restart");
    assert_eq!(again, consent);
    let (_, log) = send_json(http.get(format!("{}/me/access-log", api.base)).bearer_auth(&alice)).await;
    assert_eq!(log["events"][0]["type"], "consent.granted");
    let (_, jwks_after) = send_json(http.get(format!("{}/.well-known/jwks.json", api.base))).await;
    assert_eq!(jwks_before, jwks_after, "the signing key is kept");
    api.stop().await;
}

/// Hostile sizes and shapes over real HTTP: each is refused cheaply (problem+json where a
/// handler sees it; hyper's own 431 for a header block it will not buffer), nothing is
/// written, and the server keeps serving.
#[tokio::test]
async fn oversized_and_hostile_requests_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = reqwest::Client::new();
    let alice = server.token("alice", &[]);
    let auditor = server.token("aud-1", &["auditor"]);
    let problem = |status: u16, body: &Value, slug: &str| {
        assert_eq!(body["status"], status, "{body}");
        assert!(body["type"].as_str().unwrap().ends_with(slug), "{body}");
    };

    // A body over 16 KiB.
    let big = json!({"duration_seconds": 3600, "note": "x".repeat(20_000)}).to_string();
    let (status, body) =
        send_json(client.post(format!("{}/consents", server.base)).bearer_auth(&alice).body(big)).await;
    assert_eq!(status, 413);
    problem(413, &body, "payload-too-large");

    // JSON nested 8000 deep (16 KiB): serde_json's recursion limit refuses it, no stack overflow.
    let nested = "[".repeat(8000) + &"]".repeat(8000);
    let deep = format!(r#"{{"duration_seconds": 3600, "note": {nested}}}"#);
    assert!(deep.len() <= 16 * 1024);
    let (status, body) =
        send_json(client.post(format!("{}/consents", server.base)).bearer_auth(&alice).body(deep)).await;
    assert_eq!(status, 400);
    problem(400, &body, "invalid-request");

    // A 10 000-character query string.
    let long = format!("{}/audit?user_id={}", server.base, "a".repeat(10_000));
    let (status, body) = send_json(client.get(long).bearer_auth(&auditor)).await;
    assert_eq!(status, 400);
    problem(400, &body, "invalid-request");
    let repeated = format!("{}/audit?{}", server.base, "limit=1&".repeat(1_250));
    let (status, body) = send_json(client.get(repeated).bearer_auth(&auditor)).await;
    assert_eq!(status, 400, "{body}");

    // A header flood: hyper refuses the request before any handler (431), or drops it.
    let mut flood = client.get(format!("{}/consents/current", server.base)).bearer_auth(&alice);
    for i in 0..2_000 {
        flood = flood.header(format!("x-flood-{i}"), "y".repeat(64));
    }
    match flood.send().await {
        Ok(res) => assert_eq!(res.status().as_u16(), 431),
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }

    // Nothing of the above was written, and the server still answers.
    let (status, body) = send_json(client.get(format!("{}/consents/current", server.base)).bearer_auth(&alice)).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        server
            .runtime
            .services
            .audit_reader
            .query(&shared::ports::AuditQuery {
                filter: Default::default(),
                limit: 10,
                after: None,
                now: SystemClock.now(),
            })
            .await
            .unwrap()
            .events
            .is_empty()
    );
    server.stop().await;
}

/// Runs the CLI to completion (on a blocking thread: the server runs on this test's runtime).
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || Command::new(e2e::cli_binary()).args(args).output().unwrap()).await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_support_cli_mints_reads_follows_and_exports_the_log_and_prints_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = reqwest::Client::new();
    let (alice, agent, auditor) =
        (server.token("alice", &[]), server.token("agent-7", &["support"]), server.token("compliance-1", &["auditor"]));
    let (status, _) = send_json(
        http.post(format!("{}/consents", server.base)).bearer_auth(&alice).json(&json!({"duration_seconds": 3600})),
    )
    .await;
    assert_eq!(status, 201);
    let online =
        |token: &str| vec!["--endpoint".to_owned(), server.base.clone(), "--token".to_owned(), token.to_owned()];
    let args = |head: &[&str], token: &str, tail: &[&str]| -> Vec<String> {
        head.iter().map(|s| s.to_string()).chain(online(token)).chain(tail.iter().map(|s| s.to_string())).collect()
    };

    // mint --header prints a header the app's API takes as it is.
    let minted = cli(args(&["mint"], &agent, &["--user", "alice", "--reason", "ticket 4411", "--header"])).await;
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let header = text(&minted.stdout).trim().to_owned();
    let token = header.strip_prefix("Authorization: Bearer ").expect("an Authorization header").to_owned();
    let (status, _) = send_json(http.get(format!("{}/app/whoami", server.base)).bearer_auth(&token)).await;
    assert_eq!(status, 200);

    // A refusal prints the problem (status, slug, detail, request id) and exits 4 (the exit
    // codes' table, `support_access_cli::exit::Exit`); no server exits 5.
    let refused = cli(args(&["mint"], &agent, &["--user", "bob", "--reason", "ticket 4412"])).await;
    assert_eq!(refused.status.code(), Some(4));
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("403") && stderr.contains("no-consent") && stderr.contains("(request id "), "{stderr}");
    assert!(refused.stdout.is_empty(), "no token printed");
    // Refused for want of a group: the message names the group.
    let not_support = cli(args(&["mint"], &alice, &["--user", "alice", "--reason", "x"])).await;
    let stderr = text(&not_support.stderr);
    assert_eq!(not_support.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("403 forbidden") && stderr.contains("required group: support (request id "), "{stderr}");
    // An endpoint without a scheme is a usage error that says how to write it; nothing is sent.
    let no_scheme = cli(vec![
        "mint".into(),
        "--endpoint".into(),
        server.base.trim_start_matches("http://").to_owned(),
        "--token".into(),
        agent.clone(),
        "--user".into(),
        "alice".into(),
        "--reason".into(),
        "ticket 4411".into(),
    ])
    .await;
    let stderr = text(&no_scheme.stderr);
    assert_eq!(no_scheme.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has no scheme: write http://127.0.0.1:") && !stderr.contains("builder error"), "{stderr}");
    assert!(no_scheme.stdout.is_empty());
    let closed = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = cli(vec![
        "mint".into(),
        "--endpoint".into(),
        nowhere,
        "--token".into(),
        agent.clone(),
        "--user".into(),
        "alice".into(),
        "--reason".into(),
        "x".into(),
    ])
    .await;
    assert_eq!(unreachable.status.code(), Some(5), "{}", text(&unreachable.stderr));

    // audit: JSON Lines newest first, or a table with a header; filters go to the service.
    let json_lines = cli(args(&["audit"], &auditor, &["--user", "alice", "--json"])).await;
    assert!(json_lines.status.success(), "{}", text(&json_lines.stderr));
    let types: Vec<String> = text(&json_lines.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    // (bob's refusal is on bob's stream, not alice's.)
    assert_eq!(types, ["token.used", "token.issued", "consent.granted"].map(String::from));
    let only =
        cli(args(&["audit"], &auditor, &["--user", "alice", "--type", "token.issued", "--output", "json"])).await;
    assert_eq!(text(&only.stdout).lines().count(), 1);
    let table = text(&cli(args(&["audit"], &auditor, &["--user", "alice", "--limit", "2"])).await.stdout);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("AT") && rows[1].contains("token.used") && rows[1].contains("agent-7"), "{table}");
    let not_auditor = cli(args(&["audit"], &agent, &["--user", "alice"])).await;
    assert_eq!(not_auditor.status.code(), Some(4));
    assert!(text(&not_auditor.stderr).contains("required group: auditor"), "{}", text(&not_auditor.stderr));

    // --follow prints what happens next, once each, oldest first.
    let mut follower = Command::new(e2e::cli_binary())
        .args(args(&["audit"], &auditor, &["--user", "alice", "--json", "--follow", "--interval", "0.2"]))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut read = async |n: usize| {
        let mut types = Vec::new();
        for _ in 0..n {
            let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines_rx.recv())
                .await
                .expect("the follower printed in time")
                .expect("the follower is still running");
            types.push(serde_json::from_str::<Value>(&line).unwrap()["type"].as_str().unwrap().to_owned());
        }
        types
    };
    assert_eq!(read(3).await, ["consent.granted", "token.issued", "token.used"]);
    let (status, _) = send_json(http.delete(format!("{}/consents/current", server.base)).bearer_auth(&alice)).await;
    assert_eq!(status, 204);
    assert_eq!(read(1).await, ["consent.revoked"]);
    follower.kill().unwrap();
    follower.wait().unwrap();

    // export, with the JWK Set beside it, verifies offline.
    let (file, jwks) = (dir.path().join("alice.jsonl"), dir.path().join("jwks.json"));
    let (file_s, jwks_s) = (file.display().to_string(), jwks.display().to_string());
    let exported = cli(args(&["export"], &auditor, &["--user", "alice", "-o", &file_s, "--jwks", &jwks_s])).await;
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let verified = cli(vec!["verify".into(), file_s, "--jwks".into(), jwks_s, "--allow-unsealed".into()]).await;
    assert!(verified.status.success(), "{}{}", text(&verified.stdout), text(&verified.stderr));
    server.stop().await;
}

#[tokio::test]
async fn the_support_cli_requests_access_and_reports_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = reqwest::Client::new();
    let (carol, agent) = (server.token("carol", &[]), server.token("agent-7", &["support"]));
    let args = |head: &[&str], tail: &[&str]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(["--endpoint".to_owned(), server.base.clone(), "--token".to_owned(), agent.clone()])
            .chain(tail.iter().map(|s| s.to_string()))
            .collect()
    };

    let filed = cli(args(
        &["request"],
        &["--user", "carol", "--reason", "ticket 5150: sync stuck", "--scope", "full", "--duration", "15m"],
    ))
    .await;
    assert!(filed.status.success(), "{}", text(&filed.stderr));
    let id = text(&filed.stdout).trim().to_owned();
    assert_eq!(id.len(), 36, "the request id alone on stdout: {id:?}");
    assert!(text(&filed.stderr).contains("pending until"), "{}", text(&filed.stderr));

    let table = cli(args(&["status"], &[])).await;
    let table = text(&table.stdout);
    assert!(table.starts_with("REQUEST"), "{table}");
    assert!(table.contains(&id) && table.contains("pending") && table.contains("full 900s"), "{table}");

    let (status, consent) =
        send_json(http.post(format!("{}/me/access-requests/{id}/approve", server.base)).bearer_auth(&carol)).await;
    assert_eq!(status, 201, "{consent}");
    let one = cli(args(&["status", &id], &["--json"])).await;
    assert!(one.status.success(), "{}", text(&one.stderr));
    let shown: Value = serde_json::from_str(text(&one.stdout).trim()).unwrap();
    assert_eq!(
        (shown["status"].as_str(), shown["consent_id"].as_str()),
        (Some("approved"), consent["consent_id"].as_str())
    );
    assert_eq!(shown["scope"], "full");

    let minted = cli(args(&["mint"], &["--user", "carol", "--reason", "ticket 5150: sync stuck"])).await;
    assert!(minted.status.success(), "the approval let the agent in: {}", text(&minted.stderr));

    let unknown = cli(args(&["status", "00000000-0000-0000-0000-000000000000"], &[])).await;
    assert_eq!(unknown.status.code(), Some(4));
    let bad_duration =
        cli(args(&["request"], &["--user", "carol", "--reason", "ticket 5150", "--duration", "1w"])).await;
    assert_eq!(bad_duration.status.code(), Some(2), "clap refuses it before any call");
    let refused = cli(args(&["request"], &["--user", "carol", "--reason", "short"])).await;
    assert_eq!(refused.status.code(), Some(4));
    assert!(text(&refused.stderr).contains("invalid-request"), "{}", text(&refused.stderr));
}
