//! A loopback HTTP proxy in front of the DynamoDB/KMS test server. It records every AWS call
//! by its `X-Amz-Target` (so tests can count calls per operation at the HTTP layer) and, when
//! armed, injects one kind of fault into the call numbered N (counted from arming), or into
//! every call from N on: a throttling error, a 500, a connection dropped before the call
//! reaches the server, or one dropped after it (the write committed, the answer lost).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
}

impl Fault {
    pub const ALL: [Self; 4] = [Self::Throttle, Self::ServerError, Self::DropBefore, Self::DropAfter];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The call (0-based, counted from arming) that fails first.
    pub call: usize,
    pub fault: Fault,
    /// Every later call fails too (an outage), not only that one (a blip).
    pub persistent: bool,
}

#[derive(Default)]
struct State {
    calls: Vec<String>,
    armed_at: usize,
    plan: Option<Plan>,
    injected: usize,
}

pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn aws_error(status: u16, kind: &str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0")
        .header("x-amzn-errortype", kind)
        .body(Full::new(Bytes::from(format!(r#"{{"__type":"{kind}","message":"injected by the fault proxy"}}"#))))
        .expect("static response")
}

impl FaultProxy {
    /// A proxy on a free loopback port, forwarding to `upstream` (`http://127.0.0.1:PORT`).
    pub async fn start(upstream: &str) -> Self {
        assert!(upstream.starts_with("http://127."), "the proxy only forwards to loopback");
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let client = reqwest::Client::new();
        let upstream = upstream.trim_end_matches('/').to_owned();
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (state, client, upstream) = (shared.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                        async move { forward(req, &state, &client, &upstream).await }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { endpoint, state, task }
    }

    /// Every call since the last [`FaultProxy::clear`], by `X-Amz-Target` operation name
    /// (`TransactWriteItems`, `Sign`, ...), retries included.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().calls.clear();
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

async fn forward(
    req: hyper::Request<hyper::body::Incoming>,
    state: &Mutex<State>,
    client: &reqwest::Client,
    upstream: &str,
) -> Result<hyper::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(|_| Dropped)?.to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or("?")
        .to_owned();
    let fault = {
        let mut s = state.lock().unwrap();
        let index = s.calls.len() - s.armed_at.min(s.calls.len());
        s.calls.push(target);
        let fault = s.plan.filter(|p| if p.persistent { index >= p.call } else { index == p.call }).map(|p| p.fault);
        if fault.is_some() {
            s.injected += 1;
        }
        fault
    };
    match fault {
        Some(Fault::Throttle) => return Ok(aws_error(400, "ThrottlingException")),
        Some(Fault::ServerError) => return Ok(aws_error(500, "InternalServerError")),
        Some(Fault::DropBefore) => return Err(Dropped),
        _ => {}
    }
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
    if fault == Some(Fault::DropAfter) {
        return Err(Dropped);
    }
    let mut response = hyper::Response::builder().status(status.as_u16());
    for (name, value) in &headers {
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response = response.header(name, value);
        }
    }
    Ok(response.body(Full::new(bytes)).expect("forwarded response"))
}
