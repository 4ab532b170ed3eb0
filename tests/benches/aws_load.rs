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
//!
//! Audit paths (`BENCH_AWS_PATHS`, `direct` by default, or `sequenced`, or both:
//! `direct,sequenced`): `direct` appends each event to its chain in the write (a use is a
//! transaction on the user's chain head); `sequenced` is a deployment with `SequencedAudit`
//! on (#18), built by the same switch as the functions' (`adapter_aws::on_audit_path`): a use
//! is one put into the intake, and the `sequencer` function runs beside the scenario as its
//! event source mapping would run it ([`SequencerLoop`]). Its calls are counted with the
//! scenario's; the chain lag of each allowed use is reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use shared::ports::{SEQUENCER_HOLD, StoreError, SystemClock};
use support_access_verify::chain::{GENESIS, UNATTRIBUTED_STREAM};

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
    /// On the sequenced audit path: its sequencer.
    sequencer: Option<Arc<SequencerLoop>>,
}

impl Deployment {
    /// Fresh tables and a fresh key on moto, and a proxy with `Model::AWS` in front of it;
    /// with its sequencer running when `sequenced`.
    async fn new(sequenced: bool) -> Arc<Self> {
        let moto = moto_endpoint();
        let (tables, key) = fresh_deployment(&moto).await;
        let proxy = AwsProxy::start_with(&moto, Model::AWS).await;
        let sequencer = match sequenced {
            true => {
                let retry = aws_config::retry::RetryConfig::standard().with_max_attempts(3);
                let config = sdk_config_with(&proxy.endpoint, adapter_aws::timeouts(), retry).await;
                let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), tables.clone()).with_sequencer();
                Some(SequencerLoop::start(store))
            }
            false => None,
        };
        Arc::new(Self { proxy, tables, key, sequencer })
    }

    /// Tells the sequencer (if any) that `stream` has something new in the intake, as the
    /// intake's stream tells the `sequencer` function.
    fn touched(&self, stream: &str) {
        if let Some(sequencer) = &self.sequencer {
            sequencer.touched(stream);
        }
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
        let signer = Arc::new(KmsSigner::new(aws_sdk_kms::Client::new(&config), &self.key, &[]).unwrap());
        let keys = Services::keys_of(signer.as_ref()).await.map_err(|e| format!("cold start failed: {e}"))?;
        let client = aws_sdk_dynamodb::Client::new(&config);
        let sequenced = self.sequencer.is_some();
        Ok(adapter_aws::on_audit_path(client, self.tables.clone(), sequenced, |store| {
            Services::new(store, signer, keys, Arc::new(SystemClock), test_policy(), CursorKey::generate())
        })
        .with_cached_controls(app::CONTROLS_CACHE_TTL))
    }
}

/// The `sequencer` function as its event source mapping runs it: every [`poll`] (Lambda polls
/// a DynamoDB stream's shards four times a second), one invocation for the streams written
/// since the last poll ([`app::sequence_named`], as `functions/sequencer` runs it), several
/// at once, but never two on one stream (records of one partition key go in order, one
/// batch at a time). A stream whose run fails or is unfinished is delivered again.
struct SequencerLoop {
    store: DynamoStore,
    state: Mutex<LoopState>,
}

#[derive(Default)]
struct LoopState {
    /// Streams written to and not yet given to an invocation.
    touched: BTreeSet<String>,
    /// Streams an invocation is running over.
    busy: BTreeSet<String>,
    /// Per stream, each invocation that left it with nothing pending: when it began, when it ended.
    done: HashMap<String, Vec<(Instant, Instant)>>,
    failures: usize,
}

