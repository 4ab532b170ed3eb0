//! local-api: every route of the service in one process on the embedded default. It plays
//! API Gateway: each HTTP request becomes the `lambda_http::Request` a Lambda function would
//! get from an API Gateway v2 event (identity claims, validated against the dev identity
//! provider, in `requestContext.authorizer.jwt.claims`, stringified as AWS does) and goes
//! through the very same `shared::http` handlers the Lambdas run. The
//! consent screen example page (`/`) and its dev sign-in (`POST /dev/sign-in`) are its own
//! (module `page`), answered before that translation.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adapter_embedded::{IdentityError, stringify_claims};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::RequestExt;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::aws_lambda_events::query_map::QueryMap;
use lambda_http::request::RequestContext;
use shared::app::ApiError;
use shared::http::{MAX_BODY_BYTES, Route, bearer_token};
use tokio::net::TcpListener;

mod page;
mod runtime;
pub mod webhook;

pub use runtime::{Runtime, mark_unsealed_heads, setup_aws};

/// How long a client may take to send a request's headers, and how long a kept-alive
/// connection may sit idle between requests (hyper runs one timer for both).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a client may take to send a whole request body once its headers arrived; a
/// body still incomplete then closes the connection unanswered.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(15);

/// How many connections are served at once by default (`--max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The first and the longest pause after a failed `accept` (out of file descriptors, say).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The pause after each failed `accept`: doubling from 10 ms to at most 1 s while failures
/// last, back to none after a success, so a full file table is never a hot loop.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    /// Records a failure: how long to pause, and whether this failure starts a run of them
    /// (the one worth a log line: one per run, not one per retry).
    pub fn failed(&mut self) -> (Duration, bool) {
        let (first, longest) = ACCEPT_BACKOFF;
        let starts = self.delay.is_none();
        let delay = self.delay.map_or(first, |d| (d * 2).min(longest));
        self.delay = Some(delay);
        (delay, starts)
    }

    /// Records a success: the next failure starts a new run.
    pub fn succeeded(&mut self) {
        self.delay = None;
    }
}

/// One open connection as the connection cap sees it.
#[derive(Default)]
struct Connection {
    /// Requests being served on it (their headers arrived).
    in_flight: std::sync::atomic::AtomicUsize,
    /// Told to close when it is idle and a new connection needs its place.
    evict: tokio::sync::Notify,
}

/// The open connections, oldest first, and a permit per connection allowed at once.
struct Connections {
    permits: Arc<tokio::sync::Semaphore>,
    open: std::sync::Mutex<std::collections::BTreeMap<u64, Arc<Connection>>>,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self { permits: Arc::new(tokio::sync::Semaphore::new(max.max(1))), open: Default::default() }
    }

    /// A place for a newly accepted connection. When every place is taken, the oldest
    /// connection with no request in flight (idle between requests, or still sending its
    /// headers) is told to close and gives its place up; when all are busy, this waits for
    /// one to end. So idle connections never lock a caller out, and the number of open
    /// sockets stays bounded.
    async fn admit(&self) -> tokio::sync::OwnedSemaphorePermit {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return permit;
        }
        {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let idle = open
                .iter()
                .find(|(_, c)| c.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0)
                .map(|(id, _)| *id);
            if let Some(conn) = idle.and_then(|id| open.remove(&id)) {
                conn.evict.notify_one();
            }
        }
        // Never closed, so this only waits.
        self.permits.clone().acquire_owned().await.expect("the connection semaphore is never closed")
    }

    fn register(&self, id: u64) -> Arc<Connection> {
        let conn = Arc::new(Connection::default());
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, conn.clone());
        conn
    }

    fn forget(&self, id: u64) {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }
}

/// Counts a request in flight on its connection for as long as it lives.
struct InFlight(Arc<Connection>);

