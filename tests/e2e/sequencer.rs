//! Decide now, sequence later (#18): the contract of the audit intake and the sequencer, on
//! the ports. A use is one durable write, refused past its deadline; the sequencer appends
//! every recorded event once, gapless, in decision order (a use decided before a revoke
//! precedes it, even when its write lands after the revoke's), holds consent changes long
//! enough for that, and a repeated or racing run changes nothing.
//!
//! TODO(#18): only the embedded store implements the intake and the sequencer yet; once
//! `DynamoStore` does (table `AuditIntake`, function `sequencer`), list these cases with
//! `e2e::on_both_backends!` instead of the embedded-only module at the bottom.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use e2e::{Backend, TestApp};
use shared::app;
use shared::domain::{
    Actor, AgentId, AuditEvent, AuditEventType, Consent, ConsentDuration, Note, Policy, Role, Scope, UserId,
};
use shared::ports::{Clock, Deadline, StoreError};
use support_access_verify::chain::verify_chains;

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// The uses' deadline in these tests: well inside the test hold.
fn deadline() -> Deadline {
    Deadline::after(TestApp::SEQUENCER_HOLD / 2)
}

async fn grant(app: &TestApp, who: &str) -> Consent {
    let duration = ConsentDuration::parse(3600, &Policy::default()).unwrap();
    app::grant_consent(app.services(), &user(who), duration, Scope::Read, Note::parse("sequencer").unwrap())
        .await
        .unwrap()
}

/// A use of `consent` decided now, as the authorizer records it.
fn used(app: &TestApp, consent: &Consent) -> AuditEvent {
    AuditEvent::new(
        AuditEventType::TokenUsed,
        app.clock.now(),
        Some(consent.user_id.clone()),
        Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
    )
    .with_consent(&consent.consent_id, consent.scope, consent.expires_at)
    .with_detail("GET /app/whoami")
}

async fn settle(app: &TestApp) {
    app.settle().await;
}

/// `who`'s chain, verified, as `(type, consent_id)` oldest first.
async fn chain(app: &TestApp, who: &str) -> Vec<(String, String)> {
    let events = app.services().chain_archive.stream_events(who, 0, 10_000).await.unwrap();
    let values: Vec<_> = events.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
    if !values.is_empty() {
        verify_chains(&values).unwrap_or_else(|e| panic!("{who}: {e}"));
    }
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=events.len() as u64).collect::<Vec<_>>());
    events
        .iter()
        .map(|e| (e.event_type.as_str().to_owned(), e.consent_id.as_ref().map_or(String::new(), |c| c.to_string())))
        .collect()
}

fn kinds(chain: &[(String, String)]) -> Vec<&str> {
    chain.iter().map(|(t, _)| t.as_str()).collect()
}

async fn a_use_is_pending_until_sequenced_then_on_its_chain_once(app: TestApp) {
    let consent = grant(&app, "alice").await;
    for _ in 0..3 {
        app.intake().record(used(&app, &consent), deadline()).await.unwrap();
    }
    let pending = app.sequencer().pending("alice", 100).await.unwrap();
    assert_eq!(pending.len(), 4, "the grant and three uses, pending");
    assert!(pending.iter().all(|e| e.seq == 0 && e.hash.is_empty()), "pending events are unsealed");
    assert!(chain(&app, "alice").await.is_empty(), "nothing on the chain before the sequencer runs");

    let first = app.sequencer().sequence(1_000).await.unwrap();
    assert_eq!((first.sequenced, first.pending), (0, 4), "the grant is held, and the uses behind it");
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used", "token.used", "token.used"]);
    let again = app.sequencer().sequence(1_000).await.unwrap();
    assert_eq!((again.sequenced, again.pending), (0, 0), "a repeated run changes nothing");
    assert_eq!(chain(&app, "alice").await.len(), 4);
}

