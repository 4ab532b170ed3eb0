//! A loopback HTTP proxy in front of the DynamoDB/KMS test server (moto), which makes that
//! server behave as DynamoDB and KMS do under load ([`model::Model`]: latency, transaction
//! conflicts, per-partition throttling, size limits, the KMS quota) and counts what passes:
//! every call by its `X-Amz-Target`, and capacity units per operation. When armed it also
//! injects one kind of fault into the call numbered N (counted from arming), or into every
//! call from N on: a throttling error, a 500, a connection dropped before the call reaches
//! the server, or one dropped after it (the write committed, the answer lost).
//!
//! Latency and conflicts are modelled here, outside the server: moto runs one DynamoDB call at
//! a time (`tests/moto_server.py`), so a transaction is "ongoing" from the moment it reaches
//! the proxy for its modelled latency, and a call that overlaps it on an item in that time
//! meets the conflict DynamoDB would report; only then is it forwarded to moto.
//!
//! `scripts/test` runs one as a process (`aws-proxy`, the model as AWS documents it) in front
//! of moto for every AWS test; a test that needs other settings starts its own.

pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use model::{Model, Op, Schema, Touch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 400 `ThrottlingException` (the SDK retries it).
    Throttle,
    /// 500 `InternalServerError` (the SDK retries it).
    ServerError,
    /// The connection closes before the call is forwarded: nothing happened.
    DropBefore,
    /// The call is forwarded and done, then the connection closes without the answer.
    DropAfter,
    /// A `TransactWriteItems` cancelled with `TransactionConflict` on every item, or a
    /// single-item write refused with `TransactionConflictException` (another transaction on
    /// its items; nothing written, the SDK does not retry it).
    Conflict,
    /// A `TransactWriteItems` cancelled with `ThrottlingError` on every item (a partition
    /// over its throughput; nothing written, the SDK does not retry it).
    CancelledThrottled,
}

impl Fault {
    pub const ALL: [Self; 4] = [Self::Throttle, Self::ServerError, Self::DropBefore, Self::DropAfter];
    /// The cancellations a transaction meets besides failed conditions.
    pub const CANCELLATIONS: [Self; 2] = [Self::Conflict, Self::CancelledThrottled];

    /// Every fault a call of operation `name` can meet: [`Fault::ALL`], for a
    /// `TransactWriteItems` its [`Fault::CANCELLATIONS`] too, and for a single-item write a
    /// transaction on its item ([`Fault::Conflict`]).
    pub fn for_call(name: &str) -> Vec<Self> {
        let mut faults = Self::ALL.to_vec();
        match name {
            "TransactWriteItems" => faults.extend(Self::CANCELLATIONS),
            "PutItem" | "UpdateItem" | "DeleteItem" => faults.push(Self::Conflict),
            _ => {}
        }
        faults
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The call (0-based, counted from arming) that fails first.
    pub call: usize,
    pub fault: Fault,
    /// Every later call fails too (an outage), not only that one (a blip).
    pub persistent: bool,
}

/// What one operation did at the proxy since the last reset.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OpStats {
    pub calls: u64,
    /// Capacity units DynamoDB would bill for the calls that succeeded.
    pub read_units: f64,
    pub write_units: f64,
    /// Bytes of the whole items the calls that succeeded put (updates and deletes count 0).
    pub bytes_written: u64,
    /// Refused by the throughput model (a partition's or the KMS quota).
    pub throttled: u64,
    /// Refused by the conflict model.
    pub conflicts: u64,
    /// Refused by a size or count limit (`ValidationException`).
    pub over_limit: u64,
    /// Any other answer that was not a success (from the server behind, or an injected fault).
    pub failed: u64,
}

impl std::ops::AddAssign<&OpStats> for OpStats {
    fn add_assign(&mut self, other: &OpStats) {
        self.calls += other.calls;
        self.read_units += other.read_units;
        self.write_units += other.write_units;
        self.bytes_written += other.bytes_written;
        self.throttled += other.throttled;
        self.conflicts += other.conflicts;
        self.over_limit += other.over_limit;
        self.failed += other.failed;
    }
}

