//! The AWS path under load (`scripts/bench-aws`, results in BENCHMARKS.md, "The AWS path under
//! load"): the real handlers on the real DynamoDB and KMS adapters, against moto behind the
//! test proxy with DynamoDB's and KMS's behaviour under load (`Model::AWS`: latency,
//! transaction conflicts, per-partition throttling, limits, the KMS quota).
//!
//! Lambda instances: each function is a fleet of instances, and each instance serves one
//! request at a time, as Lambda's do. An instance is its own `Services`, built as a cold start
//! builds it (its own SDK clients and connection pool, its own chain-head guesses and verified
//! token cache, the JWK Set read from KMS), so no two instances share a cache. A request takes
//! an idle instance of its function or starts a new one; the fleets are warmed before each
//! scenario to as many instances as it runs at once (as provisioned concurrency would), so
//! the figures are the design's, not cold starts'; the instances started during a scenario
//! are counted. A use of a token is the authorizer's decision (`app::authorize`, what the
//! authorizer function runs, minus the JSON of its answer), the work API Gateway does before
//! every request of the app.
//!
//! Each scenario reports latency (p50, p99, max), outcomes by kind, and per operation the
//! DynamoDB and KMS calls and capacity units counted at the proxy and the dollars per million
//! operations at AWS list prices (below). Latency over Lambda's and API Gateway's limits is
//! counted as such: an authorizer has 10 s, an HTTP integration 30 s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapter_aws::{DynamoStore, KmsSigner, Tables, audit_item};
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use e2e::aws_proxy::model::Model;
use e2e::aws_proxy::{AwsProxy, OpStats};
use e2e::{Event, fresh_deployment, moto_endpoint, sdk_config_with, setup_clients, test_policy};
use shared::app::{self, AuthorizeError, CursorKey, Services};
use shared::domain::{Actor, AuditEvent, AuditEventType, Role, Timestamp, UserId};
use shared::ports::SystemClock;
use support_access_verify::chain::GENESIS;

/// AWS list prices, us-east-1, as published on aws.amazon.com/dynamodb/pricing/on-demand and
/// aws.amazon.com/kms/pricing on 2026-12-02: on-demand write and read request units, and
/// asymmetric KMS requests (`Sign`, `GetPublicKey` with ECC keys).
const DOLLARS_PER_WRITE_UNIT: f64 = 0.625 / 1e6;
const DOLLARS_PER_READ_UNIT: f64 = 0.125 / 1e6;
const DOLLARS_PER_KMS_REQUEST: f64 = 0.15 / 1e4;

const AUTHORIZER_TIMEOUT: Duration = Duration::from_secs(10);

fn batch_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(120))
        .operation_timeout(Duration::from_secs(300))
        .build()
}

struct Deployment {
    proxy: AwsProxy,
    tables: Tables,
    key: String,
}

impl Deployment {
    /// Fresh tables and a fresh key on moto, and a proxy with `Model::AWS` in front of it.
    async fn new() -> Arc<Self> {
        let moto = moto_endpoint();
        let (tables, key) = fresh_deployment(&moto).await;
        let proxy = AwsProxy::start_with(&moto, Model::AWS).await;
        Arc::new(Self { proxy, tables, key })
    }

    /// One Lambda instance, built as a cold start builds it (`adapter_aws::sdk_config`'s
    /// timeouts and retries, the production append budget).
    async fn instance(&self) -> Result<Services, String> {
        self.instance_with(adapter_aws::timeouts()).await
    }

    /// An instance with other SDK timeouts: for the batch jobs (f, g), whose single calls
    /// moto answers far slower than DynamoDB at 10^4 items and more (an unlimited `Scan` of
    /// 10,000 items takes moto 3.4 s), so their calls can be counted to the end.
    async fn instance_with(&self, timeouts: aws_config::timeout::TimeoutConfig) -> Result<Services, String> {
        let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(3);
        let config = sdk_config_with(&self.proxy.endpoint, timeouts, retry).await;
        let store = Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), self.tables.clone()));
        let signer = Arc::new(KmsSigner::new(aws_sdk_kms::Client::new(&config), &self.key, &[]).unwrap());
        let keys = Services::keys_of(signer.as_ref()).await.map_err(|e| format!("cold start failed: {e}"))?;
        Ok(Services::new(store, signer, keys, Arc::new(SystemClock), test_policy(), CursorKey::generate())
            .with_cached_controls(app::CONTROLS_CACHE_TTL))
    }
}

