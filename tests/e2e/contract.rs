//! One contract suite, run against every backend: the embedded store and local key, and
//! DynamoDB and KMS on a real API server on loopback (moto, started by `scripts/test`). Each
//! case is written once; `e2e::on_both_backends!` at the bottom runs it on both.

use std::collections::HashMap;
use std::sync::Arc;

use e2e::{T0, TestApp};
use shared::app::{self, ApiError};
use shared::domain::{
    Actor, AgentId, AuditEvent, AuditEventType, AuditFilter, Consent, ConsentDuration, Note, Policy, Reason, Role,
    Scope, SignIn, Timestamp, UserId,
};
use shared::ports::{Clock, StoreError};

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn agent(id: &str) -> AgentId {
    AgentId::parse(id).unwrap()
}

fn reason() -> Reason {
    Reason::parse("ticket 4411: billing page broken").unwrap()
}

fn minutes(n: i64) -> ConsentDuration {
    ConsentDuration::parse(n * 60, &Policy::default()).unwrap()
}

async fn grant(app: &TestApp, who: &str, duration: ConsentDuration) -> Consent {
    app::grant_consent(app.services(), &user(who), duration, Scope::Read, Note::parse("contract").unwrap())
        .await
        .unwrap()
}

async fn all_events(app: &TestApp, filter: AuditFilter, limit: usize) -> Vec<AuditEvent> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..200 {
        let page = app::query_audit(app.services(), filter.clone(), limit, cursor.as_deref()).await.unwrap();
        assert!(page.events.len() <= limit);
        out.extend(page.events);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

async fn grant_replace_revoke(app: TestApp) {
    let first = grant(&app, "alice", minutes(60)).await;
    assert_eq!(app.consent("alice").await, Some(first.clone()));
    let second = grant(&app, "alice", minutes(30)).await;
    assert_ne!(first.consent_id, second.consent_id);
    assert_eq!(app.consent("alice").await, Some(second.clone()), "a new grant replaces the old");

    // Revoking the replaced consent is a conflict and changes nothing.
    let stale = app
        .services()
        .consent_writer
        .revoke(
            &first,
            AuditEvent::new(AuditEventType::ConsentRevoked, app.clock.now(), Some(user("alice")), Actor::system()),
        )
        .await;
    assert!(matches!(stale, Err(StoreError::ConsentChanged)), "{stale:?}");
    assert_eq!(app.consent("alice").await, Some(second));

    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    assert_eq!(app.consent("alice").await, None);
    assert!(matches!(app::revoke_consent(app.services(), &user("alice")).await, Err(ApiError::NotFound(_))));
    let types: Vec<_> = all_events(&app, AuditFilter::default(), 10).await.iter().map(|e| e.event_type).collect();
    assert_eq!(types, [AuditEventType::ConsentRevoked, AuditEventType::ConsentGranted, AuditEventType::ConsentGranted]);
}

async fn mint_with_and_without_consent_and_the_jwk_set_verifies_it(app: TestApp) {
    let denied = app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await;
    assert!(matches!(denied, Err(ApiError::NoConsent)), "{denied:?}");

    let consent = grant(&app, "alice", minutes(60)).await;
    let minted =
        app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap();
    assert_eq!(minted.consent_id, consent.consent_id);
    // The JWK Set (from KMS GetPublicKey on AWS) verifies the signature (from KMS Sign).
    let claims =
        shared::token::verify(&minted.access_token, &app.services().keys, &app.services().policy, app.clock.now())
            .unwrap();
    assert_eq!((claims.sub.as_str(), claims.act.sub.as_str()), ("alice", "agent-7"));
    assert_eq!(claims.cid, consent.consent_id);
    // Every signature differs (ECDSA is randomised) and every one verifies.
    let again =
        app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap();
    assert_ne!(again.access_token, minted.access_token);
    assert!(
        shared::token::verify(&again.access_token, &app.services().keys, &app.services().policy, app.clock.now())
            .is_ok()
    );

    let events = all_events(&app, AuditFilter { user_id: Some(user("alice")), ..Default::default() }, 10).await;
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["token.issued", "token.issued", "consent.granted", "token.denied"]);
    assert_eq!(events[1].jti.as_ref(), Some(&minted.jti));
    assert_eq!(events[3].detail.as_deref(), Some("no-consent"));
}

async fn a_consent_expires_at_its_boundary_second(app: TestApp) {
    let consent = grant(&app, "alice", minutes(15)).await;
    app.clock.set(consent.expires_at.plus_seconds(-1));
    assert_eq!(app.consent("alice").await.as_ref(), Some(&consent), "live one second before");
    let minted =
        app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap();
    assert_eq!(minted.expires_at, consent.expires_at, "a token never outlives its consent");

    app.clock.set(consent.expires_at);
    assert_eq!(app.consent("alice").await, None, "gone at the expiry second, whatever storage still holds");
    let ledger = app
        .services()
        .token_ledger
        .record_under_consent(
            &consent,
            app.clock.now(),
            AuditEvent::new(AuditEventType::TokenIssued, app.clock.now(), Some(user("alice")), Actor::system()),
        )
        .await;
    assert!(matches!(ledger, Err(StoreError::ConsentChanged)), "the commit condition checks expiry too: {ledger:?}");
    assert!(matches!(
        app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await,
        Err(ApiError::NoConsent)
    ));
}

async fn a_failed_audit_write_leaves_the_consent_as_it_was(mut app: TestApp) {
    let before = grant(&app, "alice", minutes(60)).await;
    let events_before = all_events(&app, AuditFilter::default(), 50).await;
    app.break_audit_writes().await;

    let regrant = app::grant_consent(app.services(), &user("alice"), minutes(30), Scope::Full, Note::default()).await;
    assert!(matches!(regrant, Err(ApiError::Unavailable(_))), "{regrant:?}");
    let revoke = app::revoke_consent(app.services(), &user("alice")).await;
    assert!(matches!(revoke, Err(ApiError::Unavailable(_))), "{revoke:?}");
    let mint = app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await;
    assert!(matches!(mint, Err(ApiError::Unavailable(_))), "no token without its token.issued event: {mint:?}");
    let fresh = app::grant_consent(app.services(), &user("bob"), minutes(60), Scope::Read, Note::default()).await;
    assert!(matches!(fresh, Err(ApiError::Unavailable(_))), "{fresh:?}");

    app.mend_audit_writes().await;
    assert_eq!(app.consent("alice").await, Some(before), "the consent is exactly as before");
    assert_eq!(app.consent("bob").await.map(|c| c.user_id), None, "a grant without its event never happened");
    assert_eq!(all_events(&app, AuditFilter::default(), 50).await, events_before);
}

async fn a_write_is_read_back_at_once(app: TestApp) {
    for i in 0..5 {
        let consent = grant(&app, "alice", minutes(15 + i)).await;
        assert_eq!(app.consent("alice").await, Some(consent.clone()), "consistent read after write");
        app.services()
            .token_ledger
            .record_under_consent(
                &consent,
                app.clock.now(),
                AuditEvent::new(AuditEventType::TokenIssued, app.clock.now(), Some(user("alice")), Actor::system()),
            )
            .await
            .unwrap();
    }
}

/// 50 writers at once on one user's stream (an agent's parallel requests): none loses, forks
/// or skips a number. The time is printed (`--nocapture`) as the contention measurement.
async fn concurrent_appends_to_one_user_are_gapless(app: TestApp) {
    const WRITERS: u64 = 50;
    let services = Arc::new(app.services().clone());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..WRITERS as i64 {
        let services = services.clone();
        tasks.push(tokio::spawn(async move {
            let e = AuditEvent::new(
                AuditEventType::TokenUsed,
                Timestamp::from_unix(T0 + i),
                Some(UserId::parse("alice").unwrap()),
                Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
            );
            services.audit_appender.append(e).await.unwrap().seq
        }));
    }
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    seqs.sort();
    assert_eq!(seqs, (1..=WRITERS).collect::<Vec<u64>>(), "every writer got its own next number");
    // The same number one after another, for the ratio.
    let started = std::time::Instant::now();
    for i in 0..WRITERS as i64 {
        let e = AuditEvent::new(
            AuditEventType::TokenUsed,
            Timestamp::from_unix(T0 + i),
            Some(UserId::parse("bob").unwrap()),
            Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
        );
        services.audit_appender.append(e).await.unwrap();
    }
    let sequential = started.elapsed();
    eprintln!(
        "{:?}: {WRITERS} concurrent appends to one stream in {elapsed:?}; one after another {sequential:?} ({:.1}x)",
        app.backend,
        elapsed.as_secs_f64() / sequential.as_secs_f64()
    );
    let chain = stream(&app, Some("alice")).await;
    support_access_verify::chain::verify_chains(&chain).unwrap();
}