/// The race the hold exists for: the use's consent read sees the consent live, the revoke
/// commits, the sequencer sees the revoke, and only then the use's write lands.
async fn a_use_decided_before_a_revoke_precedes_it_even_when_it_lands_after(app: TestApp) {
    let consent = grant(&app, "alice").await;
    settle(&app).await;

    let decided = deadline();
    let read = app.services().consent_reader.current(&user("alice"), app.clock.now()).await.unwrap();
    assert_eq!(read.as_ref(), Some(&consent), "the use's consent read sees it live");
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    // The first run sees the revoke committed, the second would append it without the hold.
    for _ in 0..2 {
        let run = app.sequencer().sequence(1_000).await.unwrap();
        assert_eq!((run.sequenced, run.pending), (0, 1), "the revoke is held");
    }
    app.intake().record(used(&app, &consent), decided).await.unwrap();
    assert_eq!(
        app.services().consent_reader.current(&user("alice"), app.clock.now()).await.unwrap(),
        None,
        "a use whose consent read follows the revoke's commit sees no consent (and is refused)"
    );
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used", "consent.revoked"]);
}

async fn a_use_past_its_deadline_is_refused_and_leaves_nothing(app: TestApp) {
    let consent = grant(&app, "alice").await;
    let late = Deadline::after(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let refused = app.intake().record(used(&app, &consent), late).await;
    assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
    assert_eq!(app.sequencer().pending("alice", 100).await.unwrap().len(), 1, "only the grant");
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted"]);
}

async fn recording_an_event_again_changes_nothing(app: TestApp) {
    let consent = grant(&app, "alice").await;
    let use_ = used(&app, &consent);
    app.intake().record(use_.clone(), deadline()).await.unwrap();
    app.intake().record(use_.clone(), deadline()).await.unwrap();
    assert_eq!(app.sequencer().pending("alice", 100).await.unwrap().len(), 2, "the grant and the use, once");
    settle(&app).await;
    app.intake().record(use_, deadline()).await.unwrap();
    assert!(app.sequencer().pending("alice", 100).await.unwrap().is_empty(), "already on the chain");
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used"]);
}

/// Many uses of three users recorded at once while four sequencers run in a loop: every use
/// lands once, every chain is gapless and intact, and no user's consent change holds the
/// others back.
async fn racing_writers_and_sequencers_append_every_event_once(app: TestApp) {
    const USES: usize = 60;
    let app = Arc::new(app);
    let mut consents = Vec::new();
    for who in ["alice", "bob", "carol"] {
        consents.push(grant(&app, who).await);
    }
    settle(&app).await;
    // A revoke of carol's, held while the others are sequenced.
    let carol = consents.pop().unwrap();
    let mut writers = Vec::new();
    let mut ids = HashSet::new();
    for i in 0..USES {
        let event = used(&app, &consents[i % 2]);
        ids.insert(event.event_id.clone());
        let app = app.clone();
        writers.push(tokio::spawn(async move { app.intake().record(event, deadline()).await.unwrap() }));
    }
    app::revoke_consent(app.services(), &user(carol.user_id.as_str())).await.unwrap();
    let sequencers: Vec<_> = (0..4)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    app.sequencer().sequence(7).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for s in sequencers {
        s.await.unwrap();
    }
    assert!(
        !app.sequencer().pending("carol", 10).await.unwrap().is_empty() || TestApp::SEQUENCER_HOLD.is_zero(),
        "carol's revoke is still held (the test ran faster than the hold)"
    );
    settle(&app).await;
    let mut seen = HashSet::new();
    for who in ["alice", "bob"] {
        let events = app.services().chain_archive.stream_events(who, 0, 10_000).await.unwrap();
        assert_eq!(chain(&app, who).await.len(), 1 + USES / 2, "{who}");
        for e in events.iter().filter(|e| e.event_type == AuditEventType::TokenUsed) {
            assert!(seen.insert(e.event_id.clone()), "{} appended twice", e.event_id);
        }
    }
    assert_eq!(seen, ids, "every use landed");
    assert_eq!(kinds(&chain(&app, "carol").await), ["consent.granted", "consent.revoked"]);
}

mod embedded {
    use super::*;

    macro_rules! on_embedded {
        ($($case:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                super::$case(TestApp::sequenced(Backend::Embedded).await).await;
            }
        )*};
    }

    on_embedded!(
        a_use_is_pending_until_sequenced_then_on_its_chain_once,
        a_use_decided_before_a_revoke_precedes_it_even_when_it_lands_after,
        a_use_past_its_deadline_is_refused_and_leaves_nothing,
        recording_an_event_again_changes_nothing,
        racing_writers_and_sequencers_append_every_event_once,
    );
}
