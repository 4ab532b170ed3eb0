//! Notifications from local-api to a webhook receiver on loopback: one signed CloudEvent per
//! grant, revoke, expiry, access-request step, token issue and first use (never for a refusal,
//! never twice for one use), in commit order; and a dead receiver that fails every delivery
//! changes nothing for the API, and gets everything once it is back.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::hmac;
use local_api::Runtime;
use local_api::webhook::Webhook;
use serde_json::{Value, json};
use shared::app::{RelaySettings, RelayStats};
use shared::domain::Policy;
use shared::ports::{Clock, FixedClock, Publisher};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "a webhook secret of some length";

/// One delivery as the receiver saw it.
#[derive(Debug)]
struct Delivery {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(n, _)| n == name).map_or("", |(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A minimal HTTP/1.1 receiver: answers 200 to every POST and hands the delivery over.
async fn receiver(listener: TcpListener) -> mpsc::UnboundedReceiver<Delivery> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                let headers: Vec<(String, String)> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let length: usize =
                    headers.iter().find(|(n, _)| n == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
                while buf.len() < head_end + length {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[head_end..head_end + length].to_vec();
                // Handed over before the answer, so the order seen is the order of delivery.
                let _ = tx.send(Delivery { headers, body });
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            });
        }
    });
    rx
}

struct Service {
    base: String,
    runtime: Arc<Runtime>,
    clock: Arc<FixedClock>,
    stats: Arc<RelayStats>,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Service {
    /// local-api on a fresh data directory, its relay publishing to `webhook_url`.
    async fn start(webhook_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FixedClock::at(shared::ports::SystemClock.now()));
        let runtime = Arc::new(Runtime::embedded(dir.path(), Policy::default(), clock.clone()).await.unwrap());
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(local_api::serve(listener, runtime.clone(), std::future::pending()));
        let publisher: Arc<dyn Publisher> = Arc::new(Webhook::new(webhook_url, SECRET).unwrap());
        let stats = Arc::new(RelayStats::default());
        // The first pass records where the (empty) log ends; from then on everything is news.
        let (outbox, first_uses) = (runtime.outbox.clone().unwrap(), runtime.first_uses.clone().unwrap());
        shared::app::relay_once(outbox.as_ref(), first_uses.as_ref(), publisher.as_ref(), "webhook", 100, &stats)
            .await
            .unwrap();
        let settings = RelaySettings {
            batch: 100,
            idle: Duration::from_millis(20),
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
        };
        tokio::spawn(local_api::relay_notifications(runtime.clone(), publisher, settings, stats.clone()));
        Self { base, runtime, clock, stats, http: reqwest::Client::new(), _dir: dir }
    }

    fn token(&self, sub: &str, groups: &[&str]) -> String {
        e2e::dev_token(&self.runtime, sub, groups)
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url).bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        e2e::send_json(req).await
    }

    /// Every step of the product, as users and an agent take them; returns the types the
    /// app must hear about, in order.
    async fn walk_through(&self) -> Vec<&'static str> {
        let (alice, bob, carol) = (self.token("alice", &[]), self.token("bob", &[]), self.token("carol", &[]));
        let agent = self.token("agent-7", &["support"]);
        let ok = |(status, body): (u16, Value), want: u16| {
            assert_eq!(status, want, "{body}");
            body
        };
        ok(self.call("POST", "/consents", &alice, Some(json!({"duration_seconds": 3600}))).await, 201);
        let minted = ok(
            self.call("POST", "/tokens", &agent, Some(json!({"user_id": "alice", "reason": "ticket 1: help"}))).await,
            201,
        );
        let token = minted["access_token"].as_str().unwrap().to_owned();
        for _ in 0..3 {
            ok(self.call("GET", "/app/whoami", &token, None).await, 200);
        }
        ok(self.call("POST", "/app/whoami", &token, None).await, 403); // rejected: not news
        ok(
            self.call("POST", "/tokens", &agent, Some(json!({"user_id": "bob", "reason": "ticket 2: help"}))).await,
            403,
        ); // denied: not news
        let file = |user: &str| json!({"user_id": user, "reason": "ticket 3: sync", "duration_seconds": 900});
        let first = ok(self.call("POST", "/access-requests", &agent, Some(file("bob"))).await, 201);
        ok(
            self.call(
                "POST",
                &format!("/me/access-requests/{}/deny", first["request_id"].as_str().unwrap()),
                &bob,
                None,
            )
            .await,
            200,
        );
        let second = ok(self.call("POST", "/access-requests", &agent, Some(file("bob"))).await, 201);
        ok(
            self.call(
                "POST",
                &format!("/me/access-requests/{}/approve", second["request_id"].as_str().unwrap()),
                &bob,
                None,
            )
            .await,
            201,
        );
        ok(self.call("DELETE", "/consents/current", &alice, None).await, 204);
        ok(self.call("POST", "/access-requests", &agent, Some(file("carol"))).await, 201);
        let _ = carol;
        // A day later: bob's consent and carol's unanswered request have run out.
        self.clock.advance(25 * 3600);
        let sweeper = self.runtime.sweeper.clone().unwrap();
        assert_eq!(sweeper.expire_due(self.clock.now()).await.unwrap(), 1, "bob's consent");
        assert_eq!(shared::app::expire_requests(&self.runtime.services).await.unwrap(), 1, "carol's request");
        vec![
            "consent.granted",
            "token.issued",
            "token.used",
            "request.filed",
            "request.denied",
            "request.filed",
            "request.approved",
            "consent.granted",
            "consent.revoked",
            "request.filed",
            "consent.expired",
            "request.expired",
        ]
    }
}

