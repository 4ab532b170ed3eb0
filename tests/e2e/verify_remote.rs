//! The verifier crate as an outside backend uses it: the JWK Set fetched over loopback HTTP
//! and cached (refreshed on an unknown `kid` at most once per interval, re-fetched after its
//! maximum age), and the live consent check through local-api's real `POST /introspect`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use adapter_embedded::LocalSigner;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use shared::domain::{AgentId, ConsentId, Jti, Policy, Reason, Scope, UserId};
use shared::ports::{Clock as _, Signer, SystemClock};
use support_access_verify::remote::{Introspector, RemoteError, RemoteVerifier};
use support_access_verify::{ActClaim, Clock, Expected, ImpersonationClaims, JwkSet, Rejection};
use tokio::net::TcpListener;

const T0: i64 = 1_795_600_800;

struct TestClock(AtomicI64);

impl Clock for TestClock {
    fn now_unix(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A JWK Set endpoint on loopback that serves whatever set the test puts in it, and counts
/// the requests it gets.
struct JwksServer {
    url: String,
    jwks: Arc<Mutex<JwkSet>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(initial: JwkSet) -> JwksServer {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    let jwks = Arc::new(Mutex::new(initial));
    let hits = Arc::new(AtomicUsize::new(0));
    let (served, counted) = (jwks.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (served, counted) = (served.clone(), counted.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::to_vec(&*served.lock().unwrap()).unwrap();
                    async move { Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    JwksServer { url, jwks, hits }
}

async fn token(signer: &LocalSigner, sub: &str) -> String {
    let claims = ImpersonationClaims {
        iss: "support-access".into(),
        sub: UserId::parse(sub).unwrap(),
        aud: "support-access-app".into(),
        iat: T0,
        nbf: T0,
        exp: T0 + 900,
        jti: Jti::generate(),
        act: ActClaim { sub: AgentId::parse("agent-7").unwrap() },
        cid: ConsentId::generate(),
        scope: Scope::Read,
        reason: Reason::parse("ticket 4411: billing page broken").unwrap(),
    };
    shared::token::sign(&claims, signer).await.unwrap()
}

/// `token` with its header's `kid` replaced (the signature no longer matters: the key lookup
/// comes first).
fn with_kid(token: &str, kid: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    header["kid"] = json!(kid);
    format!("{}.{}.{}", b64.encode(header.to_string()), parts[1], parts[2])
}

fn verifier(url: &str, clock: Arc<TestClock>) -> RemoteVerifier {
    RemoteVerifier::new(url, Expected::new("support-access", "support-access-app"))
        .with_clock(clock)
        .with_refresh_interval(Duration::from_secs(60))
        .with_max_age(Duration::from_secs(3600))
}

fn rejected(result: Result<ImpersonationClaims, RemoteError>) -> Rejection {
    match result {
        Err(RemoteError::Rejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn the_jwk_set_is_fetched_once_and_cached() {
    let signer = LocalSigner::generate();
    let server = jwks_server(signer.public_keys().await.unwrap()).await;
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let v = verifier(&server.url, clock.clone());
    for user in ["alice", "bob", "carol"] {
        assert_eq!(v.verify(&token(&signer, user).await).await.unwrap().sub.as_str(), user);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(v.fetches().await, 1);
    clock.0.store(T0 + 900 + 30, Ordering::SeqCst);
    assert_eq!(rejected(v.verify(&token(&signer, "alice").await).await), Rejection::Expired, "the clock is injected");
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_set_at_most_once_per_interval() {
    let old = LocalSigner::generate();
    let new = LocalSigner::generate();
    let server = jwks_server(old.public_keys().await.unwrap()).await;
    let clock = Arc::new(TestClock(AtomicI64::new(T0)));
    let v = verifier(&server.url, clock.clone());
    assert!(v.verify(&token(&old, "alice").await).await.is_ok());

    // The service publishes its next key; a token signed with it arrives within the interval.
    let mut both = old.public_keys().await.unwrap();
    both.keys.extend(new.public_keys().await.unwrap().keys);
    *server.jwks.lock().unwrap() = both;
    let rotated = token(&new, "alice").await;
    assert_eq!(rejected(v.verify(&rotated).await), Rejection::UnknownKey);
    // A flood of made-up kids cannot turn into a flood of fetches.
    let valid = token(&old, "alice").await;
    for i in 0..20 {
        assert_eq!(rejected(v.verify(&with_kid(&valid, &format!("made-up-{i}"))).await), Rejection::UnknownKey);
    }
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "no refetch within the interval");

    clock.0.store(T0 + 60, Ordering::SeqCst);
    assert_eq!(v.verify(&rotated).await.unwrap().sub.as_str(), "alice", "refreshed once the interval passed");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2);
    assert_eq!(rejected(v.verify(&with_kid(&valid, "made-up")).await), Rejection::UnknownKey);
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "and the interval starts again");
}

#[tokio::test]
async fn keys_past_their_maximum_age_are_fetched_again_so_a_withdrawn_key_stops_working() {
    let old = LocalSigner::generate();
    let new = LocalSigner::generate();
    let server = jwks_server(old.public_keys().await.unwrap()).await;
    let clock = Arc::new(TestClock(AtomicI64::new(T0 - 3600)));
    let v = verifier(&server.url, clock.clone());
    let early = token(&old, "alice").await;
    clock.0.store(T0, Ordering::SeqCst);
    assert!(v.verify(&early).await.is_ok());
    *server.jwks.lock().unwrap() = new.public_keys().await.unwrap();
    clock.0.store(T0 + 3600 - 1, Ordering::SeqCst);
    let _ = v.verify(&early).await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "still fresh");
    clock.0.store(T0 + 3600, Ordering::SeqCst);
    let _ = v.verify(&early).await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "re-fetched at its maximum age");
}

#[tokio::test]
async fn an_unreachable_jwk_set_fails_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    drop(listener);
    let signer = LocalSigner::generate();
    let v = verifier(&url, Arc::new(TestClock(AtomicI64::new(T0))));
    assert!(matches!(v.verify(&token(&signer, "alice").await).await, Err(RemoteError::Unavailable(_))));
}

#[tokio::test]
async fn with_introspection_a_revoked_consent_is_refused_at_once_and_without_it_only_at_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let runtime =
        Arc::new(local_api::Runtime::embedded(dir.path(), Policy::default(), Arc::new(SystemClock)).await.unwrap());
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(local_api::serve(listener, runtime.clone(), std::future::pending()));
    let identity = |sub: &str, groups: &[&str]| {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        runtime.identity.issue(sub, &groups, SystemClock.now(), 3600)
    };
    let http = reqwest::Client::new();
    let alice = identity("alice", &[]);
    let granted = http
        .post(format!("{base}/consents"))
        .bearer_auth(&alice)
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let minted: Value = http
        .post(format!("{base}/tokens"))
        .bearer_auth(identity("agent-7", &["support"]))
        .json(&json!({"user_id": "alice", "reason": "ticket 4411: billing page broken"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = minted["access_token"].as_str().unwrap();

    let jwks_url = format!("{base}/.well-known/jwks.json");
    let expected = Expected::new("support-access", "support-access-app");
    let offline = RemoteVerifier::new(&jwks_url, expected.clone());
    let live = RemoteVerifier::new(&jwks_url, expected)
        .with_introspection(Introspector::new(format!("{base}/introspect"), identity("rs-1", &["introspect"])));
    assert_eq!(live.verify(token).await.unwrap().act.sub.as_str(), "agent-7");
    assert!(offline.verify(token).await.is_ok());

    let revoked = http.delete(format!("{base}/consents/current")).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(revoked.status(), 204);
    assert_eq!(rejected(live.verify(token).await), Rejection::Inactive, "introspection sees the revocation");
    assert!(offline.verify(token).await.is_ok(), "signature checks alone cannot see it: use introspection");

    let outsider = Introspector::new(format!("{base}/introspect"), identity("rs-2", &["support"]));
    assert!(matches!(outsider.introspect(token).await, Err(RemoteError::Unavailable(_))), "403 is not an answer");
}