/// Lambda's polling of a stream's shard (four times a second), or the mapping's batching
/// window when longer: `BENCH_AWS_SEQUENCER_WINDOW_MS` (the template's
/// `SequencerBatchingWindowSeconds`, in milliseconds; 1000, the template's default; 250 is
/// a window of 0).
fn poll() -> Duration {
    let ms = std::env::var("BENCH_AWS_SEQUENCER_WINDOW_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000u64);
    Duration::from_millis(ms.max(250))
}

impl SequencerLoop {
    fn start(store: DynamoStore) -> Arc<Self> {
        let this = Arc::new(Self { store, state: Mutex::default() });
        let weak = Arc::downgrade(&this);
        let poll = poll();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(poll).await;
                let Some(this) = weak.upgrade() else { return };
                let batch: Vec<String> = {
                    let mut state = this.state.lock().unwrap();
                    let ready: Vec<String> = state.touched.difference(&state.busy).cloned().collect();
                    for s in &ready {
                        state.touched.remove(s);
                        state.busy.insert(s.clone());
                    }
                    ready
                };
                if batch.is_empty() {
                    continue;
                }
                tokio::spawn(async move {
                    let began = Instant::now();
                    // The function's 60 s timeout, less `until_deadline`'s 8 s margin.
                    // Nothing stale: the bench's triggers are never delivered again, and
                    // a stream it leaves pending is touched again at once.
                    let report = app::sequence_named(
                        &this.store,
                        batch.clone(),
                        &[],
                        SEQUENCER_HOLD,
                        began + Duration::from_secs(52),
                    )
                    .await;
                    let ended = Instant::now();
                    let retry: BTreeSet<&String> = report.retry().collect();
                    let mut state = this.state.lock().unwrap();
                    state.failures += report.failed.len();
                    for s in batch {
                        state.busy.remove(&s);
                        if retry.contains(&s) {
                            state.touched.insert(s);
                        } else {
                            state.done.entry(s).or_default().push((began, ended));
                        }
                    }
                });
            }
        });
        this
    }

    fn touched(&self, stream: &str) {
        self.state.lock().unwrap().touched.insert(stream.to_owned());
    }

    /// Waits (at most `limit`) until nothing is left to run.
    async fn drain(&self, limit: Duration) {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            {
                let state = self.state.lock().unwrap();
                if state.touched.is_empty() && state.busy.is_empty() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How long after `at` the use of `stream` allowed then was on its chain: until the end
    /// of the first invocation over `stream` that began after it and left nothing pending
    /// (its put was durable before it was allowed, so that invocation's read saw it).
    fn lag(&self, stream: &str, at: Instant) -> Option<Duration> {
        let state = self.state.lock().unwrap();
        state.done.get(stream)?.iter().filter(|(began, _)| *began >= at).map(|(_, ended)| *ended - at).min()
    }
}

/// The stream a token's use is recorded in: its user's (the payload's `sub`, unverified:
/// only to tell the bench's sequencer), or the unattributed one.
fn stream_of(token: &str) -> String {
    use base64::Engine;
    let sub =
        token.split('.').nth(1).and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok()).and_then(
            |raw| serde_json::from_slice::<serde_json::Value>(&raw).ok()?.get("sub")?.as_str().map(str::to_owned),
        );
    sub.unwrap_or_else(|| UNATTRIBUTED_STREAM.to_owned())
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
            // Told apart: a use refused before its write for its intake deadline, or any
            // other failure of the check or the write (a timeout, a throttle).
            Err(AuthorizeError::Unavailable(StoreError::DeadlinePassed)) => {
                "past the intake deadline (denied)".to_owned()
            }
            Err(AuthorizeError::Unavailable(_)) => "unavailable (denied)".to_owned(),
        };
        self.release(instance);
        // Even a use refused as unavailable may have landed in the intake.
        self.deployment.touched(&stream_of(token));
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
    /// On the sequenced path: how long after each allowed use it was on its chain.
    lags: Vec<Duration>,
}