/// Checkpoints seal exactly the heads that moved, link to each other, never run empty, and
/// racing checkpointers cannot both land; exports of one user and of everyone verify.
async fn checkpoints_seal_moved_heads_and_every_export_verifies(app: TestApp) {
    use support_access_verify::checkpoint::link_of;
    grant(&app, "alice", minutes(60)).await;
    grant(&app, "bob", minutes(60)).await;
    app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap();
    let e = AuditEvent::new(AuditEventType::TokenRejected, app.clock.now(), None, Actor::unknown());
    app.services().audit_appender.append(e).await.unwrap();

    let first = app::checkpoint_now(app.services()).await.unwrap().unwrap();
    assert_eq!((first.claims.seq, first.claims.size), (1, 3), "alice, bob and the unattributed stream");
    assert!(app::checkpoint_now(app.services()).await.unwrap().is_none(), "nothing moved, nothing sealed");

    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    let services = Arc::new(app.services().clone());
    let racers: Vec<_> = (0..4)
        .map(|_| {
            let services = services.clone();
            tokio::spawn(async move { app::checkpoint_now(&services).await })
        })
        .collect();
    let mut landed = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            Ok(Some(c)) => landed.push(c),
            Ok(None) | Err(app::CheckpointError::Store(shared::ports::StoreError::Conflict(_))) => {}
            Err(e) => panic!("a racing checkpointer failed otherwise: {e}"),
        }
    }
    assert_eq!(landed.len(), 1, "exactly one racer lands checkpoint 2");
    let second = &landed[0];
    assert_eq!((second.claims.seq, second.claims.size), (2, 1));
    assert_eq!(second.claims.prev, link_of(Some(&first.jws)));
    assert_eq!(app.services().chain_archive.latest_checkpoint().await.unwrap().as_ref(), Some(second));

    let strict = support_access_cli::Options::default();
    for who in [Some(user("alice")), Some(user("bob")), None] {
        let scope = who.clone().map_or(app::ExportScope::All, app::ExportScope::User);
        let (text, _) = app.export_pages(&scope).await;
        let report = support_access_cli::verify_export(&text, &app.export_keys(), strict)
            .unwrap_or_else(|e| panic!("{who:?}: {e}"));
        let expected_checkpoints: &[u64] = if who == Some(user("bob")) { &[1] } else { &[1, 2] };
        assert_eq!(report.checkpoints, expected_checkpoints, "{who:?}");
    }
}

