//! Refusals of tokens whose signature fails (anyone can send them, #18 item 3), on both
//! backends: a flood writes one `token.rejected` of the unattributed stream per window (at
//! most one per 1,000 refusals or 5 s of the clock), counting every refusal by its code, with
//! one sample that the CLI shows escaped; the export of that stream verifies; the flood
//! changes nothing for a user with a valid token; and a refusal whose token is authentic is
//! still its user's own event, written before the answer.

use e2e::TestApp;
use serde_json::json;
use shared::app::{self, ExportScope, REFUSAL_WINDOW_COUNT, REFUSAL_WINDOW_SECONDS};
use shared::domain::{AuditEvent, AuditEventType, Role};

async fn unattributed(app: &TestApp) -> Vec<AuditEvent> {
    app.audit().await.into_iter().filter(|e| e.user_id.is_none()).collect()
}

async fn a_flood_of_forged_tokens_writes_one_event_per_window_counting_every_refusal(app: TestApp) {
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    // The signature's bytes changed in the middle (its encoding stays canonical).
    let at = token.len() - 10;
    let flipped = if &token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{flipped}{}", &token[..at], &token[at + 1..]);
    let forged = ["garbage", "a.b.c", tampered.as_str(), "eyJhbGciOiJub25lIn0.e30."];
    // A hostile path: the sample is the first refusal's detail, displayed to auditors later.
    let hostile = "/app/x\n2026-01-01T00:00:00Z  token.used  alice  agent-7  detail=\u{1b}[2Jforged";

    const N: usize = 2_600;
    let (mut windows, mut alice_uses) = (1, 0); // the first refusal is written at once (nothing written before)
    for i in 0..N {
        let bearer = forged[i % forged.len()];
        if i == 7 {
            assert_eq!(app.introspect(bearer).await.body["active"], json!(false));
        } else {
            let path = if i == 0 { hostile } else { "/app/orders" };
            assert!(!app.authorize(bearer, "GET", path).await.is_authorized, "{i}");
        }
        if i % 500 == 250 {
            // Another user's use is unaffected, and recorded at once.
            assert!(app.authorize(&token, "GET", "/app/orders").await.is_authorized, "alice's use {i}");
            alice_uses += 1;
        }
        if i == 1_500 {
            app.clock.advance(REFUSAL_WINDOW_SECONDS); // the next refusal closes the window by age
            windows += 1;
        }
    }
    let open = app.services().refusals.open();
    assert!(open > 0 && open < REFUSAL_WINDOW_COUNT, "the last window is still open: {open}");
    assert_eq!(unattributed(&app).await.iter().filter_map(app::refused_in).sum::<u64>() + open, N as u64);
    assert_eq!(app::flush_refusals(app.services()).await.unwrap(), open);
    windows += 1;

    let events = unattributed(&app).await;
    let bound = N.div_ceil(REFUSAL_WINDOW_COUNT as usize) + windows;
    assert!(events.len() <= bound, "{} unattributed events for {N} refusals (at most {bound})", events.len());
    assert_eq!(events.iter().filter_map(app::refused_in).sum::<u64>(), N as u64, "every refusal counted");
    for e in &events {
        assert_eq!((e.event_type, e.actor.role, e.jti.is_none()), (AuditEventType::TokenRejected, Role::Unknown, true));
    }
    // The codes: the first window is the hostile refusal alone; the sample is its detail,
    // last in the event, and the CLI shows it escaped (no fake row, no terminal control).
    let first = events.last().unwrap();
    let detail = first.detail.as_deref().unwrap();
    assert!(detail.starts_with("refused 1: malformed=1; "), "{detail}");
    assert!(detail.ends_with(&format!("sample: malformed GET {hostile}")), "{detail}");
    let row = support_access_cli::api::event_row(&serde_json::to_value(first).unwrap());
    assert!(!row.contains('\n') && !row.contains('\u{1b}'), "{row}");
    let all_codes: String = events.iter().filter_map(|e| e.detail.clone()).collect();
    for code in ["malformed=", "signature=", "algorithm="] {
        assert!(all_codes.contains(code), "{code} in {all_codes}");
    }

    // alice's uses were each recorded; her stream holds no refusal of someone else's token.
    let alice: Vec<_> = app.audit().await.into_iter().filter(|e| e.user_id.is_some()).collect();
    let uses = alice.iter().filter(|e| e.event_type == AuditEventType::TokenUsed).count();
    assert_eq!(uses, alice_uses);
    assert!(!alice.iter().any(|e| e.event_type == AuditEventType::TokenRejected));

    // The unattributed stream's export verifies, strictly (sealed by a checkpoint).
    app::checkpoint_now(app.services()).await.unwrap().expect("streams to seal");
    let (text, _) = app.export_pages(&ExportScope::Unattributed).await;
    let report =
        support_access_cli::verify_export(&text, &app.export_keys(), support_access_cli::Options::default()).unwrap();
    assert_eq!(report.events, events.len());
}

