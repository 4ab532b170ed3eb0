//! Decide now, sequence later (#18): the contract of the audit intake and the sequencer, on
//! the ports. A use is one durable write, refused past its deadline; the sequencer appends
//! every recorded event once, gapless, in decision order (a use decided before a revoke
//! precedes it, even when its write lands after the revoke's), holds consent changes long
//! enough for that, and a repeated or racing run changes nothing.
//! Every case runs on both stores (`TestApp::sequenced`): the embedded one, and DynamoDB
//! (table `AuditIntake`; the sequencer driven here as the function drives it).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use e2e::TestApp;
use shared::app;
use shared::domain::{AuditEvent, AuditEventType, AuditFilter, Consent, ConsentDuration, Note, Policy, Scope, UserId};
use shared::ports::{Clock, Deadline, StoreError};
use support_access_verify::chain::verify_chains;

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// The uses' deadline in these tests: well inside the app's hold.
fn deadline(app: &TestApp) -> Deadline {
    Deadline::after(app.sequencer_hold() / 2)
}

async fn grant(app: &TestApp, who: &str) -> Consent {
    let duration = ConsentDuration::parse(3600, &Policy::default()).unwrap();
    app::grant_consent(app.services(), &user(who), duration, Scope::Read, Note::parse("sequencer").unwrap())
        .await
        .unwrap()
}

async fn settle(app: &TestApp) {
    app.settle().await;
}

/// `n` uses of `consent` recorded through the intake (pending), in the order recorded.
async fn record_uses(app: &TestApp, consent: &Consent, n: usize) -> Vec<AuditEvent> {
    let mut recorded = Vec::new();
    for _ in 0..n {
        let use_ = app.decided_use(consent);
        recorded.push(use_.clone());
        app.intake().record(use_, deadline(app)).await.unwrap();
    }
    recorded
}

/// Their ids, newest first (the order a log shows pending events in).
fn newest_first(events: &[AuditEvent]) -> Vec<shared::domain::EventId> {
    events.iter().rev().map(|e| e.event_id.clone()).collect()
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
        app.intake().record(app.decided_use(&consent), deadline(&app)).await.unwrap();
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
    use_before_revoke(app, 1_000).await;
}

/// The same, with runs of one event each: the run that releases the revoke must take the
/// use behind it along, past its limit.
async fn a_use_decided_before_a_revoke_precedes_it_whatever_the_runs_limit(app: TestApp) {
    use_before_revoke(app, 1).await;
}

/// A use recorded behind a consent change still held, that belongs before an earlier change
/// already due: it goes with the earlier one, not after it.
/// (A hold of its own, long enough that a loaded machine keeps the timings apart.)
async fn a_use_behind_a_held_change_still_precedes_the_earlier_change_it_belongs_before(app: TestApp) {
    let hold = app.sequencer_hold().max(Duration::from_secs(1));
    let app = TestApp::sequenced_with_hold(app.backend, hold).await;
    let first = grant(&app, "alice").await;
    settle(&app).await;
    let decided = Deadline::after(hold);
    assert!(app.services().consent_reader.current(&user("alice"), app.clock.now()).await.unwrap().is_some());
    grant(&app, "alice").await;
    app.sequencer().sequence(1_000).await.unwrap();
    tokio::time::sleep(hold * 4 / 10).await;
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    app.sequencer().sequence(1_000).await.unwrap();
    app.intake().record(app.decided_use(&first), decided).await.unwrap();
    tokio::time::sleep(hold * 7 / 10).await;
    let run = app.sequencer().sequence(1_000).await.unwrap();
    assert_eq!((run.sequenced, run.pending), (2, 1), "the use and the second grant; the revoke is held");
    settle(&app).await;
    assert_eq!(
        kinds(&chain(&app, "alice").await),
        ["consent.granted", "token.used", "consent.granted", "consent.revoked"]
    );
}

async fn use_before_revoke(app: TestApp, limit: usize) {
    let consent = grant(&app, "alice").await;
    settle(&app).await;

    let decided = deadline(&app);
    let read = app.services().consent_reader.current(&user("alice"), app.clock.now()).await.unwrap();
    assert_eq!(read.as_ref(), Some(&consent), "the use's consent read sees it live");
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    // The first run sees the revoke committed, the second would append it without the hold.
    for _ in 0..2 {
        let run = app.sequencer().sequence(1_000).await.unwrap();
        assert_eq!((run.sequenced, run.pending), (0, 1), "the revoke is held");
    }
    app.intake().record(app.decided_use(&consent), decided).await.unwrap();
    assert_eq!(
        app.services().consent_reader.current(&user("alice"), app.clock.now()).await.unwrap(),
        None,
        "a use whose consent read follows the revoke's commit sees no consent (and is refused)"
    );
    tokio::time::sleep(app.sequencer_hold()).await;
    while app.sequencer().sequence(limit).await.unwrap().pending > 0 {}
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used", "consent.revoked"]);
}