/// Units a partition (or the KMS quota) has left: refilled at `rate` per second up to
/// `capacity`; a read is charged after its answer, so it can leave the bucket below zero.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&mut self, rate: f64, capacity: f64, now: Instant) -> f64 {
        self.tokens = (self.tokens + rate * now.duration_since(self.at).as_secs_f64()).min(capacity);
        self.at = now;
        self.tokens
    }
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    armed_at: usize,
    plan: Option<Plan>,
    injected: usize,
    stats: BTreeMap<String, OpStats>,
    schemas: HashMap<String, Schema>,
    /// The items of ongoing transactions.
    in_flight: HashMap<String, u64>,
    next_transaction: u64,
    buckets: HashMap<String, Bucket>,
    /// The size of each item last seen written or read, by primary key: what a read of it
    /// is charged up front, so reads at once cannot all pass on a partition's last units.
    sizes: HashMap<String, usize>,
    rng: u64,
}

/// How many item sizes the proxy remembers (forgotten all at once when full).
const REMEMBERED_SIZES: usize = 100_000;

impl State {
    fn stat(&mut self, op: &Op) -> &mut OpStats {
        self.stats.entry(op.name().to_owned()).or_default()
    }

    fn jitter(&mut self, span: model::Span) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        Duration::from_secs_f64((span.min_ms + unit * (span.max_ms - span.min_ms)).max(0.0) / 1000.0)
    }

    fn bucket(&mut self, name: &str, rate: f64, capacity: f64, now: Instant) -> &mut Bucket {
        let bucket = self.buckets.entry(name.to_owned()).or_insert(Bucket { tokens: capacity, at: now });
        bucket.level(rate, capacity, now);
        bucket
    }
}

pub struct AwsProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    model: Arc<Mutex<Model>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AwsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: u16, content_type: &str, body: Value) -> hyper::Response<Full<Bytes>> {
    let kind = body["__type"].as_str().unwrap_or_default().rsplit('#').next().unwrap_or_default().to_owned();
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-errortype", kind)
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("static response")
}

fn aws_error(status: u16, kind: &str) -> hyper::Response<Full<Bytes>> {
    answer(status, "application/x-amz-json-1.0", json!({"__type": kind, "message": "injected by the fault proxy"}))
}

fn dynamo_error(kind: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    answer(
        400,
        "application/x-amz-json-1.0",
        json!({"__type": format!("com.amazonaws.dynamodb.v20120810#{kind}"), "message": message}),
    )
}

/// `TransactionCanceledException` with one reason per action, `code` where `hit` says.
fn cancelled(actions: usize, hit: &dyn Fn(usize) -> bool, code: &str, message: &str) -> hyper::Response<Full<Bytes>> {
    let reasons: Vec<Value> = (0..actions)
        .map(|i| if hit(i) { json!({"Code": code, "Message": message}) } else { json!({"Code": "None"}) })
        .collect();
    let codes: Vec<&str> = (0..actions).map(|i| if hit(i) { code } else { "None" }).collect();
    answer(
        400,
        "application/x-amz-json-1.0",
        json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": format!("Transaction cancelled, please refer cancellation reasons for specific reasons [{}]", codes.join(", ")),
            "CancellationReasons": reasons,
        }),
    )
}

const THROTTLED: &str = "Throughput exceeds the current capacity for one or more global secondary indexes or partitions. \
                         DynamoDB is automatically scaling your table or index so please try again shortly.";

