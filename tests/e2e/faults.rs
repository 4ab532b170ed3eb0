//! Fault injection on every write path against the DynamoDB/KMS test server, enumerated, not
//! hand-picked: for each operation (grant, revoke, mint, authorize, expiry) a clean run counts
//! its AWS calls, then every call in turn fails with every fault (throttling, 500, connection
//! dropped before the call, answer dropped after it), once (a blip) and from then on (an
//! outage). Each time: the answer is success or 503 `unavailable` (never a 500 or a hang),
//! storage is either fully before or fully after (the consent and its audit event together,
//! never an event twice), a token is only ever returned with its `token.issued` committed,
//! and the user's chain stays intact.

use e2e::aws_proxy::{AwsProxy, Fault, Plan};
use e2e::{Event, TestApp};
use serde_json::{Value, json};
use shared::domain::{AuditEventType, Consent};
use support_access_verify::chain::verify_chains;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Grant,
    Revoke,
    Mint,
    Authorize,
    Expire,
}

impl Op {
    const ALL: [Self; 5] = [Self::Grant, Self::Revoke, Self::Mint, Self::Authorize, Self::Expire];

    fn event(self) -> AuditEventType {
        match self {
            Self::Grant => AuditEventType::ConsentGranted,
            Self::Revoke => AuditEventType::ConsentRevoked,
            Self::Mint => AuditEventType::TokenIssued,
            Self::Authorize => AuditEventType::TokenUsed,
            Self::Expire => AuditEventType::ConsentExpired,
        }
    }
}

/// What an operation needs in place before it runs (made with the proxy disarmed).
struct Prepared {
    consent: Option<Consent>,
    token: Option<String>,
}

async fn prepare(app: &TestApp, op: Op, user: &str) -> Prepared {
    if op == Op::Grant {
        return Prepared { consent: None, token: None };
    }
    assert_eq!(app.grant(user, json!({"duration_seconds": 3600})).await.status, 201);
    let token = match op {
        Op::Authorize => Some(app.mint(user).await.str("access_token").to_owned()),
        _ => None,
    };
    Prepared { consent: app.consent(user).await, token }
}

/// Runs `op`; `Ok(body)` on success, `Err(status)` otherwise (503 expected).
async fn run(app: &TestApp, op: Op, user: &str, prepared: &Prepared) -> Result<Value, u16> {
    let answer = match op {
        Op::Grant => app.grant(user, json!({"duration_seconds": 3600})).await,
        Op::Revoke => app.call(Event::new("DELETE", "/consents/current").user(user)).await,
        Op::Mint => app.mint(user).await,
        Op::Authorize => {
            app.call(Event::new("GET", "/app/whoami").anonymous().bearer(prepared.token.as_deref().unwrap())).await
        }
        Op::Expire => {
            let consent = prepared.consent.as_ref().unwrap();
            let observed = consent.expires_at;
            return match shared::app::record_expiry(app.dynamo().as_ref(), consent, observed).await {
                Ok(_) => Ok(Value::Null),
                Err(_) => Err(503),
            };
        }
    };
    if (200..300).contains(&answer.status) {
        Ok(answer.body)
    } else {
        assert_eq!((answer.status, answer.slug()), (503, "unavailable"), "{op:?}: {}", answer.body);
        Err(answer.status)
    }
}