impl InFlight {
    fn new(conn: &Arc<Connection>) -> Self {
        conn.in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A request body that did not arrive within [`BODY_READ_TIMEOUT`]: the connection closes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {BODY_READ_TIMEOUT:?}")]
struct BodyTimeout;

/// Serves `runtime` on `listener` until `shutdown` completes, with the default connection cap.
pub async fn serve(listener: TcpListener, runtime: Arc<Runtime>, shutdown: impl Future<Output = ()>) {
    serve_limited(listener, runtime, DEFAULT_MAX_CONNECTIONS, shutdown).await
}

/// Serves `runtime` on `listener` until `shutdown` completes, with at most `max_connections`
/// connections open at once (see [`Connections::admit`]), each bounded by
/// [`HEADER_READ_TIMEOUT`] and [`BODY_READ_TIMEOUT`].
pub async fn serve_limited(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connections = Arc::new(Connections::new(max_connections));
    let mut backoff = AcceptBackoff::default();
    let mut next_id = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => {
                    backoff.succeeded();
                    pair
                }
                Err(e) => {
                    let (pause, starts) = backoff.failed();
                    if starts {
                        tracing::warn!(error = %e, "accept failed; retrying with a backoff of up to 1 s");
                    }
                    tokio::time::sleep(pause).await;
                    continue;
                }
            },
        };
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            permit = connections.admit() => permit,
        };
        next_id += 1;
        let id = next_id;
        let conn_state = connections.register(id);
        let (runtime, connections) = (runtime.clone(), connections.clone());
        tokio::spawn(async move {
            let in_service = conn_state.clone();
            let service = service_fn(move |req: hyper::Request<Incoming>| {
                let runtime = runtime.clone();
                let in_flight = InFlight::new(&in_service);
                async move {
                    let _in_flight = in_flight;
                    let (parts, body) = req.into_parts();
                    let body =
                        tokio::time::timeout(BODY_READ_TIMEOUT, read_body(body)).await.map_err(|_| BodyTimeout)?;
                    Ok::<_, BodyTimeout>(handle(parts, body, &runtime, peer).await)
                }
            });
            let conn = http1::Builder::new()
                .max_buf_size(64 * 1024)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                _ = conn_state.evict.notified() => {
                    // Closes at once when idle; a request that just began is finished first.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            connections.forget(id);
            drop(permit);
        });
    }
}

/// Records `consent.expired` for consents that ran out (on AWS, DynamoDB TTL and the stream do
/// this) and `request.expired` for access requests left unanswered (on any backend), every
/// `every` until the process ends.
pub async fn sweep_expired(runtime: Arc<Runtime>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        if let Some(sweeper) = &runtime.sweeper {
            match sweeper.expire_due(runtime.services.clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "recorded expired consents"),
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
        }
        match shared::app::expire_requests(&runtime.services).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "recorded expired access requests"),
            Err(e) => tracing::error!(error = %e, "access-request sweep failed"),
        }
    }
}

/// Publishes notifications of every committed step through `publisher` until the process
/// ends (see `shared::app::relay_forever`): the embedded store's audit log is the outbox, so
/// a dead receiver delays notifications and nothing else. Does nothing on a backend without
/// an outbox.
pub async fn relay_notifications(
    runtime: Arc<Runtime>,
    publisher: Arc<dyn shared::ports::Publisher>,
    settings: shared::app::RelaySettings,
    stats: Arc<shared::app::RelayStats>,
) {
    let (Some(outbox), Some(first_uses)) = (runtime.outbox.clone(), runtime.first_uses.clone()) else { return };
    shared::app::relay_forever(outbox, first_uses, publisher, "webhook".to_owned(), settings, stats).await
}

/// Seals the audit log into signed checkpoints every `every` until the process ends (on AWS,
/// an EventBridge schedule runs the `checkpoint` function instead), each run for at most half
/// a period (the rest is left to the next). The first tick is one period after start, so a
/// short-lived process does not sign on every start.
pub async fn checkpoint_every(runtime: Arc<Runtime>, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        let until = std::time::Instant::now() + every / 2;
        match shared::app::checkpoint_all(&runtime.services, Some(until)).await {
            Ok(run) if !run.made.is_empty() || run.left > 0 => {
                tracing::info!(checkpoints = run.made.len(), heads = run.sealed, left = run.left, "checkpoints made")
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "checkpoint failed"),
        }
    }
}