/// Deliveries until `count` arrived (bounded: a stuck relay fails the test, not hangs it).
async fn collect(rx: &mut mpsc::UnboundedReceiver<Delivery>, count: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    while out.len() < count {
        match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(d)) => out.push(d),
            _ => panic!("only {} of {count} notifications arrived", out.len()),
        }
    }
    out
}

/// Checks the signature as an app would: HMAC-SHA256 over "<t>.<body>" with the shared secret.
fn signed_by_secret(d: &Delivery) -> bool {
    let header = d.header("support-access-signature");
    let Some((t, v1)) = header.split_once(',') else { return false };
    let (Some(t), Some(v1)) = (t.strip_prefix("t="), v1.strip_prefix("v1=")) else { return false };
    let Ok(tag) =
        (0..v1.len()).step_by(2).map(|i| u8::from_str_radix(&v1[i..i + 2], 16)).collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(&d.body);
    hmac::verify(&key, &message, &tag).is_ok()
}

fn check(deliveries: &[Delivery], expected: &[&str]) {
    let types: Vec<String> = deliveries.iter().map(|d| d.json()["data"]["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, expected);
    let mut ids = std::collections::HashSet::new();
    for d in deliveries {
        let v = d.json();
        assert!(signed_by_secret(d), "bad signature on {v}");
        assert_eq!(d.header("content-type"), "application/cloudevents+json");
        assert_eq!(d.header("support-access-event-id"), v["id"].as_str().unwrap());
        assert_eq!(v["id"], v["data"]["event_id"], "the CloudEvent id is the audit event id");
        assert_eq!(v["type"].as_str().unwrap(), format!("support-access.{}", v["data"]["type"].as_str().unwrap()));
        assert_eq!((v["specversion"].as_str(), v["source"].as_str()), (Some("1.0"), Some("support-access")));
        assert_eq!(v["subject"], v["data"]["user_id"]);
        assert!(ids.insert(v["id"].as_str().unwrap().to_owned()), "delivered twice: {v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_is_notified_once_signed_in_commit_order() {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let url = format!("http://{}/hooks/support-access", listener.local_addr().unwrap());
    let mut rx = receiver(listener).await;
    let service = Service::start(&url).await;
    let expected = service.walk_through().await;
    let deliveries = collect(&mut rx, expected.len()).await;
    check(&deliveries, &expected);
    let used = deliveries.iter().find(|d| d.json()["data"]["type"] == "token.used").unwrap().json();
    assert_eq!(used["data"]["actor"]["sub"], "agent-7");
    assert_eq!(used["subject"], "alice");
    // Nothing more comes: three uses are one first use, and refusals are not pushed.
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
    assert_eq!(service.stats.failed_attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_receiver_changes_nothing_for_the_api_and_misses_nothing_once_back() {
    // A port nobody listens on (bound, then released): every delivery fails.
    let closed = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let service = Service::start(&format!("http://{addr}/hook")).await;

    // Every call succeeds as usual (walk_through asserts each status) while nothing arrives.
    let expected = service.walk_through().await;
    for _ in 0..200 {
        if service.stats.failed_attempts() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(service.stats.failed_attempts() >= 3, "the relay kept trying");
    assert_eq!(service.stats.delivered(), 0);
    let query =
        shared::ports::AuditQuery { filter: Default::default(), limit: 100, after: None, now: service.clock.now() };
    let page = service.runtime.services.audit_reader.query(&query).await.unwrap();
    assert_eq!(page.events.len(), 16, "every consent and audit write landed");

    // The receiver comes back on the same address: everything arrives, in order, once.
    let listener = TcpListener::bind(addr).await.expect("the released port is free again");
    let mut rx = receiver(listener).await;
    let deliveries = collect(&mut rx, expected.len()).await;
    check(&deliveries, &expected);
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_aws_the_audit_stream_reaches_eventbridge_once_per_step() {
    use adapter_aws::EventBridgePublisher;
    use e2e::{Backend, Event, TestApp};

    let app = TestApp::on(Backend::Aws).await;
    let bus = format!("support-access-{}", uuid::Uuid::new_v4().simple());
    let queue = e2e::moto_sink(&["setup", &bus]).trim().to_owned();

    // The steps, through the HTTP layer on DynamoDB and KMS.
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    let minted = app.mint("alice").await;
    let token = minted.str("access_token").to_owned();
    for _ in 0..2 {
        let used = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
        assert_eq!(used.status, 200);
    }
    assert_eq!(app.mint("bob").await.status, 403, "a denial: on the log, not announced");
    assert_eq!(app.call(Event::new("DELETE", "/consents/current").user("alice")).await.status, 204);

    // What DynamoDB Streams delivers to the notifier, read from moto's stream of the table.
    let batch: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(e2e::stream_event(&app.tables().audit)).unwrap();
    let events: Vec<_> = app.dynamo().stream_events_to_announce(&batch).into_iter().map(|(_, e)| e).collect();
    assert_eq!(events.len(), 6, "every committed event is in the stream, each direct use too: {events:?}");
    // A bus that does not exist: the batch fails at its first announced event, so the stream
    // retries from there (the notifier reports that record as the batch item failure).
    let nowhere = EventBridgePublisher::new(e2e::eventbridge_client().await, "no-such-bus");
    let failed = shared::app::publish_committed(&events, app.dynamo().as_ref(), &nowhere, &RelayStats::default()).await;
    assert_eq!(failed.map_err(|(i, _)| i), Err(0));

    let publisher = EventBridgePublisher::new(e2e::eventbridge_client().await, &bus);
    let stats = RelayStats::default();
    shared::app::publish_committed(&events, app.dynamo().as_ref(), &publisher, &stats).await.unwrap();
    assert_eq!(stats.delivered(), 4);

    let received: Vec<Value> = serde_json::from_str(&e2e::moto_sink(&["receive", &queue, "4"])).unwrap();
    let mut kinds: Vec<(String, String)> = received
        .iter()
        .map(|m| {
            let detail = &m["detail"];
            assert_eq!(m["source"], "support-access");
            assert_eq!(m["detail-type"], detail["data"]["type"], "{m}");
            assert_eq!(detail["id"], detail["data"]["event_id"], "the id to deduplicate by");
            assert_eq!(detail["specversion"], "1.0");
            (detail["data"]["seq"].to_string(), detail["data"]["type"].as_str().unwrap().to_owned())
        })
        .collect();
    kinds.sort_by_key(|(seq, _)| seq.parse::<u64>().unwrap());
    let types: Vec<&str> = kinds.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(types, ["consent.granted", "token.issued", "token.used", "consent.revoked"], "one use announced of two");
}

/// The notifier's tests on the sequenced path (#18): a DynamoDB store that records through
/// the intake, its calls counted at a proxy, and a bus whose every event lands in a queue.
mod sequenced {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use adapter_aws::EventBridgePublisher;
    use async_trait::async_trait;
    use e2e::aws_proxy::AwsProxy;
    use e2e::{Event, TestApp};
    use serde_json::{Value, json};
    use shared::app::{RelayStats, publish_committed};
    use shared::domain::{AuditEvent, Notification};
    use shared::ports::{PublishError, Publisher};

    struct Setup {
        proxy: AwsProxy,
        app: TestApp,
        bus: String,
        queue: String,
    }

    async fn setup() -> Setup {
        let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
        let proxy = AwsProxy::start(&upstream).await;
        let app = TestApp::sequenced_on_aws(&proxy.endpoint, TestApp::AWS_SEQUENCER_HOLD).await;
        let bus = format!("support-access-{}", uuid::Uuid::new_v4().simple());
        let queue = e2e::moto_sink(&["setup", &bus]).trim().to_owned();
        Setup { proxy, app, bus, queue }
    }

    impl Setup {
        /// A token of alice's, used `uses` times through the HTTP layer (each use one intake
        /// put), its consent and its issue already on the chain.
        async fn used_token(&self, uses: usize) -> String {
            if self.app.consent("alice").await.is_none() {
                assert_eq!(self.app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
            }
            let token = self.app.mint("alice").await.str("access_token").to_owned();
            self.app.settle().await;
            for _ in 0..uses {
                let used = self.app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
                assert_eq!(used.status, 200);
            }
            token
        }

        /// What the notifier takes from `table`'s stream as the event source delivers it, with
        /// each record's sequence number.
        fn stream(&self, table: &str) -> Vec<(String, AuditEvent)> {
            let batch: aws_lambda_events::event::dynamodb::Event =
                serde_json::from_value(e2e::stream_event(table)).unwrap();
            self.app.dynamo().stream_events_to_announce(&batch)
        }

        async fn publisher(&self) -> EventBridgePublisher {
            EventBridgePublisher::new(e2e::eventbridge_client().await, &self.bus)
        }

        /// Publishes `records` as the notifier does, counting the store's writes (the first-use
        /// claims) at the proxy: `(delivered, PutItem calls)`.
        async fn notify(&self, records: &[(String, AuditEvent)], publisher: &dyn Publisher) -> (u64, usize) {
            let events: Vec<AuditEvent> = records.iter().map(|(_, e)| e.clone()).collect();
            let stats = RelayStats::default();
            self.proxy.clear();
            publish_committed(&events, self.app.dynamo().as_ref(), publisher, &stats).await.unwrap();
            (stats.delivered(), self.proxy.calls().iter().filter(|c| *c == "PutItem").count())
        }

        /// The ids and types of the next `n` notifications on the bus.
        fn received(&self, n: usize) -> Vec<(String, String)> {
            let received: Vec<Value> =
                serde_json::from_str(&e2e::moto_sink(&["receive", &self.queue, &n.to_string()])).unwrap();
            received.iter().map(|m| (m["detail"]["id"].as_str().unwrap().to_owned(), detail_type(m))).collect()
        }
    }

    fn detail_type(m: &Value) -> String {
        m["detail-type"].as_str().unwrap().to_owned()
    }

    fn uses(records: &[(String, AuditEvent)]) -> Vec<&AuditEvent> {
        records.iter().map(|(_, e)| e).filter(|e| e.event_type.as_str() == "token.used").collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_use_recorded_through_the_intake_is_announced_before_the_sequencer_runs_and_never_claimed_again() {
        let s = setup().await;
        s.used_token(2).await;

        // The intake's stream brings both uses while they are still pending: the first is
        // announced (one claim each), the sequencer has not run.
        let intake = s.stream(&s.app.tables().intake);
        let pending = uses(&intake);
        assert_eq!(pending.len(), 2, "only uses come from the intake: {intake:?}");
        assert!(pending.iter().all(|e| e.is_pending()));
        let (delivered, claims) = s.notify(&intake, &s.publisher().await).await;
        assert_eq!((delivered, claims), (1, 2));
        let waiting = s.app.sequencer().pending("alice", 10).await.unwrap();
        assert!(waiting.iter().any(|e| e.event_id == pending[0].event_id), "announced while pending");
        let announced: Vec<Value> = serde_json::from_str(&e2e::moto_sink(&["receive", &s.queue, "1"])).unwrap();
        let data = &announced[0]["detail"]["data"];
        assert_eq!(
            (detail_type(&announced[0]), &data["event_id"]),
            ("token.used".to_owned(), &json!(pending[0].event_id))
        );
        assert_eq!((&data["seq"], &data["hash"]), (&json!(0), &json!("")), "announced as it is, pending");

        // The sequencer appends them; the Audit stream brings every step but those uses, and
        // the notifier claims nothing there.
        s.app.settle().await;
        let audit = s.stream(&s.app.tables().audit);
        let types: Vec<&str> = audit.iter().map(|(_, e)| e.event_type.as_str()).collect();
        assert_eq!(types, ["consent.granted", "token.issued"], "the uses came from the intake");
        let (delivered, claims) = s.notify(&audit, &s.publisher().await).await;
        assert_eq!((delivered, claims), (2, 0), "no second claim of a use announced from the intake");
        let mut steps: Vec<String> = s.received(2).into_iter().map(|(_, t)| t).collect();
        steps.sort();
        assert_eq!(steps, ["consent.granted", "token.issued"]);
    }

    /// Fails its `fail_at`-th publish (0-based), as a bus that refused one entry.
    struct FailingAt {
        inner: EventBridgePublisher,
        fail_at: usize,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Publisher for FailingAt {
        async fn publish(&self, notification: &Notification) -> Result<(), PublishError> {
            if self.calls.fetch_add(1, Ordering::SeqCst) == self.fail_at {
                return Err(PublishError("refused".into()));
            }
            self.inner.publish(notification).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_intake_batch_delivered_again_announces_no_use_twice() {
        let s = setup().await;
        s.used_token(2).await;
        s.used_token(2).await;
        let intake = s.stream(&s.app.tables().intake);
        let all = uses(&intake);
        assert_eq!(all.len(), 4, "{intake:?}");
        let firsts = [all[0].event_id.to_string(), all[2].event_id.to_string()];

        // The second token's first use fails to publish: the batch reports that record, and
        // the event source delivers the batch again from it.
        let events: Vec<AuditEvent> = intake.iter().map(|(_, e)| e.clone()).collect();
        let failing = FailingAt { inner: s.publisher().await, fail_at: 1, calls: AtomicUsize::new(0) };
        let stats = RelayStats::default();
        let failed = publish_committed(&events, s.app.dynamo().as_ref(), &failing, &stats).await;
        let at = failed.map(|_| ()).map_err(|(i, _)| i).expect_err("the second announcement failed");
        assert_eq!(intake[at].1.event_id.to_string(), firsts[1]);
        assert_eq!(stats.delivered(), 1);
        let (delivered, _) = s.notify(&intake[at..], &s.publisher().await).await;
        assert_eq!(delivered, 1);
        let mut received: Vec<String> = s.received(2).into_iter().map(|(id, _)| id).collect();
        received.sort();
        let mut expected = firsts.to_vec();
        expected.sort();
        assert_eq!(received, expected, "each token's first use once, no later use");

        // The whole batch delivered again (a crash after it was published, or a replay from
        // the failed-batches bucket) announces no other use: each later use still finds its
        // token claimed by the first, and a first use goes out again with its own id only.
        let (again, claims) = s.notify(&intake, &s.publisher().await).await;
        assert_eq!((again, claims), (2, 4));
        let mut replayed: Vec<String> = s.received(2).into_iter().map(|(id, _)| id).collect();
        replayed.sort();
        assert_eq!(replayed, expected, "the same first uses, by the ids consumers deduplicate on");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_use_during_a_deploy_is_announced_from_the_audit_stream_once_beside_sequenced_ones() {
        use shared::domain::Jti;
        use shared::ports::{AuditIntake, Deadline};
        let s = setup().await;
        s.used_token(1).await;
        // A function still on the direct path (the release before, or a deploy turning
        // SequencedAudit on) appends a use of another token straight to the chain.
        let consent = s.app.consent("alice").await.unwrap();
        let direct = s.app.decided_use(&consent).with_jti(&Jti::generate());
        s.app.direct_store().record(direct.clone(), Deadline::after(std::time::Duration::from_secs(30))).await.unwrap();
        s.app.settle().await;

        let intake = s.stream(&s.app.tables().intake);
        let audit = s.stream(&s.app.tables().audit);
        let sequenced = uses(&intake)[0].event_id.clone();
        let from_audit: Vec<_> = uses(&audit).into_iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(
            from_audit,
            std::slice::from_ref(&direct.event_id),
            "the direct use only: the other came from the intake"
        );

        let publisher = s.publisher().await;
        let (delivered, claims) = s.notify(&intake, &publisher).await;
        assert_eq!((delivered, claims), (1, 1));
        let (delivered, claims) = s.notify(&audit, &publisher).await;
        assert_eq!((delivered, claims), (3, 1), "grant, issue and the direct use; its one claim");
        let mut used: Vec<String> =
            s.received(4).into_iter().filter(|(_, t)| t == "token.used").map(|(id, _)| id).collect();
        used.sort();
        let mut expected = vec![sequenced.to_string(), direct.event_id.to_string()];
        expected.sort();
        assert_eq!(used, expected, "each use once, whichever stream brought it");
    }
}

#[test]
fn the_notifier_stream_filter_lets_through_exactly_the_announced_types() {
    let template = include_str!("../../infra/template.yaml");
    let start = template.find(r#"{"eventName": ["INSERT"], "dynamodb": {"NewImage""#).expect("the notifier's filter");
    let filter = &template[start..start + template[start..].find("}}}}").unwrap()];
    for t in shared::domain::AuditEventType::ALL {
        assert_eq!(
            filter.contains(&format!("\"{}\"", t.as_str())),
            shared::domain::is_notified(t),
            "{} in the template's filter",
            t.as_str()
        );
    }
}
