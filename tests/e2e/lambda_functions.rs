//! Every Lambda function binary, driven through the real Lambda Runtime API protocol: a
//! loopback server plays the Runtime API (`/runtime/invocation/next`, `.../response`,
//! `.../error`), the function process polls it exactly as it does in
//! Lambda, and the events are the real shapes (API Gateway v2, the HTTP API authorizer v2,
//! DynamoDB Streams), against DynamoDB and KMS on the test API server.
//!
//! The binaries are the workspace's debug builds (`scripts/test` builds them first; the
//! arm64 release builds for deployment are checked by the packaging step).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use e2e::{Backend, Event, TestApp, authorizer_event};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// What the function posted back for one invocation.
#[derive(Debug)]
enum Outcome {
    Response(Value),
    #[expect(dead_code, reason = "read through Debug in failure messages")]
    Error(Value),
}

/// A loopback Lambda Runtime API serving queued events to one function process.
struct RuntimeApi {
    addr: SocketAddr,
    events: Arc<Mutex<VecDeque<(String, Value)>>>,
    outcomes: mpsc::UnboundedReceiver<(String, Outcome)>,
    _stop: oneshot::Sender<()>,
}

impl RuntimeApi {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let events: Arc<Mutex<VecDeque<(String, Value)>>> = Arc::default();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let queue = events.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let (queue, tx) = (queue.clone(), tx.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (queue, tx) = (queue.clone(), tx.clone());
                        async move { Ok::<_, Infallible>(runtime_api(req, queue, tx).await) }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { addr, events, outcomes, _stop: stop }
    }

    fn push(&self, id: &str, event: Value) {
        self.events.lock().unwrap().push_back((id.to_owned(), event));
    }

    /// The next outcome, within a bound so a hung function fails the test instead of CI.
    async fn outcome(&mut self) -> (String, Outcome) {
        tokio::time::timeout(Duration::from_secs(30), self.outcomes.recv())
            .await
            .expect("the function answered within 30 s")
            .expect("the runtime API is running")
    }
}

