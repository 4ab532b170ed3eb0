//! local-api: every route of the service in one process on the embedded default. It plays
//! API Gateway: each HTTP request becomes an API Gateway v2 event (identity claims, validated
//! against the dev identity provider, in `requestContext.authorizer.jwt.claims`, stringified
//! as AWS does) and goes through the very same `shared::http` handlers the Lambdas run. The
//! consent screen example page (`/`) and its dev sign-in (`POST /dev/sign-in`) are its own
//! (module `page`), answered before that translation.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shared::adapters::embedded::stringify_claims;
use shared::http::{MAX_BODY_BYTES, Route};
use tokio::net::TcpListener;

mod page;
mod runtime;
pub mod webhook;

pub use runtime::{Runtime, setup_aws};

/// Serves `runtime` on `listener` until `shutdown` completes.
pub async fn serve(listener: TcpListener, runtime: Arc<Runtime>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let runtime = runtime.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let runtime = runtime.clone();
                async move { Ok::<_, Infallible>(handle(req, &runtime, peer).await) }
            });
            let conn = http1::Builder::new()
                .max_buf_size(64 * 1024)
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
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
            match sweeper.expire_due(runtime.ports.clock.now()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(expired = n, "recorded expired consents"),
                Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
            }
        }
        match shared::app::expire_requests(&runtime.ports).await {
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
    let (Some(outbox), Some(history)) = (runtime.outbox.clone(), runtime.history.clone()) else { return };
    shared::app::relay_forever(outbox, history, publisher, "webhook".to_owned(), settings, stats).await
}

/// Seals the audit log into a signed checkpoint every `every` until the process ends (on AWS,
/// an EventBridge schedule runs the `checkpoint` function instead). The first tick is one
/// period after start, so a short-lived process does not sign on every start.
pub async fn checkpoint_every(runtime: Arc<Runtime>, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticker.tick().await;
        match shared::app::checkpoint_now(&runtime.ports).await {
            Ok(Some(c)) => tracing::info!(seq = c.claims.seq, heads = c.claims.size, "checkpoint made"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "checkpoint failed"),
        }
    }
}

async fn handle(req: hyper::Request<Incoming>, runtime: &Runtime, peer: SocketAddr) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await;
    // The consent screen example page and its dev sign-in: local-api's own, not API routes.
    if page::is_page_request(parts.uri.path()) {
        let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok());
        return page::handle(&parts.method, parts.uri.path(), host, &body, runtime);
    }
    let lambda_request = match to_lambda_request(&parts, &body, runtime, peer) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "request could not be converted");
            return plain(400, "malformed request");
        }
    };
    let response = shared::http::route(lambda_request, &runtime.ports).await;
    let (parts, body) = response.into_parts();
    hyper::Response::from_parts(parts, Full::new(Bytes::copy_from_slice(body.as_ref())))
}

fn plain(status: u16, text: &'static str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(text.as_bytes())))
        .expect("static response")
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

/// The API Gateway v2 event AWS would deliver for this request, as `lambda_http` parses it.
pub fn to_lambda_request(
    parts: &http::request::Parts,
    body: &[u8],
    runtime: &Runtime,
    peer: SocketAddr,
) -> Result<lambda_http::Request, String> {
    let mut headers = serde_json::Map::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let bearer = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Like API Gateway's JWT authorizer: claims only for a valid identity token, and only on
    // the routes it guards (not the JWK Set, nor the demo route, whose bearer is an
    // impersonation token: validating that as an identity would be a wasted ECDSA check).
    let guarded = Route::resolve(&parts.method, parts.uri.path()).map_or(true, Route::takes_identity);
    let authorizer = bearer
        .filter(|_| guarded)
        .and_then(|t| runtime.identity.validate(t.trim()).ok())
        .map(|claims| json!({ "jwt": { "claims": stringify_claims(&claims), "scopes": null } }));
    let (body, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (Value::String(text.to_owned()), false),
        Err(_) => (Value::String(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    let mut context = json!({
        "accountId": "local",
        "apiId": "local-api",
        "domainName": parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost"),
        "domainPrefix": "local-api",
        "http": {
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "protocol": format!("{:?}", parts.version),
            "sourceIp": peer.ip().to_string(),
            "userAgent": parts.headers.get(http::header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
        },
        "requestId": uuid::Uuid::new_v4().to_string(),
        "routeKey": "$default",
        "stage": "$default",
        "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        "timeEpoch": now.timestamp_millis(),
    });
    if let Some(authorizer) = authorizer {
        context["authorizer"] = authorizer;
    }
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": is_base64,
    });
    lambda_http::request::from_str(&event.to_string()).map_err(|e| e.to_string())
}