impl AwsProxy {
    /// A pass-through proxy (counting, fault injection) on a free loopback port, forwarding
    /// to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, Model::NONE).await
    }

    /// A proxy applying `model` to every call.
    pub async fn start_with(upstream: &str, model: Model) -> Self {
        let listener = Self::listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        Self::serve(listener, upstream, model)
    }

    /// A listener on `addr` with a backlog of 4,096 (the kernel caps it at
    /// `net.core.somaxconn`). tokio's `bind` listens with 128, as the standard library does,
    /// which a burst of new connections (a bench's isolated instances) overflows: the kernel
    /// then drops their handshakes, and each waits a second or more for a retransmission, a
    /// stall DynamoDB never shows (it was most of scripts/bench-aws's denials near 1 and 2 s,
    /// counted by the kernel's `ListenOverflows`). The test server listens the same way.
    pub fn listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(4096)
    }

    /// Serves on `listener` (the `aws-proxy` binary's own port).
    pub fn serve(listener: TcpListener, upstream: &str, model: Model) -> Self {
        assert!(upstream.starts_with("http://127."), "the proxy only forwards to loopback");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        let state = Arc::new(Mutex::new(State { rng: seed, ..State::default() }));
        let model = Arc::new(Mutex::new(model));
        let client = reqwest::Client::builder().pool_max_idle_per_host(256).build().expect("an HTTP client");
        let upstream: Arc<str> = upstream.trim_end_matches('/').into();
        let (shared, shared_model) = (state.clone(), model.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (state, model, client, upstream) =
                    (shared.clone(), shared_model.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (state, model, client, upstream) =
                            (state.clone(), model.clone(), client.clone(), upstream.clone());
                        async move { forward(req, &state, &model, &client, &upstream).await }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { endpoint, state, model, task }
    }

    /// Applies `model` from the next call on.
    pub fn set_model(&self, model: Model) {
        *self.model.lock().unwrap() = model;
    }

    /// Every call since the last [`AwsProxy::clear`], by `X-Amz-Target` operation name
    /// (`TransactWriteItems`, `Sign`, ...), retries included.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Forgets the calls, the statistics and the throughput used so far.
    pub fn clear(&self) {
        let mut s = self.state.lock().unwrap();
        s.calls.clear();
        s.stats.clear();
        s.buckets.clear();
    }

    /// What each operation did since the last [`AwsProxy::clear`].
    pub fn stats(&self) -> BTreeMap<String, OpStats> {
        self.state.lock().unwrap().stats.clone()
    }

    /// Fails calls as `plan` says, counting from now.
    pub fn arm(&self, plan: Plan) {
        let mut s = self.state.lock().unwrap();
        s.armed_at = s.calls.len();
        s.plan = Some(plan);
        s.injected = 0;
    }

    /// Stops failing calls; returns how many faults were injected since arming.
    pub fn disarm(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.plan = None;
        s.injected
    }
}

/// Why a connection is dropped on purpose: hyper closes it without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault proxy")
    }
}

impl std::error::Error for Dropped {}

/// The items of an ongoing transaction, released when its answer is sent (or it is dropped).
struct Hold<'a> {
    state: &'a Mutex<State>,
    keys: Vec<String>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap();
        for key in &self.keys {
            s.in_flight.remove(key);
        }
    }
}