async fn handle(
    parts: http::request::Parts,
    body: Vec<u8>,
    runtime: &Runtime,
    peer: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    // The consent screen example page and its dev sign-in: local-api's own, not API routes.
    if page::is_page_request(parts.uri.path()) {
        let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok());
        return page::handle(&parts.method, parts.uri.path(), host, &body, runtime);
    }
    let started = std::time::Instant::now();
    // A CORS preflight is answered before any route or identity check, as API Gateway does.
    if let Some(cors) = &runtime.cors
        && let Some((status, headers)) = cors.preflight(&parts.method, &parts.headers)
    {
        log_request(&shared::http::Summary::of_preflight(status.as_u16()), started.elapsed());
        let mut response = hyper::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        return response;
    }
    let origin = parts.headers.get(http::header::ORIGIN).cloned();
    // The route is resolved once: it decides whether the identity is validated, then serves.
    let route = Route::resolve(&parts.method, parts.uri.path());
    let hint = route.as_ref().ok().and_then(|route| stray_identity_hint(&parts, *route, runtime));
    let request = to_lambda_request(parts, body, runtime, peer, route.as_ref().ok().copied());
    let route = match hint {
        Some(hint) => Err(ApiError::UnauthenticatedHint(hint)),
        None => route,
    };
    let (mut response, summary) = shared::http::answer(route, request, &runtime.services).await;
    if let Some(cors) = &runtime.cors {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    log_request(&summary, started.elapsed());
    let (parts, body) = response.into_parts();
    hyper::Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref())))
}

/// When the request's identity token is a dev identity token signed by another key (minted
/// by `dev-token` from another data directory, the usual slip), why it is refused: the route
/// would answer 401 without claims, so this answers it at once, naming this server's data
/// directory and the flag. The path only goes to a request addressed to this machine, as
/// the dev sign-in does (`page`): a page that rebinds its own name to 127.0.0.1 learns none.
/// API Gateway's authorizer never gets here, so the Lambda functions answer as before.
fn stray_identity_hint(parts: &http::request::Parts, route: Route, runtime: &Runtime) -> Option<String> {
    // The route first: a bearer is a long header, and checking it is text costs a pass over it.
    if !route.takes_identity() {
        return None;
    }
    let bearer = parts.headers.get(http::header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(bearer_token);
    if !matches!(runtime.identity.validate(bearer?), Err(IdentityError::OtherKey)) {
        return None;
    }
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok());
    Some(if page::is_loopback_host(host) {
        let dir = runtime.data_dir.display();
        format!(
            "this dev identity token was signed by another data directory's key; this local-api uses {dir}: \
             mint one with `local-api --data-dir {dir} dev-token --sub ...`"
        )
    } else {
        "this dev identity token was signed by another data directory's key: mint one with `local-api dev-token` \
         and the server's --data-dir"
            .to_owned()
    })
}

/// The one log line of an API request (as the Lambda functions' line, without their
/// Powertools and metric fields): route, caller, decision and latency, never a token.
fn log_request(summary: &shared::http::Summary, latency: std::time::Duration) {
    tracing::info!(
        route = %summary.route,
        role = %summary.role,
        user = summary.user.as_deref(),
        agent = summary.agent.as_deref(),
        decision = summary.decision.as_str(),
        status = summary.status,
        latency_ms = latency.as_secs_f64() * 1e3,
        "request"
    );
}

/// The body, read up to one byte past the limit: enough for the handler to answer 413
/// without this process ever holding an unbounded body.
async fn read_body(mut body: Incoming) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() <= MAX_BODY_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let room = MAX_BODY_BYTES + 1 - out.len();
                    out.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    out
}