/// The user's whole stream, oldest first, read directly (not through the proxy).
async fn stream(app: &TestApp, user: &str) -> Vec<Value> {
    let events = app.services().chain_archive.stream_events(user, 0, 1000).await.unwrap();
    events.iter().map(|e| serde_json::to_value(e).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aws_call_of_every_write_path_fails_every_way_and_nothing_is_half_written() {
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = AwsProxy::start(&upstream).await;
    let app = TestApp::on_aws(Some(&proxy.endpoint)).await;
    let mut cases = 0;
    let mut outcomes = std::collections::BTreeMap::<(Op, &str), usize>::new();
    for op in Op::ALL {
        // A clean run: how many calls this operation makes.
        let user = format!("clean-{op:?}").to_lowercase();
        let prepared = prepare(&app, op, &user).await;
        proxy.clear();
        run(&app, op, &user, &prepared).await.unwrap_or_else(|s| panic!("{op:?} failed clean: {s}"));
        let calls = proxy.calls();
        assert!(!calls.is_empty(), "{op:?} made no AWS call");

        for (call, name) in calls.iter().enumerate() {
            for fault in Fault::ALL {
                for persistent in [false, true] {
                    cases += 1;
                    let user = format!("u{cases}");
                    let prepared = prepare(&app, op, &user).await;
                    let before = stream(&app, &user).await;
                    let consent_before = app.consent(&user).await;
                    proxy.arm(Plan { call, fault, persistent });
                    let outcome = run(&app, op, &user, &prepared).await;
                    let injected = proxy.disarm();
                    let at = format!("{op:?}, call {call} ({name}), {fault:?}, persistent {persistent}");
                    assert!(injected > 0, "{at}: the planned fault never happened");

                    let after = stream(&app, &user).await;
                    verify_chains(&after).unwrap_or_else(|e| panic!("{at}: chain broken: {e}"));
                    let new: Vec<&Value> = after[before.len()..].iter().collect();
                    assert!(new.len() <= 1, "{at}: {} events written for one operation", new.len());
                    let committed = new.len() == 1;
                    if committed {
                        assert_eq!(new[0]["type"], op.event().as_str(), "{at}");
                    }
                    if outcome.is_ok() {
                        assert!(committed, "{at}: success answered without its audit event");
                    }
                    let consent_after = app.consent(&user).await;
                    match op {
                        Op::Grant => assert_eq!(consent_after.is_some(), committed, "{at}: consent vs event"),
                        Op::Revoke => assert_eq!(consent_after.is_none(), committed, "{at}: consent vs event"),
                        Op::Expire => {
                            // Redelivery (as the stream would) records it exactly once.
                            run(&app, op, &user, &prepared).await.unwrap();
                            let expired =
                                stream(&app, &user).await.iter().filter(|e| e["type"] == "consent.expired").count();
                            assert_eq!(expired, 1, "{at}");
                        }
                        Op::Mint | Op::Authorize => assert_eq!(consent_after, consent_before, "{at}"),
                    }
                    if let (Op::Mint, Ok(body)) = (op, &outcome) {
                        assert_eq!(new[0]["jti"], body["jti"], "{at}: the token's issue is committed");
                    }
                    let kind = match (&outcome, committed) {
                        (Ok(_), _) => "succeeded",
                        (Err(_), false) => "503, nothing written",
                        (Err(_), true) => "503, written (answer lost)",
                    };
                    *outcomes.entry((op, kind)).or_default() += 1;
                }
            }
        }
    }
    eprintln!("{cases} fault cases: {outcomes:?}");
    assert!(cases >= 5 * 8, "every operation was enumerated");
}

/// The AWS calls each operation makes, counted at the HTTP layer: a warm function (one that
/// has seen the user's stream) mints with one consistent read, one KMS `Sign` and one
/// transaction, authorizes with one read and one transaction, and grants or revokes with one
/// transaction (revoke first reads the consent it revokes). A cold one reads the chain head
/// once more. Grant, mint and every use also read the operators' controls (the emergency
/// stop; on a use, at the same time as the consent, the acting agent's revocation): these
/// services read them every time, where a Lambda instance answers from a read at most
/// `CONTROLS_CACHE_TTL` old, so a warm instance under load makes the calls above alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_makes_the_fewest_aws_calls() {
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = AwsProxy::start(&upstream).await;
    let app = TestApp::on_aws(Some(&proxy.endpoint)).await;
    let mut measured = Vec::new();
    let mut count = async |what: &str, expected: &[&str], answer: u16| {
        let calls = proxy.calls();
        proxy.clear();
        assert!((200..300).contains(&answer), "{what}: {answer}");
        assert_eq!(calls, expected, "{what}");
        measured.push(format!("{what}: {}", calls.join(" + ")));
    };
    proxy.clear();
    let status = app.grant("alice", json!({"duration_seconds": 3600})).await.status;
    count("grant (cold)", &["GetItem", "GetItem", "TransactWriteItems"], status).await;
    let minted = app.mint("alice").await;
    count("mint", &["GetItem", "GetItem", "Sign", "TransactWriteItems"], minted.status).await;
    let token = minted.str("access_token").to_owned();
    let status = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await.status;
    count("authorize", &["GetItem", "GetItem", "GetItem", "TransactWriteItems"], status).await;
    let status = app.grant("alice", json!({"duration_seconds": 3600})).await.status;
    count("grant (warm)", &["GetItem", "TransactWriteItems"], status).await;
    let status = app.call(Event::new("DELETE", "/consents/current").user("alice")).await.status;
    count("revoke", &["GetItem", "TransactWriteItems"], status).await;
    eprintln!("AWS calls per operation: {measured:#?}");
}

/// The event ids of `chain`, checked to be a verified chain numbered 1..n without repeats.
fn checked(chain: &[Value], at: &str) -> std::collections::BTreeSet<String> {
    verify_chains(chain).unwrap_or_else(|e| panic!("{at}: chain broken: {e}"));
    let seqs: Vec<u64> = chain.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=chain.len() as u64).collect::<Vec<_>>(), "{at}");
    let ids: std::collections::BTreeSet<String> =
        chain.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), chain.len(), "{at}: an event appended twice");
    ids
}