impl Run {
    fn record(&mut self, latency: Duration, outcome: String) {
        let outcome =
            if latency > AUTHORIZER_TIMEOUT { format!("{outcome}, past the authorizer's 10 s") } else { outcome };
        self.latencies.push(latency);
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    /// Adds `other`'s uses, outcomes, lags, wall time and counted calls to this run's.
    fn absorb(&mut self, other: Run) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        self.lags.extend(other.lags);
        self.wall += other.wall;
        self.started_instances += other.started_instances;
        for (op, s) in &other.stats {
            *self.stats.entry(op.clone()).or_default() += s;
        }
    }

    /// The chain lag's line (sequenced path), `None` when there is none to tell.
    fn lag_note(&self, name: &str) -> Option<String> {
        let lags = (!self.lags.is_empty()).then_some(&self.lags)?;
        let ms = |p| percentile(lags, p).as_secs_f64() * 1e3;
        Some(format!(
            "{name}: chain lag behind {} allowed uses: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            lags.len(),
            ms(0.5),
            ms(0.99),
            ms(1.0)
        ))
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

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
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
                    api.deployment.touched(&user);
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
    uses_timed(authorizer, tokens, n, rate).await.0
}

/// As [`uses`], with each use's start and outcome; on the sequenced path, once the sequencer
/// has appended them all (its calls counted with the uses'), with the chain lag of each.
async fn uses_timed(
    authorizer: &Arc<Fleet>,
    tokens: &[String],
    n: usize,
    rate: Option<f64>,
) -> (Run, Vec<(Instant, String)>) {
    let deployment = authorizer.deployment.clone();
    if let Some(sequencer) = &deployment.sequencer {
        sequencer.drain(Duration::from_secs(60)).await;
    }
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
            (at, at.elapsed(), stream_of(&token), outcome)
        }));
    }
    let mut run = Run::default();
    let mut timed = Vec::with_capacity(n);
    let mut allowed = Vec::new();
    for t in tasks {
        let (at, latency, stream, outcome) = t.await.unwrap();
        if outcome == "allowed" {
            allowed.push((stream, at + latency));
        }
        timed.push((at, outcome.clone()));
        run.record(latency, outcome);
    }
    run.wall = start.elapsed();
    if let Some(sequencer) = &deployment.sequencer {
        sequencer.drain(Duration::from_secs(120)).await;
        run.lags = allowed.iter().filter_map(|(stream, at)| sequencer.lag(stream, *at)).collect();
        let failures = sequencer.state.lock().unwrap().failures;
        if run.lags.len() < allowed.len() || failures > 0 {
            eprintln!(
                "sequencer: {} of {} allowed uses without a lag, {failures} failed runs so far",
                allowed.len() - run.lags.len(),
                allowed.len()
            );
        }
    }
    run.stats = deployment.proxy.stats();
    run.started_instances = authorizer.started.load(Ordering::Relaxed) - started_before;
    (run, timed)
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

