//! The real `local-api` binary: `dev-token`, serving on a free port, a hard kill, and a
//! restart on the same data directory.

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::{BIN, serve_with};
use serde_json::{Value, json};

fn dev_token(data_dir: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN).arg("--data-dir").arg(data_dir).arg("dev-token").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Starts the server on a free port and returns it with its base URL (read from its first line).
fn serve(data_dir: &Path) -> (Child, String) {
    serve_with(data_dir, &[])
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

/// `dev-token` without the server's `--data-dir` signs with another directory's key: the
/// server's 401 then says which data directory it uses and how to mint for it, but only to a
/// request addressed to this machine (a page that rebinds its own name to 127.0.0.1 learns no
/// path), and only for a dev identity token signed by another key.
#[tokio::test]
async fn a_dev_token_from_another_data_directory_is_answered_with_the_servers_data_directory() {
    let (server_dir, other_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut child, base) = serve(server_dir.path());
    // Minting from a directory with no key yet says so on stderr; stdout is the token alone.
    let mint = |sub: &str| {
        let out = Command::new(BIN).arg("--data-dir").arg(other_dir.path()).args(["dev-token", "--sub", sub]).output();
        let out = out.unwrap();
        assert!(out.status.success());
        (String::from_utf8(out.stdout).unwrap().trim().to_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (stray, stderr) = mint("alice");
    assert!(stderr.contains("created a new dev identity key") && stderr.contains("--data-dir"), "{stderr}");
    assert_eq!(stray.split('.').count(), 3, "{stray}");
    assert!(!mint("bob").1.contains("created"), "a second mint creates nothing");
    let server_path = server_dir.path().display().to_string();
    let http = reqwest::Client::new();

    let res = http.get(format!("{base}/consents/current")).bearer_auth(&stray).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["type"], "tag:support-access,2026:problems/unauthenticated");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("--data-dir {server_path}")), "{detail}");
    assert!(detail.contains("dev-token"), "{detail}");
    assert!(!detail.contains(&other_dir.path().display().to_string()), "{detail}");

    // Addressed to another name (DNS rebinding): the hint, without the path.
    let answer = raw_get_audit(&base, &["Host: evil.example", &format!("Authorization: Bearer {stray}")]);
    assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
    assert!(answer.contains("dev-token") && !answer.contains(&server_path), "{answer}");

    // Not a dev identity token of another key: the plain answer.
    let expired = dev_token(server_dir.path(), &["--sub", "alice", "--ttl-seconds=-120"]);
    for token in [expired.as_str(), "not.a.token"] {
        let res = http.get(format!("{base}/consents/current")).bearer_auth(token).send().await.unwrap();
        assert_eq!(res.status(), 401);
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["detail"], "a valid identity token is required", "{token}");
    }
    // And the server's own token works.
    let own = dev_token(server_dir.path(), &["--sub", "alice"]);
    let res = http.get(format!("{base}/consents/current")).bearer_auth(&own).send().await.unwrap();
    assert_eq!(res.status(), 404, "no consent yet, but authenticated");
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