/// The sequenced path (#18): a use whose intake put outlasts its deadline is refused (503,
/// through the API; `Unavailable`, at the port), and nothing is half-written: the consent is
/// as it was, and whatever put still landed after its client gave up is one whole intake item,
/// appended once (a use the app refused shown on the log: over-reporting, never under).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_whose_intake_put_outlasts_its_deadline_is_refused_and_lands_once_at_most() {
    use e2e::aws_proxy::model::{Latency, Model, Span};
    use shared::ports::{Deadline, StoreError};
    use std::time::Duration;

    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = AwsProxy::start(&upstream).await;
    let app = TestApp::sequenced_on_aws(&proxy.endpoint, TestApp::AWS_SEQUENCER_HOLD).await;
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    let token = app.mint("alice").await.str("access_token").to_owned();
    app.settle().await;
    let consent = app.consent("alice").await.unwrap();
    let before = stream(&app, "alice").await;
    assert_eq!(before.len(), 2, "the grant and the token's issue");

    // Every item call takes 400 ms: after the consent read, less than that is left of the
    // use's 700 ms for its put.
    let slow = Model { latency: Latency { item: Span::ms(400.0, 400.0), ..Latency::ZERO }, ..Model::NONE };
    proxy.set_model(slow);
    let answer = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
    assert_eq!((answer.status, answer.slug()), (503, "unavailable"), "{}", answer.body);
    // The port itself: a put given 100 ms of the 400 it takes.
    let refused = app.intake().record(app.decided_use(&consent), Deadline::after(Duration::from_millis(100))).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    proxy.set_model(Model::NONE);
    // Whatever was still in flight has landed (or never will) well within this.
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(app.consent("alice").await, Some(consent), "the consent is untouched");
    let landed = app.sequencer().pending("alice", 10).await.unwrap();
    assert!(landed.len() <= 2, "{landed:?}");
    assert!(landed.iter().all(|e| e.event_type == AuditEventType::TokenUsed), "{landed:?}");
    app.settle().await;
    let after = stream(&app, "alice").await;
    checked(&after, "after the refused uses");
    assert_eq!(after[..before.len()], before[..], "the chain before them unchanged");
    let appended: Vec<&str> = after[before.len()..].iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(appended, vec!["token.used"; landed.len()], "each landed put appended once, nothing else");
}