async fn a_use_past_its_deadline_is_refused_and_leaves_nothing(app: TestApp) {
    let consent = grant(&app, "alice").await;
    let late = Deadline::after(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let refused = app.intake().record(app.decided_use(&consent), late).await;
    assert!(matches!(refused, Err(StoreError::DeadlinePassed)), "{refused:?}");
    assert_eq!(app.sequencer().pending("alice", 100).await.unwrap().len(), 1, "only the grant");
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted"]);
}

/// The store's ordering rests on no use landing a hold or more after its decision, whatever
/// budget its caller gave it (the authorizer's 700 ms against a shorter hold, say).
async fn a_use_decided_a_hold_ago_is_refused_whatever_its_budget(app: TestApp) {
    let consent = grant(&app, "alice").await;
    let generous = Deadline::after(Duration::from_secs(60));
    tokio::time::sleep(app.sequencer_hold() + Duration::from_millis(20)).await;
    let refused = app.intake().record(app.decided_use(&consent), generous).await;
    assert!(matches!(refused, Err(StoreError::DeadlinePassed)), "{refused:?}");
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted"]);
}

async fn recording_an_event_again_changes_nothing(app: TestApp) {
    let consent = grant(&app, "alice").await;
    let use_ = app.decided_use(&consent);
    app.intake().record(use_.clone(), deadline(&app)).await.unwrap();
    app.intake().record(use_.clone(), deadline(&app)).await.unwrap();
    assert_eq!(app.sequencer().pending("alice", 100).await.unwrap().len(), 2, "the grant and the use, once");
    settle(&app).await;
    app.intake().record(use_, deadline(&app)).await.unwrap();
    assert!(app.sequencer().pending("alice", 100).await.unwrap().is_empty(), "already on the chain");
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used"]);
}

/// Many uses of three users recorded at once while four sequencers run in a loop: every use
/// lands once, every chain is gapless and intact, and no user's consent change holds the
/// others back. A use refused at its deadline (moto serializes every call: 60 puts at once
/// can outlast it) may still land, as a use the app refused (over-reporting, never under),
/// but never twice; every accepted use lands.
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
        let event = app.decided_use(&consents[i % 2]);
        ids.insert(event.event_id.clone());
        let app = app.clone();
        writers.push(tokio::spawn(async move {
            let id = event.event_id.clone();
            match app.intake().record(event, deadline(&app)).await {
                Ok(()) => Some(id),
                Err(StoreError::Unavailable(_)) => None,
                Err(e) => panic!("{e}"),
            }
        }));
    }
    app::revoke_consent(app.services(), &user(carol.user_id.as_str())).await.unwrap();
    let revoked = std::time::Instant::now();
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
    let mut accepted = HashSet::new();
    for w in writers {
        accepted.extend(w.await.unwrap());
    }
    for s in sequencers {
        s.await.unwrap();
    }
    if app.backend == e2e::Backend::Embedded {
        assert_eq!(accepted, ids, "the embedded store refuses no use here");
    }
    assert!(accepted.len() >= USES / 2, "most uses are accepted ({} of {USES})", accepted.len());
    let carol_pending = !app.sequencer().pending("carol", 10).await.unwrap().is_empty();
    assert!(
        carol_pending || revoked.elapsed() >= app.sequencer_hold(),
        "carol's revoke is still held while its hold lasts"
    );
    settle(&app).await;
    let mut seen = HashSet::new();
    for who in ["alice", "bob"] {
        let events = app.services().chain_archive.stream_events(who, 0, 10_000).await.unwrap();
        let uses: Vec<_> = events.iter().filter(|e| e.event_type == AuditEventType::TokenUsed).collect();
        assert_eq!(chain(&app, who).await.len(), 1 + uses.len(), "{who}: the grant, then uses only");
        for e in uses {
            assert!(seen.insert(e.event_id.clone()), "{} appended twice", e.event_id);
        }
    }
    assert!(accepted.is_subset(&seen), "every accepted use landed");
    assert!(seen.is_subset(&ids), "nothing else landed");
    assert_eq!(kinds(&chain(&app, "carol").await), ["consent.granted", "consent.revoked"]);
}

/// Every page of `filter`'s query, `limit` at a time, as the API serves them.
async fn all_pages(app: &TestApp, filter: AuditFilter, limit: usize) -> Vec<AuditEvent> {
    let (mut out, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..100 {
        let page = app::query_audit(app.services(), filter.clone(), limit, cursor.as_deref()).await.unwrap();
        assert!(page.events.len() <= limit);
        out.extend(page.events);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

/// The user's access log shows what is decided, sequenced or not: pending events first
/// (unsealed: `seq` 0), newest first, then the chain, paged exactly whatever the page size.
async fn the_access_log_shows_pending_events_first_then_the_chain(app: TestApp) {
    let consent = grant(&app, "alice").await;
    settle(&app).await;
    let recorded = newest_first(&record_uses(&app, &consent, 5).await);
    let by_alice = AuditFilter { user_id: Some(user("alice")), ..Default::default() };
    for limit in [1, 2, 5, 6, 50] {
        let log = all_pages(&app, by_alice.clone(), limit).await;
        let ids: Vec<_> = log.iter().take(5).map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, recorded, "pending, newest first (limit {limit})");
        assert!(log[..5].iter().all(|e| e.seq == 0 && e.hash.is_empty()), "marked pending (limit {limit})");
        assert_eq!(log.len(), 6, "then the chain (limit {limit})");
        assert_eq!((log[5].event_type, log[5].seq), (AuditEventType::ConsentGranted, 1));
    }
    let uses = AuditFilter { event_type: Some(AuditEventType::TokenUsed), ..by_alice.clone() };
    assert_eq!(all_pages(&app, uses, 2).await.len(), 5, "filters apply to pending events too");
    // As the API serves the page: each pending event says so, and a sealed one says nothing.
    let marks = |page: &app::AuditPageView| -> Vec<Option<serde_json::Value>> {
        let served = serde_json::to_value(page).unwrap();
        served["events"].as_array().unwrap().iter().map(|e| e.get("pending").cloned()).collect()
    };
    let page = app::query_audit(app.services(), by_alice.clone(), 50, None).await.unwrap();
    let pending = Some(serde_json::Value::Bool(true));
    assert_eq!(marks(&page), [vec![pending; 5], vec![None]].concat(), "\"pending\": true on the pending only");
    settle(&app).await;
    let log = all_pages(&app, by_alice.clone(), 4).await;
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 5, 4, 3, 2, 1], "all sequenced, once");
    let page = app::query_audit(app.services(), by_alice, 50, None).await.unwrap();
    assert_eq!(marks(&page), vec![None; 6], "sequenced: no marker");
}