async fn a_refused_authentic_token_is_still_its_users_own_event_written_before_the_answer(app: TestApp) {
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    assert!(!app.authorize("garbage", "GET", "/app/orders").await.is_authorized);
    for _ in 0..3 {
        // A read token used to write: refused after its signature verified.
        assert!(!app.authorize(&token, "DELETE", "/app/orders").await.is_authorized);
    }
    let alice: Vec<_> = app.audit().await.into_iter().filter(|e| e.user_id.is_some()).collect();
    let refused: Vec<_> = alice.iter().filter(|e| e.event_type == AuditEventType::TokenRejected).collect();
    assert_eq!(refused.len(), 3, "one event per refusal, no flush needed");
    for e in refused {
        assert_eq!(e.detail.as_deref(), Some("scope DELETE /app/orders"));
        assert_eq!(e.actor.sub.as_str(), "agent-7");
        assert!(e.jti.is_some());
    }
    assert_eq!(app.services().refusals.open(), 0, "the forged one was written at once (the first)");
}

/// Where a task writes them (local-api), a refused request only counts: the task writes the
/// first refusal at once (woken by it) and the rest of the window at its 5 s tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_a_task_writes_them_it_writes_a_due_window_at_once_and_an_open_one_at_its_tick() {
    let app = TestApp::new().await;
    tokio::spawn(app::flush_refusals_every(app.services().clone()));
    tokio::time::sleep(std::time::Duration::from_millis(50)).await; // the task has started
    let written = async |n: u64, within: std::time::Duration| {
        let until = std::time::Instant::now() + within;
        loop {
            let events = unattributed(&app).await;
            if events.iter().filter_map(app::refused_in).sum::<u64>() == n || std::time::Instant::now() > until {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    assert!(!app.authorize("garbage", "GET", "/app/orders").await.is_authorized);
    assert_eq!(written(1, std::time::Duration::from_secs(2)).await.len(), 1, "the first, at once");
    for _ in 0..2 {
        assert!(!app.authorize("a.b.c", "GET", "/app/orders").await.is_authorized);
    }
    assert_eq!(app.services().refusals.open(), 2, "counted, not written by the requests");
    let period = std::time::Duration::from_secs(REFUSAL_WINDOW_SECONDS as u64 + 2);
    let events = written(3, period).await;
    assert_eq!(events.len(), 2, "the rest in one event at the tick");
    assert_eq!(app::refused_in(&events[0]), Some(2));
}

/// Where no task writes them (a Lambda instance), a window that came due is written by the
/// next request of any kind, a valid use included: an instance that gets only valid requests
/// after a refusal does not keep it (and lose it when retired).
async fn a_due_window_is_written_by_the_next_request_a_valid_use_included(app: TestApp) {
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    assert!(!app.authorize("garbage", "GET", "/app/orders").await.is_authorized, "written at once: the first");
    for _ in 0..2 {
        assert!(!app.authorize("a.b.c", "GET", "/app/orders").await.is_authorized);
    }
    assert!(app.authorize(&token, "GET", "/app/orders").await.is_authorized);
    assert_eq!(app.services().refusals.open(), 2, "the window is not due yet: kept");
    app.clock.advance(REFUSAL_WINDOW_SECONDS);
    assert!(app.authorize(&token, "GET", "/app/orders").await.is_authorized, "a valid use");
    assert_eq!(app.services().refusals.open(), 0, "written by the valid use");
    let events = unattributed(&app).await;
    assert_eq!(events.iter().filter_map(app::refused_in).collect::<Vec<_>>(), [2, 1], "newest first");
    let alice = app.audit().await.into_iter().filter(|e| e.event_type == AuditEventType::TokenUsed).count();
    assert_eq!(alice, 2, "both uses recorded");
}

e2e::on_both_backends!(
    a_due_window_is_written_by_the_next_request_a_valid_use_included,
    a_flood_of_forged_tokens_writes_one_event_per_window_counting_every_refusal,
    a_refused_authentic_token_is_still_its_users_own_event_written_before_the_answer,
);

/// The write of a due window runs beside the request's own work, not before it: a flush whose
/// write cannot finish until the request's consent read has begun (a slow store, made
/// deterministic: the write waits for that read, at most 10 s) still lets the read begin,
/// and the valid use is allowed and its window written. Done one after the other, the read
/// would begin only once the write gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_window_is_written_beside_a_valid_requests_work_not_before_it() {
    use shared::domain::{Consent, Timestamp, UserId};
    use shared::ports::{AuditAppender, ConsentReader, StoreError};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::Notify;

    type Log = Arc<Mutex<Vec<&'static str>>>;
    struct SlowAppender {
        inner: Arc<dyn AuditAppender>,
        log: Log,
        read_begun: Arc<Notify>,
    }
    #[async_trait::async_trait]
    impl AuditAppender for SlowAppender {
        async fn append(&self, event: AuditEvent) -> Result<AuditEvent, StoreError> {
            self.log.lock().unwrap().push("write begins");
            let waited = tokio::time::timeout(Duration::from_secs(10), self.read_begun.notified()).await;
            self.log.lock().unwrap().push(if waited.is_ok() { "write ends" } else { "write gives up" });
            self.inner.append(event).await
        }
    }
    struct WatchedReader {
        inner: Arc<dyn ConsentReader>,
        log: Log,
        read_begun: Arc<Notify>,
    }
    #[async_trait::async_trait]
    impl ConsentReader for WatchedReader {
        async fn current(&self, user: &UserId, now: Timestamp) -> Result<Option<Consent>, StoreError> {
            self.log.lock().unwrap().push("consent read begins");
            self.read_begun.notify_one();
            self.inner.current(user, now).await
        }
    }

    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    assert!(!app.authorize("garbage", "GET", "/app/orders").await.is_authorized, "written at once: the first");
    assert!(!app.authorize("a.b.c", "GET", "/app/orders").await.is_authorized);
    app.clock.advance(REFUSAL_WINDOW_SECONDS);

    let (log, read_begun) = (Log::default(), Arc::new(Notify::new()));
    let services = shared::app::Services {
        audit_appender: Arc::new(SlowAppender {
            inner: app.services().audit_appender.clone(),
            log: log.clone(),
            read_begun: read_begun.clone(),
        }),
        consent_reader: Arc::new(WatchedReader {
            inner: app.services().consent_reader.clone(),
            log: log.clone(),
            read_begun,
        }),
        ..app.services().clone()
    };
    let allowed = app::authorize(&services, &token, &http::Method::GET, "/app/orders").await;
    assert!(allowed.is_ok(), "{allowed:?}");
    let log = log.lock().unwrap().clone();
    assert!(
        log == ["write begins", "consent read begins", "write ends"]
            || log == ["consent read begins", "write begins", "write ends"],
        "{log:?}"
    );
    assert_eq!(app.services().refusals.open(), 0, "the window was written by the valid use");
    assert_eq!(unattributed(&app).await.iter().filter_map(app::refused_in).collect::<Vec<_>>(), [1, 1]);
}