/// Exports of any size: 10,500 of alice's events (more than the former cap of 10,000, and
/// more bytes than one page holds) and a flood of 12,000 refusals in the unattributed stream
/// export in several pages whose concatenation verifies; each page is whole JSON lines under
/// the byte budget; a user's export names nobody else; a checkpoint made during an export
/// stays out of it (so the pages still verify); the same cursor gives the same page; and an
/// edited cursor, or one of another export, is refused. The export of every stream (22,500
/// events) runs on the embedded backend only: its paging across streams is the same code on
/// both (`checkpoints_seal_moved_heads_and_every_export_verifies` runs it on DynamoDB), and
/// the test server takes minutes to serve that many events.
async fn exports_of_any_size_page_and_verify(mut app: TestApp) {
    use app::ExportScope;
    app.archive_at_test_server_pace().await;
    const ALICE: usize = 10_500;
    const FLOOD: usize = 12_000;
    let support = Actor { sub: agent("agent-7"), role: Role::Support };
    let padding = "x".repeat(300);
    app.seed_chain((0..ALICE).map(|i| {
        AuditEvent::new(AuditEventType::TokenUsed, app.clock.now(), Some(user("alice")), support.clone())
            .with_detail(format!("GET /app/orders/{i}?{padding}"))
    }))
    .await;
    app.seed_chain((0..FLOOD).map(|_| {
        AuditEvent::new(AuditEventType::TokenRejected, app.clock.now(), None, Actor::unknown()).with_detail("malformed")
    }))
    .await;
    grant(&app, "bob", minutes(60)).await;
    app::checkpoint_now(app.services()).await.unwrap().expect("three streams to seal");

    let strict = support_access_cli::Options::default();
    let mut scopes = vec![(ExportScope::Unattributed, FLOOD)];
    if matches!(app.backend, e2e::Backend::Embedded) {
        scopes.push((ExportScope::All, ALICE + FLOOD + 1));
    }
    for (scope, events) in scopes {
        let (text, pages) = app.export_pages(&scope).await;
        assert!(pages >= 2, "{scope:?}: {pages} page(s)");
        let report = support_access_cli::verify_export(&text, &app.export_keys(), strict)
            .unwrap_or_else(|e| panic!("{scope:?}: {e}"));
        assert_eq!((report.events, report.checkpoints.as_slice()), (events, &[1][..]), "{scope:?}");
    }

    // alice's, page by page: whole lines under the budget. A checkpoint made between two
    // pages seals an event past what the first page sent: it stays out of this export, which
    // still verifies (the new event reported unsealed). The same cursor gives the same events.
    let alice = ExportScope::User(user("alice"));
    let first = app::export_page(app.services(), &alice, None).await.unwrap();
    assert!(first.lines.len() <= app::EXPORT_PAGE_BYTES && first.lines.ends_with('\n'));
    assert_eq!(first.lines.lines().count(), first.count);
    let cursor = first.next_cursor.clone().expect("more than one page");
    app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap_err();
    app::checkpoint_now(app.services()).await.unwrap().expect("alice moved");
    let second = app::export_page(app.services(), &alice, Some(&cursor)).await.unwrap();
    let again = app::export_page(app.services(), &alice, Some(&cursor)).await.unwrap();
    // The same lines from the same place; a page may end sooner when the store answered
    // slower (the page time), never elsewhere than at a line's end.
    // (A last page ends with the receipt, signed anew each time: its signature differs.)
    let unsigned = |page: &app::ExportPage| {
        page.lines.lines().filter(|l| !l.contains(r#""type":"receipt""#)).collect::<Vec<_>>().join("\n")
    };
    let (short, long) = if second.count <= again.count { (&second, &again) } else { (&again, &second) };
    assert!(short.count > 0 && unsigned(long).starts_with(&unsigned(short)), "the same cursor, the same events");
    let mut text = first.lines.clone() + &second.lines;
    let mut next = second.next_cursor.clone();
    while let Some(c) = next {
        let page = app::export_page(app.services(), &alice, Some(&c)).await.unwrap();
        text.push_str(&page.lines);
        next = page.next_cursor;
    }
    let lenient = support_access_cli::Options { allow_unsealed: true };
    let report = support_access_cli::verify_export(&text, &app.export_keys(), lenient).unwrap();
    assert_eq!((report.events, report.checkpoints.as_slice()), (ALICE + 1, &[1][..]));
    assert!(!text.contains("\"bob\"") && !text.contains(support_access_verify::chain::UNATTRIBUTED_STREAM));

    // Cursors are sealed to their export.
    let mut edited = cursor.clone().into_bytes();
    edited[5] = if edited[5] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    for (scope, c) in [
        (alice.clone(), edited.as_str()),
        (ExportScope::User(user("bob")), cursor.as_str()),
        (ExportScope::All, cursor.as_str()),
        (ExportScope::Unattributed, cursor.as_str()),
        (alice.clone(), "garbage"),
    ] {
        let refused = app::export_page(app.services(), &scope, Some(c)).await;
        assert!(matches!(refused, Err(ApiError::InvalidRequest(_))), "{scope:?} {c}: {refused:?}");
    }
}

/// An export proves it is whole (SECURITY.md, "What an AWS administrator can still do"): the
/// tail of a user's export cut off with the checkpoint that sealed it, or with that
/// checkpoint's leaves emptied, a checkpoint emptied alone, a file cut short, and in the
/// export of every stream a checkpoint dropped or emptied, are each refused and named. An
/// administrator who deletes a user's last event with the leaf that sealed it leaves the
/// export of every stream a leaf short of what checkpoint 2 signs; the user's own export
/// cannot show it (it holds no other stream's leaves), as SECURITY.md says.
async fn a_cut_tail_a_dropped_or_emptied_checkpoint_and_a_deleted_leaf_are_refused(app: TestApp) {
    use app::ExportScope;
    use serde_json::{Value, json};
    let strict = support_access_cli::Options::default();
    let verify = |text: &str| support_access_cli::verify_export(text, &app.export_keys(), strict);
    let refused = |lines: &[String], cause: &str| {
        let failure = verify(&(lines.join("\n") + "\n")).expect_err(cause).to_string();
        assert!(failure.contains(cause), "expected {cause:?}, got: {failure}");
    };
    let kind = |line: &String| serde_json::from_str::<Value>(line).unwrap()["type"].as_str().unwrap().to_owned();
    let emptied = |line: &String| {
        let mut cp: Value = serde_json::from_str(line).unwrap();
        cp["leaves"] = json!([]);
        cp.to_string()
    };

    grant(&app, "alice", minutes(60)).await;
    app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap();
    app::checkpoint_now(app.services()).await.unwrap().expect("alice #2 to seal");
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    grant(&app, "bob", minutes(60)).await;
    let second = app::checkpoint_now(app.services()).await.unwrap().expect("alice #3 and bob #1 to seal");
    assert_eq!(second.claims.size, 2);

    // alice #1..#3, checkpoints 1 and 2, the receipt.
    let (text, _) = app.export_pages(&ExportScope::User(user("alice"))).await;
    let alice: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(alice.iter().map(kind).collect::<Vec<_>>()[3..], ["checkpoint", "checkpoint", "receipt"]);
    verify(&text).unwrap();
    let pick = |lines: &[String], keep: &[usize]| keep.iter().map(|&i| lines[i].clone()).collect::<Vec<_>>();
    // The tail cut off with the checkpoint that sealed it: checkpoint 1 still seals #2.
    refused(&pick(&alice, &[0, 1, 3, 5]), "events cut off");
    // ... or with that checkpoint kept, emptied of alice's leaf.
    let mut cut = pick(&alice, &[0, 1, 3, 4, 5]);
    cut[3] = emptied(&cut[3]);
    refused(&cut, "events cut off");
    // The checkpoint emptied alone: tampered, not merely "not sealed yet".
    let mut only_emptied = alice.clone();
    only_emptied[4] = emptied(&only_emptied[4]);
    refused(&only_emptied, "not the ones the service sent");
    // The file cut short, anywhere: no receipt.
    refused(&alice[..5], "without a receipt");
    refused(&alice[..2], "without a receipt");

    // The export of every stream holds every checkpoint, each with all its leaves.
    let (text, _) = app.export_pages(&ExportScope::All).await;
    let all: Vec<String> = text.lines().map(str::to_owned).collect();
    verify(&text).unwrap();
    let cp2 = all.iter().rposition(|l| kind(l) == "checkpoint").unwrap();
    let mut dropped = all.clone();
    dropped.remove(cp2);
    refused(&dropped, "checkpoint 2 is missing");
    let mut emptied_all = all.clone();
    emptied_all[cp2] = emptied(&emptied_all[cp2]);
    refused(&emptied_all, "holds 0 of the 2 leaves");

    // An administrator deletes alice's last event and the leaf of checkpoint 2 that sealed it.
    app.delete_last_event_and_its_leaf("alice", &second).await;
    let (text, _) = app.export_pages(&ExportScope::All).await;
    refused(&text.lines().map(str::to_owned).collect::<Vec<_>>(), "holds 1 of the 2 leaves");
    // alice's own export holds no other stream's leaves: it cannot show the deletion.
    let (text, _) = app.export_pages(&ExportScope::User(user("alice"))).await;
    assert_eq!(verify(&text).unwrap().heads["alice"].0, 2);
}

/// One stream's events, oldest first, as the API serves them (JSON).
async fn stream(app: &TestApp, who: Option<&str>) -> Vec<serde_json::Value> {
    let filter = AuditFilter { user_id: who.map(user), ..Default::default() };
    let mut events = all_events(app, filter, 100).await;
    events.retain(|e| e.user_id.as_ref().map(|u| u.as_str()) == who);
    events.sort_by_key(|e| e.seq);
    events.iter().map(|e| serde_json::to_value(e).unwrap()).collect()
}

async fn every_stream_is_an_intact_hash_chain(app: TestApp) {
    use support_access_verify::chain::{GENESIS, verify_chains};
    grant(&app, "alice", minutes(60)).await;
    app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await.unwrap();
    let _ = app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("bob"), reason()).await;
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    for _ in 0..2 {
        let e = AuditEvent::new(AuditEventType::TokenRejected, app.clock.now(), None, Actor::unknown());
        app.services().audit_appender.append(e).await.unwrap();
    }
    let services = Arc::new(app.services().clone());
    let writers: Vec<_> = (0..12)
        .map(|_| {
            let services = services.clone();
            tokio::spawn(async move {
                let e = AuditEvent::new(
                    AuditEventType::TokenUsed,
                    Timestamp::from_unix(T0),
                    Some(user("carol")),
                    Actor { sub: agent("agent-9"), role: Role::Support },
                );
                services.audit_appender.append(e).await.unwrap()
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    for (who, length) in [(Some("alice"), 3), (Some("bob"), 1), (Some("carol"), 12), (None, 2)] {
        let chain = stream(&app, who).await;
        assert_eq!(chain.len(), length, "{who:?}");
        assert_eq!(chain[0]["prev_hash"], GENESIS);
        let heads = verify_chains(&chain).unwrap_or_else(|e| panic!("{who:?}: {e}"));
        assert_eq!(heads.values().next().unwrap().0, length as u64);
    }
}

/// The reference order: by user, seq descending; otherwise (at, stream, seq) descending.
fn reference(events: &[AuditEvent], filter: &AuditFilter) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = events.iter().filter(|e| filter.matches(e)).cloned().collect();
    let stream = |e: &AuditEvent| e.user_id.as_ref().map_or("~unattributed".to_owned(), |u| u.to_string());
    if filter.user_id.is_some() {
        out.sort_by_key(|e| std::cmp::Reverse(e.seq));
    } else {
        out.sort_by_key(|e| std::cmp::Reverse((e.at, stream(e), e.seq)));
    }
    out
}

/// Every page size reads exactly the reference's answer to `filter` over `written`.
async fn pages_match_the_reference(app: &TestApp, written: &[AuditEvent], filter: AuditFilter) {
    let expected = reference(written, &filter);
    for limit in [1, 2, 7, 100] {
        let got = all_events(app, filter.clone(), limit).await;
        assert_eq!(
            got.iter().map(|e| e.detail.clone()).collect::<Vec<_>>(),
            expected.iter().map(|e| e.detail.clone()).collect::<Vec<_>>(),
            "filter {filter:?}, limit {limit}"
        );
        assert_eq!(got, expected);
    }
}

async fn audit_queries_by_user_actor_type_and_time_page_exactly(app: TestApp) {
    let mut written = Vec::new();
    let users = ["alice", "bob", "carol"];
    let agents = ["agent-7", "agent-9"];
    // 30 events over two months, several in the same second, one unattributed.
    for i in 0..30i64 {
        let at = Timestamp::from_unix(T0 - 40 * 24 * 3600 + (i / 3) * 5 * 24 * 3600);
        let (u, a) = (users[(i % 3) as usize], agents[(i % 2) as usize]);
        let kind =
            [AuditEventType::TokenUsed, AuditEventType::TokenDenied, AuditEventType::TokenIssued][(i % 4 % 3) as usize];
        let e = AuditEvent::new(kind, at, Some(user(u)), Actor { sub: agent(a), role: Role::Support })
            .with_detail(format!("n{i}"));
        written.push(app.services().audit_appender.append(e).await.unwrap());
    }
    let unattributed =
        AuditEvent::new(AuditEventType::TokenRejected, Timestamp::from_unix(T0 - 86400), None, Actor::unknown());
    written.push(app.services().audit_appender.append(unattributed).await.unwrap());

    let day = |d: i64| Timestamp::from_unix(T0 + d * 24 * 3600);
    let filters = [
        AuditFilter::default(),
        AuditFilter { user_id: Some(user("alice")), ..Default::default() },
        AuditFilter { user_id: Some(user("bob")), actor: Some(agent("agent-9")), ..Default::default() },
        AuditFilter { actor: Some(agent("agent-7")), ..Default::default() },
        AuditFilter { actor: Some(agent("agent-7")), from: Some(day(-30)), to: Some(day(-10)), ..Default::default() },
        AuditFilter { event_type: Some(AuditEventType::TokenDenied), ..Default::default() },
        AuditFilter { from: Some(day(-25)), to: Some(day(-5)), ..Default::default() },
        AuditFilter {
            user_id: Some(user("carol")),
            from: Some(day(-20)),
            event_type: Some(AuditEventType::TokenUsed),
            ..Default::default()
        },
        AuditFilter { user_id: Some(user("nobody")), ..Default::default() },
    ];
    for filter in filters {
        pages_match_the_reference(&app, &written, filter).await;
    }
    // Seq is gapless per user and the unattributed stream has its own numbering.
    let mut per_user: HashMap<Option<UserId>, Vec<u64>> = HashMap::new();
    for e in &written {
        per_user.entry(e.user_id.clone()).or_default().push(e.seq);
    }
    for (u, seqs) in per_user {
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{u:?}");
    }
}

/// The same queries over a sequencer's chains on DynamoDB, where a run of two or more events
/// of a stream lists them in index items (per actor, cut at a minute of event times), a run
/// of one keeps its event's own index entries, and two uses or more in a row are one bundle
/// item: every filter and page size answers exactly the reference, each event once, whichever
/// way it is stored and indexed, and an export page may end anywhere in a bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auditors_queries_page_exactly_over_a_sequencers_index_items_on_dynamodb() {
    use aws_sdk_dynamodb::types::AttributeValue as V;
    use shared::ports::Deadline;
    let app = TestApp::sequenced(e2e::Backend::Aws).await;
    let users = ["alice", "bob", "carol"];
    let agents = ["agent-7", "agent-9"];
    let streams: Vec<String> = users
        .iter()
        .map(|u| u.to_string())
        .chain([support_access_verify::chain::UNATTRIBUTED_STREAM.to_owned()])
        .collect();
    let mut n = 0;
    // Ten rounds five days apart; in each, a user has 1 to 4 events 40 s apart (a run of 4
    // spans two minutes: two index items an actor), and the sequencer runs after each round.
    for round in 0..10i64 {
        for (k, u) in users.iter().enumerate() {
            let events = 1 + (round + k as i64) % 4;
            for j in 0..events {
                let at = Timestamp::from_unix(T0 - 40 * 24 * 3600 + round * 5 * 24 * 3600 + j * 40);
                let kind = [AuditEventType::TokenUsed, AuditEventType::TokenDenied, AuditEventType::TokenIssued]
                    [(n % 4 % 3) as usize];
                let e = AuditEvent::new(
                    kind,
                    at,
                    Some(user(u)),
                    Actor { sub: agent(agents[(n % 2) as usize]), role: Role::Support },
                )
                .with_detail(format!("n{n}"));
                n += 1;
                app.intake().record(e, Deadline::after(std::time::Duration::from_secs(5))).await.unwrap();
            }
        }
        if round == 6 {
            let e = AuditEvent::new(
                AuditEventType::TokenRejected,
                Timestamp::from_unix(T0 - 86400),
                None,
                Actor::unknown(),
            )
            .with_detail("unattributed");
            app.intake().record(e, Deadline::after(std::time::Duration::from_secs(5))).await.unwrap();
        }
        let run = app.sequencer().sequence_streams(&streams, 1_000).await.unwrap();
        assert_eq!(run.pending, 0, "round {round}");
    }
    // Seven uses of alice's in a row, by both agents, after the rounds (decided later, as on
    // a live stack): a bundle, which a page of her log, of an agent's events and of an export
    // can each end inside.
    let later = T0 + 6 * 24 * 3600;
    for j in 0..7 {
        let at = Timestamp::from_unix(later + j);
        let actor = Actor { sub: agent(agents[(j % 2) as usize]), role: Role::Support };
        let e = AuditEvent::new(AuditEventType::TokenUsed, at, Some(user("alice")), actor).with_detail(format!("b{j}"));
        n += 1;
        app.intake().record(e, Deadline::after(std::time::Duration::from_secs(5))).await.unwrap();
    }
    assert_eq!(app.sequencer().sequence_streams(&streams, 1_000).await.unwrap().pending, 0);
    let mut written = Vec::new();
    for stream in &streams {
        written.extend(app.services().chain_archive.stream_events(stream, 0, 1_000).await.unwrap());
    }
    assert_eq!(written.len(), n as usize + 1);

    // Both ways of indexing, and bundles, are on the table.
    let (dynamodb, _) = e2e::aws_clients().await;
    let items = dynamodb.scan().table_name(&app.tables().audit).send().await.unwrap();
    let index_items = items.items().iter().filter(|i| i.get("refs").is_some()).count();
    let own_entries = items.items().iter().filter(|i| i.get("event_id").is_some() && i.get("at_key").is_some()).count();
    let listed = items.items().iter().filter(|i| i.get("event_id").is_some() && i.get("at_key").is_none()).count();
    let bundles = items.items().iter().filter(|i| i.get("v").is_some()).count();
    assert!(
        index_items > 0 && own_entries > 0 && listed > 0 && bundles > 0,
        "{index_items} index items, {own_entries}, {listed}, {bundles} bundles"
    );
    // An export reads on from any event, inside a bundle or not, each event once.
    let alice: Vec<_> = written.iter().filter(|e| e.stream() == "alice").cloned().collect();
    for after in 0..alice.len() {
        for limit in [1, 2, 5] {
            let page = app.services().chain_archive.stream_events("alice", after as u64, limit).await.unwrap();
            assert_eq!(page, alice[after..(after + limit).min(alice.len())], "after {after}, limit {limit}");
        }
    }
    assert!(
        items
            .items()
            .iter()
            .filter(|i| i.get("refs").is_some())
            .all(|i| matches!(i.get("stream"), Some(V::S(s)) if s.starts_with("#ix#")))
    );

    let day = |d: i64| Timestamp::from_unix(T0 + d * 24 * 3600);
    let filters = [
        AuditFilter::default(),
        AuditFilter { actor: Some(agent("agent-7")), ..Default::default() },
        AuditFilter {
            actor: Some(agent("agent-9")),
            event_type: Some(AuditEventType::TokenUsed),
            ..Default::default()
        },
        AuditFilter { actor: Some(agent("agent-7")), from: Some(day(-30)), to: Some(day(-10)), ..Default::default() },
        AuditFilter { event_type: Some(AuditEventType::TokenDenied), ..Default::default() },
        AuditFilter { from: Some(day(-25)), to: Some(day(-5)), ..Default::default() },
        // A window that cuts a run's two minutes in half.
        AuditFilter {
            from: Some(Timestamp::from_unix(T0 - 40 * 24 * 3600 + 5 * 24 * 3600 + 50)),
            to: Some(Timestamp::from_unix(T0 - 40 * 24 * 3600 + 5 * 24 * 3600 + 90)),
            ..Default::default()
        },
        AuditFilter { user_id: Some(user("carol")), event_type: Some(AuditEventType::TokenUsed), ..Default::default() },
        AuditFilter { user_id: Some(user("alice")), ..Default::default() },
        AuditFilter { user_id: Some(user("alice")), actor: Some(agent("agent-9")), ..Default::default() },
        AuditFilter { from: Some(day(6)), to: Some(Timestamp::from_unix(later + 4)), ..Default::default() },
    ];
    for filter in filters {
        assert!(!reference(&written, &filter).is_empty(), "{filter:?}");
        pages_match_the_reference(&app, &written, filter).await;
    }
}

#[tokio::test]
async fn when_kms_cannot_sign_mint_answers_unavailable_and_records_no_issue() {
    let mut app = TestApp::on(e2e::Backend::Aws).await;
    grant(&app, "alice", minutes(60)).await;
    app.break_signing_key().await;
    let minted = app::mint_token(app.services(), &agent("agent-7"), &SignIn::default(), &user("alice"), reason()).await;
    assert!(matches!(minted, Err(ApiError::Unavailable(_))), "{minted:?}");
    let events = all_events(&app, AuditFilter::default(), 10).await;
    assert!(events.iter().all(|e| e.event_type != AuditEventType::TokenIssued), "no token.issued without a token");
    let answer = app.mint("alice").await;
    assert_eq!((answer.status, answer.slug()), (503, "unavailable"));
    assert!(!answer.body.to_string().contains("dispatch"), "no SDK text reaches the client: {}", answer.body);
}

#[tokio::test]
async fn a_rotated_in_key_is_published_before_it_signs_and_old_tokens_keep_verifying() {
    use adapter_aws::{KmsSigner, create_signing_key};
    use shared::token::{KeyRing, sign};
    let app = TestApp::on(e2e::Backend::Aws).await;
    let consent = grant(&app, "alice", minutes(60)).await;
    let (_, kms) = e2e::aws_clients().await;
    let (old, new) = (create_signing_key(&kms).await.unwrap(), create_signing_key(&kms).await.unwrap());
    // Step 1: the old key signs, the new one is only published. Step 2: they swap.
    let before = KmsSigner::new(kms.clone(), &old, std::slice::from_ref(&new)).unwrap();
    let after = KmsSigner::new(kms.clone(), &new, std::slice::from_ref(&old)).unwrap();
    use shared::ports::Signer;
    let jwks = before.public_keys().await.unwrap();
    assert_eq!(jwks.keys.len(), 2);
    assert_eq!(jwks, {
        let mut keys = after.public_keys().await.unwrap().keys;
        keys.reverse();
        jsonwebtoken::jwk::JwkSet { keys }
    });
    let ring = KeyRing::from_jwks(jwks).unwrap();
    for signer in [&before, &after] {
        let claims =
            shared::token::new_claims(&consent, agent("agent-7"), reason(), app.clock.now(), &app.services().policy);
        let token = sign(&claims, signer).await.unwrap();
        assert!(shared::token::verify(&token, &ring, &app.services().policy, app.clock.now()).is_ok());
    }
    assert_ne!(before.key_id(), after.key_id());
}

/// A filtered query over everyone's events (no user, no actor: the time index) returns every
/// match however many others sit between them: here 160 denials in the same month, newer than
/// the three uses asked for. (With the 4 time shards of before, 800 denials were more than a
/// page's call budget examines in one shard, and this failed on DynamoDB: the uses were
/// skipped. With 8 shards, the case that fails is below, seeded into one shard.)
async fn a_filtered_time_query_finds_matches_behind_many_others(app: TestApp) {
    let at = |s: i64| Timestamp::from_unix(T0 - 3 * 24 * 3600 + s);
    let event = |kind, s: i64, who: &str, i: i64| {
        AuditEvent::new(kind, at(s), Some(user(who)), Actor { sub: agent("agent-7"), role: Role::Support })
            .with_detail(format!("n{i}"))
    };
    let mut written = Vec::new();
    for i in 0..3 {
        written
            .push(app.services().audit_appender.append(event(AuditEventType::TokenUsed, i, "alice", i)).await.unwrap());
    }
    // 16 writers on streams of their own, 10 events each, all newer than the uses.
    let writers = (0..16).map(|w| {
        let app = &app;
        async move {
            let mut out = Vec::new();
            for i in 0..10 {
                let e = event(AuditEventType::TokenDenied, 100 + i, &format!("user-{w}"), 1000 + w * 10 + i);
                out.push(app.services().audit_appender.append(e).await.unwrap());
            }
            out
        }
    });
    written.extend(futures::future::join_all(writers).await.into_iter().flatten());
    let filter = AuditFilter { event_type: Some(AuditEventType::TokenUsed), ..Default::default() };
    let expected = reference(&written, &filter);
    assert_eq!(expected.len(), 3);
    for limit in [2, 5] {
        assert_eq!(all_events(&app, filter.clone(), limit).await, expected, "limit {limit}");
    }
    // Unfiltered, the same window pages to every event exactly once, in order.
    let window = AuditFilter { from: Some(at(0)), to: Some(at(200)), ..Default::default() };
    assert_eq!(all_events(&app, window.clone(), 97).await, reference(&written, &window));
}

/// On DynamoDB, one time shard holding many more non-matching events than a page's call budget
/// examines (12 calls of at least 10 items), newer than the matches in the same shard: a
/// filtered time query still returns every match, paging through the shard. (Before, each
/// shard's read stopped at the budget and the query moved on to the next month: nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_shard_full_of_others_hides_no_match_on_dynamodb() {
    let app = TestApp::on(e2e::Backend::Aws).await;
    let at = |s: i64| Timestamp::from_unix(T0 - 3 * 24 * 3600 + s);
    let actor = Actor { sub: agent("agent-7"), role: Role::Support };
    let mut written = Vec::new();
    let mut items = Vec::new();
    // 3 uses, then 300 denials, each on a stream of its own, all in shard 1 of the month.
    for i in 0..303i64 {
        let kind = if i < 3 { AuditEventType::TokenUsed } else { AuditEventType::TokenDenied };
        let e = AuditEvent::new(kind, at(i), Some(user(&format!("user-{i}"))), actor.clone())
            .with_detail(format!("n{i}"))
            .seal(1, support_access_verify::chain::GENESIS);
        let mut item = adapter_aws::audit_item(&e);
        item.insert("time_bucket".into(), aws_sdk_dynamodb::types::AttributeValue::S("2026-11#1".into()));
        items.push(item);
        written.push(e);
    }
    let (direct, _) = e2e::setup_clients(&e2e::aws_endpoint()).await;
    for batch in items.chunks(25) {
        let writes = batch
            .iter()
            .map(|i| {
                aws_sdk_dynamodb::types::WriteRequest::builder()
                    .put_request(
                        aws_sdk_dynamodb::types::PutRequest::builder().set_item(Some(i.clone())).build().unwrap(),
                    )
                    .build()
            })
            .collect();
        let out = direct.batch_write_item().request_items(&app.tables().audit, writes).send().await.unwrap();
        assert!(out.unprocessed_items().is_none_or(|u| u.is_empty()));
    }
    let filter = AuditFilter { event_type: Some(AuditEventType::TokenUsed), ..Default::default() };
    let expected = reference(&written, &filter);
    assert_eq!(expected.len(), 3);
    for limit in [1, 5] {
        assert_eq!(all_events(&app, filter.clone(), limit).await, expected, "limit {limit}");
    }
}

/// A publisher that records what it delivered, or fails every delivery while `down`.
#[derive(Default)]
struct Recorder {
    down: std::sync::atomic::AtomicBool,
    delivered: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl shared::ports::Publisher for Recorder {
    async fn publish(&self, n: &shared::domain::Notification) -> Result<(), shared::ports::PublishError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(shared::ports::PublishError("down".into()));
        }
        self.delivered.lock().unwrap().push(n.data.detail.clone().unwrap_or_default());
        Ok(())
    }
}

/// A committed use of alice's, by agent-7, of token `jti` under consent `cid` (ending `exp`),
/// `s` seconds after T0, its detail `n` (what a test's publisher records).
fn alices_use(
    cid: &shared::domain::ConsentId,
    exp: Timestamp,
    jti: &shared::domain::Jti,
    s: i64,
    n: &str,
) -> AuditEvent {
    AuditEvent::new(
        AuditEventType::TokenUsed,
        Timestamp::from_unix(T0 + s),
        Some(user("alice")),
        Actor { sub: agent("agent-7"), role: Role::Support },
    )
    .with_consent(cid, Scope::Read, exp)
    .with_jti(jti)
    .with_detail(n.to_owned())
}

/// A store's first-use claims, counted.
struct CountedClaims<'a> {
    store: &'a dyn shared::ports::FirstUses,
    claims: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl shared::ports::FirstUses for CountedClaims<'_> {
    async fn claim_first_use(&self, used: &AuditEvent) -> Result<bool, shared::ports::StoreError> {
        self.claims.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.store.claim_first_use(used).await
    }
}