/// The auditor's queries by actor and by time see what a stalled sequencer leaves pending: a
/// stream listed as stalled (as `sequence_named` lists one whose run did not finish, or whose
/// records came late) has its pending events shown first, newest first, unsealed, then the
/// sealed events, paged exactly whatever the page size; once sequenced, each shows once,
/// sealed. (On a healthy DynamoDB stack nothing is listed: a use is pending for the
/// sequencer's lag only, as an index item is unseen for its propagation.)
async fn a_stalled_streams_pending_events_show_in_the_auditors_queries_by_actor_and_time(app: TestApp) {
    let consent = grant(&app, "alice").await;
    grant(&app, "bob").await;
    settle(&app).await;
    let recorded = newest_first(&record_uses(&app, &consent, 3).await);
    app.sequencer().mark_stalled(&["alice".to_owned()]).await.unwrap();
    app.sequencer().mark_stalled(&["alice".to_owned()]).await.unwrap();

    let by_agent =
        AuditFilter { actor: Some(shared::domain::AgentId::parse("agent-7").unwrap()), ..Default::default() };
    let since = AuditFilter { from: Some(app.clock.now().plus_seconds(-3600)), ..Default::default() };
    for limit in [1, 2, 3, 4, 50] {
        let log = all_pages(&app, by_agent.clone(), limit).await;
        let ids: Vec<_> = log.iter().map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, recorded, "by actor: the pending uses, newest first (limit {limit})");
        assert!(log.iter().all(|e| e.seq == 0 && e.hash.is_empty()), "marked pending (limit {limit})");
        let log = all_pages(&app, since.clone(), limit).await;
        let ids: Vec<_> = log.iter().take(3).map(|e| e.event_id.clone()).collect();
        assert_eq!(ids, recorded, "by time: the pending uses first (limit {limit})");
        assert!(log[..3].iter().all(|e| e.seq == 0), "marked pending (limit {limit})");
        let sealed: Vec<_> = log[3..].iter().map(|e| (e.event_type, e.seq)).collect();
        assert_eq!(
            sealed,
            [(AuditEventType::ConsentGranted, 1), (AuditEventType::ConsentGranted, 1)],
            "then the two grants, sealed (limit {limit})"
        );
    }
    let page = app::query_audit(app.services(), by_agent.clone(), 50, None).await.unwrap();
    let served = serde_json::to_value(&page).unwrap();
    assert!(served["events"].as_array().unwrap().iter().all(|e| e["pending"] == true), "served as pending");

    // A run that leaves a held revoke pending at its time's end lists the stream itself.
    app::revoke_consent(app.services(), &user("bob")).await.unwrap();
    let hold = app.sequencer_hold();
    let named = vec!["bob".to_owned()];
    let cut = app::sequence_named(app.sequencer().as_ref(), named.clone(), &[], hold, std::time::Instant::now()).await;
    assert_eq!(cut.unfinished, named, "the held revoke is left pending");
    assert!(cut.listing.is_none());
    let by_time = all_pages(&app, since.clone(), 2).await;
    let pending: Vec<_> = by_time.iter().filter(|e| e.seq == 0).map(|e| e.event_type).collect();
    assert_eq!(
        pending,
        [
            AuditEventType::ConsentRevoked,
            AuditEventType::TokenUsed,
            AuditEventType::TokenUsed,
            AuditEventType::TokenUsed
        ],
        "bob's held revoke shows too, newest first"
    );

    // Sequenced: each once, sealed (a stale stream's finished run unlists it; a listed stream
    // with nothing pending shows nothing more).
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let done =
        app::sequence_named(app.sequencer().as_ref(), vec!["alice".to_owned()], &["alice".to_owned()], hold, until)
            .await;
    assert!(done.failed.is_empty() && done.unfinished.is_empty() && done.listing.is_none());
    settle(&app).await;
    let log = all_pages(&app, by_agent, 2).await;
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 3, 2], "by actor: the uses, sealed, once");
    let log = all_pages(&app, since, 2).await;
    assert!(log.iter().all(|e| e.seq > 0), "by time: nothing pending");
    assert_eq!(log.len(), 6, "three uses, two grants, bob's revoke, and nothing twice");
}