/// A burst of 50 uses of `tokens` and, 20 ms into it, a revoke of `revoked`'s consent: how
/// long the revoke took, its status, when it answered, and the burst (its uses timed).
async fn revoke_during_burst(
    api: &Fleet,
    authorizer: &Arc<Fleet>,
    tokens: &[String],
    revoked: &str,
) -> (Duration, u16, Instant, Run, Vec<(Instant, String)>) {
    let deployment = authorizer.deployment.clone();
    if let Some(sequencer) = &deployment.sequencer {
        sequencer.drain(Duration::from_secs(60)).await;
    }
    let burst = {
        let (authorizer, tokens) = (authorizer.clone(), tokens.to_vec());
        tokio::spawn(async move { uses_timed(&authorizer, &tokens, 50, None).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let at = Instant::now();
    let (status, _) = api.call(Event::new("DELETE", "/consents/current").user(revoked)).await;
    let answered = Instant::now();
    deployment.touched(revoked);
    let (burst, timed) = burst.await.unwrap();
    (answered - at, status, answered, burst, timed)
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
    let e_rounds = seconds("BENCH_AWS_E_ROUNDS", 5.0) as usize;
    let paths = std::env::var("BENCH_AWS_PATHS").unwrap_or_else(|_| "direct".into());
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failed = Vec::new();
    let mut print = |name: &str, run: &Run, notes: &mut Vec<String>| {
        let row = run.row(name);
        eprintln!("{row}   (wall {:.1} s)", run.wall.as_secs_f64());
        rows.push(row);
        if let Some(lag) = run.lag_note(name) {
            eprintln!("{lag}");
            notes.push(lag);
        }
    };

    for path in paths.split(',').map(str::trim) {
        let sequenced = match path {
            "direct" => false,
            "sequenced" => true,
            other => panic!("BENCH_AWS_PATHS: direct or sequenced, not {other:?}"),
        };
        let tag = if sequenced { " [sequenced]" } else { "" };

        if wants("a") || wants("b") || wants("e") {
            let deployment = Deployment::new(sequenced).await;
            let (api, authorizer) = (Fleet::new(&deployment), Fleet::new(&deployment));
            api.warm(16).await;
            let one = tokens(&api, &["solo".to_owned()]).await;
            authorizer.warm(1).await;
            let sequential = {
                if let Some(sequencer) = &deployment.sequencer {
                    sequencer.drain(Duration::from_secs(60)).await;
                }
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
            print(&format!("a. one use at a time (one user){tag}"), &sequential, &mut notes);

            authorizer.warm(50).await;
            let alice = tokens(&api, &["burst".to_owned()]).await;
            print(
                &format!("b. burst of 50 uses, one user{tag}"),
                &uses(&authorizer, &alice, 50, None).await,
                &mut notes,
            );
            let many = tokens(&api, &users("spread", 50)).await;
            print(
                &format!("b'. burst of 50 uses, 50 users{tag}"),
                &uses(&authorizer, &many, 50, None).await,
                &mut notes,
            );

            // e. The reference: revokes with nothing else going on, one after another.
            let idle_users = users("idle", e_rounds);
            tokens(&api, &idle_users).await;
            if let Some(sequencer) = &deployment.sequencer {
                sequencer.drain(Duration::from_secs(60)).await;
            }
            let mut idle = Run::default();
            for user in &idle_users {
                let at = Instant::now();
                let (status, _) = api.call(Event::new("DELETE", "/consents/current").user(user)).await;
                idle.record(at.elapsed(), format!("revoke {status}"));
                deployment.touched(user);
            }
            print(&format!("e. an idle revoke{tag}"), &idle, &mut notes);

            // e. A revoke during a burst of 50 uses of one user's token, `e_rounds` times; and
            // its reference e', a revoke of an idle user during the same burst on another user:
            // the same load on the store, so the ratio shows whether a revoke waits behind the
            // uses of the consent it ends (#18's "a revoke waits in the same queue as the uses it
            // should stop"), not how busy the machine is. The two alternate, round by round.
            let (mut revokes, mut bursts) = (Run::default(), Run::default());
            let (mut reference, mut reference_bursts) = (Run::default(), Run::default());
            let (mut allowed, mut used, mut late, mut after_revoke) = (0, 0, 0, 0);
            for round in 0..e_rounds {
                let user = format!("revoked-{round}");
                let (steady, bystander) = (format!("steady-{round}"), format!("bystander-{round}"));
                let victim = tokens(&api, std::slice::from_ref(&user)).await;
                let steady_token = tokens(&api, &[steady.clone(), bystander.clone()]).await;
                for paired in [round % 2 == 1, round % 2 == 0] {
                    if paired {
                        let (took, status, _, burst, _) =
                            revoke_during_burst(&api, &authorizer, &steady_token[..1], &bystander).await;
                        reference.record(took, format!("revoke {status}"));
                        reference_bursts.absorb(burst);
                        continue;
                    }
                    let (took, status, revoked, burst, timed) =
                        revoke_during_burst(&api, &authorizer, &victim, &user).await;
                    revokes.record(took, format!("revoke {status}"));
                    if let Some(sequencer) = &deployment.sequencer {
                        sequencer.drain(Duration::from_secs(60)).await;
                    }
                    let events =
                        api.acquire().await.unwrap().chain_archive.stream_events(&user, 0, 1000).await.unwrap();
                    let revoked_at =
                        events.iter().find(|e| e.event_type == AuditEventType::ConsentRevoked).map(|e| e.seq);
                    late += events
                        .iter()
                        .filter(|e| e.event_type == AuditEventType::TokenUsed && revoked_at.is_some_and(|r| e.seq > r))
                        .count();
                    used += events.iter().filter(|e| e.event_type == AuditEventType::TokenUsed).count();
                    allowed += burst.outcomes.get("allowed").copied().unwrap_or(0);
                    // Allowed although the use began (so read its consent) after the revoke answered.
                    after_revoke +=
                        timed.iter().filter(|(began, outcome)| outcome == "allowed" && *began > revoked).count();
                    bursts.absorb(burst);
                }
            }
            print(
                &format!("e'. a revoke of an idle user, during a burst of 50 uses of another ({e_rounds} rounds){tag}"),
                &reference,
                &mut notes,
            );
            print(&format!("e'. the bursts of 50 around those revokes{tag}"), &reference_bursts, &mut notes);
            print(&format!("e. the revoke, during a burst of 50 uses ({e_rounds} rounds){tag}"), &revokes, &mut notes);
            print(&format!("e. the bursts of 50 around the revokes{tag}"), &bursts, &mut notes);
            let note = format!(
                "e{tag}: {allowed} uses allowed, {used} `token.used` recorded, {late} after the revoke on the chain (must be 0), \
                 {after_revoke} allowed that began after the revoke answered (must be 0)"
            );
            eprintln!("{note}");
            notes.push(note);
            if late > 0 || after_revoke > 0 {
                failed.push(format!("e{tag}: a use was accepted after the revoke"));
            }
            // Direct: exactly the allowed uses are on the chain. Sequenced: a use refused as
            // unavailable whose put still landed is on it too (over-reporting, never under).
            if used < allowed || (!sequenced && used != allowed) {
                failed.push(format!("e{tag}: {allowed} uses allowed, {used} on the chain"));
            }
        }

        if wants("c") {
            let deployment = Deployment::new(sequenced).await;
            let (api, authorizer) = (Fleet::new(&deployment), Fleet::new(&deployment));
            api.warm(16).await;
            authorizer.warm(40).await;
            let n = (40.0 * c_seconds) as usize;
            let one = tokens(&api, &["steady".to_owned()]).await;
            let run = uses(&authorizer, &one, n, Some(40.0)).await;
            print(&format!("c. 40 uses/s for {c_seconds} s, one user{tag}"), &run, &mut notes);
            let forty = tokens(&api, &users("steady", 40)).await;
            let run = uses(&authorizer, &forty, n, Some(40.0)).await;
            print(&format!("c'. 40 uses/s for {c_seconds} s, 40 users{tag}"), &run, &mut notes);
        }

        if wants("d") {
            let deployment = Deployment::new(sequenced).await;
            let (api, authorizer) = (Fleet::new(&deployment), Fleet::new(&deployment));
            api.warm(16).await;
            let valid = tokens(&api, &users("many", 200)).await;
            // R: the highest rate at which valid uses over many users all succeed (3 s each).
            let mut rate = 0.0;
            for r in [25.0, 50.0, 100.0, 200.0, 400.0] {
                authorizer.warm(r as usize / 5).await;
                let probe = uses(&authorizer, &valid, (r * 3.0) as usize, Some(r)).await;
                let ok = probe.outcomes.get("allowed").copied().unwrap_or(0) == probe.latencies.len();
                eprintln!("d{tag}: probe at {r}/s: {:?}", probe.outcomes);
                if !ok {
                    break;
                }
                rate = r;
            }
            if rate == 0.0 {
                notes.push(format!("d{tag}: no probed rate of valid uses (from 25/s) completed without errors"));
            }
            // d' at R for the whole run; while it has errors, R halves (at most three times).
            let mut rate = if rate == 0.0 { 25.0 } else { rate };
            let mut reference = Run::default();
            for attempt in 0..4 {
                reference = uses(&authorizer, &valid, (rate * d_seconds) as usize, Some(rate)).await;
                let clean = reference.outcomes.get("allowed").copied().unwrap_or(0) == reference.latencies.len();
                eprintln!("d'{tag}: {rate}/s for {d_seconds} s: {:?}", reference.outcomes);
                if clean || attempt == 3 {
                    print(&format!("d'. {rate}/s valid uses, 200 users, {d_seconds} s{tag}"), &reference, &mut notes);
                    break;
                }
                rate /= 2.0;
            }
            let n = (rate * d_seconds) as usize;
            let garbage: Vec<String> = (0..n).map(|i| format!("eyJhbGciOiJFUzI1NiJ9.garbage-{i}.x")).collect();
            let bystander = tokens(&api, &["bystander".to_owned()]).await;
            let flood = {
                let authorizer = authorizer.clone();
                tokio::spawn(async move { uses(&authorizer, &garbage, n, Some(rate)).await })
            };
            let mut sequential = Run::default();
            let until = Instant::now() + Duration::from_secs_f64(d_seconds);
            while Instant::now() < until {
                let at = Instant::now();
                let outcome = authorizer.authorize(&bystander[0]).await;
                sequential.record(at.elapsed(), outcome);
            }
            let flood = flood.await.unwrap();
            sequential.stats = BTreeMap::new();
            print(&format!("d. {rate}/s garbage tokens, {d_seconds} s{tag}"), &flood, &mut notes);
            print(&format!("d. beside it: another user's sequential uses{tag}"), &sequential, &mut notes);
            // The targets of #18 item 3: what a garbage request stores against a valid use, and
            // the bystander's p99 against d'.
            let stored = |run: &Run| {
                let ops = run.latencies.len().max(1) as f64;
                let wcu: f64 = run.stats.values().map(|s| s.write_units).sum();
                let bytes: u64 = run.stats.values().map(|s| s.bytes_written).sum();
                (wcu / ops, bytes as f64 / ops)
            };
            let ((garbage_wcu, garbage_bytes), (use_wcu, use_bytes)) = (stored(&flood), stored(&reference));
            notes.push(format!(
                "d{tag}: per garbage request {garbage_wcu:.3} WCU and {garbage_bytes:.0} bytes written, per valid use (d') \
                 {use_wcu:.2} WCU and {use_bytes:.0} bytes: {:.3}x and {:.3}x (target <= 0.1x); another user's p99 \
                 under the flood {:.0} ms, {:.2}x d''s {:.0} ms (target <= 1.2x)",
                garbage_wcu / use_wcu.max(f64::MIN_POSITIVE),
                garbage_bytes / use_bytes.max(f64::MIN_POSITIVE),
                sequential.percentile(0.99).as_secs_f64() * 1e3,
                sequential.percentile(0.99).as_secs_f64() / reference.percentile(0.99).as_secs_f64().max(f64::MIN_POSITIVE),
                reference.percentile(0.99).as_secs_f64() * 1e3,
            ));
        }
    }

    if wants("f") {
        for n in [10_000usize, 100_000] {
            let deployment = Deployment::new(false).await;
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
            print(&format!("f. checkpoint, {n} moved chains"), &run, &mut notes);
        }
    }

    if wants("g") {
        let deployment = Deployment::new(false).await;
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
            print(&format!("g. export of a {n}-event chain"), &run, &mut notes);
        }
    }

    println!("{HEADER}");
    for row in rows {
        println!("{row}");
    }
    for note in notes {
        println!("\n{note}");
    }
    assert!(failed.is_empty(), "{failed:?}");
}