/// The standard AWS settings for the test API server on loopback, and fresh table names.
fn aws_env() -> Vec<(String, String)> {
    let endpoint = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT")
        .expect("SUPPORT_ACCESS_TEST_AWS_ENDPOINT is not set: run scripts/test, which starts the API server");
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let suffix = format!("{}-{n}-{nanos}", std::process::id());
    [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("CONSENTS_TABLE", &format!("Consents-cli-{suffix}")),
        ("AUDIT_TABLE", &format!("Audit-cli-{suffix}")),
        ("CHAIN_HEADS_TABLE", &format!("ChainHeads-cli-{suffix}")),
        ("CHECKPOINTS_TABLE", &format!("Checkpoints-cli-{suffix}")),
        ("ACCESS_REQUESTS_TABLE", &format!("AccessRequests-cli-{suffix}")),
        ("CONTROLS_TABLE", &format!("Controls-cli-{suffix}")),
        ("FIRST_USES_TABLE", &format!("FirstUses-cli-{suffix}")),
        ("AUDIT_INTAKE_TABLE", &format!("AuditIntake-cli-{suffix}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Runs `local-api setup-aws` and returns the AWS settings plus the `export` lines it printed.
fn setup_aws(data_dir: &Path) -> Vec<(String, String)> {
    let mut env = aws_env();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("setup-aws")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let (name, value) =
            line.strip_prefix("export ").and_then(|l| l.split_once('=')).expect("export NAME=value lines");
        env.push((name.to_owned(), value.to_owned()));
    }
    env
}

#[tokio::test]
async fn setup_aws_then_the_whole_flow_runs_on_dynamodb_and_kms() {
    let dir = tempfile::tempdir().unwrap();
    let env = setup_aws(dir.path());
    assert!(env.iter().any(|(k, v)| k == "SUPPORT_ACCESS_BACKEND" && v == "aws"));
    assert!(env.iter().any(|(k, _)| k == "KMS_KEY_ID"));

    let alice = dev_token(dir.path(), &["--sub", "alice"]);
    let agent = dev_token(dir.path(), &["--sub", "agent-7", "--groups", "support,auditor"]);
    let http = reqwest::Client::new();
    let (mut child, base) = serve_with(dir.path(), &env);
    let res = http
        .post(format!("{base}/consents"))
        .bearer_auth(&alice)
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let minted: Value = http
        .post(format!("{base}/tokens"))
        .bearer_auth(&agent)
        .json(&json!({"user_id": "alice", "reason": "ticket 99: login loop"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().expect("a KMS-signed token");
    let who = http.get(format!("{base}/app/whoami")).bearer_auth(token).send().await.unwrap();
    assert_eq!(who.status(), 200);
    let res = http.delete(format!("{base}/consents/current")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let who = http.get(format!("{base}/app/whoami")).bearer_auth(token).send().await.unwrap();
    assert_eq!(who.status(), 401);
    let audit: Value =
        http.get(format!("{base}/audit?user_id=alice")).bearer_auth(&agent).send().await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = audit["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["token.rejected", "consent.revoked", "token.used", "token.issued", "consent.granted"]);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn an_unreachable_aws_endpoint_answers_503_and_never_leaks_sdk_text() {
    let dir = tempfile::tempdir().unwrap();
    // KMS must answer at start-up (the JWK Set is fetched once); DynamoDB is then unreachable.
    let mut env = setup_aws(dir.path());
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    env.push(("AWS_ENDPOINT_URL_DYNAMODB".into(), dead_url));

    let alice = dev_token(dir.path(), &["--sub", "alice"]);
    let (mut child, base) = serve_with(dir.path(), &env);
    let res = reqwest::Client::new().get(format!("{base}/consents/current")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body = res.text().await.unwrap();
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("/unavailable"));
    for leak in ["dispatch", "Connection", "127.0.0.1", "DynamoDB", "error"] {
        assert!(!body.contains(leak), "{leak:?} leaked into {body}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// One raw HTTP/1.1 `GET /audit` with `headers` (lines without CRLF), and the whole answer.
fn raw_get_audit(base: &str, headers: &[&str]) -> String {
    use std::io::{Read, Write};
    let addr = base.strip_prefix("http://").unwrap();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut request = String::from("GET /audit HTTP/1.1\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// [`raw_get_audit`]'s status line.
fn raw_status(base: &str, headers: &[&str]) -> String {
    raw_get_audit(base, headers).lines().next().unwrap_or("").to_owned()
}

#[test]
fn hostile_host_and_forwarded_proto_headers_are_answered_and_the_server_lives_on() {
    // A `Host` that is no URL authority once made the release build abort (the request went
    // through API Gateway JSON and a URL parse that panicked); now no header is parsed as a URL.
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(dir.path());
    for headers in [
        &["Host: a b"][..],
        &["Host: localhost", "X-Forwarded-Proto: a b"],
        &["Host: [::1"],
        &["Host: localhost:99999", "X-Forwarded-Proto: //"],
    ] {
        assert_eq!(raw_status(&base, headers), "HTTP/1.1 401 Unauthorized", "{headers:?}");
    }
    assert!(child.try_wait().unwrap().is_none(), "the server is still running");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_webhook_secret_on_the_command_line_is_refused_pointing_to_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(["--webhook-url", "http://127.0.0.1:9/hook", "--webhook-secret", "0123456789abcdef0123"])
        // A command that ends by itself, so a binary that took the flag exits (0) rather than serves.
        .arg("checkpoint")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for way in ["--webhook-secret-file", "SUPPORT_ACCESS_WEBHOOK_SECRET", "process list"] {
        assert!(stderr.contains(way), "{way} in {stderr}");
    }
}

#[test]
fn the_webhook_secret_is_read_from_a_private_file() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "0123456789abcdef0123\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(["--webhook-url", "http://127.0.0.1:9/hook", "--webhook-secret-file"])
        .arg(&secret)
        .env_remove("SUPPORT_ACCESS_WEBHOOK_SECRET")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> =
        BufReader::new(child.stdout.take().unwrap()).lines().take(2).map(|l| l.unwrap_or_default()).collect();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lines.iter().any(|l| l.starts_with("notifications go to http://127.0.0.1:9/hook")), "{lines:?}");
}

#[tokio::test]
async fn a_data_directory_local_api_creates_is_0700_and_every_file_in_it_0600() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("fresh");
    let alice = dev_token(&dir, &["--sub", "alice"]);
    let (mut child, base) = serve(&dir);
    let res = reqwest::Client::new()
        .post(format!("{base}/consents"))
        .bearer_auth(&alice)
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "a write, so the database has its -wal and -shm files");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    names.sort();
    for expected in ["support-access.db", "support-access.db-shm", "support-access.db-wal", "signing-key.p8"] {
        assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Starts the server under `sh -c 'ulimit -n <fds>'` with `args`, its stderr to `log`.
fn serve_with_fd_limit(data_dir: &Path, fds: u32, args: &[&str], log: &Path) -> (Child, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {fds} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(["--port", "0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let base = common::listening_url(&mut child);
    (child, base)
}

/// `n` connections that send nothing.
fn idle_connections(base: &str, n: usize) -> Vec<std::net::TcpStream> {
    let addr = base.strip_prefix("http://").unwrap();
    (0..n).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect()
}

#[tokio::test]
async fn idle_connections_past_the_cap_do_not_lock_out_a_request() {
    // Before the cap, 100 silent connections took every file descriptor the process had and
    // a real request waited in the listen queue until hyper's header timeout freed some.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let (mut child, base) = serve_with_fd_limit(&dir.path().join("data"), 64, &["--max-connections", "16"], &log);
    let idle = idle_connections(&base, 100);
    let started = std::time::Instant::now();
    let res = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(4))
        .build()
        .unwrap()
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await;
    let waited = started.elapsed();
    drop(idle);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(res.map(|r| r.status().as_u16()).map_err(|e| e.to_string()), Ok(200), "after {waited:?}");
}

#[test]
fn a_full_file_table_backs_off_instead_of_logging_in_a_hot_loop() {
    // A cap above the descriptor limit: accept fails with EMFILE until a connection closes.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr.log");
    let (mut child, base) = serve_with_fd_limit(&dir.path().join("data"), 64, &["--max-connections", "1000"], &log);
    let idle = idle_connections(&base, 100);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let logged = std::fs::read_to_string(&log).unwrap();
    drop(idle);
    child.kill().unwrap();
    child.wait().unwrap();
    let failures = logged.matches("accept failed").count();
    assert!((1..=3).contains(&failures), "{failures} accept failures logged in 2 s ({} bytes)", logged.len());
}

#[test]
fn a_body_that_stalls_after_its_headers_closes_the_connection_within_the_bound() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = serve(dir.path());
    let mut stream = std::net::TcpStream::connect(base.strip_prefix("http://").unwrap()).unwrap();
    stream.set_read_timeout(Some(local_api::BODY_READ_TIMEOUT + std::time::Duration::from_secs(5))).unwrap();
    stream
        .write_all(b"POST /consents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    let waited = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    // Closed (EOF or reset), not still waiting when the client gave up.
    let timed_out =
        matches!(&read, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut));
    assert!(!timed_out, "still open after {waited:?}");
    assert!(waited >= local_api::BODY_READ_TIMEOUT - std::time::Duration::from_secs(1), "closed after {waited:?}");
}

/// The binary's issuer is the address it listens on (never a request's `Host`), or
/// `SUPPORT_ACCESS_ISSUER`; a malformed issuer or CORS origin stops start-up naming it.
#[tokio::test]
async fn the_issuer_is_the_bound_base_url_unless_configured_and_bad_values_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let (mut child, base) = serve(dir.path());
    let metadata: Value = http
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(metadata["issuer"], base.as_str());
    child.kill().unwrap();
    child.wait().unwrap();

    let env = [("SUPPORT_ACCESS_ISSUER".to_owned(), "https://support.example.com".to_owned())];
    let (mut child, base) = serve_with(dir.path(), &env);
    let metadata: Value =
        http.get(format!("{base}/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(metadata["jwks_uri"], "https://support.example.com/.well-known/jwks.json");
    child.kill().unwrap();
    child.wait().unwrap();

    for (name, value, named) in [
        ("SUPPORT_ACCESS_ISSUER", "https://support.example.com/", "SUPPORT_ACCESS_ISSUER"),
        ("SUPPORT_ACCESS_CORS_ALLOWED_ORIGINS", "https://app.example.com/", "--cors-allowed-origins"),
    ] {
        let out =
            Command::new(BIN).args(["--port", "0", "--data-dir"]).arg(dir.path()).env(name, value).output().unwrap();
        assert!(!out.status.success(), "{name}={value}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(named), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test]
async fn every_request_is_one_plain_log_line_without_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let alice = dev_token(dir.path(), &["--sub", "alice"]);
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--cors-allowed-origins", "https://app.example.com", "--data-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = common::listening_url(&mut child);
    let http = reqwest::Client::new();
    let res = http.get(format!("{base}/consents/current")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(res.status(), 404, "no consent yet");
    let res = http.get(format!("{base}/nowhere")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // A CORS preflight, answered before any route: a line of its own too.
    let res = http
        .request(reqwest::Method::OPTIONS, format!("{base}/consents/current"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    child.kill().unwrap();
    child.wait().unwrap();

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains('\u{1b}'), "no ANSI colours into a file: {log:?}");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" request ")).collect();
    assert_eq!(lines.len(), 3, "{log}");
    for (line, wanted) in lines.iter().zip([
        ["route=GET /consents/current", "role=user", "user=\"alice\"", "decision=\"refused\"", "status=404"],
        ["route=unrouted", "role=anonymous", "decision=\"refused\"", "status=404", "latency_ms="],
        ["route=preflight", "role=anonymous", "decision=\"allowed\"", "status=204", "latency_ms="],
    ]) {
        for field in wanted {
            assert!(line.contains(field), "{field} in {line}");
        }
    }
    for part in alice.split('.') {
        assert!(!log.contains(part), "a token in the log: {log}");
    }
}
