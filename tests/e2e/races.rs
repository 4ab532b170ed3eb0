//! Races on one user: 32 tasks grant, revoke, mint and use tokens at random, at once, on both
//! backends. Whatever the interleaving, the audit chain (whose order is the commit order, the
//! stream's `seq`) shows that no token was issued or accepted for a consent after that
//! consent ended (revoked, replaced by a new grant), that every token handed out has its
//! `token.issued` committed, and that the chain is gapless and intact; no request fails
//! with anything but the documented answers (503 `unavailable`, nothing changed, included:
//! moto serializes every request, so 32 contending writers can run past the SDK's timeouts).
//! A revoke answers 409 `conflict` when a grant replaced the consent it read before its
//! transaction committed (its condition names the consent it read): the code's answer to a
//! real race, seen about once in six rounds on the AWS backend, not an artefact of moto.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use e2e::{Backend, Event, TestApp};
use serde_json::{Value, json};
use support_access_verify::chain::verify_chains;

const TASKS: usize = 32;

/// A small deterministic generator per task, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One race on a fresh `app`: every promise checked; returns how many uses were accepted.
async fn race(app: TestApp, iterations_per_task: usize) -> usize {
    let app = Arc::new(app);
    // A sequenced store's sequencer runs throughout, as local-api's task and the AWS function do.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sequencer = app.is_sequenced().then(|| {
        let (app, done) = (app.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                // A run that timed out is run again (the function's retries).
                match app.sequencer().sequence(100).await {
                    Ok(_) | Err(shared::ports::StoreError::Unavailable(_)) => {}
                    Err(e) => panic!("sequencer: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    });
    let tokens: Arc<Mutex<Vec<String>>> = Arc::default();
    let issued: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (app, tokens, issued) = (app.clone(), tokens.clone(), issued.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1));
            for _ in 0..iterations_per_task {
                // Mostly uses, as in real life, with a grant or a revoke every few operations.
                match rng.next() % 16 {
                    0 => {
                        let a = app.grant("alice", json!({"duration_seconds": 3600, "scope": "full"})).await;
                        assert!([201, 503].contains(&a.status), "grant: {} {}", a.status, a.body);
                    }
                    1 => {
                        let a = app.call(Event::new("DELETE", "/consents/current").user("alice")).await;
                        assert!([204, 404, 409, 503].contains(&a.status), "revoke: {} {}", a.status, a.body);
                    }
                    2..=5 => {
                        let a = app.mint("alice").await;
                        assert!([201, 403, 409, 503].contains(&a.status), "mint: {} {}", a.status, a.body);
                        if a.status == 201 {
                            issued.lock().unwrap().insert(a.str("jti").to_owned());
                            tokens.lock().unwrap().push(a.str("access_token").to_owned());
                        }
                    }
                    _ => {
                        let token = {
                            let tokens = tokens.lock().unwrap();
                            // Mostly the freshest token (an agent's current one), sometimes a stale one.
                            let pick = if rng.next().is_multiple_of(4) { rng.next() as usize } else { usize::MAX };
                            (!tokens.is_empty()).then(|| tokens[pick.min(tokens.len() - 1) % tokens.len()].clone())
                        };
                        if let Some(token) = token {
                            let a = app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
                            assert!([200, 401, 503].contains(&a.status), "use: {} {}", a.status, a.body);
                        }
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    if let Some(sequencer) = sequencer {
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        sequencer.await.unwrap();
        app.settle().await;
    }

    let events: Vec<Value> = app
        .services()
        .chain_archive
        .stream_events("alice", 0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    verify_chains(&events).unwrap_or_else(|e| panic!("chain broken: {e}"));
    // When each consent ended, by seq: its revoke, or the next grant that replaced it.
    let mut ended: HashMap<String, u64> = HashMap::new();
    let mut live: Option<String> = None;
    for e in &events {
        let cid = e["consent_id"].as_str().map(str::to_owned);
        match e["type"].as_str().unwrap() {
            "consent.granted" => {
                if let Some(old) = live.replace(cid.clone().unwrap()) {
                    ended.entry(old).or_insert(e["seq"].as_u64().unwrap());
                }
            }
            "consent.revoked" | "consent.expired" => {
                ended.entry(cid.clone().unwrap()).or_insert(e["seq"].as_u64().unwrap());
                if live == cid {
                    live = None;
                }
            }
            _ => {}
        }
    }
    let mut committed = HashSet::new();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for e in &events {
        let kind = e["type"].as_str().unwrap();
        *counts.entry(kind).or_default() += 1;
        if kind == "token.rejected" || kind == "token.denied" {
            let code = e["detail"].as_str().or(e["reason"].as_str()).unwrap_or("?").split(' ').next().unwrap_or("?");
            *reasons.entry(format!("{kind} {code}")).or_default() += 1;
        }
        if kind == "token.issued" || kind == "token.used" {
            let cid = e["consent_id"].as_str().unwrap();
            if let Some(end) = ended.get(cid) {
                assert!(e["seq"].as_u64().unwrap() < *end, "{kind} #{} after its consent ended at #{end}", e["seq"]);
            }
        }
        if kind == "token.issued" {
            committed.insert(e["jti"].as_str().unwrap().to_owned());
        }
    }
    let handed_out = issued.lock().unwrap();
    assert!(handed_out.is_subset(&committed), "a token was handed out without its token.issued");
    eprintln!("{:?}: {} events from {TASKS} tasks; {counts:?}; refusals {reasons:?}", app.backend, events.len());
    counts.get("token.used").copied().unwrap_or(0)
}

/// Races on fresh storage until one race saw an accepted use (at most `ROUNDS`): every round
/// must keep every promise, and some round must have exercised uses, not only refusals (on a
/// slow machine a short race can spend every use on a consent that was just replaced).
async fn races_exercising_uses(backend: Backend, sequenced: bool, iterations_per_task: usize) {
    const ROUNDS: usize = 3;
    for _ in 0..ROUNDS {
        let app = if sequenced { TestApp::sequenced(backend).await } else { TestApp::on(backend).await };
        if race(app, iterations_per_task).await > 0 {
            return;
        }
    }
    panic!("no race of {ROUNDS} exercised an accepted token use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_grants_revokes_mints_and_uses_keep_every_promise_embedded() {
    races_exercising_uses(Backend::Embedded, false, 100).await;
}

/// The same race with uses recorded through the intake, no condition, and the sequencer
/// running throughout (#18): the chain must show the same promises, every use before the
/// end of its consent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_grants_revokes_mints_and_uses_keep_every_promise_embedded_sequenced() {
    races_exercising_uses(Backend::Embedded, true, 100).await;
}

/// The same on DynamoDB: uses as one conditionless put each into `AuditIntake`, consent
/// changes as transactions without the chain head, the sequencer running throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_grants_revokes_mints_and_uses_keep_every_promise_on_dynamodb_sequenced() {
    races_exercising_uses(Backend::Aws, true, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_grants_revokes_mints_and_uses_keep_every_promise_on_dynamodb() {
    races_exercising_uses(Backend::Aws, false, 8).await;
}