/// The instances of one function: each serves one request at a time.
struct Fleet {
    deployment: Arc<Deployment>,
    idle: Mutex<Vec<Arc<Services>>>,
    started: AtomicUsize,
}

impl Fleet {
    fn new(deployment: &Arc<Deployment>) -> Arc<Self> {
        Arc::new(Self { deployment: deployment.clone(), idle: Mutex::default(), started: AtomicUsize::new(0) })
    }

    /// At least `n` idle instances.
    async fn warm(&self, n: usize) {
        let missing = n.saturating_sub(self.idle.lock().unwrap().len());
        for _ in 0..missing {
            let instance = Arc::new(self.deployment.instance().await.expect("a warm-up instance starts"));
            self.idle.lock().unwrap().push(instance);
        }
    }

    /// An idle instance, or a new one (a cold start, which can fail: the request fails).
    async fn acquire(&self) -> Result<Arc<Services>, String> {
        let idle = self.idle.lock().unwrap().pop();
        match idle {
            Some(instance) => Ok(instance),
            None => {
                self.started.fetch_add(1, Ordering::Relaxed);
                Ok(Arc::new(self.deployment.instance().await?))
            }
        }
    }

    fn release(&self, instance: Arc<Services>) {
        self.idle.lock().unwrap().push(instance);
    }

    /// One decision of the authorizer for `token` (`GET /app/whoami`), and its outcome.
    async fn authorize(&self, token: &str) -> String {
        let instance = match self.acquire().await {
            Ok(instance) => instance,
            Err(_) => return "cold start failed (denied)".to_owned(),
        };
        let outcome = match app::authorize(&instance, token, &http::Method::GET, "/app/whoami").await {
            Ok(_) => "allowed".to_owned(),
            Err(AuthorizeError::Rejected(r)) => format!("refused: {}", r.code()),
            Err(AuthorizeError::Unavailable(_)) => "unavailable (denied)".to_owned(),
        };
        self.release(instance);
        outcome
    }

    /// One API request through the route table; its status.
    async fn call(&self, event: Event) -> (u16, serde_json::Value) {
        let Ok(instance) = self.acquire().await else { return (503, serde_json::Value::Null) };
        let response = shared::http::route(event.to_request(), &instance).await;
        self.release(instance);
        let status = response.status().as_u16();
        let bytes: &[u8] = response.body().as_ref();
        (status, serde_json::from_slice(bytes).unwrap_or_default())
    }
}

/// What one scenario measured.
#[derive(Default)]
struct Run {
    latencies: Vec<Duration>,
    outcomes: BTreeMap<String, usize>,
    stats: BTreeMap<String, OpStats>,
    started_instances: usize,
    wall: Duration,
}

impl Run {
    fn record(&mut self, latency: Duration, outcome: String) {
        let outcome =
            if latency > AUTHORIZER_TIMEOUT { format!("{outcome}, past the authorizer's 10 s") } else { outcome };
        self.latencies.push(latency);
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
    }

    fn row(&self, name: &str) -> String {
        let ops = self.latencies.len().max(1) as f64;
        let total = |f: &dyn Fn(&OpStats) -> f64, kms: bool| -> f64 {
            self.stats
                .iter()
                .filter(|(op, _)| matches!(op.as_str(), "Sign" | "GetPublicKey" | "Verify") == kms)
                .map(|(_, s)| f(s))
                .sum::<f64>()
                + 0.0 // an empty sum is -0.0
        };
        let dynamodb_calls = total(&|s| s.calls as f64, false);
        let kms_calls = total(&|s| s.calls as f64, true);
        let rcu = total(&|s| s.read_units, false);
        let wcu = total(&|s| s.write_units, false);
        let refused: Vec<String> = self
            .stats
            .iter()
            .filter(|(_, s)| s.conflicts + s.throttled + s.over_limit > 0)
            .map(|(op, s)| {
                format!("{op}: {} conflicts, {} throttled, {} over limit", s.conflicts, s.throttled, s.over_limit)
            })
            .collect();
        let dollars =
            (wcu * DOLLARS_PER_WRITE_UNIT + rcu * DOLLARS_PER_READ_UNIT + kms_calls * DOLLARS_PER_KMS_REQUEST) / ops
                * 1e6;
        let outcomes: Vec<String> = self.outcomes.iter().map(|(k, v)| format!("{v} {k}")).collect();
        format!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} / {:.2} | {:.2} | {} | {} |",
            self.latencies.len(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.percentile(1.0).as_secs_f64() * 1e3,
            outcomes.join(", "),
            dynamodb_calls / ops,
            kms_calls / ops,
            rcu / ops,
            wcu / ops,
            dollars,
            self.started_instances,
            if refused.is_empty() { "none".to_owned() } else { refused.join("; ") },
        )
    }
}