async fn send(
    client: &reqwest::Client,
    upstream: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<(http::StatusCode, http::HeaderMap, Bytes), Dropped> {
    let mut out = client
        .request(parts.method.clone(), format!("{upstream}{}", parts.uri.path_and_query().map_or("/", |p| p.as_str())));
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let answer = out.body(body).send().await.map_err(|_| Dropped)?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.map_err(|_| Dropped)?;
    Ok((status, headers, bytes))
}

/// The key schema of `table`, asked of the server behind once and remembered.
async fn schema_of(
    table: &str,
    state: &Mutex<State>,
    client: &reqwest::Client,
    upstream: &str,
    parts: &http::request::Parts,
) -> Option<Schema> {
    if let Some(known) = state.lock().unwrap().schemas.get(table) {
        return Some(known.clone());
    }
    let mut ask = parts.clone();
    ask.headers.insert("x-amz-target", http::HeaderValue::from_static("DynamoDB_20120810.DescribeTable"));
    let (status, _, body) =
        send(client, upstream, &ask, Bytes::from(json!({"TableName": table}).to_string())).await.ok()?;
    if !status.is_success() {
        return None;
    }
    let schema = Schema::from_description(&serde_json::from_slice(&body).ok()?)?;
    state.lock().unwrap().schemas.insert(table.to_owned(), schema.clone());
    Some(schema)
}

/// Every table a DynamoDB request names.
fn tables_of(body: &Value) -> Vec<String> {
    let mut names: Vec<String> = body["TableName"].as_str().map(str::to_owned).into_iter().collect();
    for action in body["TransactItems"].as_array().into_iter().flatten() {
        for part in action.as_object().into_iter().flat_map(|o| o.values()) {
            names.extend(part["TableName"].as_str().map(str::to_owned));
        }
    }
    names.extend(body["RequestItems"].as_object().into_iter().flat_map(|o| o.keys().cloned()));
    names.sort();
    names.dedup();
    names
}

/// `GET` it for what each operation did so far ([`AwsProxy::stats`], as JSON): how the test
/// command reports what the model refused during the suite.
pub const STATS_PATH: &str = "/__aws-proxy/stats";

type Reply = Result<hyper::Response<Full<Bytes>>, Dropped>;

async fn forward(
    req: hyper::Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    model: &Mutex<Model>,
    client: &reqwest::Client,
    upstream: &str,
) -> Reply {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    if parts.uri.path() == STATS_PATH {
        let stats = serde_json::to_value(&state.lock().unwrap().stats).unwrap_or_default();
        return Ok(answer(200, "application/json", stats));
    }
    let op = Op::from_target(parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()));
    let model = *model.lock().unwrap();
    let fault = {
        let mut s = state.lock().unwrap();
        let index = s.calls.len() - s.armed_at.min(s.calls.len());
        s.calls.push(op.name().to_owned());
        s.stat(&op).calls += 1;
        let fault = s.plan.filter(|p| if p.persistent { index >= p.call } else { index == p.call }).map(|p| p.fault);
        if fault.is_some() {
            s.injected += 1;
            s.stat(&op).failed += 1;
        }
        fault
    };
    match fault {
        Some(Fault::Throttle) => return Ok(aws_error(400, "ThrottlingException")),
        Some(Fault::ServerError) => return Ok(aws_error(500, "InternalServerError")),
        Some(Fault::DropBefore) => return Err(Dropped),
        Some(Fault::Conflict) if op.name() != "TransactWriteItems" => {
            return Ok(dynamo_error("TransactionConflictException", "Transaction is ongoing for the item"));
        }
        Some(fault @ (Fault::Conflict | Fault::CancelledThrottled)) => {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let actions = request["TransactItems"].as_array().map_or(1, Vec::len);
            return Ok(match fault {
                Fault::Conflict => {
                    cancelled(actions, &|_| true, "TransactionConflict", "Transaction is ongoing for the item")
                }
                _ => cancelled(actions, &|_| true, "ThrottlingError", THROTTLED),
            });
        }
        _ => {}
    }
    let data_plane = matches!(
        op.name(),
        "GetItem"
            | "PutItem"
            | "UpdateItem"
            | "DeleteItem"
            | "Query"
            | "Scan"
            | "TransactWriteItems"
            | "TransactGetItems"
            | "BatchWriteItem"
            | "BatchGetItem"
    );
    let request: Value = match op {
        Op::Dynamo(_) if data_plane => serde_json::from_slice(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let mut schemas = HashMap::new();
    for table in tables_of(&request) {
        if let Some(schema) = schema_of(&table, state, client, upstream, &parts).await {
            schemas.insert(table, schema);
        }
    }
    let touches = model::writes(op.name(), &request, &|t| schemas.get(t).cloned());

    // Refusals come before the call runs, in DynamoDB's order: validation, throughput, conflicts.
    let mut hold = Hold { state, keys: Vec::new() };
    let read_partition;
    let read_estimate;
    {
        let mut s = state.lock().unwrap();
        let name = op.name();
        if model.limits
            && let Some(why) = model::over_limit(name, &request, &touches)
        {
            s.stat(&op).over_limit += 1;
            return Ok(dynamo_error("ValidationException", &why));
        }
        let now = Instant::now();
        if let (Op::Kms(kms), Some(rate)) = (&op, model.kms_per_second)
            && matches!(kms.as_str(), "Sign" | "Verify")
        {
            let bucket = s.bucket("kms", rate, rate, now);
            if bucket.tokens < 1.0 {
                s.stat(&op).throttled += 1;
                return Ok(answer(
                    400,
                    "application/x-amz-json-1.1",
                    json!({"__type": "ThrottlingException", "message": "Rate exceeded"}),
                ));
            }
            bucket.tokens -= 1.0;
        }
        let schema = schemas.get(request["TableName"].as_str().unwrap_or_default());
        read_partition = schema.and_then(|schema| model::read_partition(name, &request, schema));
        read_estimate = match (name, schema) {
            ("GetItem", Some(schema)) => {
                let table = request["TableName"].as_str().unwrap_or_default();
                let (key, _) = model::locate(table, schema, &request["Key"]);
                model::get_item_units(&request, s.sizes.get(&key).copied().unwrap_or(0))
            }
            _ => 0.0,
        };
        if let Some(t) = model.throughput {
            let (wcap, rcap) = (t.write_units * t.burst_seconds, t.read_units * t.burst_seconds);
            // A write needs its units in every partition it lands in; a read, a partition not in debt.
            let mut short = Vec::new();
            let mut need: HashMap<&str, f64> = HashMap::new();
            for (i, touch) in touches.iter().enumerate() {
                for (p, units) in &touch.charges {
                    *need.entry(p.as_str()).or_default() += units;
                    let wanted = need[p.as_str()];
                    if s.bucket(&format!("w:{p}"), t.write_units, wcap, now).tokens < wanted {
                        short.push(i);
                    }
                }
            }
            let read_short = read_partition
                .as_ref()
                .is_some_and(|p| s.bucket(&format!("r:{p}"), t.read_units, rcap, now).tokens < read_estimate);
            if !short.is_empty() || read_short {
                s.stat(&op).throttled += 1;
                return Ok(if name == "TransactWriteItems" {
                    cancelled(touches.len(), &|i| short.contains(&i), "ThrottlingError", THROTTLED)
                } else {
                    dynamo_error("ProvisionedThroughputExceededException", THROTTLED)
                });
            }
            for (p, units) in need {
                if let Some(b) = s.buckets.get_mut(&format!("w:{p}")) {
                    b.tokens -= units;
                }
            }
            if let Some(p) = &read_partition
                && let Some(b) = s.buckets.get_mut(&format!("r:{p}"))
            {
                b.tokens -= read_estimate;
            }
        }
        if model.conflicts {
            let busy = |t: &Touch| s.in_flight.contains_key(&t.key);
            match name {
                "TransactWriteItems" => {
                    let hit: Vec<bool> = touches.iter().map(busy).collect();
                    if hit.iter().any(|h| *h) {
                        s.stat(&op).conflicts += 1;
                        return Ok(cancelled(
                            touches.len(),
                            &|i| hit[i],
                            "TransactionConflict",
                            "Transaction is ongoing for the item",
                        ));
                    }
                    s.next_transaction += 1;
                    let id = s.next_transaction;
                    for t in &touches {
                        s.in_flight.insert(t.key.clone(), id);
                        hold.keys.push(t.key.clone());
                    }
                }
                "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" if touches.iter().any(busy) => {
                    s.stat(&op).conflicts += 1;
                    return Ok(dynamo_error("TransactionConflictException", "Transaction is ongoing for the item"));
                }
                _ => {}
            }
        }
    }
    let delay = state.lock().unwrap().jitter(model.latency.of(&op));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // The transaction is over once its modelled latency is: the time moto then takes (it
    // runs one call at a time, so under load its queue grows) is the test server's, not
    // DynamoDB's, and must not widen the window in which others conflict with it.
    drop(hold);
    let (status, headers, mut bytes) = send(client, upstream, &parts, body).await?;
    if fault == Some(Fault::DropAfter) {
        return Err(Dropped);
    }
    {
        let mut s = state.lock().unwrap();
        if status.is_success() {
            let writes: f64 = touches.iter().map(Touch::write_units).sum();
            s.stat(&op).write_units += writes;
            s.stat(&op).bytes_written += touches.iter().map(|t| t.bytes as u64).sum::<u64>();
            if s.sizes.len() >= REMEMBERED_SIZES {
                s.sizes.clear();
            }
            for t in touches.iter().filter(|t| t.bytes > 0) {
                s.sizes.insert(t.key.clone(), t.bytes);
            }
        } else {
            s.stat(&op).failed += 1;
        }
    }
    if status.is_success()
        && matches!(op.name(), "GetItem" | "Query" | "Scan" | "TransactGetItems" | "BatchGetItem")
        && let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes)
    {
        let table = request["TableName"].as_str().unwrap_or_default();
        if model.limits
            && let Some(schema) = schemas.get(table)
            && let Some(cut) = model::cut_page(&request, &answer, schema)
        {
            answer = cut;
            bytes = Bytes::from(answer.to_string());
        }
        let units = model::read_units(op.name(), &request, &answer);
        let mut s = state.lock().unwrap();
        s.stat(&op).read_units += units;
        if let (Some(t), Some(p)) = (model.throughput, &read_partition) {
            let now = Instant::now();
            // The estimate was charged up front.
            s.bucket(&format!("r:{p}"), t.read_units, t.read_units * t.burst_seconds, now).tokens -=
                units - read_estimate;
        }
    }
    let mut response = hyper::Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    Ok(response.body(Full::new(bytes)).expect("forwarded response"))
}