async fn runtime_api(
    req: hyper::Request<hyper::body::Incoming>,
    queue: Arc<Mutex<VecDeque<(String, Value)>>>,
    tx: mpsc::UnboundedSender<(String, Outcome)>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let parsed = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    if path == "/2018-06-01/runtime/invocation/next" {
        // Long-poll as Lambda does: wait (bounded) for the next queued event.
        for _ in 0..600 {
            let next = queue.lock().unwrap().pop_front();
            if let Some((id, event)) = next {
                let deadline =
                    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 30_000;
                return hyper::Response::builder()
                    .header("Lambda-Runtime-Aws-Request-Id", id)
                    .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
                    .header(
                        "Lambda-Runtime-Invoked-Function-Arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:test",
                    )
                    .header("Lambda-Runtime-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
                    .body(Full::new(Bytes::from(event.to_string())))
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        return hyper::Response::builder().status(500).body(Full::default()).unwrap();
    }
    let outcome = if let Some(rest) = path.strip_prefix("/2018-06-01/runtime/invocation/") {
        match rest.rsplit_once('/') {
            Some((id, "response")) => Some((id.to_owned(), Outcome::Response(parsed()))),
            Some((id, "error")) => Some((id.to_owned(), Outcome::Error(parsed()))),
            _ => None,
        }
    } else {
        None
    };
    match outcome {
        Some(o) => {
            let _ = tx.send(o);
            hyper::Response::builder().status(202).body(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}"))).unwrap()
        }
        None => hyper::Response::builder().status(404).body(Full::default()).unwrap(),
    }
}

fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("SUPPORT_ACCESS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build the functions first (scripts/test does)", path.display());
    path
}

/// A function process polling `api`, as the Lambda service would start it.
fn start_function(name: &str, api: &RuntimeApi, env: &[(String, String)], stderr: Stdio) -> Child {
    start_logged(name, api, env, Stdio::null(), stderr)
}

/// As [`start_function`], with the function's stdout (its log: Lambda ships it) as given.
fn start_logged(name: &str, api: &RuntimeApi, env: &[(String, String)], stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(binary(name))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api.addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "2026/11/25/[$LATEST]test")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Invokes `name` once per event (one cold start) and returns its responses in order.
async fn invoke(name: &str, env: &[(String, String)], events: Vec<Value>) -> Vec<Value> {
    invoke_logged(name, env, events).await.0
}

/// As [`invoke`], with what the function wrote to stdout (its log) meanwhile.
async fn invoke_logged(name: &str, env: &[(String, String)], events: Vec<Value>) -> (Vec<Value>, String) {
    let mut api = RuntimeApi::start().await;
    for (i, e) in events.iter().enumerate() {
        api.push(&format!("req-{i}"), e.clone());
    }
    let mut child = start_logged(name, &api, env, Stdio::piped(), Stdio::null());
    let stdout = child.stdout.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    let mut out = Vec::new();
    for i in 0..events.len() {
        let (id, outcome) = api.outcome().await;
        assert_eq!(id, format!("req-{i}"), "{name}: answers in order");
        match outcome {
            Outcome::Response(v) => out.push(v),
            other => panic!("{name} failed: {other:?}"),
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    (out, log.join().unwrap())
}

/// The per-request lines of a function's log (`"message":"request"`), parsed.
fn request_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a JSON line ({e}): {l}")))
        .filter(|v| v["message"] == "request")
        .collect()
}

fn body(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null)
}

/// alice grants `consent` and agent-7 (support) mints a token for her, each through its
/// function binary (on the system clock the authorizer runs on): the consent as granted and
/// the token.
async fn grant_and_mint(env: &[(String, String)], consent: Value) -> (Value, String) {
    let grant = Event::new("POST", "/consents").user("alice").json(consent).to_json();
    let granted = invoke("grant-consent", env, vec![grant]).await;
    assert_eq!(granted[0]["statusCode"], 201, "{granted:?}");
    let mint = Event::new("POST", "/tokens")
        .caller("agent-7", "[support]")
        .json(json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}))
        .to_json();
    let minted = invoke("mint-token", env, vec![mint]).await;
    assert_eq!(minted[0]["statusCode"], 201, "{minted:?}");
    (body(&granted[0]), body(&minted[0])["access_token"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_function_serves_its_job_through_the_runtime_api() {
    let app = TestApp::on(Backend::Aws).await;
    let env = app.function_env();
    // The functions that page read their cursor key from Secrets Manager.
    let config = e2e::sdk_config_for(&e2e::aws_endpoint()).await;
    let secret = format!("cursor-{}", uuid::Uuid::new_v4().simple());
    let mut paging_env = env.clone();
    paging_env.push((
        "SUPPORT_ACCESS_CURSOR_SECRET_ARN".into(),
        adapter_aws::create_cursor_secret(&config, &secret).await.unwrap(),
    ));

    let alice = |method: &str, path: &str| Event::new(method, path).user("alice");
    let (consent, token) = grant_and_mint(&env, json!({"duration_seconds": 3600, "note": "via Lambda"})).await;
    let read = invoke("get-consent", &env, vec![alice("GET", "/consents/current").to_json()]).await;
    assert_eq!((read[0]["statusCode"].clone(), body(&read[0])), (json!(200), consent.clone()));

    // As the stack wires it: checkpoints have a key of their own, which the checkpoint
    // function signs with and the jwks function publishes in its own set only; receipts have
    // one too, which export-audit signs with and the jwks function publishes beside the
    // checkpoint keys, in a member of its own.
    let (_, kms) = e2e::aws_clients().await;
    let checkpoint_key = adapter_aws::create_signing_key(&kms).await.unwrap();
    let receipt_key = adapter_aws::create_signing_key(&kms).await.unwrap();
    let mut jwks_env = env.clone();
    jwks_env.push(("CHECKPOINT_KEY_ID".into(), checkpoint_key.clone()));
    jwks_env.push(("RECEIPT_KEY_ID".into(), receipt_key.clone()));
    // With the stack's TokenIssuer, the issuer's metadata too, at both well-known paths.
    jwks_env.push(("SUPPORT_ACCESS_ISSUER".into(), "https://support.example.com".into()));
    let mut checkpoint_env: Vec<_> = env.iter().filter(|(k, _)| k != "KMS_KEY_ID").cloned().collect();
    checkpoint_env.push(("KMS_KEY_ID".into(), checkpoint_key.clone()));
    let sets = [
        Event::new("GET", "/.well-known/jwks.json").anonymous().to_json(),
        Event::new("GET", "/.well-known/checkpoint-keys.json").anonymous().to_json(),
        Event::new("GET", "/.well-known/oauth-authorization-server").anonymous().to_json(),
        Event::new("GET", "/.well-known/openid-configuration").anonymous().to_json(),
    ];
    let published = invoke("jwks", &jwks_env, sets.to_vec()).await;
    for metadata in &published[2..] {
        assert_eq!(metadata["statusCode"], 200, "{metadata:?}");
        assert_eq!(body(metadata)["issuer"], "https://support.example.com");
        assert_eq!(body(metadata)["jwks_uri"], "https://support.example.com/.well-known/jwks.json");
    }
    let kids = |set: &Value| -> Vec<String> {
        body(set)["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(kids(&published[0]), [env.iter().find(|(k, _)| k == "KMS_KEY_ID").unwrap().1.as_str()]);
    assert_eq!(kids(&published[1]), [checkpoint_key.as_str()], "the checkpoint key only in its own set");
    let receipt_kids: Vec<_> =
        body(&published[1])["receipt_keys"].as_array().unwrap().iter().map(|k| k["kid"].clone()).collect();
    assert_eq!(receipt_kids, [json!(receipt_key)], "the receipt key in its own member");
    let export_keys =
        support_access_verify::ExportKeys::from_set(serde_json::from_value(body(&published[1])).unwrap()).unwrap();

    // The authorizer: allowed while the consent lives, a read token refused on a write.
    let ask = |method: &str| serde_json::to_value(authorizer_event(Some(&token), method, "/orders")).unwrap();
    let (decided, log) = invoke_logged("authorizer", &env, vec![ask("GET"), ask("POST")]).await;
    assert_eq!(decided[0]["isAuthorized"], true, "{decided:?}");
    // One line per decision and nothing else (every byte it writes is paid per request of
    // the app's API), never the token (nor its signature or claims segment).
    let lines = request_lines(&log);
    assert_eq!((lines.len(), log.lines().count()), (2, 2), "{log}");
    // The process's constants once, on the cold start's line; the test's trace is sampled.
    let process = |v: &Value| ["function_name", "function_arn", "xray_trace_id"].map(|k| v.get(k).is_some());
    assert_eq!((process(&lines[0]), process(&lines[1])), ([true; 3], [false, false, true]), "{log}");
    for part in std::iter::once(token.as_str()).chain(token.split('.').skip(1)) {
        assert!(!log.contains(part), "a token in the log: {log}");
    }
    let fields =
        |v: &Value| ["route", "decision", "user", "agent", "function_request_id", "cold_start"].map(|k| v[k].clone());
    assert_eq!(
        fields(&lines[0]),
        [json!("authorizer"), json!("allowed"), json!("alice"), json!("agent-7"), json!("req-0"), json!(true)]
    );
    assert_eq!(
        fields(&lines[1]),
        [json!("authorizer"), json!("refused"), Value::Null, Value::Null, json!("req-1"), json!(false)]
    );
    assert!(lines[0]["latency_ms"].is_number() && lines[0]["_aws"]["CloudWatchMetrics"].is_array(), "{log}");
    assert_eq!(decided[0]["context"]["acting_agent"], "agent-7");
    assert_eq!(decided[0]["context"]["consent_id"], consent["consent_id"]);
    assert_eq!(decided[1]["isAuthorized"], false);

    // Introspection for a resource server outside AWS (an active answer writes nothing).
    let asked = Event::new("POST", "/introspect").caller("rs-1", "[introspect]").form(&[("token", &token)]).to_json();
    let (introspected, log) = invoke_logged("introspect", &env, vec![asked]).await;
    let lines = request_lines(&log);
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(
        ["route", "role", "agent", "decision", "status"].map(|k| lines[0][k].clone()),
        [json!("POST /introspect"), json!("introspect"), json!("rs-1"), json!("allowed"), json!(200)]
    );
    for part in token.split('.') {
        assert!(!log.contains(part), "the introspected token in the log: {log}");
    }
    assert_eq!(introspected[0]["statusCode"], 200, "{introspected:?}");
    assert_eq!(
        (body(&introspected[0])["active"].clone(), body(&introspected[0])["act"]["sub"].clone()),
        (json!(true), json!("agent-7"))
    );
    // The same function takes the resource server's report of a use, recorded as the
    // authorizer records one (with the conditional write its role is granted for it).
    let report = json!({"token": token, "method": "GET", "path": "/orders/7"});
    let asked = Event::new("POST", "/introspect/uses").caller("rs-1", "[introspect]").json(report).to_json();
    let (reported, log) = invoke_logged("introspect", &env, vec![asked]).await;
    assert_eq!(reported[0]["statusCode"], 200, "{reported:?}");
    assert_eq!(
        (body(&reported[0])["user_id"].clone(), body(&reported[0])["consent_id"].clone()),
        (json!("alice"), consent["consent_id"].clone())
    );
    assert_eq!(request_lines(&log)[0]["route"], "POST /introspect/uses", "{log}");

    let revoked = invoke("revoke-consent", &env, vec![alice("DELETE", "/consents/current").to_json()]).await;
    assert_eq!(revoked[0]["statusCode"], 204);
    let after = invoke("authorizer", &env, vec![ask("GET")]).await;
    assert_eq!(after[0]["isAuthorized"], false, "refused the moment consent ends");

    let audit_query = Event::new("GET", "/audit").caller("aud-1", "[auditor]").query("user_id=alice&limit=2").to_json();
    let page = invoke("query-audit", &paging_env, vec![audit_query]).await;
    assert_eq!(page[0]["statusCode"], 200, "{page:?}");
    let page = body(&page[0]);
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().expect("more pages").to_owned();
    // Another instance (another process) opens the cursor: the key is shared.
    let next = Event::new("GET", "/audit")
        .caller("aud-1", "[auditor]")
        .query(&format!("user_id=alice&limit=50&cursor={cursor}"));
    let rest = invoke("query-audit", &paging_env, vec![next.to_json()]).await;
    let kinds: Vec<String> =
        body(&rest[0])["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["token.used", "token.rejected", "token.used", "token.issued", "consent.granted"]);

    let log = invoke("access-log", &paging_env, vec![alice("GET", "/me/access-log").to_json()]).await;
    let events = body(&log[0])["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 7);
    assert_eq!(events[2]["detail"], "GET /orders/7 reported by rs-1", "the reported use on the user's log");

    // Access requests page too: an agent's list, then the user's, each cursor opened by
    // another instance (another process), as a client's next page may reach one.
    let file = |scope: &str| {
        Event::new("POST", "/access-requests")
            .caller("agent-7", "[support]")
            .json(json!({"user_id": "bob", "reason": "ticket 4412: export fails", "scope": scope, "duration_seconds": 3600}))
            .to_json()
    };
    let filed = invoke("agent-requests", &paging_env, vec![file("read"), file("full")]).await;
    assert_eq!((filed[0]["statusCode"].clone(), filed[1]["statusCode"].clone()), (json!(201), json!(201)), "{filed:?}");
    for (function, path, caller) in [
        ("agent-requests", "/access-requests", Event::new("GET", "/access-requests").caller("agent-7", "[support]")),
        ("user-requests", "/me/access-requests", Event::new("GET", "/me/access-requests").user("bob")),
    ] {
        let first = invoke(function, &paging_env, vec![caller.query("limit=1").to_json()]).await;
        assert_eq!(first[0]["statusCode"], 200, "{function}: {first:?}");
        let cursor =
            body(&first[0])["next_cursor"].as_str().unwrap_or_else(|| panic!("{function}: more pages")).to_owned();
        let next = Event::new("GET", path);
        let next = if function == "agent-requests" { next.caller("agent-7", "[support]") } else { next.user("bob") };
        let rest = invoke(function, &paging_env, vec![next.query(&format!("limit=1&cursor={cursor}")).to_json()]).await;
        assert_eq!(rest[0]["statusCode"], 200, "{function}: another instance opens the cursor: {rest:?}");
        assert_eq!(body(&rest[0])["requests"].as_array().map(Vec::len), Some(1), "{function}: {rest:?}");
    }

    // The scheduled checkpoint, on an EventBridge schedule's event, seals alice's chain.
    let scheduled = json!({
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa", "detail-type": "Scheduled Event",
        "source": "aws.events", "account": "123456789012", "time": "2026-11-25T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/support-access-checkpoint"], "detail": {}
    });
    let sealed = invoke("checkpoint", &checkpoint_env, vec![scheduled.clone(), scheduled]).await;
    assert_eq!(sealed[0]["checkpoints"], serde_json::json!([1]), "{sealed:?}");
    assert_eq!(sealed[0]["left"], 0, "{sealed:?}");
    assert_eq!(sealed[1]["checkpoints"], serde_json::json!([]), "nothing moved since: no second checkpoint");

    let export = Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query("user_id=alice");
    // As the stack wires it: the receipt that ends the export is signed with the receipt key.
    let mut export_env = paging_env.clone();
    export_env.push(("RECEIPT_KEY_ID".into(), receipt_key.clone()));
    let exported = invoke("export-audit", &export_env, vec![export.to_json()]).await;
    assert_eq!(exported[0]["statusCode"], 200);
    // lambda_http sends a non-JSON text type base64-encoded; API Gateway decodes it for the client.
    let raw = exported[0]["body"].as_str().unwrap();
    let text = if exported[0]["isBase64Encoded"] == true {
        use base64::Engine;
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(raw).unwrap()).unwrap()
    } else {
        raw.to_owned()
    };
    let report =
        support_access_cli::verify_export(&text, &export_keys, support_access_cli::Options::default()).unwrap();
    assert_eq!(report.checkpoints, [1]);
    assert_eq!(report.heads["alice"].0, 7, "the chain written by five functions (a reported use among them) is intact");

    // The expiry recorder on a TTL deletion of alice's (revoked, so synthetic) consent.
    let mut record: Value = serde_json::from_str(include_str!("../fixtures/dynamodb_stream_consents.json")).unwrap();
    record["Records"][0]["dynamodb"]["OldImage"]["consent_id"] = json!({"S": consent["consent_id"]});
    let done = invoke("expiry-recorder", &env, vec![record]).await;
    assert_eq!(done[0], Value::Null);
    let expired: Vec<_> =
        app.audit().await.into_iter().filter(|e| e.event_type.as_str() == "consent.expired").collect();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].consent_id.as_ref().map(|c| c.as_str()), consent["consent_id"].as_str());
}

#[tokio::test]
async fn the_operator_function_stops_and_revokes_and_the_authorizer_obeys() {
    let app = TestApp::on(Backend::Aws).await;
    let env = app.function_env();
    let (_, token) = grant_and_mint(&env, json!({"duration_seconds": 3600})).await;
    let ask = || serde_json::to_value(authorizer_event(Some(&token), "GET", "/orders")).unwrap();
    let operator = |method: &str, path: &str| Event::new(method, path).caller("op-1", "[operator]");

    let refused = Event::new("PUT", "/operator/emergency-stop").caller("agent-7", "[support]");
    let refused = invoke("operator", &env, vec![refused.json(json!({"reason": "not mine to stop"})).to_json()]).await;
    assert_eq!(refused[0]["statusCode"], 403, "{refused:?}");
    let engaged = operator("PUT", "/operator/emergency-stop").json(json!({"reason": "INC-42: key leak"})).to_json();
    let status = operator("GET", "/operator/emergency-stop").to_json();
    let answers = invoke("operator", &env, vec![engaged, status]).await;
    assert_eq!((answers[0]["statusCode"].clone(), body(&answers[1])["engaged"].clone()), (json!(200), json!(true)));
    assert_eq!(invoke("authorizer", &env, vec![ask()]).await[0]["isAuthorized"], false, "stopped");

    let lifted = invoke("operator", &env, vec![operator("DELETE", "/operator/emergency-stop").to_json()]).await;
    assert_eq!(lifted[0]["statusCode"], 204, "{lifted:?}");
    assert_eq!(invoke("authorizer", &env, vec![ask()]).await[0]["isAuthorized"], true, "lifted");

    let revoke =
        operator("POST", "/operator/agents/agent-7/revoke-tokens").json(json!({"reason": "INC-77: laptop stolen"}));
    let revoked = invoke("operator", &env, vec![revoke.to_json()]).await;
    assert_eq!((revoked[0]["statusCode"].clone(), body(&revoked[0])["users_notified"].clone()), (json!(200), json!(1)));
    assert_eq!(invoke("authorizer", &env, vec![ask()]).await[0]["isAuthorized"], false, "agent-7 revoked");
}

#[tokio::test]
async fn a_function_without_its_settings_stops_at_init_naming_them() {
    // Lambda reports a runtime that exits during init as Runtime.ExitError, with its log.
    let log = stops_at_init("mint-token", &[]).await;
    assert!(log.contains("KMS_KEY_ID"), "{log}");
}

/// Every function that hands out cursors needs the shared cursor key: export-audit too, whose
/// export's next page may be served by another instance (a key of its own per process would
/// refuse that page's cursor).
#[tokio::test]
async fn a_paging_function_without_its_cursor_secret_or_export_audit_without_its_receipt_key_stops_at_init() {
    let key = ("KMS_KEY_ID".to_owned(), "1234abcd-12ab-34cd-56ef-1234567890ab".to_owned());
    for function in ["query-audit", "export-audit"] {
        let log = stops_at_init(function, std::slice::from_ref(&key)).await;
        assert!(log.contains("SUPPORT_ACCESS_CURSOR_SECRET_ARN"), "{function}: {log}");
    }
    // export-audit signs each export's receipt: without the receipt key it does not start
    // (its KMS_KEY_ID would sign receipts no receipt key verifies).
    let secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:cursor-AbCdEf";
    let log = stops_at_init("export-audit", &[key, ("SUPPORT_ACCESS_CURSOR_SECRET_ARN".into(), secret.into())]).await;
    assert!(log.contains("RECEIPT_KEY_ID"), "{log}");
}

/// Starts `function` with `env` and waits for it to exit, which it must, unsuccessfully,
/// within 30 s; its standard error.
async fn stops_at_init(function: &str, env: &[(String, String)]) -> String {
    let api = RuntimeApi::start().await;
    let mut child = start_function(function, &api, env, Stdio::piped());
    let stderr = child.stderr.take().unwrap();
    let pid = child.id();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap());
    let Ok(status) = tokio::time::timeout(Duration::from_secs(30), status).await else {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        panic!("{function} started without a setting it needs");
    };
    assert!(!status.unwrap().success(), "{function}");
    std::io::read_to_string(stderr).unwrap()
}

/// The set-up runs after init: one that fails (here the public keys of a KMS key that does
/// not exist) answers 503 to the request waiting for it, says why in the log, and is tried
/// again by the next request rather than ending the process.
#[tokio::test]
async fn a_set_up_that_fails_answers_503_and_is_tried_again() {
    let app = TestApp::on(Backend::Aws).await;
    let mut env: Vec<_> = app.function_env().into_iter().filter(|(k, _)| k != "KMS_KEY_ID").collect();
    env.push(("KMS_KEY_ID".into(), "0000abcd-12ab-34cd-56ef-1234567890ab".into()));
    let jwks = Event::new("GET", "/.well-known/jwks.json").anonymous().to_json();
    let (answers, log) = invoke_logged("jwks", &env, vec![jwks.clone(), jwks]).await;
    assert_eq!([&answers[0]["statusCode"], &answers[1]["statusCode"]], [&json!(503), &json!(503)], "{answers:?}");
    let lines = request_lines(&log);
    assert_eq!(lines.len(), 2, "{log}");
    assert_eq!((&lines[0]["decision"], &lines[0]["level"]), (&json!("failed"), &json!("ERROR")));
    assert!(log.contains("KMS public keys"), "the cause is logged: {log}");
}

/// A paging function's cursor secret is fetched beside its first request's own work, not
/// before it (BENCHMARKS.md, "First response"): a request that neither opens nor seals a
/// cursor is answered without it; one that needs it waits for it, and a secret that cannot be
/// read answers 503, says why in the log, and is tried again by the next such request.
#[tokio::test]
async fn a_cursor_secret_that_cannot_be_read_fails_only_the_requests_that_page() {
    let app = TestApp::on(Backend::Aws).await;
    let mut env = app.function_env();
    env.push((
        "SUPPORT_ACCESS_CURSOR_SECRET_ARN".into(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:no-such-secret-AbCdEf".into(),
    ));
    let first_page = Event::new("GET", "/audit").caller("aud-1", "[auditor]").query("user_id=alice").to_json();
    let next_page =
        Event::new("GET", "/audit").caller("aud-1", "[auditor]").query("user_id=alice&cursor=abc.def").to_json();
    let (answers, log) = invoke_logged("query-audit", &env, vec![first_page, next_page.clone(), next_page]).await;
    let statuses: Vec<_> = answers.iter().map(|a| a["statusCode"].clone()).collect();
    assert_eq!(statuses, [json!(200), json!(503), json!(503)], "{answers:?}");
    assert_eq!(body(&answers[0])["events"], json!([]), "{answers:?}");
    let lines = request_lines(&log);
    assert_eq!(lines.len(), 3, "{log}");
    assert_eq!((&lines[1]["decision"], &lines[1]["level"]), (&json!("failed"), &json!("ERROR")));
    assert!(log.contains("SUPPORT_ACCESS_CURSOR_SECRET_ARN"), "the cause is logged: {log}");
}

/// The sequencer function on its trigger (#18): a real batch of the `AuditIntake` table's
/// stream (moto's records of the intake items a sequencing store wrote: alice's grant, a token
/// and two uses; bob's grant), plus a record naming no user and a user (mallory) whose intake
/// holds an item that does not parse. One invocation appends alice's and bob's events (their
/// grants wait out the hold inside it: nothing else would trigger them again); the batch item
/// failures are exactly mallory's record and the nameless one; the batch delivered again, to
/// another instance, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequencer_appends_the_users_its_stream_batch_names_and_reports_only_the_failed() {
    use aws_sdk_dynamodb::types::AttributeValue;

    let app = TestApp::sequenced(Backend::Aws).await;
    let env = app.function_env();
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    let token = app.mint("alice").await.str("access_token").to_owned();
    for _ in 0..2 {
        assert!(app.authorize(&token, "GET", "/orders").await.is_authorized);
    }
    assert_eq!(app.grant("bob", json!({"duration_seconds": 3600})).await.status, 201);
    let (dynamodb, _) = e2e::aws_clients().await;
    dynamodb
        .put_item()
        .table_name(&app.tables().intake)
        .item("stream", AttributeValue::S("mallory".into()))
        .item("order", AttributeValue::S("0000000000000000#poison".into()))
        .item("decided_us", AttributeValue::N("1".into()))
        .item("body", AttributeValue::S("{not an event".into()))
        .send()
        .await
        .unwrap();
    assert!(app.audit().await.is_empty(), "nothing on a chain before the sequencer runs");

    let mut batch = e2e::stream_event(&app.tables().intake);
    let records = batch["Records"].as_array_mut().unwrap();
    assert_eq!(records.len(), 6, "one INSERT per intake item: {records:?}");
    let mallory: Vec<Value> = records
        .iter()
        .filter(|r| r["dynamodb"]["Keys"]["stream"]["S"] == "mallory")
        .map(|r| r["dynamodb"]["SequenceNumber"].clone())
        .collect();
    assert_eq!(mallory.len(), 1);
    let mut nameless = records[0].clone();
    nameless["dynamodb"]["Keys"] = json!({"order": {"S": "0000000000000000#nameless"}});
    nameless["dynamodb"]["SequenceNumber"] = json!("900");
    records.insert(1, nameless);
    let failures = |answer: &Value| -> Vec<Value> {
        let mut ids: Vec<Value> =
            answer["batchItemFailures"].as_array().unwrap().iter().map(|f| f["itemIdentifier"].clone()).collect();
        ids.sort_by_key(|id| id.to_string());
        ids
    };
    let mut expected = vec![mallory[0].clone(), json!("900")];
    expected.sort_by_key(|id| id.to_string());

    let (answers, log) = invoke_logged("sequencer", &env, vec![batch.clone()]).await;
    assert_eq!(failures(&answers[0]), expected, "{answers:?}");
    assert!(log.contains(r#""sequenced":5"#), "{log}");
    // mallory's run failed: listed as stalled, and the auditor's queries by time still answer
    // (her unreadable item left out of them, not failing them).
    assert_eq!(app.stalled_list().await, ["mallory"]);
    let chain = |events: &[shared::domain::AuditEvent], user: &str| -> Vec<(u64, String)> {
        let mut mine: Vec<_> =
            events.iter().filter(|e| e.stream() == user).map(|e| (e.seq, e.event_type.as_str().to_owned())).collect();
        mine.sort();
        mine
    };
    let appended = app.audit().await;
    let kinds = |pairs: &[(&str, u64)]| -> Vec<(u64, String)> {
        pairs.iter().map(|(t, seq)| (*seq, (*t).to_owned())).collect()
    };
    assert_eq!(
        chain(&appended, "alice"),
        kinds(&[("consent.granted", 1), ("token.issued", 2), ("token.used", 3), ("token.used", 4)])
    );
    assert_eq!(chain(&appended, "bob"), kinds(&[("consent.granted", 1)]));
    for user in ["alice", "bob"] {
        assert!(app.sequencer().pending(user, 10).await.unwrap().is_empty(), "{user}: nothing left pending");
    }
    assert!(
        matches!(app.sequencer().pending("mallory", 10).await, Err(shared::ports::StoreError::Corrupt(_))),
        "mallory's poisoned item stays where it was, for an operator"
    );

    // Delivered again (the event source retries from the lowest failure), to a new instance.
    let again = invoke("sequencer", &env, vec![batch]).await;
    assert_eq!(failures(&again[0]), expected, "{again:?}");
    let ids = |events: &[shared::domain::AuditEvent]| -> Vec<(String, u64, String)> {
        events.iter().map(|e| (e.event_id.as_str().to_owned(), e.seq, e.hash.clone())).collect()
    };
    assert_eq!(ids(&app.audit().await), ids(&appended), "the same events, once each");
}

/// `SEQUENCED_AUDIT=1` (the template's `SequencedAudit`) puts the deployed functions on the
/// sequenced path (#18): the grant, the mint and the authorizer's use each land in the
/// intake, nothing on a chain, and the user's access log shows them pending; then the
/// sequencer function, given the intake's stream batch, appends them. A value other than 1
/// or 0 stops a function at init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequenced_audit_puts_the_functions_on_the_intake_and_the_sequencer_appends() {
    let app = TestApp::sequenced(Backend::Aws).await;
    let mut env = app.function_env();
    env.push(("SEQUENCED_AUDIT".into(), "1".into()));
    let config = e2e::sdk_config_for(&e2e::aws_endpoint()).await;
    let secret = format!("cursor-{}", uuid::Uuid::new_v4().simple());
    let mut paging_env = env.clone();
    paging_env.push((
        "SUPPORT_ACCESS_CURSOR_SECRET_ARN".into(),
        adapter_aws::create_cursor_secret(&config, &secret).await.unwrap(),
    ));

    let (_, token) = grant_and_mint(&env, json!({"duration_seconds": 3600})).await;
    let ask = serde_json::to_value(authorizer_event(Some(&token), "GET", "/orders")).unwrap();
    assert_eq!(invoke("authorizer", &env, vec![ask]).await[0]["isAuthorized"], true);

    assert!(app.audit().await.is_empty(), "nothing appended by the writers themselves");
    let pending: Vec<String> =
        app.sequencer().pending("alice", 10).await.unwrap().iter().map(|e| e.event_type.as_str().to_owned()).collect();
    assert_eq!(pending, ["consent.granted", "token.issued", "token.used"]);
    let log = Event::new("GET", "/me/access-log").user("alice").to_json();
    let log = invoke("access-log", &paging_env, vec![log]).await;
    assert_eq!(log[0]["statusCode"], 200, "{log:?}");
    assert_eq!(body(&log[0])["events"].as_array().map(Vec::len), Some(3), "{log:?}");

    let batch = e2e::stream_event(&app.tables().intake);
    let answers = invoke("sequencer", &env, vec![batch]).await;
    assert_eq!(answers[0]["batchItemFailures"], json!([]), "{answers:?}");
    let mut chain: Vec<(u64, String)> =
        app.audit().await.iter().map(|e| (e.seq, e.event_type.as_str().to_owned())).collect();
    chain.sort();
    let expected = [(1, "consent.granted"), (2, "token.issued"), (3, "token.used")];
    assert_eq!(chain, expected.map(|(seq, t)| (seq, t.to_owned())));

    let key = ("KMS_KEY_ID".to_owned(), "1234abcd-12ab-34cd-56ef-1234567890ab".to_owned());
    let log = stops_at_init("authorizer", &[key, ("SEQUENCED_AUDIT".into(), "yes".into())]).await;
    assert!(log.contains("SEQUENCED_AUDIT"), "{log}");
}

/// An OpenID provider on loopback: its discovery document and JWK Set over http (as an https
/// provider serves them), counting the key set's fetches, and tokens signed by its key.
struct TestIdp {
    issuer: String,
    key: jsonwebtoken::EncodingKey,
    kid: String,
    jwks_fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl TestIdp {
    async fn start() -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &aws_lc_rs::rand::SystemRandom::new())
                .unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let jwk = shared::token::es256_public_jwk(pair.public_key().as_ref()).unwrap();
        let kid = jwk.common.key_id.clone().unwrap();
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/keys")}).to_string();
        let jwks = json!({"keys": [jwk, {"kty": "oct", "kid": "an-hmac-key", "k": "c2VjcmV0"}]}).to_string();
        let jwks_fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let fetches = jwks_fetches.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (discovery, jwks, fetches) = (discovery.clone(), jwks.clone(), fetches.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => Some(discovery.clone()),
                            "/keys" => {
                                fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                Some(jwks.clone())
                            }
                            _ => None,
                        };
                        async move {
                            let mut response =
                                hyper::Response::new(Full::new(Bytes::from(body.clone().unwrap_or_default())));
                            if body.is_none() {
                                *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { issuer, key: jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), kid, jwks_fetches }
    }

    /// An identity token with `claims` over the usual ones (this issuer, audience `app-client`,
    /// valid for an hour; a `null` removes one), signed by this provider's key under `kid`.
    fn token_with(&self, kid: &str, claims: Value) -> String {
        let now = unix_now();
        let mut all = json!({"iss": self.issuer, "aud": "app-client", "sub": "alice", "iat": now, "exp": now + 3600,
                             "cognito:groups": ["support"]});
        let all_claims = all.as_object_mut().unwrap();
        all_claims.extend(claims.as_object().unwrap().clone());
        all_claims.retain(|_, v| !v.is_null());
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &all, &self.key).unwrap()
    }

    fn token(&self, claims: Value) -> String {
        self.token_with(&self.kid.clone(), claims)
    }
}

/// The app API's one authorizer, through the Runtime API with the HTTP API's real authorizer
/// events: the user's own identity token (verified against the provider the stack names, its
/// keys found from its discovery document and fetched once) passes with `user_id` alone and
/// is not audited; an agent's impersonation token passes with the five keys as before; an
/// identity token of another audience, issuer, an expired one, one with an unknown key, and one
/// whose `sub` is the service's own actor name are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorizer_takes_the_user_s_identity_token_and_the_impersonation_token_in_one_context() {
    let app = TestApp::on(Backend::Aws).await;
    let idp = TestIdp::start().await;
    let mut env = app.function_env();
    env.push(("SUPPORT_ACCESS_IDENTITY_ISSUER".into(), idp.issuer.clone()));
    env.push(("SUPPORT_ACCESS_IDENTITY_AUDIENCE".into(), "app-client".into()));
    let (_, impersonation) = grant_and_mint(&env, json!({"duration_seconds": 3600, "scope": "full"})).await;

    let now = unix_now();
    let tokens = [
        idp.token(json!({})),
        impersonation.clone(),
        // A Cognito access token: no `aud`, its `client_id` is the app client.
        idp.token(json!({"aud": null, "client_id": "app-client", "sub": "bob"})),
        idp.token(json!({"aud": "another-app"})),
        idp.token(json!({"iss": "https://another-idp.example.com"})),
        idp.token(json!({"exp": now - 120, "iat": now - 3720})),
        idp.token_with("a-key-nobody-published", json!({})),
        idp.token(json!({"sub": "support-access"})),
    ];
    let mut events: Vec<Value> = tokens
        .iter()
        .map(|t| serde_json::to_value(authorizer_event(Some(t), "DELETE", "/orders/42")).unwrap())
        .collect();
    events.push(serde_json::to_value(authorizer_event(Some(&tokens[0]), "GET", "/orders")).unwrap());
    let (decided, log) = invoke_logged("authorizer", &env, events).await;
    let allowed: Vec<bool> = decided.iter().map(|d| d["isAuthorized"].as_bool().unwrap()).collect();
    assert_eq!(allowed, [true, true, true, false, false, false, false, false, true], "{decided:?}\n{log}");
    assert_eq!(decided[0]["context"], json!({"user_id": "alice"}));
    assert_eq!(decided[2]["context"], json!({"user_id": "bob"}));
    let context = decided[1]["context"].as_object().unwrap();
    let mut keys: Vec<&str> = context.keys().map(String::as_str).collect();
    keys.sort();
    let mut expected = shared::http::CONTEXT_KEYS.to_vec();
    expected.sort();
    assert_eq!((keys, &context["acting_agent"]), (expected, &json!("agent-7")));
    // The keys were fetched once, and once more for the unknown `kid`, at most: not per token.
    let fetches = idp.jwks_fetches.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=2).contains(&fetches), "{fetches} fetches of the key set");
    let lines = request_lines(&log);
    assert_eq!(["role", "user"].map(|k| lines[0][k].clone()), [json!("user"), json!("alice")]);
    // Only the agent's use is on alice's log; her own requests are hers.
    let used: Vec<_> = app
        .audit()
        .await
        .into_iter()
        .filter(|e| e.event_type == shared::domain::AuditEventType::TokenUsed)
        .map(|e| e.actor.sub.as_str().to_owned())
        .collect();
    assert_eq!(used, ["agent-7"]);
}