/// A granted consent and a token for each of `users`, minted through the API.
async fn tokens(api: &Fleet, users: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in users.chunks(16) {
        let mut tasks = Vec::new();
        for user in chunk {
            let user = user.clone();
            let grant = Event::new("POST", "/consents").user(&user).json(serde_json::json!({"duration_seconds": 3600}));
            let mint = Event::new("POST", "/tokens")
                .caller("agent-7", "[support]")
                .json(serde_json::json!({"user_id": user, "reason": "ticket 4411: load bench"}));
            tasks.push(async move {
                for _ in 0..20 {
                    let (status, _) = api.call(grant.clone()).await;
                    if status == 201 {
                        break;
                    }
                }
                for _ in 0..20 {
                    let (status, body) = api.call(mint.clone()).await;
                    if status == 201 {
                        return body["access_token"].as_str().unwrap().to_owned();
                    }
                }
                panic!("could not mint a token for {user}");
            });
        }
        for token in futures::future::join_all(tasks).await {
            out.push(token);
        }
    }
    out
}

/// `tokens[i % len]` used `n` times, `rate` per second (open loop: a use starts on time
/// whether or not the last one finished), or all at once when `rate` is `None`.
async fn uses(authorizer: &Arc<Fleet>, tokens: &[String], n: usize, rate: Option<f64>) -> Run {
    let deployment = authorizer.deployment.clone();
    deployment.proxy.clear();
    let started_before = authorizer.started.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(rate) = rate {
            tokio::time::sleep_until((start + Duration::from_secs_f64(i as f64 / rate)).into()).await;
        }
        let (authorizer, token) = (authorizer.clone(), tokens[i % tokens.len()].clone());
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            let outcome = authorizer.authorize(&token).await;
            (at.elapsed(), outcome)
        }));
    }
    let mut run = Run::default();
    for t in tasks {
        let (latency, outcome) = t.await.unwrap();
        run.record(latency, outcome);
    }
    run.wall = start.elapsed();
    run.stats = deployment.proxy.stats();
    run.started_instances = authorizer.started.load(Ordering::Relaxed) - started_before;
    run
}

fn users(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

async fn seed(
    direct: &aws_sdk_dynamodb::Client,
    table: &str,
    items: Vec<std::collections::HashMap<String, AttributeValue>>,
) {
    let batches: Vec<Vec<WriteRequest>> = items
        .chunks(25)
        .map(|c| {
            c.iter()
                .map(|i| {
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(i.clone())).build().unwrap())
                        .build()
                })
                .collect()
        })
        .collect();
    for group in batches.chunks(8) {
        let calls: Vec<_> =
            group.iter().map(|b| direct.batch_write_item().request_items(table, b.clone()).send()).collect();
        for answer in futures::future::join_all(calls).await {
            let answer = answer.unwrap();
            assert!(answer.unprocessed_items().is_none_or(|u| u.is_empty()), "moto left items unprocessed");
        }
    }
}

