//! `GET /audit/export` and `support-access verify`: an untouched export verifies clean, and
//! each way of tampering with it (edit a field, delete an event, reorder two, splice another
//! user's event in, truncate the tail, rewrite a chain with fresh hashes, replace a
//! checkpoint's signature) is caught, naming the first bad line.

use std::process::Command;

use e2e::{Event, TestApp, cli_binary};
use serde_json::{Value, json};
use shared::ports::Signer;
use support_access_cli::{Options, Report, VerifyFailure};
use support_access_verify::chain::ChainError;

/// The export checked against the app's own JWK Set, strictly (every head sealed).
fn verify_export(text: &str, app: &TestApp) -> Result<Report, VerifyFailure> {
    support_access_cli::verify_export(text, &app.export_keys(), Options::default())
}

async fn checkpoint(app: &TestApp) -> u64 {
    shared::app::checkpoint_now(app.services()).await.unwrap().expect("something to seal").claims.seq
}

async fn export(app: &TestApp, user: &str) -> String {
    let query = if user.is_empty() { String::new() } else { format!("user_id={user}") };
    let (status, content_type, body) =
        app.call_raw(Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query(&query)).await;
    assert_eq!((status, content_type.as_str()), (200, "application/x-ndjson"), "{body}");
    body
}

/// A few days of alice's account: grant, two tokens, uses, a refused write, a revoke, a
/// denial; checkpoints after the first token (alice #4, bob #1) and at the end (alice #9,
/// bob #2, and the unattributed stream).
async fn busy_app() -> TestApp {
    let app = TestApp::new().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    app.grant("bob", json!({"duration_seconds": 3600})).await;
    for round in 0..2 {
        let token = app.mint("alice").await.str("access_token").to_owned();
        app.call(Event::new("GET", "/app/whoami").anonymous().bearer(&token)).await;
        app.call(Event::new("POST", "/app/whoami").anonymous().bearer(&token)).await;
        app.clock.advance(60);
        if round == 0 {
            assert_eq!(checkpoint(&app).await, 1);
        }
    }
    app.mint("bob").await;
    app.call(Event::new("DELETE", "/consents/current").user("alice")).await;
    app.mint("alice").await;
    app.call(Event::new("GET", "/app/whoami").anonymous().bearer("garbage")).await;
    assert_eq!(checkpoint(&app).await, 2);
    app
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    lines.join("\n") + "\n"
}

/// Chain checks only: the tampering below must fail before any checkpoint is looked at.
fn chain_only(text: &str) -> Result<Report, VerifyFailure> {
    support_access_cli::verify_export(
        text,
        &support_access_verify::ExportKeys::empty(),
        Options { allow_unsealed: true },
    )
}

fn broken_at(result: Result<support_access_cli::Report, VerifyFailure>) -> (usize, ChainError) {
    match result {
        Err(VerifyFailure::Broken { line, error, .. }) => (line, error),
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

fn checkpoint_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["type"] == "checkpoint").collect()
}

#[tokio::test]
async fn an_untouched_export_verifies_clean() {
    let app = busy_app().await;
    let text = export(&app, "alice").await;
    let report = verify_export(&text, &app).unwrap();
    assert_eq!(report.events, 9);
    assert_eq!(report.heads["alice"].0, 9);
    assert_eq!((report.sealed["alice"], report.checkpoints.clone()), (9, vec![1, 2]));
    // A user's export names nobody else: its checkpoints carry only alice's leaves.
    for cp in checkpoint_lines(&text) {
        assert!(cp["leaves"].as_array().unwrap().iter().all(|l| l["stream"] == "alice"), "{cp}");
    }
    // Everything at once: every stream, the unattributed one too, every checkpoint.
    let all = export(&app, "").await;
    let report = verify_export(&all, &app).unwrap();
    assert_eq!(report.heads.keys().collect::<Vec<_>>(), ["alice", "bob", "~unattributed"]);
    assert_eq!(report.checkpoints, [1, 2]);
}