/// A notifier process remembers the claims it won: a token's later uses, and its first use
/// delivered again, are answered without a claim and announced exactly as the store alone
/// would; a token whose claim another process holds is asked of the store on each use, so
/// that a redelivery of the holder's event (its shard moved here) is still announced.
async fn a_notifier_remembers_the_claims_it_won_and_announces_the_same(app: TestApp) {
    use shared::app::{FirstUseMemory, RelayStats, publish_committed};
    use std::sync::atomic::Ordering::SeqCst;
    let store = app.first_uses();
    let counted = CountedClaims { store: store.as_ref(), claims: Default::default() };
    let memory = FirstUseMemory::new(16);
    let claims = memory.over(&counted);
    let (cid, exp) = (shared::domain::ConsentId::generate(), Timestamp::from_unix(T0 + 900));
    let used = |jti: &shared::domain::Jti, s: i64, n: &str| alices_use(&cid, exp, jti, s, n);
    let (publisher, stats) = (Recorder::default(), RelayStats::default());
    let delivered = || publisher.delivered.lock().unwrap().clone();

    let mine = shared::domain::Jti::generate();
    let (a1, a2, a3) = (used(&mine, 1, "a1"), used(&mine, 2, "a2"), used(&mine, 3, "a3"));
    publish_committed(&[a1.clone(), a2, a3], &claims, &publisher, &stats).await.unwrap();
    assert_eq!((delivered(), counted.claims.load(SeqCst)), (vec!["a1".to_owned()], 1), "one claim for three uses");
    publish_committed(std::slice::from_ref(&a1), &claims, &publisher, &stats).await.unwrap();
    assert_eq!((delivered(), counted.claims.load(SeqCst)), (vec!["a1".to_owned(), "a1".to_owned()], 1), "redelivered");

    // Another process claimed this token's first use: each use here asks the store.
    let theirs = shared::domain::Jti::generate();
    let b1 = used(&theirs, 4, "b1");
    assert!(store.claim_first_use(&b1).await.unwrap());
    publish_committed(&[used(&theirs, 5, "b2"), used(&theirs, 6, "b3")], &claims, &publisher, &stats).await.unwrap();
    assert_eq!((delivered().len(), counted.claims.load(SeqCst)), (2, 3), "refused claims are not remembered");
    // The holder's event delivered here after all: announced, and from then on remembered.
    publish_committed(std::slice::from_ref(&b1), &claims, &publisher, &stats).await.unwrap();
    publish_committed(&[used(&theirs, 7, "b4")], &claims, &publisher, &stats).await.unwrap();
    assert_eq!(delivered(), ["a1", "a1", "b1"]);
    assert_eq!(counted.claims.load(SeqCst), 4);
}