/// A sequencer run that fails at any of its calls, every way (each fault once, as a blip the
/// SDK retries, and from then on, as a crash at that point: a `DropAfter` is a run killed just
/// after its call took effect; its appends and its head move also refused by a conflict with
/// a transaction on their item, which the run sends again, then gives up on), is completed by
/// the next runs: every pending event lands on the chain once, in a chain that verifies, and
/// nothing stays pending; the auditor's query by actor finds each use once (a run killed
/// before its head moved had its index item written or not: the next run indexes what it
/// adopts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequencer_run_failing_at_any_call_is_completed_by_the_next_and_nothing_is_doubled() {
    use shared::ports::{Deadline, StoreError};
    use std::time::Duration;

    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = AwsProxy::start(&upstream).await;
    let app = TestApp::sequenced_on_aws(&proxy.endpoint, TestApp::AWS_SEQUENCER_HOLD).await;
    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    // The grant past its hold: from here on only uses are pending, which are never held.
    app.settle().await;
    let consent = app.consent("alice").await.unwrap();
    let alice = ["alice".to_owned()];
    let record_uses = async || {
        for _ in 0..2 {
            app.intake().record(app.decided_use(&consent), Deadline::after(Duration::from_secs(2))).await.unwrap();
        }
    };
    let drain = async |at: &str| {
        for _ in 0..20 {
            match app.sequencer().sequence_streams(&alice, 100).await {
                Ok(run) if run.pending == 0 => return,
                Ok(_) | Err(StoreError::Unavailable(_)) => {}
                Err(e) => panic!("{at}: the next run: {e}"),
            }
        }
        panic!("{at}: the next runs never drained the intake");
    };

    // A clean run: its calls.
    record_uses().await;
    proxy.clear();
    let clean = app.sequencer().sequence_streams(&alice, 100).await.unwrap();
    assert_eq!((clean.sequenced, clean.pending), (2, 0));
    let calls = proxy.calls();
    assert_eq!(
        calls,
        ["GetItem", "Query", "Query", "PutItem", "PutItem", "UpdateItem"],
        "the two uses' bundle, their index item, then the head"
    );
    let mut uses = 2;
    let mut cases = 0;
    for (call, name) in calls.iter().enumerate() {
        for fault in Fault::for_call(name) {
            for persistent in [false, true] {
                cases += 1;
                let at = format!("call {call} ({name}), {fault:?}, persistent {persistent}");
                record_uses().await;
                let before = checked(&stream(&app, "alice").await, &at);
                proxy.arm(Plan { call, fault, persistent });
                let outcome = app.sequencer().sequence_streams(&alice, 100).await;
                let injected = proxy.disarm();
                assert!(injected > 0, "{at}: the planned fault never happened");
                assert!(matches!(outcome, Ok(_) | Err(StoreError::Unavailable(_))), "{at}: {outcome:?}");
                drain(&at).await;
                uses += 2;
                let chain = stream(&app, "alice").await;
                let after = checked(&chain, &at);
                assert!(before.is_subset(&after), "{at}: an event left the chain");
                assert_eq!(after.len(), before.len() + 2, "{at}: the two uses, once each");
                assert_eq!(chain.iter().filter(|e| e["type"] == "token.used").count(), uses, "{at}");
                assert!(app.sequencer().pending("alice", 10).await.unwrap().is_empty(), "{at}");
                assert_eq!(uses_by_actor(&app).await, uses, "{at}: the actor's query, each use once");
            }
        }
    }
    eprintln!("{cases} sequencer fault cases over the calls {calls:?}");
    assert_eq!(cases, (3 * 4 + 3 * 5) * 2, "every call of a run was enumerated, the writes' conflicts too");
}

/// The distinct uses the auditor's query by their agent finds, every page read.
async fn uses_by_actor(app: &TestApp) -> usize {
    use shared::domain::{AgentId, AuditFilter};
    let filter = AuditFilter {
        actor: Some(AgentId::parse("agent-7").unwrap()),
        event_type: Some(AuditEventType::TokenUsed),
        ..Default::default()
    };
    let (mut ids, mut cursor) = (std::collections::HashSet::new(), None::<String>);
    let mut found = 0;
    for _ in 0..100 {
        let page = shared::app::query_audit(app.services(), filter.clone(), 100, cursor.as_deref()).await.unwrap();
        found += page.events.len();
        ids.extend(page.events.into_iter().map(|e| e.event_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(ids.len(), found, "an event listed twice was returned twice");
    found
}