/// A chain of `n` well-formed events of `user` and its head, written straight to moto.
async fn seed_chain(direct: &aws_sdk_dynamodb::Client, tables: &Tables, user: &str, n: u64) {
    let actor = Actor { sub: shared::domain::AgentId::parse("agent-7").unwrap(), role: Role::Support };
    let now = Timestamp::from_unix(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64,
    );
    let mut hash = GENESIS.to_owned();
    let mut items = Vec::with_capacity(n as usize);
    for seq in 1..=n {
        let event = AuditEvent::new(AuditEventType::TokenUsed, now, Some(UserId::parse(user).unwrap()), actor.clone())
            .with_detail(format!("GET /app/orders/{seq}"))
            .seal(seq, &hash);
        hash = event.hash.clone();
        items.push(audit_item(&event));
    }
    seed(direct, &tables.audit, items).await;
    let head = std::collections::HashMap::from([
        ("stream".to_owned(), AttributeValue::S(user.to_owned())),
        ("seq".to_owned(), AttributeValue::N(n.to_string())),
        ("hash".to_owned(), AttributeValue::S(hash)),
        ("at".to_owned(), AttributeValue::N(now.unix().to_string())),
    ]);
    seed(direct, &tables.heads, vec![head]).await;
}

/// `n` chain heads that moved since the last checkpoint (none yet), written straight to moto.
async fn seed_heads(direct: &aws_sdk_dynamodb::Client, tables: &Tables, n: usize) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let items = (0..n)
        .map(|i| {
            let hash = format!("{:064x}", i as u128 * 0x9E37_79B9_7F4A_7C15);
            std::collections::HashMap::from([
                ("stream".to_owned(), AttributeValue::S(format!("moved-{i}"))),
                ("seq".to_owned(), AttributeValue::N("3".into())),
                ("hash".to_owned(), AttributeValue::S(hash)),
                ("at".to_owned(), AttributeValue::N(now.to_string())),
                // Marked moved, as a writer of the head marks it (any index partition will do).
                ("moved_shard".to_owned(), AttributeValue::N((i % 32).to_string())),
                ("moved_at".to_owned(), AttributeValue::N(now.to_string())),
            ])
        })
        .collect();
    seed(direct, &tables.heads, items).await;
}

/// One timed operation, capped at `limit`, as a run of one; `timeout` is what a deployment
/// would give it (the function's or API Gateway's), named.
async fn once<F: std::future::Future<Output = String>>(
    deployment: &Deployment,
    limit: Duration,
    timeout: (Duration, &str),
    f: F,
) -> Run {
    deployment.proxy.clear();
    let start = Instant::now();
    let outcome = match tokio::time::timeout(limit, f).await {
        Ok(outcome) => outcome,
        Err(_) => format!("not done after {} s (stopped)", limit.as_secs()),
    };
    let outcome = if start.elapsed() > timeout.0 {
        format!("{outcome}, past the {} ({} s)", timeout.1, timeout.0.as_secs())
    } else {
        outcome
    };
    let mut run = Run::default();
    run.latencies.push(start.elapsed());
    *run.outcomes.entry(outcome).or_default() += 1;
    run.wall = start.elapsed();
    run.stats = deployment.proxy.stats();
    run
}