/// The stream-driven entry point (the `sequencer` function's): a run over the streams named
/// touches no other stream, and `sequence_named` appends a named stream whose last event is a
/// held consent change in one call, running it again once the hold is over (nothing else
/// would trigger it), while a stream it cannot read is reported and leaves the others' alone.
async fn the_streams_named_are_sequenced_and_no_other(app: TestApp) {
    let alice = grant(&app, "alice").await;
    app.intake().record(app.decided_use(&alice), deadline(&app)).await.unwrap();
    grant(&app, "bob").await;
    let named = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // A grant is a consent change, held from the run's first sight of it.
    let first = app.sequencer().sequence_streams(&named(&["bob"]), 100).await.unwrap();
    assert_eq!((first.sequenced, first.pending), (0, 1), "bob's grant held");
    assert_eq!(app.sequencer().pending("alice", 10).await.unwrap().len(), 2, "alice was not named");

    let hold = app.sequencer_hold();
    let until = std::time::Instant::now() + 20 * hold;
    let done = app::sequence_named(app.sequencer().as_ref(), named(&["alice", "alice"]), &[], hold, until).await;
    assert_eq!((done.sequenced, done.failed.len(), done.unfinished.len()), (2, 0, 0), "{done:?}");
    assert!(done.rounds >= 2, "alice's grant held by the first round, released by a later one: {done:?}");
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used"]);
    assert!(chain(&app, "bob").await.is_empty(), "bob was not named");
    assert_eq!(app.sequencer().pending("bob", 10).await.unwrap().len(), 1);

    let done = app::sequence_named(app.sequencer().as_ref(), named(&["bob", "alice"]), &[], hold, until).await;
    assert_eq!((done.sequenced, done.failed.len(), done.unfinished.len()), (1, 0, 0), "{done:?}");
    assert_eq!(kinds(&chain(&app, "bob").await), ["consent.granted"]);
    // Named again (a redelivered trigger): nothing to do.
    let again = app::sequence_named(app.sequencer().as_ref(), named(&["alice", "bob"]), &[], hold, until).await;
    assert_eq!((again.sequenced, again.rounds), (0, 1), "{again:?}");
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "token.used"]);

    // Too little time for a held change: the stream is unfinished, its events still pending.
    grant(&app, "carol").await;
    let short =
        app::sequence_named(app.sequencer().as_ref(), named(&["carol"]), &[], hold, std::time::Instant::now()).await;
    assert_eq!((short.sequenced, short.unfinished.clone()), (0, named(&["carol"])), "{short:?}");
    assert_eq!(app.sequencer().pending("carol", 10).await.unwrap().len(), 1);
}

/// How many uses of one busy user are pending at once in the batch tests.
const BUSY: usize = 250;

/// One busy user's `BUSY` uses, pending at once behind their grant (already on the chain),
/// are appended by one run, each once, in a chain that verifies; a run again (a redelivered
/// batch) and a repeated put of a use already appended change nothing. With `proxy` (on
/// DynamoDB): the run appends them in `ceil(BUSY / 49)` bundles, each with its index item and
/// a move of the head, no transaction and nothing written to the intake, and the repeated run
/// only reads.
async fn busy_user(app: &TestApp, proxy: Option<&e2e::aws_proxy::AwsProxy>) {
    use futures::StreamExt;
    let consent = grant(app, "alice").await;
    settle(app).await;
    let uses: Vec<_> = (0..BUSY).map(|_| app.decided_use(&consent)).collect();
    futures::stream::iter(uses.clone())
        .for_each_concurrent(8, |u| async move {
            app.intake().record(u, Deadline::after(Duration::from_secs(30))).await.unwrap()
        })
        .await;
    let alice = ["alice".to_owned()];
    if let Some(proxy) = proxy {
        proxy.clear();
    }
    let run = app.sequencer().sequence_streams(&alice, 1_000).await.unwrap();
    assert_eq!((run.sequenced, run.pending), (BUSY, 0));
    let count = |calls: &[String], name: &str| calls.iter().filter(|c| *c == name).count();
    if let Some(proxy) = proxy {
        let calls = proxy.calls();
        let per = adapter_aws::SEQUENCER_EVENTS_PER_HEAD_MOVE;
        assert_eq!(per, 49);
        assert_eq!(count(&calls, "TransactWriteItems"), 0, "{calls:?}");
        // A bundle's put per 49 uses, and its index item (one actor, within a minute).
        assert_eq!(count(&calls, "PutItem"), 2 * BUSY.div_ceil(per), "{calls:?}");
        assert_eq!(count(&calls, "UpdateItem"), BUSY.div_ceil(per), "{calls:?}");
    }
    let appended = app.services().chain_archive.stream_events("alice", 0, 10_000).await.unwrap();
    assert_eq!(kinds(&chain(app, "alice").await)[1..], vec!["token.used"; BUSY][..]);
    let ids: HashSet<_> = appended.iter().skip(1).map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, uses.iter().map(|u| u.event_id.clone()).collect(), "every use once");

    if let Some(proxy) = proxy {
        proxy.clear();
    }
    let again = app.sequencer().sequence_streams(&alice, 1_000).await.unwrap();
    assert_eq!((again.sequenced, again.pending), (0, 0), "a redelivered batch changes nothing");
    if let Some(proxy) = proxy {
        assert_eq!(proxy.calls(), ["GetItem", "Query", "Query"], "a redelivered batch only reads");
    }
    app.intake().record(uses[BUSY / 2].clone(), deadline(app)).await.unwrap();
    assert!(app.sequencer().pending("alice", 10).await.unwrap().is_empty(), "a repeated put is already sequenced");
    app.sequencer().sequence_streams(&alice, 1_000).await.unwrap();
    assert_eq!(app.services().chain_archive.stream_events("alice", 0, 10_000).await.unwrap(), appended);
}