/// The request as `lambda_http` hands it to a Lambda function behind API Gateway (HTTP API,
/// payload 2.0), built directly rather than through the event's JSON: the method, path and
/// raw query; the headers, repeated ones joined with commas as API Gateway joins them; the
/// body as text, or as bytes when it is not UTF-8; and the request context, whose JWT
/// authorizer claims are those of a valid identity token rendered as API Gateway renders
/// them (every claim a string, arrays as `[a b]`). As API Gateway's JWT authorizer does,
/// claims are set only on the routes it guards (`route`, `None` for no route: there the
/// handler answers 404/405 and never reads them), never on the JWK Set or the demo route,
/// whose bearer is an impersonation token. The URI carries no scheme or host: nothing reads
/// them, and a hostile `Host` header is never parsed.
pub fn to_lambda_request(
    parts: http::request::Parts,
    body: Vec<u8>,
    runtime: &Runtime,
    peer: SocketAddr,
    route: Option<Route>,
) -> lambda_http::Request {
    let http::request::Parts { method, uri, version, headers, .. } = parts;
    let header_text = |name: http::header::HeaderName| headers.get(name).and_then(|h| h.to_str().ok());
    let claims = route
        .is_none_or(Route::takes_identity)
        .then(|| header_text(http::header::AUTHORIZATION))
        .flatten()
        .and_then(bearer_token)
        .and_then(|t| runtime.identity.validate(t).ok())
        .map(|claims| stringify_claims(&claims));

    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some("$default".to_owned());
    context.account_id = Some("local".to_owned());
    context.stage = Some("$default".to_owned());
    context.request_id = Some(uuid::Uuid::new_v4().to_string());
    context.apiid = Some("local-api".to_owned());
    context.domain_name = Some(header_text(http::header::HOST).unwrap_or("localhost").to_owned());
    context.domain_prefix = Some("local-api".to_owned());
    let now = chrono::Utc::now();
    context.time = Some(request_time(now));
    context.time_epoch = now.timestamp_millis();
    context.http.method = method.clone();
    context.http.path = Some(uri.path().to_owned());
    context.http.protocol = Some(format!("{version:?}"));
    context.http.source_ip = Some(peer.ip().to_string());
    context.http.user_agent = Some(header_text(http::header::USER_AGENT).unwrap_or("").to_owned());
    if let Some(claims) = claims {
        let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
        jwt.claims = claims;
        let mut authorizer = ApiGatewayRequestAuthorizer::default();
        authorizer.jwt = Some(jwt);
        context.authorizer = Some(authorizer);
    }

    let body = match String::from_utf8(body) {
        Ok(text) if text.is_empty() => lambda_http::Body::Empty,
        Ok(text) => lambda_http::Body::Text(text),
        Err(bytes) => lambda_http::Body::Binary(bytes.into_bytes()),
    };
    // No query, no parse: parsing an empty one still built a map on every request.
    let query: QueryMap = uri.query().map(|q| q.parse().unwrap_or_default()).unwrap_or_default();
    let path_and_query = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut request = lambda_http::Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = http::Uri::from(path_and_query);
    *request.headers_mut() = joined(&headers);
    request
        .with_raw_http_path(uri.path())
        .with_query_string_parameters(query)
        .with_request_context(RequestContext::ApiGatewayV2(context))
}

/// `now` as API Gateway writes a request's time (`04/Dec/2026:06:18:08 +0000`), formatted
/// once per second per thread: formatting it on every request cost a percent of the whole
/// server's CPU under load (BENCHMARKS.md, "Load on local-api").
fn request_time(now: chrono::DateTime<chrono::Utc>) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(i64, String)>> = const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((second, text)) if *second == now.timestamp() => text.clone(),
        _ => {
            let text = now.format("%d/%b/%Y:%H:%M:%S %z").to_string();
            *last = Some((now.timestamp(), text.clone()));
            text
        }
    })
}

/// `headers` with each repeated header's values joined by commas into one, as API Gateway
/// passes them to the function.
fn joined(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut out = http::HeaderMap::with_capacity(headers.keys_len());
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else { continue };
        let value = match values.next() {
            None => first.clone(),
            Some(second) => {
                let mut all = first.as_bytes().to_vec();
                for v in std::iter::once(second).chain(values) {
                    all.push(b',');
                    all.extend_from_slice(v.as_bytes());
                }
                // Joined valid header values are a valid header value.
                http::HeaderValue::from_bytes(&all).unwrap_or_else(|_| first.clone())
            }
        };
        out.insert(name.clone(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_time_is_written_as_api_gateway_does_and_follows_the_clock_by_the_second() {
        let at = |seconds: i64, millis: u32| chrono::DateTime::from_timestamp(seconds, millis * 1_000_000).unwrap();
        assert_eq!(request_time(at(1_796_365_088, 0)), "04/Dec/2026:06:18:08 +0000");
        assert_eq!(request_time(at(1_796_365_088, 999)), "04/Dec/2026:06:18:08 +0000");
        assert_eq!(request_time(at(1_796_365_089, 1)), "04/Dec/2026:06:18:09 +0000");
        assert_eq!(request_time(at(1_796_365_088, 500)), "04/Dec/2026:06:18:08 +0000", "a clock stepped back");
    }

    #[test]
    fn accept_failures_back_off_doubling_to_a_second_and_log_once_per_run() {
        let mut backoff = AcceptBackoff::default();
        let run: Vec<(u128, bool)> = (0..10).map(|_| backoff.failed()).map(|(d, log)| (d.as_millis(), log)).collect();
        assert_eq!(
            run,
            [
                (10, true),
                (20, false),
                (40, false),
                (80, false),
                (160, false),
                (320, false),
                (640, false),
                (1000, false),
                (1000, false),
                (1000, false)
            ]
        );
        backoff.succeeded();
        assert_eq!(backoff.failed(), (Duration::from_millis(10), true), "a new run after a success");
    }
}