const HEADER: &str = "| scenario | ops | p50 ms | p99 ms | max ms | outcomes | DynamoDB calls/op | KMS calls/op | RCU / WCU per op | $ per M ops | instances started | refused at the proxy |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--") && !a.is_empty());
    let wants = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    let seconds = |name: &str, default: f64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let c_seconds = seconds("BENCH_AWS_C_SECONDS", 30.0);
    let d_seconds = seconds("BENCH_AWS_D_SECONDS", 20.0);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut print = |name: &str, run: &Run| {
        let row = run.row(name);
        eprintln!("{row}   (wall {:.1} s)", run.wall.as_secs_f64());
        rows.push(row);
    };

    if wants("a") || wants("b") || wants("e") {
        let deployment = Deployment::new().await;
        let (api, authorizer) = (Fleet::new(&deployment), Fleet::new(&deployment));
        api.warm(16).await;
        let one = tokens(&api, &["solo".to_owned()]).await;
        authorizer.warm(1).await;
        let sequential = {
            deployment.proxy.clear();
            let start = Instant::now();
            let mut run = Run::default();
            for _ in 0..200 {
                let at = Instant::now();
                let outcome = authorizer.authorize(&one[0]).await;
                run.record(at.elapsed(), outcome);
            }
            run.stats = deployment.proxy.stats();
            run.wall = start.elapsed();
            run
        };
        print("a. one use at a time (one user)", &sequential);

        authorizer.warm(50).await;
        let alice = tokens(&api, &["burst".to_owned()]).await;
        print("b. burst of 50 uses, one user", &uses(&authorizer, &alice, 50, None).await);
        let many = tokens(&api, &users("spread", 50)).await;
        print("b'. burst of 50 uses, 50 users", &uses(&authorizer, &many, 50, None).await);

        // e. A revoke during a burst of 50 uses of one user's token.
        let victim = tokens(&api, &["revoked".to_owned()]).await;
        let burst = {
            let (authorizer, victim) = (authorizer.clone(), victim.clone());
            tokio::spawn(async move { uses(&authorizer, &victim, 50, None).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at = Instant::now();
        let (status, _) = api.call(Event::new("DELETE", "/consents/current").user("revoked")).await;
        let revoke_latency = at.elapsed();
        let burst = burst.await.unwrap();
        let events = api.acquire().await.unwrap().chain_archive.stream_events("revoked", 0, 1000).await.unwrap();
        let revoked_at = events.iter().find(|e| e.event_type == AuditEventType::ConsentRevoked).map(|e| e.seq);
        let late = events
            .iter()
            .filter(|e| e.event_type == AuditEventType::TokenUsed && revoked_at.is_some_and(|r| e.seq > r))
            .count();
        let used = events.iter().filter(|e| e.event_type == AuditEventType::TokenUsed).count();
        let allowed = burst.outcomes.get("allowed").copied().unwrap_or(0);
        let mut revoke = Run::default();
        revoke.record(revoke_latency, format!("revoke {status}"));
        print("e. the revoke, during a burst of 50 uses", &revoke);
        print("e. the burst of 50 around the revoke", &burst);
        eprintln!(
            "e: {allowed} uses allowed, {used} token.used on the chain, {late} after the revoke's commit (must be 0)"
        );
        notes.push(format!(
            "e: {allowed} uses allowed, {used} `token.used` recorded, {late} committed after the revoke's commit (must be 0)"
        ));
        assert_eq!(late, 0, "a use was accepted after the revoke committed");
        assert_eq!(allowed, used, "every allowed use is on the chain");
    }

    if wants("c") {
        let deployment = Deployment::new().await;
        let (api, authorizer) = (Fleet::new(&deployment), Fleet::new(&deployment));
        api.warm(16).await;
        authorizer.warm(40).await;
        let n = (40.0 * c_seconds) as usize;
        let one = tokens(&api, &["steady".to_owned()]).await;
        print(&format!("c. 40 uses/s for {c_seconds} s, one user"), &uses(&authorizer, &one, n, Some(40.0)).await);
        let forty = tokens(&api, &users("steady", 40)).await;
        print(&format!("c'. 40 uses/s for {c_seconds} s, 40 users"), &uses(&authorizer, &forty, n, Some(40.0)).await);
    }

    if wants("d") {
        let deployment = Deployment::new().await;
        let (api, authorizer) = (Fleet::new(&deployment), Fleet::new(&deployment));
        api.warm(16).await;
        let valid = tokens(&api, &users("many", 200)).await;
        // R: the highest rate at which valid uses over many users all succeed (3 s each).
        let mut rate = 0.0;
        for r in [25.0, 50.0, 100.0, 200.0, 400.0] {
            authorizer.warm(r as usize / 5).await;
            let probe = uses(&authorizer, &valid, (r * 3.0) as usize, Some(r)).await;
            let ok = probe.outcomes.get("allowed").copied().unwrap_or(0) == probe.latencies.len();
            eprintln!("d: probe at {r}/s: {:?}", probe.outcomes);
            if !ok {
                break;
            }
            rate = r;
        }
        if rate == 0.0 {
            notes.push("d: no probed rate of valid uses (from 25/s) completed without errors".into());
        }
        // d' at R for the whole run; while it has errors, R halves (at most three times).
        let mut rate = if rate == 0.0 { 25.0 } else { rate };
        for attempt in 0..4 {
            let reference = uses(&authorizer, &valid, (rate * d_seconds) as usize, Some(rate)).await;
            let clean = reference.outcomes.get("allowed").copied().unwrap_or(0) == reference.latencies.len();
            eprintln!("d': {rate}/s for {d_seconds} s: {:?}", reference.outcomes);
            if clean || attempt == 3 {
                print(&format!("d'. {rate}/s valid uses, 200 users, {d_seconds} s"), &reference);
                break;
            }
            rate /= 2.0;
        }
        let n = (rate * d_seconds) as usize;
        let garbage: Vec<String> = (0..n).map(|i| format!("eyJhbGciOiJFUzI1NiJ9.garbage-{i}.x")).collect();
        let flood = {
            let authorizer = authorizer.clone();
            tokio::spawn(async move { uses(&authorizer, &garbage, n, Some(rate)).await })
        };
        let bystander = tokens(&api, &["bystander".to_owned()]).await;
        let mut sequential = Run::default();
        let until = Instant::now() + Duration::from_secs_f64(d_seconds);
        while Instant::now() < until {
            let at = Instant::now();
            let outcome = authorizer.authorize(&bystander[0]).await;
            sequential.record(at.elapsed(), outcome);
        }
        let flood = flood.await.unwrap();
        sequential.stats = BTreeMap::new();
        print(&format!("d. {rate}/s garbage tokens, {d_seconds} s"), &flood);
        print("d. beside it: another user's sequential uses", &sequential);
    }

    if wants("f") {
        for n in [10_000usize, 100_000] {
            let deployment = Deployment::new().await;
            let (direct, _) = setup_clients(&moto_endpoint()).await;
            seed_heads(&direct, &deployment.tables, n).await;
            let instance = deployment.instance_with(batch_timeouts()).await.unwrap();
            let timeout = (Duration::from_secs(60), "checkpoint function's timeout");
            let run = once(&deployment, Duration::from_secs(400), timeout, async {
                // As the function runs: checkpoints until its deadline (less its margin).
                let until = Some(Instant::now() + timeout.0.saturating_sub(app::CHECKPOINT_RUN_MARGIN));
                match app::checkpoint_all(&instance, until).await {
                    Ok(run) => format!(
                        "{} checkpoints sealing {} heads, {} left{}",
                        run.made.len(),
                        run.sealed,
                        run.left,
                        if run.more_left { " and more" } else { "" }
                    ),
                    Err(e) => format!("failed: {e}"),
                }
            })
            .await;
            print(&format!("f. checkpoint, {n} moved chains"), &run);
        }
    }

    if wants("g") {
        let deployment = Deployment::new().await;
        let (direct, _) = setup_clients(&moto_endpoint()).await;
        seed_chain(&direct, &deployment.tables, "ten-k", 10_000).await;
        seed_chain(&direct, &deployment.tables, "fifty-k", 50_000).await;
        let instance = deployment.instance_with(batch_timeouts()).await.unwrap();
        for (user, n) in [("ten-k", 10_000), ("fifty-k", 50_000)] {
            // The export function's timeout (the template's 10 s), inside the integration's 30 s.
            let timeout = (Duration::from_secs(10), "export function's timeout");
            let run = once(&deployment, Duration::from_secs(300), timeout, async {
                // Every page, as a client follows them; each must fit Lambda's response.
                let scope = app::ExportScope::User(UserId::parse(user).unwrap());
                let (mut lines, mut pages, mut largest, mut cursor) = (0, 0, 0, None::<String>);
                loop {
                    match app::export_page(&instance, &scope, cursor.as_deref()).await {
                        Ok(page) => {
                            (lines, pages, largest) = (lines + page.count, pages + 1, largest.max(page.lines.len()));
                            match page.next_cursor {
                                Some(next) => cursor = Some(next),
                                None => {
                                    break format!(
                                        "{lines} lines in {pages} pages, the largest {:.1} MB",
                                        largest as f64 / 1e6
                                    );
                                }
                            }
                        }
                        Err(e) => break format!("refused: {e}"),
                    }
                }
            })
            .await;
            print(&format!("g. export of a {n}-event chain"), &run);
        }
    }

    println!("{HEADER}");
    for row in rows {
        println!("{row}");
    }
    for note in notes {
        println!("\n{note}");
    }
}