async fn a_busy_users_pending_events_are_appended_by_one_run_once(app: TestApp) {
    busy_user(&app, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_users_pending_events_take_a_bundle_an_index_item_and_a_head_move_per_49_on_dynamodb() {
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = e2e::aws_proxy::AwsProxy::start(&upstream).await;
    let app = TestApp::sequenced_on_aws(&proxy.endpoint, TestApp::AWS_SEQUENCER_HOLD).await;
    busy_user(&app, Some(&proxy)).await;
}

e2e::on_both_backends!(
    sequenced;
    a_busy_users_pending_events_are_appended_by_one_run_once,
    the_streams_named_are_sequenced_and_no_other,
    a_use_is_pending_until_sequenced_then_on_its_chain_once,
    a_use_decided_before_a_revoke_precedes_it_even_when_it_lands_after,
    a_use_decided_before_a_revoke_precedes_it_whatever_the_runs_limit,
    a_use_behind_a_held_change_still_precedes_the_earlier_change_it_belongs_before,
    a_use_past_its_deadline_is_refused_and_leaves_nothing,
    a_use_decided_a_hold_ago_is_refused_whatever_its_budget,
    recording_an_event_again_changes_nothing,
    racing_writers_and_sequencers_append_every_event_once,
    the_access_log_shows_pending_events_first_then_the_chain,
    a_stalled_streams_pending_events_show_in_the_auditors_queries_by_actor_and_time,
);

/// The list of stalled streams costs a healthy run nothing, and follows the stalls: a run
/// over fresh records writes nothing to it; a stale stream is listed before its run, a run
/// that does not finish keeps it listed, and a run that leaves it nothing pending unlists it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stalled_list_is_untouched_by_a_healthy_run_and_follows_a_stall_on_dynamodb() {
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = e2e::aws_proxy::AwsProxy::start(&upstream).await;
    let app = TestApp::sequenced_on_aws(&proxy.endpoint, TestApp::AWS_SEQUENCER_HOLD).await;
    let consent = grant(&app, "alice").await;
    grant(&app, "bob").await;
    settle(&app).await;
    let hold = app.sequencer_hold();
    let later = || std::time::Instant::now() + Duration::from_secs(30);

    app.intake().record(app.decided_use(&consent), deadline(&app)).await.unwrap();
    proxy.clear();
    let done = app::sequence_named(app.sequencer().as_ref(), vec!["alice".to_owned()], &[], hold, later()).await;
    assert_eq!((done.sequenced, done.failed.len(), done.listing.is_none()), (1, 0, true));
    let stats = proxy.stats();
    assert!(!stats.contains_key("DeleteItem"), "a healthy run unlists nothing: {stats:?}");
    assert_eq!(stats.get("PutItem").map(|s| s.calls), Some(1), "one put, the event's: {stats:?}");
    assert!(app.stalled_list().await.is_empty());

    // bob's revoke is held; his records came late (stale), and the run's time is up.
    app::revoke_consent(app.services(), &user("bob")).await.unwrap();
    let bob = vec!["bob".to_owned()];
    let cut = app::sequence_named(app.sequencer().as_ref(), bob.clone(), &bob, hold, std::time::Instant::now()).await;
    assert_eq!(cut.unfinished, bob);
    assert_eq!(app.stalled_list().await, bob, "listed before the run, and kept: it did not finish");
    let done = app::sequence_named(app.sequencer().as_ref(), bob.clone(), &bob, hold, later()).await;
    assert_eq!((done.sequenced, done.unfinished.len(), done.failed.len()), (1, 0, 0));
    assert!(app.stalled_list().await.is_empty(), "unlisted once nothing is pending");
    assert_eq!(kinds(&chain(&app, "bob").await), ["consent.granted", "consent.revoked"]);
}

/// A use whose put lands after its consent's end is on the chain (on DynamoDB: a put still in
/// flight when its client gave up at the deadline, so the app refused the use) is appended as
/// what the app answered, a late refusal, never as a use after the end. (The embedded store
/// cannot land a use late: its writer checks the deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_use_landing_after_its_consents_end_is_appended_as_a_late_refusal_on_dynamodb() {
    let app = TestApp::sequenced(e2e::Backend::Aws).await;
    let consent = grant(&app, "alice").await;
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    settle(&app).await;
    // The late landing: recorded now, decided (as far as the store can tell) within its hold.
    app.intake().record(app.decided_use(&consent), deadline(&app)).await.unwrap();
    settle(&app).await;
    assert_eq!(kinds(&chain(&app, "alice").await), ["consent.granted", "consent.revoked", "token.rejected"]);
    let events = app.services().chain_archive.stream_events("alice", 0, 10).await.unwrap();
    assert_eq!(events[2].detail.as_deref(), Some("late GET /app/whoami"));
    assert_eq!(events[2].consent_id.as_ref(), Some(&consent.consent_id));
}