/// A token's first use is announced once, by a claim on its `jti` (no read of the log): later
/// uses are not; a first use whose publish failed after it was claimed is announced on the
/// retry (the same event holds the claim); a redelivered first use is announced again with
/// its own id (consumers deduplicate by it); and the claim outlives every use the token can
/// still make (up to `exp` plus the largest leeway), so no later use is taken for a first.
async fn a_tokens_first_use_is_claimed_once_and_a_retried_one_announced(app: TestApp) {
    use shared::app::{RelayStats, publish_committed};
    let first_uses = app.first_uses();
    let (cid, jti) = (shared::domain::ConsentId::generate(), shared::domain::Jti::generate());
    let exp = Timestamp::from_unix(T0 + 900);
    let used = |s: i64, n: &str| alices_use(&cid, exp, &jti, s, n);
    let (first, second, third) = (used(1, "first"), used(2, "second"), used(3, "third"));
    let publisher = Recorder::default();
    let stats = RelayStats::default();

    // The receiver is down: the first use is claimed, its publish fails, and the batch stops there.
    publisher.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let batch = [first.clone(), second.clone()];
    let failed = publish_committed(&batch, first_uses.as_ref(), &publisher, &stats).await;
    assert_eq!(failed.map_err(|(i, _)| i), Err(0));
    // The retry of the same records: the first use still holds its claim and is announced.
    publisher.down.store(false, std::sync::atomic::Ordering::SeqCst);
    publish_committed(&batch, first_uses.as_ref(), &publisher, &stats).await.unwrap();
    publish_committed(std::slice::from_ref(&third), first_uses.as_ref(), &publisher, &stats).await.unwrap();
    assert_eq!(*publisher.delivered.lock().unwrap(), ["first"]);
    // A redelivery of the first use (same event id): announced again, for the consumer to drop.
    publish_committed(&batch, first_uses.as_ref(), &publisher, &stats).await.unwrap();
    assert_eq!(*publisher.delivered.lock().unwrap(), ["first", "first"]);

    // The last moment the token can be used: still not a first use, whoever else used a token since.
    let last_second = exp.unix() + Policy::MAX_LEEWAY_SECONDS - T0;
    let other = AuditEvent { jti: Some(shared::domain::Jti::generate()), ..used(last_second, "another token") };
    assert!(first_uses.claim_first_use(&other).await.unwrap());
    assert!(!first_uses.claim_first_use(&used(last_second, "late")).await.unwrap());
    let kept = shared::ports::first_use_claim_expiry(&first);
    assert!(kept.unix() >= exp.unix() + Policy::MAX_LEEWAY_SECONDS + 24 * 3600, "past the stream's 24 h as well");
    if app.backend == e2e::Backend::Aws {
        // The TTL DynamoDB deletes the claim by.
        let (direct, _) = e2e::setup_clients(&e2e::aws_endpoint()).await;
        let item = direct
            .get_item()
            .table_name(&app.tables().first_uses)
            .key("jti", aws_sdk_dynamodb::types::AttributeValue::S(jti.as_str().to_owned()))
            .send()
            .await
            .unwrap();
        let item = item.item().unwrap();
        assert_eq!(item["expires_at"].as_n().unwrap(), &kept.unix().to_string());
        assert_eq!(item["event_id"].as_s().unwrap(), first.event_id.as_str());
    }
}