#[tokio::test]
async fn events_after_the_last_checkpoint_fail_unless_an_unsealed_tail_is_accepted() {
    let app = busy_app().await;
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let text = export(&app, "alice").await;
    match verify_export(&text, &app) {
        Err(VerifyFailure::Unsealed { stream, from: 10, to: 10 }) => assert_eq!(stream, "alice"),
        other => panic!("expected an unsealed tail, got {other:?}"),
    }
    let lenient = support_access_cli::verify_export(&text, &app.export_keys(), Options { allow_unsealed: true });
    assert_eq!(lenient.unwrap().unsealed(), [("alice".to_owned(), 10, 10)]);
    assert_eq!(checkpoint(&app).await, 3);
    assert!(verify_export(&export(&app, "alice").await, &app).is_ok());
    // Nothing moved: no empty checkpoint.
    assert!(shared::app::checkpoint_now(app.services()).await.unwrap().is_none());
}

fn failed_checkpoint(result: Result<Report, VerifyFailure>) -> (usize, u64, String) {
    match result {
        Err(VerifyFailure::Checkpoint { line, seq, problem }) => (line, seq, problem),
        other => panic!("expected a checkpoint failure, got {other:?}"),
    }
}

#[tokio::test]
async fn checkpoints_catch_what_the_chain_alone_cannot() {
    let app = busy_app().await;
    let original = lines(&export(&app, "alice").await);
    let events = 9;
    let cp2 = events + 1; // 0-based index of checkpoint 2's line

    // Truncating the tail leaves an intact (shorter) chain; checkpoint 2 sealed #9.
    let mut truncated = original.clone();
    truncated.drain(7..events);
    let (line, seq, problem) = failed_checkpoint(verify_export(&join(&truncated), &app));
    assert_eq!((line, seq), (9, 2), "{problem}");
    assert!(problem.contains("alice #9") && problem.contains("ends at #7"), "{problem}");

    // An administrator edits event 6 and recomputes every hash after it: the chain holds,
    // the signed leaf does not.
    let mut rewritten: Vec<Value> = original[..events].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    rewritten[5]["detail"] = json!("GET /app/nothing-to-see");
    for i in 5..events {
        if i > 5 {
            rewritten[i]["prev_hash"] = rewritten[i - 1]["hash"].clone();
        }
        rewritten[i]["hash"] = json!(support_access_verify::chain::event_hash(&rewritten[i]));
    }
    let mut rewritten: Vec<String> = rewritten.iter().map(Value::to_string).collect();
    rewritten.extend(original[events..].iter().cloned());
    let (_, seq, problem) = failed_checkpoint(verify_export(&join(&rewritten), &app));
    assert_eq!(seq, 2);
    assert!(problem.contains("rewritten"), "{problem}");

    // A checkpoint's signature replaced by another checkpoint's.
    let mut cps = checkpoint_lines(&join(&original));
    let other_sig = cps[0]["jws"].as_str().unwrap().rsplit('.').next().unwrap().to_owned();
    let jws = cps[1]["jws"].as_str().unwrap();
    cps[1]["jws"] = json!(format!("{}.{other_sig}", jws.rsplit_once('.').unwrap().0));
    let mut resigned = original.clone();
    resigned[cp2] = cps[1].to_string();
    let (line, seq, problem) = failed_checkpoint(verify_export(&join(&resigned), &app));
    assert_eq!((line, seq), (cp2 + 1, 2));
    assert!(problem.contains("signature"), "{problem}");

    // A leaf moved in its tree, or its proof edited, proves nothing.
    let mut cps = checkpoint_lines(&join(&original));
    cps[1]["leaves"][0]["index"] = json!(cps[1]["leaves"][0]["index"].as_u64().unwrap() + 1);
    let mut moved = original.clone();
    moved[cp2] = cps[1].to_string();
    let (_, seq, problem) = failed_checkpoint(verify_export(&join(&moved), &app));
    assert_eq!(seq, 2);
    assert!(problem.contains("not in the signed tree"), "{problem}");

    // A checkpoint signed by a key outside the JWK Set (a forger's own).
    let forger = adapter_embedded::LocalSigner::generate();
    let mut cps = checkpoint_lines(&join(&original));
    let claims: Value = {
        use base64::Engine;
        let payload = cps[1]["jws"].as_str().unwrap().split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let forged =
        shared::token::sign_jws(support_access_verify::checkpoint::CHECKPOINT_TYPE, &claims, &forger).await.unwrap();
    cps[1]["jws"] = json!(forged);
    let mut forged_lines = original.clone();
    forged_lines[cp2] = cps[1].to_string();
    let (_, _, problem) = failed_checkpoint(verify_export(&join(&forged_lines), &app));
    assert!(problem.contains("kid"), "{problem}");

    // A stream dropped from an export of everything: its checkpoint leaves name it.
    let all = lines(&export(&app, "").await);
    let without_bob: Vec<String> = all.iter().filter(|l| !l.contains("\"user_id\":\"bob\"")).cloned().collect();
    let (_, _, problem) = failed_checkpoint(verify_export(&join(&without_bob), &app));
    assert!(problem.contains("no event of bob"), "{problem}");
}

#[tokio::test]
async fn a_checkpoint_is_never_accepted_as_a_token_nor_a_token_as_a_checkpoint() {
    let app = busy_app().await;
    let text = export(&app, "alice").await;
    let jws = checkpoint_lines(&text)[0]["jws"].as_str().unwrap().to_owned();
    let (status, _, _) = app.call_raw(Event::new("GET", "/app/whoami").anonymous().bearer(&jws)).await;
    assert_eq!(status, 401);
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let token = app.mint("alice").await.str("access_token").to_owned();
    let refused = support_access_verify::checkpoint::verify_checkpoint(&token, &app.services().keys).unwrap_err();
    assert!(refused.to_string().contains("typ"), "{refused}");
}

#[tokio::test]
async fn checkpoint_keys_are_published_apart_from_the_token_keys() {
    let app = busy_app().await;
    let set = |path: &'static str| {
        let app = &app;
        async move {
            let (status, _, body) = app.call_raw(Event::new("GET", path).anonymous()).await;
            assert_eq!(status, 200, "{path}");
            let keys: Value = serde_json::from_str(&body).unwrap();
            keys["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    let (tokens, checkpoints) = (set("/.well-known/jwks.json").await, set("/.well-known/checkpoint-keys.json").await);
    let checkpoint_kid = app.services().checkpoint_signer.key_id().to_owned();
    assert_eq!(tokens, [app.services().signer.key_id()]);
    assert_eq!(checkpoints, [checkpoint_kid.as_str()], "a fresh deployment's checkpoints have only their own key");
    // The receipt key beside them, in a member of its own (no JWK Set reader takes it for a
    // checkpoint key), and in no token set.
    let (_, _, body) = app.call_raw(Event::new("GET", "/.well-known/checkpoint-keys.json").anonymous()).await;
    let document: Value = serde_json::from_str(&body).unwrap();
    let receipt_kid = app.services().receipt_signer.key_id();
    assert_eq!(
        document["receipt_keys"].as_array().unwrap().iter().map(|k| &k["kid"]).collect::<Vec<_>>(),
        [receipt_kid]
    );
    assert!(receipt_kid != checkpoint_kid && !tokens.iter().any(|k| k == receipt_kid));
    // Every checkpoint of the export names the checkpoint key, and verifies with that set only.
    let text = export(&app, "alice").await;
    for line in checkpoint_lines(&text) {
        let header = jsonwebtoken::decode_header(line["jws"].as_str().unwrap()).unwrap();
        assert_eq!(header.kid.as_deref(), Some(checkpoint_kid.as_str()));
    }
    assert!(verify_export(&text, &app).is_ok());
    let token_keys = support_access_verify::ExportKeys::new(
        (*app.services().keys).clone(),
        support_access_verify::KeyRing::from_jwks((*app.services().receipt_keys).clone()).unwrap(),
    )
    .unwrap();
    assert!(support_access_cli::verify_export(&text, &token_keys, Options::default()).is_err());
}

/// Whoever runs the export (on AWS, code in export-audit) holds the receipt key and nothing
/// else: a checkpoint it signs with that key is refused, even over the very claims the
/// checkpoint key signed (SECURITY.md, who signs what).
#[tokio::test]
async fn a_checkpoint_signed_with_the_receipt_key_is_refused() {
    let app = busy_app().await;
    let text = export(&app, "alice").await;
    let mut forged = lines(&text);
    let at = forged.iter().position(|l| l.contains(r#""type":"checkpoint""#)).unwrap();
    let mut line: Value = serde_json::from_str(&forged[at]).unwrap();
    let claims =
        support_access_verify::checkpoint::verify_checkpoint(line["jws"].as_str().unwrap(), &app.checkpoint_ring())
            .unwrap();
    let receipt_key = app.services().receipt_signer.as_ref();
    let jws = shared::token::sign_jws(support_access_verify::checkpoint::CHECKPOINT_TYPE, &claims, receipt_key);
    line["jws"] = json!(jws.await.unwrap());
    forged[at] = line.to_string();
    let (bad, seq, problem) = failed_checkpoint(verify_export(&join(&forged), &app));
    assert_eq!((bad, seq), (at + 1, claims.seq));
    assert!(problem.contains("signed with a receipt key"), "{problem}");
}

/// And whoever makes checkpoints holds the checkpoint key alone: a receipt signed with it
/// (say, to vouch for an export with events cut off) is refused, and the service refuses to
/// start with one key for both kinds.
#[tokio::test]
async fn a_receipt_signed_with_the_checkpoint_key_is_refused() {
    let app = busy_app().await;
    let text = export(&app, "alice").await;
    assert!(verify_export(&text, &app).is_ok());
    let mut forged = lines(&text);
    let last = forged.len() - 1;
    let line: Value = serde_json::from_str(&forged[last]).unwrap();
    let keys = app.export_keys();
    let claims = support_access_verify::receipt::verify_receipt(line["jws"].as_str().unwrap(), &keys.receipts).unwrap();
    let checkpoint_key = app.services().checkpoint_signer.as_ref();
    let jws = shared::token::sign_jws(support_access_verify::receipt::RECEIPT_TYPE, &claims, checkpoint_key);
    forged[last] = json!({"type": "receipt", "jws": jws.await.unwrap()}).to_string();
    match verify_export(&join(&forged), &app) {
        Err(VerifyFailure::Receipt { line, problem }) => {
            assert_eq!(line, last + 1);
            assert!(problem.contains("signed with a checkpoint key"), "{problem}");
        }
        other => panic!("expected the receipt refused, got {other:?}"),
    }
    let services = app.services().clone();
    let same = services
        .with_receipt_signer(app.services().checkpoint_signer.clone(), (*app.services().checkpoint_keys).clone());
    assert!(same.is_err_and(|e| e.to_string().contains("also a checkpoint key")));
}

#[tokio::test]
async fn checkpoints_signed_by_the_token_key_before_it_had_its_own_keep_verifying() {
    // A deployment as it was: one key signed tokens and checkpoints.
    let old = TestApp::with_one_key().await;
    old.grant("alice", json!({"duration_seconds": 3600})).await;
    let first = shared::app::checkpoint_now(old.services()).await.unwrap().unwrap();
    let (store, token_key, keys) =
        (old.services().chain_archive.as_ref(), &old.services().signer, &old.services().keys);
    assert_eq!(jsonwebtoken::decode_header(&first.jws).unwrap().kid.as_deref(), Some(token_key.key_id()));
    // The wiring refuses a checkpoint signer whose key verifies tokens.
    let same = old.services().clone().with_checkpoint_signer(token_key.clone(), keys.jwks().clone());
    assert!(same.is_err_and(|e| e.to_string().contains("also a token key")));

    // After the upgrade: a checkpoint key of its own, and the token key kept in the
    // checkpoint set because a stored checkpoint names it.
    let checkpoint_key = adapter_embedded::LocalSigner::generate();
    let set = shared::app::checkpoint_keys(store, &checkpoint_key, keys.jwks()).await.unwrap();
    let kids: Vec<_> = set.keys.iter().map(|k| k.common.key_id.clone().unwrap()).collect();
    assert_eq!(kids, [checkpoint_key.key_id(), token_key.key_id()]);
    let ring = support_access_verify::KeyRing::from_jwks(set).unwrap();
    support_access_verify::checkpoint::verify_checkpoint(&first.jws, &ring).unwrap();
    // A deployment whose checkpoints never used the token key does not publish it.
    let fresh = TestApp::new().await;
    let set = shared::app::checkpoint_keys(fresh.services().chain_archive.as_ref(), &checkpoint_key, keys.jwks())
        .await
        .unwrap();
    assert_eq!(set.keys.len(), 1);
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_at_its_line() {
    let app = busy_app().await;
    let original = lines(&export(&app, "alice").await);

    let mut edited = original.clone();
    edited[3] = edited[3].replace("\"read\"", "\"full\"");
    assert_ne!(edited[3], original[3]);
    assert!(matches!(broken_at(chain_only(&join(&edited))), (4, ChainError::Hash { .. })));

    let mut deleted = original.clone();
    deleted.remove(4);
    assert!(matches!(broken_at(chain_only(&join(&deleted))), (5, ChainError::Sequence { seq: 6, expected: 5, .. })));

    let mut reordered = original.clone();
    reordered.swap(2, 3);
    assert!(matches!(broken_at(chain_only(&join(&reordered))), (3, ChainError::Sequence { .. })));

    // An edit whose hash is recomputed still breaks the next event's link.
    let mut rehashed: Vec<serde_json::Value> = original.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    rehashed[5]["detail"] = json!("GET /app/nothing-to-see");
    rehashed[5]["hash"] = json!(support_access_verify::chain::event_hash(&rehashed[5]));
    let rehashed: Vec<String> = rehashed.iter().map(|v| v.to_string()).collect();
    assert!(matches!(broken_at(chain_only(&join(&rehashed))), (7, ChainError::Link { .. })));

    // Bob's event spliced into alice's chain, renamed to her.
    let bob = lines(&export(&app, "bob").await);
    let mut spliced = original.clone();
    spliced[1] = bob[1].replace("\"user_id\":\"bob\"", "\"user_id\":\"alice\"");
    let (line, _) = broken_at(chain_only(&join(&spliced)));
    assert_eq!(line, 2);

    let mut garbage = original.clone();
    garbage[6] = "{not json".into();
    assert!(matches!(chain_only(&join(&garbage)), Err(VerifyFailure::NotJson { line: 7, .. })));
}

#[tokio::test]
async fn only_an_auditor_exports_and_only_a_valid_user() {
    let app = busy_app().await;
    let (status, _, _) = app.call_raw(Event::new("GET", "/audit/export").user("alice").query("user_id=alice")).await;
    assert_eq!(status, 403);
    let (status, _, body) = app
        .call_raw(Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query("stream=unattributed"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.lines().all(|l| !l.contains("\"user_id\":\"")), "the unattributed stream alone: {body}");
    for query in [
        "user_id=",
        "user_id=al%20ice",
        "user_id=alice&extra=1",
        "stream=alice",
        "user_id=alice&stream=unattributed",
        "user_id=alice&cursor=garbage",
    ] {
        let refused = app.call(Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query(query)).await;
        let shape = (refused.status, refused.content_type.as_str(), refused.slug());
        assert_eq!(shape, (400, "application/problem+json", "invalid-request"), "{query}: {refused:?}");
    }
    // A stale cursor (sealed by another deployment's key, or one since rotated) is refused
    // alike, with no line of the export.
    let other = shared::app::CursorKey::generate();
    let position = json!({"events": {"stream": "alice", "after": 0, "upto": 0}}).to_string();
    let stale = other.seal(&json!({"export": {"user": "alice"}}), position);
    let query = format!("user_id=alice&cursor={stale}");
    let refused = app.call(Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query(&query)).await;
    let shape = (refused.status, refused.content_type.as_str(), refused.slug());
    assert_eq!(shape, (400, "application/problem+json", "invalid-request"), "{refused:?}");
}

#[tokio::test]
async fn the_cli_exits_0_intact_1_tampered_naming_the_bad_event_3_unsealed_and_6_for_no_file() {
    let app = busy_app().await;
    let original = lines(&export(&app, "alice").await);
    let dir = tempfile::tempdir().unwrap();
    let (_, _, keys_body) = app.call_raw(Event::new("GET", "/.well-known/checkpoint-keys.json").anonymous()).await;
    let jwks = dir.path().join("checkpoint-keys.json");
    std::fs::write(&jwks, keys_body).unwrap();
    let verify = |file: &std::path::Path| {
        Command::new(cli_binary()).arg("verify").arg(file).arg("--checkpoint-keys").arg(&jwks).output().unwrap()
    };
    let good = dir.path().join("good.jsonl");
    std::fs::write(&good, join(&original)).unwrap();
    let out = verify(&good);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("OK: 9 events in 1 streams, every chain intact; 2 checkpoints verified"), "{stdout}");
    assert!(stdout.contains("sealed up to #9"), "{stdout}");

    let mut tampered = original.clone();
    tampered.remove(2);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, join(&tampered)).unwrap();
    let out = verify(&bad);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let bad_id =
        serde_json::from_str::<serde_json::Value>(&tampered[2]).unwrap()["event_id"].as_str().unwrap().to_owned();
    assert!(stdout.contains("TAMPERED: line 3") && stdout.contains(&bad_id), "{stdout}");

    // What the export says reaches the terminal escaped, even on a tampered line: an event
    // id that would clear the screen and reverse the text after it.
    let mut hostile = original.clone();
    let mut event: Value = serde_json::from_str(&hostile[1]).unwrap();
    event["event_id"] = json!("evil\u{1b}[2J\u{202e}gnp");
    hostile[1] = event.to_string();
    let evil = dir.path().join("evil.jsonl");
    std::fs::write(&evil, join(&hostile)).unwrap();
    let out = verify(&evil);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(r"first bad event: evil\u{1b}[2J\u{202e}gnp"), "{stdout}");
    assert!(!stdout.contains('\u{1b}') && !stdout.contains('\u{202e}'), "{stdout}");

    // Intact but not sealed yet: its own verdict and code, and every unsealed stream listed;
    // accepted, it is OK with a note.
    app.grant("alice", json!({"duration_seconds": 3600})).await;
    let unsealed = dir.path().join("unsealed.jsonl");
    std::fs::write(&unsealed, export(&app, "alice").await).unwrap();
    let out = verify(&unsealed);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.starts_with("UNSEALED: 10 events in 1 streams, every chain intact"), "{stdout}");
    assert!(stdout.contains("not sealed yet: alice #10..#10") && stdout.contains("--allow-unsealed"), "{stdout}");
    assert!(!stdout.contains("TAMPERED") && !stdout.contains("BROKEN"), "{stdout}");
    let out = Command::new(cli_binary())
        .arg("verify")
        .arg(&unsealed)
        .arg("--checkpoint-keys")
        .arg(&jwks)
        .arg("--allow-unsealed")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("OK: 10 events") && stdout.contains("alice #10..#10 not sealed"), "{stdout}");

    assert_eq!(verify(&dir.path().join("missing.jsonl")).status.code(), Some(6));
    // A JWK Set that is not one is a local problem too, not a verdict.
    let out = Command::new(cli_binary()).arg("verify").arg(&good).arg("--jwks").arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    // And a command line that is not one is clap's usage error.
    let out = Command::new(cli_binary()).arg("verify").arg(&good).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// A slow store makes an export longer, never a page slower: with every read of events
/// taking 4 s, 1,500 events (far less than a page's bytes: three reads, and an empty one to
/// end the stream) come in pages that each end within the page time plus one read, and their
/// concatenation verifies. Without the time bound the first page would make all four reads
/// (16 s; on DynamoDB, past API Gateway's 30 s with a few more). It waits about 16 s.
#[tokio::test]
async fn a_slow_store_makes_more_pages_each_within_the_page_time() {
    use shared::app::{EXPORT_PAGE_TIME, ExportScope, export_page};
    use shared::domain::{Actor, AgentId, AuditEvent, AuditEventType, Role, UserId};
    use shared::ports::Clock as _;
    let mut app = TestApp::on(e2e::Backend::Embedded).await;
    let support = Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support };
    let alice = UserId::parse("alice").unwrap();
    app.seed_chain((0..1_500).map(|i| {
        AuditEvent::new(AuditEventType::TokenUsed, app.clock.now(), Some(alice.clone()), support.clone())
            .with_detail(format!("GET /app/orders/{i}"))
    }))
    .await;
    checkpoint(&app).await;
    let read = std::time::Duration::from_secs(4);
    app.probe_chain_archive(read);

    let scope = ExportScope::User(alice);
    let (mut text, mut pages, mut cursor) = (String::new(), 0, None::<String>);
    loop {
        let started = tokio::time::Instant::now();
        let page = export_page(app.services(), &scope, cursor.as_deref()).await.unwrap();
        let took = started.elapsed();
        assert!(took <= EXPORT_PAGE_TIME + read, "page {pages} took {took:?}");
        text.push_str(&page.lines);
        pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert!(pages >= 2, "{pages} page(s)");
    let report = verify_export(&text, &app).unwrap();
    assert_eq!((report.events, report.checkpoints.as_slice()), (1_500, &[1][..]));
}

/// An HTTP front for `app`'s export as the CLI calls it (as the auditor `aud-1`): it serves
/// export pages until `limit` of them were served, then answers 503 to every page (a service
/// that stops answering mid-export) until the limit is raised.
struct ExportFront {
    base: String,
    limit: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    served: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ExportFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn export_front(app: std::sync::Arc<TestApp>) -> ExportFront {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (limit, served) = (std::sync::Arc::new(AtomicUsize::new(usize::MAX)), std::sync::Arc::new(AtomicUsize::new(0)));
    let (l, s) = (limit.clone(), served.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (app, limit, served) = (app.clone(), l.clone(), s.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (app, limit, served) = (app.clone(), limit.clone(), served.clone());
                    async move {
                        let (path, query) = (req.uri().path().to_owned(), req.uri().query().unwrap_or("").to_owned());
                        let event = match path.as_str() {
                            "/audit/export" => {
                                if served.load(Ordering::SeqCst) >= limit.load(Ordering::SeqCst) {
                                    let gone = hyper::Response::builder()
                                        .status(503)
                                        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"")))
                                        .unwrap();
                                    return Ok::<_, std::convert::Infallible>(gone);
                                }
                                served.fetch_add(1, Ordering::SeqCst);
                                Event::new("GET", "/audit/export").caller("aud-1", "[auditor]").query(&query)
                            }
                            _ => Event::new("GET", &path).anonymous(),
                        };
                        let response = shared::http::route(event.to_request(), app.services()).await;
                        let mut out = hyper::Response::builder().status(response.status());
                        for (name, value) in response.headers() {
                            out = out.header(name, value);
                        }
                        let body = bytes::Bytes::copy_from_slice(response.body().as_ref());
                        Ok(out.body(http_body_util::Full::new(body)).unwrap())
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    ExportFront { base, limit, served, task }
}

/// `support-access export` with `args` against `front` (which calls the app as the auditor,
/// whatever token is sent).
async fn cli_export(front: &ExportFront, args: &[&str]) -> std::process::Output {
    let mut all = ["export", "--endpoint", &front.base, "--token", "front"].map(str::to_owned).to_vec();
    all.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || Command::new(e2e::cli_binary()).args(all).output().unwrap()).await.unwrap()
}

/// `export --resume` after an interruption gives the very file a one-shot export gives, which
/// verifies; a `.cursor` that does not belong to the file or the command is refused (exit 6)
/// and a stale cursor by the service (exit 4), the file untouched either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_export_resumes_to_the_one_shot_file_and_a_foreign_cursor_is_refused() {
    use std::sync::atomic::Ordering;
    let app = TestApp::on(e2e::Backend::Embedded).await;
    let support = shared::domain::Actor {
        sub: shared::domain::AgentId::parse("agent-7").unwrap(),
        role: shared::domain::Role::Support,
    };
    let alice = shared::domain::UserId::parse("alice").unwrap();
    let padding = "x".repeat(600);
    {
        use shared::ports::Clock as _;
        app.seed_chain((0..9_000).map(|i| {
            shared::domain::AuditEvent::new(
                shared::domain::AuditEventType::TokenUsed,
                app.clock.now(),
                Some(alice.clone()),
                support.clone(),
            )
            .with_detail(format!("GET /app/orders/{i}?{padding}"))
        }))
        .await;
    }
    checkpoint(&app).await;
    let app = std::sync::Arc::new(app);
    let front = export_front(app.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let read = |name: &str| std::fs::read(dir.path().join(name)).unwrap_or_default();
    let code = |out: &std::process::Output| (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned());

    let one = cli_export(&front, &["--user", "alice", "--file", &path("one.jsonl")]).await;
    assert_eq!(code(&one).0, Some(0), "{}", code(&one).1);
    let pages = front.served.load(Ordering::SeqCst);
    assert!(pages >= 3, "{pages} page(s)");

    // The service stops answering after the first page: exit 5, the first page and its cursor kept.
    front.limit.store(pages + 1, Ordering::SeqCst);
    let cut = cli_export(&front, &["--user", "alice", "--file", &path("part.jsonl")]).await;
    assert_eq!(code(&cut).0, Some(5), "{}", code(&cut).1);
    let first = read("part.jsonl");
    assert!(!first.is_empty() && first.len() < read("one.jsonl").len() && read("one.jsonl").starts_with(&first));
    assert!(dir.path().join("part.jsonl.cursor").exists());

    // A .cursor that is not this file's, or not this command's: refused, nothing touched.
    std::fs::write(dir.path().join("short.jsonl"), &first[..first.len() / 2]).unwrap();
    std::fs::copy(dir.path().join("part.jsonl.cursor"), dir.path().join("short.jsonl.cursor")).unwrap();
    let mut edited = first.clone();
    edited[10] ^= 1;
    std::fs::write(dir.path().join("edited.jsonl"), &edited).unwrap();
    std::fs::copy(dir.path().join("part.jsonl.cursor"), dir.path().join("edited.jsonl.cursor")).unwrap();
    front.limit.store(usize::MAX, Ordering::SeqCst);
    for (file, scope) in [
        ("short.jsonl", &["--user", "alice"][..]),
        ("edited.jsonl", &["--user", "alice"]),
        ("part.jsonl", &["--user", "bob"]),
        ("part.jsonl", &["--unattributed"]),
    ] {
        let before = read(file);
        let served = front.served.load(Ordering::SeqCst);
        let file_path = path(file);
        let args: Vec<&str> = scope.iter().copied().chain(["--file", &file_path, "--resume"]).collect();
        let refused = cli_export(&front, &args).await;
        let (status, stderr) = code(&refused);
        assert_eq!(status, Some(6), "{file} {scope:?}: {stderr}");
        assert!(stderr.contains("does not belong to this export"), "{stderr}");
        assert_eq!((read(file), front.served.load(Ordering::SeqCst)), (before, served), "{file}: nothing done");
    }

    // A cursor the service no longer takes (edited, or sealed with a key since rotated): the
    // service's 400 (exit 4), the file and its state as they were.
    let state_path = dir.path().join("part.jsonl.cursor");
    let saved = std::fs::read_to_string(&state_path).unwrap();
    let mut stale: Value = serde_json::from_str(&saved).unwrap();
    stale["cursor"] = json!("AAAA.BBBB");
    std::fs::write(&state_path, stale.to_string()).unwrap();
    let refused = cli_export(&front, &["--user", "alice", "--file", &path("part.jsonl"), "--resume"]).await;
    assert_eq!(code(&refused).0, Some(4), "{}", code(&refused).1);
    assert_eq!(read("part.jsonl"), first);
    std::fs::write(&state_path, &saved).unwrap();

    // A crash half-way through appending a page leaves a partial line past the saved length:
    // --resume cuts it off and goes on; the result is the one-shot file, and it verifies.
    let mut torn = first.clone();
    torn.extend_from_slice(b"{\"type\":\"token.us");
    std::fs::write(dir.path().join("part.jsonl"), &torn).unwrap();
    let resumed = cli_export(&front, &["--user", "alice", "--file", &path("part.jsonl"), "--resume"]).await;
    assert_eq!(code(&resumed).0, Some(0), "{}", code(&resumed).1);
    // The very same lines; only the receipt's ECDSA signature differs (each signing draws
    // its own nonce), so the receipts are compared by their signed claims.
    let unsigned = |name: &str| {
        let text = String::from_utf8(read(name)).unwrap();
        let (body, receipt) = text.trim_end().rsplit_once('\n').unwrap();
        let jws: Value = serde_json::from_str(receipt).unwrap();
        (body.to_owned(), jws["jws"].as_str().unwrap().rsplit_once('.').unwrap().0.to_owned())
    };
    assert!(unsigned("part.jsonl") == unsigned("one.jsonl"), "the resumed export is the one-shot one");
    assert!(!state_path.exists(), "the state is removed once complete");
    let verified = tokio::task::spawn_blocking({
        let (file, keys) = (path("part.jsonl"), path("part.jsonl.checkpoint-keys.json"));
        move || Command::new(cli_binary()).args(["verify", &file, "--checkpoint-keys", &keys]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code(&verified).0, Some(0), "{}", code(&verified).1);
}