/// While a deploy switches the audit path, functions of both releases run side by side: old
/// ones append directly (the event and its chain head in one transaction: the old
/// authorizer's use under its consent, or any other append) while new ones record into the
/// intake and the sequencer appends. Whichever takes a seq first, the other moves on from it:
/// one chain comes out, every event on it once, gapless and verified.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_appends_racing_the_sequencer_keep_one_chain_on_dynamodb() {
    use shared::ports::{AuditAppender, TokenLedger};
    use std::sync::atomic::{AtomicBool, Ordering};
    const EACH: usize = 12;
    let app = Arc::new(TestApp::sequenced(e2e::Backend::Aws).await);
    let consent = grant(&app, "alice").await;
    settle(&app).await;
    let old = Arc::new(app.direct_store());
    let (mut direct, mut recorded, mut ids) = (Vec::new(), Vec::new(), HashSet::new());
    for i in 0..EACH {
        let event = app.decided_use(&consent);
        ids.insert(event.event_id.clone());
        let (old, live, now) = (old.clone(), consent.clone(), app.services().clock.now());
        direct.push(tokio::spawn(async move {
            let id = event.event_id.clone();
            match i % 2 {
                0 => old.record_under_consent(&live, now, event).await.unwrap(),
                _ => old.append(event).await.unwrap(),
            };
            id
        }));
        let event = app.decided_use(&consent);
        ids.insert(event.event_id.clone());
        let app = app.clone();
        recorded.push(tokio::spawn(async move {
            let id = event.event_id.clone();
            match app.intake().record(event, deadline(&app)).await {
                Ok(()) => Some(id),
                // moto serializes every call: a put may outlast its deadline (and still land).
                Err(StoreError::Unavailable(_)) => None,
                Err(e) => panic!("{e}"),
            }
        }));
    }
    let writing = Arc::new(AtomicBool::new(true));
    let sequencer = {
        let (app, writing) = (app.clone(), writing.clone());
        tokio::spawn(async move {
            while writing.load(Ordering::Relaxed) {
                match app.sequencer().sequence(5).await {
                    Ok(_) | Err(StoreError::Unavailable(_)) => {}
                    Err(e) => panic!("the sequencer met the direct appends: {e}"),
                }
            }
        })
    };
    let mut accepted = HashSet::new();
    for w in direct {
        accepted.insert(w.await.unwrap());
    }
    for w in recorded {
        accepted.extend(w.await.unwrap());
    }
    writing.store(false, Ordering::Relaxed);
    sequencer.await.unwrap();
    settle(&app).await;
    let events = app.services().chain_archive.stream_events("alice", 0, 10_000).await.unwrap();
    let kinds_seen = chain(&app, "alice").await;
    assert_eq!(kinds_seen[0].0, "consent.granted");
    let mut seen = HashSet::new();
    for e in events.iter().filter(|e| e.event_type == AuditEventType::TokenUsed) {
        assert!(seen.insert(e.event_id.clone()), "{} appended twice", e.event_id);
    }
    assert_eq!(events.len(), 1 + seen.len(), "the grant, then uses only");
    assert!(accepted.is_subset(&seen), "every accepted use landed");
    assert!(seen.is_subset(&ids), "nothing else landed");
    assert!(accepted.len() >= EACH + EACH / 2, "the direct appends and most puts were accepted: {}", accepted.len());
}