/// A long life makes many checkpoints (one an interval), and an export reads them a few at a
/// time from where its cursor stands, never all at once: with a small budget (3 checkpoints
/// a read, 2 KiB a page) a user's export and the export of every stream each come in several
/// pages of checkpoints alone, every page within the budget, and each concatenation verifies
/// with all 9 checkpoints (bob's export with the 5 that sealed him).
async fn a_long_life_of_checkpoints_comes_in_pages_that_verify(mut app: TestApp) {
    use app::{ExportBudget, ExportScope};
    const CHECKPOINTS: u64 = 9;
    for i in 0..CHECKPOINTS {
        let denied =
            |who: &str| AuditEvent::new(AuditEventType::TokenDenied, app.clock.now(), Some(user(who)), Actor::system());
        app.services().audit_appender.append(denied("alice")).await.unwrap();
        if i % 2 == 0 {
            app.services().audit_appender.append(denied("bob")).await.unwrap();
        }
        app::checkpoint_now(app.services()).await.unwrap().expect("alice moved");
    }
    let answered = app.probe_chain_archive(std::time::Duration::ZERO);
    let budget = ExportBudget { page_bytes: 2048, read_checkpoints: 3, ..ExportBudget::default() };
    app.set_export_budget(budget);
    let strict = support_access_cli::Options::default();
    let every: Vec<u64> = (1..=CHECKPOINTS).collect();
    let bobs: Vec<u64> = (1..=CHECKPOINTS).step_by(2).collect();
    for (scope, events, checkpoints) in [
        (ExportScope::User(user("alice")), CHECKPOINTS as usize, every.clone()),
        (ExportScope::User(user("bob")), bobs.len(), bobs.clone()),
        (ExportScope::All, CHECKPOINTS as usize + bobs.len(), every.clone()),
    ] {
        answered.lock().unwrap().clear();
        let (mut text, mut pages_of_checkpoints, mut cursor) = (String::new(), 0, None::<String>);
        loop {
            let page = app::export_page(app.services(), &scope, cursor.as_deref()).await.unwrap();
            let lines: Vec<&str> = page.lines.lines().collect();
            assert!(page.lines.len() <= budget.page_bytes || lines.len() == 1, "{scope:?}: a page past the budget");
            if !lines.is_empty() && lines.iter().all(|l| l.contains(r#""type":"checkpoint""#)) {
                pages_of_checkpoints += 1;
            }
            text.push_str(&page.lines);
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let reads = answered.lock().unwrap().clone();
        assert!(reads.iter().all(|&n| n <= budget.read_checkpoints), "{scope:?}: read at once: {reads:?}");
        assert!(reads.len() >= checkpoints.len().div_ceil(budget.read_checkpoints), "{scope:?}: {reads:?}");
        assert!(pages_of_checkpoints >= 2, "{scope:?}: {pages_of_checkpoints} page(s) of checkpoints");
        let report = support_access_cli::verify_export(&text, &app.export_keys(), strict)
            .unwrap_or_else(|e| panic!("{scope:?}: {e}"));
        assert_eq!((report.events, report.checkpoints), (events, checkpoints), "{scope:?}");
    }
}

/// Appends one refusal to each of `count` users' streams (`u-000`, `u-001`, ...) and one to
/// the unattributed stream, `parallel` at a time.
async fn many_streams(app: &TestApp, count: usize) {
    use futures::StreamExt;
    let appender = app.services().audit_appender.clone();
    let now = app.clock.now();
    let event = |who: Option<UserId>| AuditEvent::new(AuditEventType::TokenDenied, now, who, Actor::system());
    let events: Vec<_> = (0..count).map(|i| event(Some(user(&format!("u-{i:03}"))))).chain([event(None)]).collect();
    futures::stream::iter(events.into_iter().map(|e| {
        let appender = appender.clone();
        async move { appender.append(e).await.unwrap() }
    }))
    .buffer_unordered(8)
    .collect::<Vec<_>>()
    .await;
}

/// Every page of a full export from `cursor` on: (the page's lines, the cursor it was read
/// from).
async fn pages_from(app: &TestApp, mut cursor: Option<String>) -> Vec<(String, Option<String>)> {
    let mut pages = Vec::new();
    loop {
        let page = app::export_page(app.services(), &app::ExportScope::All, cursor.as_deref()).await.unwrap();
        pages.push((page.lines, cursor));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
    }
}

/// A full export across many streams (300 and the unattributed one, sealed by one
/// checkpoint; 100 on the DynamoDB test server, which answers a call in tens of milliseconds
/// on a busy machine) with a small budget lists the streams a few at a time over many pages, and the
/// pages verify end to end, each stream once; an export resumed from a cursor in the middle of
/// the listing sends exactly the pages the first one did from there; a stream created while an
/// export runs is either in it (whole, and counted by its receipt) or not at all.
async fn a_full_export_of_many_streams_lists_them_a_page_at_a_time_and_verifies(mut app: TestApp) {
    let streams = if app.on_dynamodb() { 100 } else { 300 };
    many_streams(&app, streams).await;
    let run = app::checkpoint_all(app.services(), None).await.unwrap();
    assert_eq!(run.sealed, streams as u64 + 1);
    let budget = app::ExportBudget { page_reads: 7, read_streams: 5, read_checkpoints: 1, ..Default::default() };
    app.set_export_budget(budget);
    let pages = pages_from(&app, None).await;
    assert!(pages.len() >= streams / 7, "{} pages", pages.len());
    let text: String = pages.iter().map(|(lines, _)| lines.as_str()).collect();
    let strict = support_access_cli::Options::default();
    let report = support_access_cli::verify_export(&text, &app.export_keys(), strict).unwrap();
    assert_eq!((report.heads.len(), report.events), (streams + 1, streams + 1));
    assert_eq!(report.receipt.streams, streams as u64 + 1);

    // Resumed from the middle: the same lines from there on (the receipt aside: its
    // signature may differ).
    let middle = pages.len() / 2;
    let lines = |pages: &[(String, Option<String>)]| {
        let text: String = pages.iter().map(|(lines, _)| lines.as_str()).collect();
        text.lines().filter(|l| !l.contains(r#""type":"receipt""#)).map(str::to_owned).collect::<Vec<_>>()
    };
    let resumed = pages_from(&app, pages[middle].1.clone()).await;
    assert_eq!(lines(&resumed), lines(&pages[middle..]));

    // A stream created mid-export: in it whole or not at all, the receipt saying which.
    let mut cursor = pages[middle].1.clone();
    let mut text: String = pages[..middle].iter().map(|(lines, _)| lines.as_str()).collect();
    for (i, who) in ["a-early", "zz-late"].into_iter().enumerate() {
        app.clock.advance(1);
        let event = AuditEvent::new(AuditEventType::TokenDenied, app.clock.now(), Some(user(who)), Actor::system());
        app.services().audit_appender.append(event).await.unwrap();
        if i == 0 {
            let page = app::export_page(app.services(), &app::ExportScope::All, cursor.as_deref()).await.unwrap();
            text.push_str(&page.lines);
            cursor = page.next_cursor;
        }
    }
    for (lines, _) in pages_from(&app, cursor).await {
        text.push_str(&lines);
    }
    let unsealed = support_access_cli::Options { allow_unsealed: true };
    let report = support_access_cli::verify_export(&text, &app.export_keys(), unsealed).unwrap();
    let late = ["a-early", "zz-late"].iter().filter(|s| report.heads.contains_key(**s)).count();
    assert_eq!(report.heads.len(), streams + 1 + late);
    assert_eq!(report.receipt.streams, (streams + 1 + late) as u64);
}

/// More moved heads than a checkpoint holds: one checkpoint seals the heads that moved first
/// (at most the bound), a run makes as many as it takes and seals every one, a run whose time
/// is up makes none and reports what it left (how many, since when), and the next run
/// finishes; every export verifies.
async fn a_run_over_the_bound_makes_several_checkpoints_oldest_first_and_carries_over(app: TestApp) {
    const BOUND: usize = 3;
    let users = ["u-ash", "u-birch", "u-cedar", "u-dogwood", "u-elm", "u-fir", "u-gum"];
    for who in users {
        grant(&app, who, minutes(60)).await;
        app.clock.advance(1);
    }
    let archive = app.services().chain_archive.as_ref();
    let signer = app.services().checkpoint_signer.as_ref();
    let issuer = app.services().policy.issuer.clone();
    let first = app::make_checkpoint(archive, signer, &issuer, app.clock.now(), BOUND).await.unwrap().unwrap();
    assert_eq!(first.claims.size, BOUND as u64);
    let sealed = archive.checkpoints(None, 0, 10).await.unwrap();
    let mut names: Vec<_> = sealed[0].1.iter().map(|l| l.leaf.stream.clone()).collect();
    names.sort();
    assert_eq!(names, users[..BOUND], "the heads that moved first, first");

    // Out of time: nothing made, what is left reported (the oldest since the 4th grant).
    let past = Some(std::time::Instant::now());
    let late = app::checkpoint_run(archive, signer, &issuer, app.clock.as_ref(), BOUND, past).await.unwrap();
    assert!(late.made.is_empty());
    assert_eq!((late.left, late.more_left), (BOUND as u64, true), "{late:?}");
    assert_eq!(late.oldest_left, Some(T0 + BOUND as i64), "{late:?}");
    assert_eq!(late.latest_iat, Some(first.claims.iat));

    // The next run seals the rest, several checkpoints of at most the bound.
    app.clock.advance(60);
    let run = app::checkpoint_run(archive, signer, &issuer, app.clock.as_ref(), BOUND, None).await.unwrap();
    assert_eq!(run.made.iter().map(|c| c.claims.size).collect::<Vec<_>>(), [3, 1], "{run:?}");
    assert_eq!(run.made.iter().map(|c| c.claims.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!((run.sealed, run.left, run.more_left, run.oldest_left), (4, 0, false, None));
    assert_eq!(run.latest_iat, Some(app.clock.now().unix()));
    assert!(archive.moved_heads(None, 100).await.unwrap().heads.is_empty(), "every head sealed");
    assert!(app::checkpoint_all(app.services(), None).await.unwrap().made.is_empty(), "nothing moved, nothing made");

    let strict = support_access_cli::Options::default();
    for scope in [app::ExportScope::All, app::ExportScope::User(user("u-gum"))] {
        let (text, _) = app.export_pages(&scope).await;
        support_access_cli::verify_export(&text, &app.export_keys(), strict)
            .unwrap_or_else(|e| panic!("{scope:?}: {e}"));
    }
}

/// A head that moves after a checkpoint read it stays moved when that checkpoint lands and
/// unmarks its heads (it was sealed at the older `seq`), and the next checkpoint seals its new
/// head; a head that did not move is unmarked.
async fn a_head_that_moves_while_being_sealed_stays_moved(app: TestApp) {
    grant(&app, "alice", minutes(60)).await;
    grant(&app, "bob", minutes(60)).await;
    let archive = app.services().chain_archive.as_ref();
    let latest = archive.latest_checkpoint().await.unwrap();
    let read = archive.moved_heads(latest.as_ref(), 100).await.unwrap();
    let heads: Vec<_> = read.heads.iter().map(|m| m.head.clone()).collect();
    assert_eq!(heads.iter().map(|h| (h.stream.as_str(), h.seq)).collect::<Vec<_>>(), [("alice", 1), ("bob", 1)]);
    // alice moves to #2 while the checkpoint of #1 is being made.
    app::revoke_consent(app.services(), &user("alice")).await.unwrap();
    let services = app.services();
    let (signer, issuer) = (services.checkpoint_signer.as_ref(), &services.policy.issuer);
    let first = app::seal_heads(archive, signer, issuer, app.clock.now(), latest, heads).await.unwrap().unwrap();
    assert_eq!(first.claims.size, 2);
    let left = archive.moved_heads(Some(&first), 100).await.unwrap();
    assert_eq!(left.heads.iter().map(|m| (m.head.stream.as_str(), m.head.seq)).collect::<Vec<_>>(), [("alice", 2)]);
    let next = app::checkpoint_now(app.services()).await.unwrap().expect("alice #2");
    assert_eq!(next.claims.size, 1);
    assert!(archive.moved_heads(Some(&next), 100).await.unwrap().heads.is_empty());
    let (text, _) = app.export_pages(&app::ExportScope::All).await;
    support_access_cli::verify_export(&text, &app.export_keys(), support_access_cli::Options::default()).unwrap();
}

e2e::on_both_backends!(
    a_full_export_of_many_streams_lists_them_a_page_at_a_time_and_verifies,
    a_run_over_the_bound_makes_several_checkpoints_oldest_first_and_carries_over,
    a_head_that_moves_while_being_sealed_stays_moved,
    a_long_life_of_checkpoints_comes_in_pages_that_verify,
    grant_replace_revoke,
    mint_with_and_without_consent_and_the_jwk_set_verifies_it,
    a_consent_expires_at_its_boundary_second,
    a_failed_audit_write_leaves_the_consent_as_it_was,
    a_write_is_read_back_at_once,
    concurrent_appends_to_one_user_are_gapless,
    checkpoints_seal_moved_heads_and_every_export_verifies,
    exports_of_any_size_page_and_verify,
    a_cut_tail_a_dropped_or_emptied_checkpoint_and_a_deleted_leaf_are_refused,
    every_stream_is_an_intact_hash_chain,
    audit_queries_by_user_actor_type_and_time_page_exactly,
    a_filtered_time_query_finds_matches_behind_many_others,
    a_tokens_first_use_is_claimed_once_and_a_retried_one_announced,
    a_notifier_remembers_the_claims_it_won_and_announces_the_same,
);

/// On DynamoDB a checkpoint run reads the moved heads by their index: no Scan, and a number
/// of calls bounded by the heads it seals (not by the table): one Query per index partition,
/// a `BatchGetItem` per 100 heads (and per 100 of their leaves), a transaction per 100 leaves,
/// an `UpdateItem` per head unmarked. A head moved before the upgrade (no mark) is found by
/// the one-off marking, which does scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_queries_the_moved_heads_and_never_scans_on_dynamodb() {
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = e2e::aws_proxy::AwsProxy::start(&upstream).await;
    let app = TestApp::on_aws(Some(&proxy.endpoint)).await;
    for who in ["alice", "bob", "carol"] {
        grant(&app, who, minutes(60)).await;
    }
    proxy.clear();
    let run = app::checkpoint_all(app.services(), None).await.unwrap();
    assert_eq!((run.made.len(), run.sealed), (1, 3));
    let calls = proxy.calls();
    let count = |op: &str| calls.iter().filter(|c| c.as_str() == op).count();
    assert_eq!(count("Scan"), 0, "{calls:?}");
    // One round of index queries: what it found is sealed, and no second round reads every
    // partition again to find nothing; three unmarkings.
    assert_eq!(count("Query") - adapter_aws::MOVED_SHARDS as usize, 1, "and one of the latest checkpoint: {calls:?}");
    assert_eq!(count("UpdateItem"), 3, "{calls:?}");

    // A head written before heads were marked: unseen until the one-off marking.
    let store = app.dynamo();
    let heads = &app.tables().heads;
    let (direct, _) = e2e::aws_clients().await;
    direct
        .update_item()
        .table_name(heads)
        .key("stream", aws_sdk_dynamodb::types::AttributeValue::S("alice".into()))
        .update_expression("REMOVE moved_shard, moved_at")
        .send()
        .await
        .unwrap();
    app::revoke_consent(app.services(), &user("bob")).await.unwrap();
    direct
        .update_item()
        .table_name(heads)
        .key("stream", aws_sdk_dynamodb::types::AttributeValue::S("bob".into()))
        .update_expression("REMOVE moved_shard, moved_at")
        .send()
        .await
        .unwrap();
    assert!(app::checkpoint_all(app.services(), None).await.unwrap().made.is_empty(), "unmarked: unseen");
    assert_eq!(store.mark_unsealed_heads(app.clock.now().unix()).await.unwrap(), 1, "bob #2 alone is unsealed");
    let run = app::checkpoint_all(app.services(), None).await.unwrap();
    assert_eq!(run.sealed, 1);
}

/// On DynamoDB a page of the export of every stream makes a number of calls bounded by its
/// budget, not by the number of streams: the streams are listed a Scan page at a time from
/// where the cursor stands (never a Scan of every head per page), and a checkpoint's leaves
/// are read by the leaves' index with one query (never one query per stream). 100 streams
/// sealed by one checkpoint; the bound is the page's reads, each one call, a read of
/// checkpoints one more call per checkpoint, plus the latest checkpoint and the receipt's
/// signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_export_page_makes_calls_bounded_by_its_budget_not_the_streams_on_dynamodb() {
    const STREAMS: usize = 100;
    let upstream = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("run the README's test command");
    let proxy = e2e::aws_proxy::AwsProxy::start(&upstream).await;
    let mut app = TestApp::on_aws(Some(&proxy.endpoint)).await;
    many_streams(&app, STREAMS).await;
    assert_eq!(app::checkpoint_all(app.services(), None).await.unwrap().sealed, STREAMS as u64 + 1);
    let budget = app::ExportBudget { page_reads: 10, read_checkpoints: 2, ..Default::default() };
    app.set_export_budget(budget);
    let bound = budget.page_reads * (1 + budget.read_checkpoints) + 2;
    let (mut text, mut cursor, mut most, mut units) = (String::new(), None::<String>, 0, 0.0_f64);
    loop {
        proxy.clear();
        let page = app::export_page(app.services(), &app::ExportScope::All, cursor.as_deref()).await.unwrap();
        let calls = proxy.calls();
        assert!(calls.len() <= bound, "{} calls in a page (bound {bound}): {calls:?}", calls.len());
        assert!(
            !calls.iter().any(|c| c == "Scan") || calls.iter().filter(|c| *c == "Scan").count() <= budget.page_reads
        );
        most = most.max(calls.len());
        units = units.max(proxy.stats().values().map(|s| s.read_units).sum());
        text.push_str(&page.lines);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    eprintln!("{STREAMS} streams: at most {most} calls and {units} read units a page");
    let report =
        support_access_cli::verify_export(&text, &app.export_keys(), support_access_cli::Options::default()).unwrap();
    assert_eq!(report.heads.len(), STREAMS + 1);
}