/// The token exchange (`POST /token`, RFC 8693) through the Runtime API, served by the mint
/// function beside `POST /tokens`, with API Gateway's real event for the route: no authorizer
/// (the route has none: the agent's identity token is the form's `subject_token`) and the form
/// body base64-encoded, as API Gateway passes a form on. The function verifies the token
/// against the provider the stack names and mints by `POST /tokens`' own use case: the token
/// passes the app API's authorizer, and the refusals answer RFC 6749's error JSON, the one
/// `POST /tokens` audits (no consent) audited alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_function_exchanges_the_agent_s_identity_token_from_a_base64_form() {
    use base64::Engine;
    let app = TestApp::on(Backend::Aws).await;
    let idp = TestIdp::start().await;
    let mut env = app.function_env();
    env.push(("SUPPORT_ACCESS_IDENTITY_ISSUER".into(), idp.issuer.clone()));
    env.push(("SUPPORT_ACCESS_IDENTITY_AUDIENCE".into(), "app-client".into()));
    let grant = Event::new("POST", "/consents").user("alice").json(json!({"duration_seconds": 3600})).to_json();
    assert_eq!(invoke("grant-consent", &env, vec![grant]).await[0]["statusCode"], 201);

    let exchange = |subject_token: &str, user: &str| {
        let form = serde_urlencoded::to_string([
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("requested_subject", user),
            ("reason", "ticket 4411: billing page broken"),
        ])
        .unwrap();
        let mut event = Event::new("POST", "/token")
            .anonymous()
            .header("content-type", "application/x-www-form-urlencoded")
            .to_json();
        event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(form));
        event["isBase64Encoded"] = json!(true);
        event
    };
    let agent = idp.token(json!({"sub": "agent-7", "amr": ["pwd", "mfa"], "auth_time": unix_now()}));
    let events = vec![
        exchange(&agent, "alice"),
        exchange(&agent, "bob"),
        exchange(&idp.token(json!({"sub": "agent-8", "cognito:groups": ["supporters"]})), "alice"),
        exchange(&idp.token(json!({"sub": "agent-7", "aud": "another-app"})), "alice"),
    ];
    let (answers, log) = invoke_logged("mint-token", &env, events).await;
    assert_eq!(answers[0]["statusCode"], 200, "{answers:?}");
    let minted = body(&answers[0]);
    assert_eq!(
        (&minted["issued_token_type"], &minted["token_type"]),
        (&json!("urn:ietf:params:oauth:token-type:access_token"), &json!("Bearer"))
    );
    assert_eq!(answers[0]["headers"]["pragma"], "no-cache", "{:?}", answers[0]);
    let errors: Vec<_> = answers[1..].iter().map(|a| (a["statusCode"].clone(), body(a)["error"].clone())).collect();
    assert_eq!(
        errors,
        [
            (json!(400), json!("invalid_grant")),
            (json!(400), json!("invalid_request")),
            (json!(400), json!("invalid_request"))
        ]
    );
    let lines = request_lines(&log);
    assert_eq!(
        ["route", "role", "agent", "status"].map(|k| lines[0][k].clone()),
        [json!("POST /token"), json!("support"), json!("agent-7"), json!(200)],
        "{log}"
    );
    for part in agent.split('.').skip(1) {
        assert!(!log.contains(part), "the subject token in the log: {log}");
    }

    let token = minted["access_token"].as_str().unwrap();
    let decided = invoke(
        "authorizer",
        &env,
        vec![serde_json::to_value(authorizer_event(Some(token), "GET", "/orders")).unwrap()],
    )
    .await;
    assert_eq!(
        (&decided[0]["isAuthorized"], &decided[0]["context"]["acting_agent"]),
        (&json!(true), &json!("agent-7"))
    );
    let audit: Vec<_> = app
        .audit()
        .await
        .into_iter()
        .map(|e| (e.event_type.as_str().to_owned(), e.user_id.map(|u| u.as_str().to_owned()), e.detail))
        .collect();
    assert!(audit.iter().any(|(t, u, _)| t == "token.issued" && u.as_deref() == Some("alice")), "{audit:?}");
    assert!(audit.contains(&("token.denied".into(), Some("bob".into()), Some("no-consent".into()))), "{audit:?}");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