/// DynamoDB's size of an item as it bills it (names and values; a number about half its
/// digits plus one, a list 3 bytes plus 1 and its size per element).
fn billed_bytes(item: &std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    fn value(v: &V) -> usize {
        match v {
            V::S(s) => s.len(),
            V::N(n) => n.len().div_ceil(2) + 1,
            V::B(b) => b.as_ref().len(),
            V::L(l) => 3 + l.iter().map(|v| 1 + value(v)).sum::<usize>(),
            V::M(m) => 3 + m.iter().map(|(k, v)| 1 + k.len() + value(v)).sum::<usize>(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

/// `stream`'s `ChainHeads` item, read from the test server.
async fn head_item(
    app: &TestApp,
    stream: &str,
) -> std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue> {
    let (dynamodb, _) = e2e::aws_clients().await;
    let out = dynamodb
        .get_item()
        .table_name(&app.tables().heads)
        .key("stream", aws_sdk_dynamodb::types::AttributeValue::S(stream.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    out.item.expect("a head")
}

/// What a use costs the sequencer in write units as DynamoDB bills them, counted at the test
/// proxy (which bills an update 1 unit, not knowing the item's size: a head past 1 KB is
/// billed here by its size at the end of the run, for every move of the run, an upper bound).
/// Each use a run of its own (many users, a use now and then each): its `Audit` item and its
/// two index entries (3) and the head (1), where a transaction billed 8 (the item, its mark
/// and the head twice each, the index entries once). One busy user's `BUSY` uses in one run:
/// per 49, a bundle holding them (about 3 KB, 3 units), an index item listing them (about
/// 4 KB: 4 units in the table and 4 in each index) and a head move (about 4 KB): 0.4 a use,
/// where an item per use made it 1.3, its own index entries 3.1, and transactions of 49 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequenced_use_costs_4_write_units_as_a_run_of_its_own_and_under_0_5_in_a_busy_run_on_dynamodb() {
    use futures::StreamExt;
    const SPARSE: usize = 8;
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = e2e::aws_proxy::AwsProxy::start(&upstream).await;
    let app = TestApp::sequenced_on_aws(&proxy.endpoint, TestApp::AWS_SEQUENCER_HOLD).await;
    let users: Vec<String> = (0..SPARSE).map(|i| format!("user{i}")).collect();
    let mut consents = Vec::new();
    for who in users.iter().map(String::as_str).chain(["busy"]) {
        consents.push(grant(&app, who).await);
    }
    settle(&app).await;
    let written = |proxy: &e2e::aws_proxy::AwsProxy| proxy.stats().values().map(|s| s.write_units).sum::<f64>();

    for consent in &consents[..SPARSE] {
        app.intake().record(app.decided_use(consent), deadline(&app)).await.unwrap();
    }
    proxy.clear();
    for who in &users {
        let run = app.sequencer().sequence_streams(std::slice::from_ref(who), 100).await.unwrap();
        assert_eq!((run.sequenced, run.pending), (1, 0), "{who}");
    }
    for who in &users {
        assert!(billed_bytes(&head_item(&app, who).await) <= 1024, "{who}'s head is billed 1 unit a move");
    }
    let sparse = written(&proxy) / SPARSE as f64;
    let calls = proxy.calls();
    let count = |name: &str| calls.iter().filter(|c| *c == name).count();
    let sparse_calls = (count("PutItem"), count("UpdateItem"), count("TransactWriteItems"));

    let busy = consents.last().unwrap();
    let uses: Vec<_> = (0..BUSY).map(|_| app.decided_use(busy)).collect();
    futures::stream::iter(uses)
        .for_each_concurrent(8, |u| async {
            app.intake().record(u, Deadline::after(Duration::from_secs(30))).await.unwrap()
        })
        .await;
    proxy.clear();
    let run = app.sequencer().sequence_streams(&["busy".to_owned()], 1_000).await.unwrap();
    assert_eq!((run.sequenced, run.pending), (BUSY, 0));
    let moves = proxy.calls().iter().filter(|c| *c == "UpdateItem").count();
    let head = billed_bytes(&head_item(&app, "busy").await);
    let busy_units = (written(&proxy) + (moves * (head.div_ceil(1024) - 1)) as f64) / BUSY as f64;
    eprintln!(
        "write units a use: {sparse:.2} as a run of its own, {busy_units:.2} in a run of {BUSY} \
         ({moves} head moves, the head {head} bytes at the end)"
    );
    assert_eq!(sparse_calls, (SPARSE, SPARSE, 0), "a put and a head move a run: {calls:?}");
    assert!(sparse <= 4.0, "{sparse} write units a use as a run of its own");
    assert!(busy_units <= 0.5, "{busy_units} write units a use in a busy run");
}

/// A stack the previous release sequenced upgrades in place: its intake items marked (`seq`),
/// its heads listing nothing (`floor_at` only), and here one run of an earlier release that
/// put and marked two events and crashed before moving the head past them. This release
/// shows only what is really pending, adopts the two without doubling them, appends the
/// rest once, and leaves `floor_at` above every event it appended, so that the previous
/// release, rolled back onto the drained stack, would find nothing pending (its read:
/// unmarked intake items from `floor_at` on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_the_previous_release_sequenced_upgrades_in_place_on_dynamodb() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    let app = TestApp::sequenced(e2e::Backend::Aws).await;
    let consent = grant(&app, "alice").await;
    settle(&app).await;
    // One at a time: the previous releases stored an item per event (no bundles).
    let mut recorded = Vec::new();
    for _ in 0..3 {
        recorded.extend(record_uses(&app, &consent, 1).await);
        settle(&app).await;
    }
    let before = app.services().chain_archive.stream_events("alice", 0, 100).await.unwrap();
    assert_eq!(before.len(), 4);

    // What the previous releases left: every appended item marked, the head without a list,
    // two events behind the chain.
    let (dynamodb, _) = e2e::aws_clients().await;
    let tables = app.tables().clone();
    let items = dynamodb
        .query()
        .table_name(&tables.intake)
        .key_condition_expression("#s = :s")
        .expression_attribute_names("#s", "stream")
        .expression_attribute_values(":s", V::S("alice".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(items.items().len(), 4, "every intake item stays after its event is appended");
    for item in items.items() {
        let body: AuditEvent = serde_json::from_str(item["body"].as_s().unwrap()).unwrap();
        let seq = before.iter().find(|e| e.event_id == body.event_id).unwrap().seq;
        assert!(item.contains_key("expires_at"), "set at the put");
        dynamodb
            .update_item()
            .table_name(&tables.intake)
            .key("stream", item["stream"].clone())
            .key("order", item["order"].clone())
            .update_expression("SET #q = :q")
            .expression_attribute_names("#q", "seq")
            .expression_attribute_values(":q", V::N(seq.to_string()))
            .send()
            .await
            .unwrap();
    }
    let behind = &before[1];
    dynamodb
        .update_item()
        .table_name(&tables.heads)
        .key("stream", V::S("alice".into()))
        .update_expression("SET #q = :q, #h = :h, floor_at = :f REMOVE appended, appended_from")
        .expression_attribute_names("#q", "seq")
        .expression_attribute_names("#h", "hash")
        .expression_attribute_values(":q", V::N(behind.seq.to_string()))
        .expression_attribute_values(":h", V::S(behind.hash.clone()))
        .expression_attribute_values(":f", V::N((before[3].at.unix() - 5).to_string()))
        .send()
        .await
        .unwrap();

    assert!(app.sequencer().pending("alice", 10).await.unwrap().is_empty(), "marked items are not pending");
    let later: Vec<_> = record_uses(&app, &consent, 2).await.into_iter().map(|e| e.event_id).collect();
    let pending: Vec<_> = app.sequencer().pending("alice", 10).await.unwrap().into_iter().map(|e| e.event_id).collect();
    assert_eq!(pending, later, "only the unmarked items are pending");
    let by_alice = AuditFilter { user_id: Some(user("alice")), ..Default::default() };
    let log = all_pages(&app, by_alice, 10).await;
    assert_eq!(log.iter().filter(|e| e.seq == 0).count(), 2, "the access log shows the two pending only");

    let run = app.sequencer().sequence_streams(&["alice".to_owned()], 100).await.unwrap();
    assert_eq!((run.sequenced, run.pending), (2, 0), "the two events behind the head adopted, the two new appended");
    let after = app.services().chain_archive.stream_events("alice", 0, 100).await.unwrap();
    assert_eq!(after[..4], before[..], "the chain before, unchanged");
    assert_eq!(after[4..].iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(), later);
    assert_eq!(
        kinds(&chain(&app, "alice").await),
        ["consent.granted", "token.used", "token.used", "token.used", "token.used", "token.used"]
    );
    // A retried put of an event already on the chain, and a redelivered batch: nothing.
    app.intake().record(recorded[2].clone(), deadline(&app)).await.unwrap();
    let again = app.sequencer().sequence_streams(&["alice".to_owned()], 100).await.unwrap();
    assert_eq!((again.sequenced, again.pending), (0, 0));
    assert_eq!(app.services().chain_archive.stream_events("alice", 0, 100).await.unwrap(), after);

    // The previous release's pending read on this head: unmarked items from `floor_at` on.
    let head = head_item(&app, "alice").await;
    let floor: i64 = head["floor_at"].as_n().unwrap().parse().unwrap();
    assert!(after.iter().all(|e| e.at.unix() < floor), "floor_at is past every event appended");
    let unmarked_above = dynamodb
        .query()
        .table_name(&tables.intake)
        .key_condition_expression("#s = :s AND #o >= :lo")
        .filter_expression("attribute_not_exists(#q)")
        .expression_attribute_names("#s", "stream")
        .expression_attribute_names("#o", "order")
        .expression_attribute_names("#q", "seq")
        .expression_attribute_values(":s", V::S("alice".into()))
        .expression_attribute_values(":lo", V::S(format!("{:016}", floor * 1_000_000)))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert_eq!(unmarked_above.items().len(), 0, "the previous release, rolled back, would find nothing pending");
}

/// The head lists only what is appended in its floor window, and its floor never goes down:
/// a use landing late (decided seconds before the newest appended) does not lower it, which
/// would leave an appended item between the two floors unlisted, and so pending again. The
/// head each run moves is marked moved, for the next checkpoint to seal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_lists_the_floor_window_only_and_a_late_use_never_lowers_its_floor_on_dynamodb() {
    let app = TestApp::sequenced(e2e::Backend::Aws).await;
    let consent = grant(&app, "alice").await;
    settle(&app).await;
    let alice = ["alice".to_owned()];
    let listed = async |app: &TestApp| {
        let head = head_item(app, "alice").await;
        let floor: i64 = head["appended_from"].as_n().unwrap().parse().unwrap();
        let list = head.get("appended").map_or(0, |b| b.as_b().unwrap().as_ref().len());
        assert_eq!(list % adapter_aws::LISTED_BYTES, 0);
        (floor - e2e::T0, list / adapter_aws::LISTED_BYTES)
    };
    let use_at = async |offset: i64| {
        app.clock.set(shared::domain::Timestamp::from_unix(e2e::T0 + offset));
        let use_ = app.decided_use(&consent);
        app.intake().record(use_.clone(), deadline(&app)).await.unwrap();
        use_.event_id
    };

    let c = use_at(93).await;
    let a = use_at(100).await;
    assert_eq!(app.sequencer().sequence_streams(&alice, 100).await.unwrap().sequenced, 2);
    assert_eq!(listed(&app).await, (95, 1), "five seconds below the newest; only the use at +100 above it");
    // Decided at +97, landing now: appended, the floor kept (not lowered to +92, below which
    // the use at +93 is appended and not listed).
    let b = use_at(97).await;
    assert_eq!(app.sequencer().sequence_streams(&alice, 100).await.unwrap().sequenced, 1);
    assert_eq!(listed(&app).await, (95, 2));
    assert!(app.sequencer().pending("alice", 10).await.unwrap().is_empty(), "nothing appended is pending");
    let again = app.sequencer().sequence_streams(&alice, 100).await.unwrap();
    assert_eq!((again.sequenced, again.pending), (0, 0));

    // Later on, the window moves: the head lists the new use only. (Sealed by a checkpoint
    // meanwhile: its moved mark removed, as the checkpoint removes it.)
    let (dynamodb, _) = e2e::aws_clients().await;
    dynamodb
        .update_item()
        .table_name(&app.tables().heads)
        .key("stream", aws_sdk_dynamodb::types::AttributeValue::S("alice".into()))
        .update_expression("REMOVE moved_shard, moved_at")
        .send()
        .await
        .unwrap();
    let d = use_at(200).await;
    assert_eq!(app.sequencer().sequence_streams(&alice, 100).await.unwrap().sequenced, 1);
    assert_eq!(listed(&app).await, (195, 1));
    let head = head_item(&app, "alice").await;
    assert!(head.contains_key("moved_shard") && head.contains_key("moved_at"), "marked moved, for the checkpoint");
    let events = app.services().chain_archive.stream_events("alice", 0, 100).await.unwrap();
    assert_eq!(events.iter().skip(1).map(|e| e.event_id.clone()).collect::<Vec<_>>(), [c, a, b, d]);
    assert_eq!(kinds(&chain(&app, "alice").await).len(), 5, "the grant and four uses, once each");
}
