//! An upgrade in place (#18): today's local-api started on a data directory that the release
//! before (commit 6cbabcb) wrote, `tests/fixtures/upgrade-6cbabcb` (its README says how).
//! What that release wrote keeps verifying: its chains go on where they stopped, its
//! checkpoints (signed by the token key, before checkpoints had a key of their own) stay in
//! every export beside the new ones, its users read their old events. An export the old CLI
//! saved has no receipt, which today's `verify` requires: it is refused by name, and the
//! same data exported again verifies (docs/operators.md, "Upgrading").
//! The last case does the same on DynamoDB (it needs `SUPPORT_ACCESS_TEST_AWS_ENDPOINT`): the
//! old release's table items, loaded into fresh tables of today's schema.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use e2e::TestApp;
use serde_json::{Value, json};
use shared::domain::Policy;
use shared::ports::Clock;
use support_access_cli::api::Api;
use support_access_cli::{Options, Report, VerifyFailure};
use support_access_verify::{ExportKeySet, ExportKeys};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/upgrade-6cbabcb")
}

fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture().join(name)).unwrap()
}

/// The events of an export, by id.
fn events_of(export: &str) -> BTreeMap<String, Value> {
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("event_id").is_some())
        .map(|v| (v["event_id"].as_str().unwrap().to_owned(), v))
        .collect()
}

/// The checkpoint lines of an export, by seq.
fn checkpoints_of(export: &str) -> BTreeMap<u64, Value> {
    export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["type"] == "checkpoint")
        .map(|v| (v["seq"].as_u64().unwrap(), v))
        .collect()
}

/// Today's local-api on a copy of the old data directory (git keeps no file modes, and
/// local-api refuses secrets that others can read: the copy is 0600 as the old one was).
struct Upgraded {
    _dir: tempfile::TempDir,
    base: String,
    runtime: Arc<local_api::Runtime>,
    http: reqwest::Client,
}

impl Upgraded {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(fixture().join("data")).unwrap() {
            let entry = entry.unwrap();
            let to = dir.path().join(entry.file_name());
            std::fs::copy(entry.path(), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // The fixture's issuer (make.sh), as an operator keeps it across an upgrade.
        let policy = Policy { issuer: "support-access".into(), ..Policy::default() };
        let (base, runtime) = e2e::local_api_on_loopback(dir.path(), policy).await;
        Self { _dir: dir, base, runtime, http: reqwest::Client::new() }
    }

    fn token(&self, sub: &str, groups: &[&str]) -> String {
        e2e::dev_token(&self.runtime, sub, groups)
    }

    async fn call(&self, method: &str, path: &str, bearer: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base)).bearer_auth(bearer);
        if let Some(body) = body {
            req = req.json(&body);
        }
        e2e::send_json(req).await
    }

    /// A grant for alice, a token minted and used twice: events on her old chain.
    async fn use_alice_again(&self) {
        let agent = self.token("agent-7", &["support"]);
        let grant = json!({"duration_seconds": 3600, "scope": "read", "note": "after the upgrade"});
        assert_eq!(self.call("POST", "/consents", &self.token("alice", &[]), Some(grant)).await.0, 201);
        let (status, minted) =
            self.call("POST", "/tokens", &agent, Some(json!({"user_id": "alice", "reason": "ticket 5511"}))).await;
        assert_eq!(status, 201, "{minted}");
        let token = minted["access_token"].as_str().unwrap();
        for _ in 0..2 {
            let (status, whoami) = self.call("GET", "/app/whoami", token, None).await;
            assert_eq!((status, whoami["user_id"].as_str()), (200, Some("alice")), "{whoami}");
        }
    }

    /// Seals what moved, as `local-api checkpoint` and its timer do: the checkpoints made.
    async fn checkpoint(&self) -> Vec<u64> {
        let run = shared::app::checkpoint_all(&self.runtime.services, None).await.unwrap();
        run.made.iter().map(|c| c.claims.seq).collect()
    }

    /// `GET /audit/export` page after page, as the CLI's `export` fetches it.
    async fn export(&self, user: Option<&str>) -> String {
        let api = Api::new(&self.base, &self.token("compliance-1", &["auditor"])).unwrap();
        let (mut text, mut cursor) = (String::new(), None);
        loop {
            let (page, next) = api.export_page(user, false, cursor.as_deref()).await.unwrap();
            text.push_str(&page);
            match next {
                Some(next) => cursor = Some(next),
                None => return text,
            }
        }
    }

    async fn export_keys(&self) -> ExportKeys {
        let text = self.http.get(format!("{}/.well-known/checkpoint-keys.json", self.base)).send().await.unwrap();
        let set: ExportKeySet = serde_json::from_str(&text.text().await.unwrap()).unwrap();
        ExportKeys::from_set(set).unwrap()
    }

    async fn verify(&self, export: &str) -> Report {
        support_access_cli::verify_export(export, &self.export_keys().await, Options::default())
            .unwrap_or_else(|e| panic!("{e}\n{export}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_saved_before_receipts_is_refused_by_name_and_the_same_data_exported_again_verifies() {
    let api = Upgraded::start().await;
    let old = fixture_text("alice.jsonl");
    // Refused for its missing receipt, the last check: every chain and the old checkpoint
    // (signatures, links, inclusion proofs, leaves against the events) passed before it.
    for keys in [
        api.export_keys().await,
        ExportKeys::from_set(serde_json::from_str(&fixture_text("jwks.json")).unwrap()).unwrap(),
    ] {
        match support_access_cli::verify_export(&old, &keys, Options::default()) {
            Err(VerifyFailure::NoReceipt) => {}
            other => panic!("expected the export to be refused for its missing receipt, got {other:?}"),
        }
    }
    // What the CLI tells its user, given the JWK Set the old CLI saved beside the export.
    let out = tokio::task::spawn_blocking(|| {
        Command::new(e2e::cli_binary())
            .arg("verify")
            .arg(fixture().join("alice.jsonl"))
            .arg("--jwks")
            .arg(fixture().join("jwks.json"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "TAMPERED: the export ends without a receipt: it was cut short, or made before exports carried one (export it again)"
    );

    // Exported again, by today's service from the old data: the old events and checkpoints,
    // as they were written, now with a receipt.
    let again = api.export(Some("alice")).await;
    let report = api.verify(&again).await;
    assert_eq!(events_of(&again), events_of(&old));
    // alice's export carries the checkpoints that hold her leaves: checkpoint 1 (make.sh).
    let old_checkpoints = checkpoints_of(&old);
    assert_eq!(old_checkpoints.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(checkpoints_of(&again), old_checkpoints);
    assert_eq!(report.checkpoints, [1]);
    assert!(report.unsealed().is_empty(), "{:?}", report.unsealed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_chains_go_on_where_they_stopped_and_every_export_verifies_with_the_old_checkpoints() {
    let api = Upgraded::start().await;
    let old_all = fixture_text("all.jsonl");
    let old_events = events_of(&old_all);
    // What make.sh wrote: alice's, bob's, carol's and dave's streams and the unattributed one.
    let streams: BTreeSet<String> =
        old_events.values().map(|e| support_access_verify::chain::stream_of(e).unwrap()).collect();
    assert_eq!(streams, ["alice", "bob", "carol", "dave", "~unattributed"].map(String::from).into());
    let old_head = |stream: &str| {
        old_events.values().filter(|e| e["user_id"] == stream).max_by_key(|e| e["seq"].as_u64()).unwrap().clone()
    };
    let alice_head = old_head("alice");

    api.use_alice_again().await;
    // Checkpoint 3 seals alice's new head, and dave's, which no old checkpoint sealed.
    assert_eq!(api.checkpoint().await, [3]);

    let all = api.export(None).await;
    let report = api.verify(&all).await;
    assert_eq!(report.checkpoints, [1, 2, 3]);
    assert!(report.unsealed().is_empty(), "{:?}", report.unsealed());
    assert_eq!(report.sealed.get("dave"), Some(&1));
    let events = events_of(&all);
    for (id, old) in &old_events {
        assert_eq!(events.get(id), Some(old), "event {id} as the old release wrote it");
    }
    let old_checkpoints = checkpoints_of(&old_all);
    let checkpoints = checkpoints_of(&all);
    // (In this fixture checkpoint 2's signature is the high-S twin, which the service no
    // longer writes: the full export verified above shows that stored ones still verify.)
    for seq in [1, 2] {
        assert_eq!(checkpoints[&seq], old_checkpoints[&seq], "checkpoint {seq} as the old release signed it");
    }
    // The new checkpoint links to the old ones' chain.
    let link = support_access_verify::checkpoint::link_of(old_checkpoints[&2]["jws"].as_str());
    let third = support_access_verify::checkpoint::verify_checkpoint(
        checkpoints[&3]["jws"].as_str().unwrap(),
        &api.export_keys().await.checkpoints,
    )
    .unwrap();
    assert_eq!(third.prev, link);

    // alice's first event after the upgrade is the next link of her old chain.
    let mine = api.export(Some("alice")).await;
    let report = api.verify(&mine).await;
    let next = events_of(&mine)
        .into_values()
        .find(|e| e["seq"].as_u64() == Some(alice_head["seq"].as_u64().unwrap() + 1))
        .expect("an event after the old head");
    assert_eq!((next["type"].as_str(), &next["prev_hash"]), (Some("consent.granted"), &alice_head["hash"]));
    assert_eq!(report.heads["alice"].0, alice_head["seq"].as_u64().unwrap() + 4, "granted, issued, used twice");
    assert_eq!(report.sealed["alice"], report.heads["alice"].0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reads_on_her_access_log_what_the_old_release_logged_and_an_old_cursor_still_pages_it() {
    let api = Upgraded::start().await;
    let old: BTreeSet<String> = events_of(&fixture_text("alice.jsonl")).into_keys().collect();
    assert!(old.len() >= 8, "make.sh logs a grant, an issue, uses, refusals and a revoke for alice: {old:?}");
    api.use_alice_again().await;

    let alice = api.token("alice", &[]);
    let (mut seen, mut cursor) = (Vec::new(), None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/me/access-log?limit=5&cursor={c}"),
            None => "/me/access-log?limit=5".to_owned(),
        };
        let (status, page) = api.call("GET", &path, &alice, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), seen_set.len(), "no event twice");
    assert!(old.is_subset(&seen_set), "missing: {:?}", old.difference(&seen_set).collect::<Vec<_>>());
    assert_eq!(seen.len(), old.len() + 4, "the old events and the four new ones");

    // A cursor the old release handed out (after alice's first page of two, make.sh) still
    // reads: the next two of her old events, newest first, as it would have then.
    let old_seqs: Vec<u64> = {
        let mut seqs: Vec<u64> =
            events_of(&fixture_text("alice.jsonl")).values().map(|e| e["seq"].as_u64().unwrap()).collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        seqs
    };
    let old_cursor = fixture_text("cursor.txt");
    let (status, page) =
        api.call("GET", &format!("/me/access-log?limit=2&cursor={}", old_cursor.trim()), &alice, None).await;
    assert_eq!(status, 200, "{page}");
    let seqs: Vec<u64> = page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, old_seqs[2..4], "{page}");
}

/// A DynamoDB JSON attribute (what `scan` prints) as the SDK's: the old tables hold strings
/// and numbers only.
fn attribute(value: &Value) -> aws_sdk_dynamodb::types::AttributeValue {
    use aws_sdk_dynamodb::types::AttributeValue;
    match value.as_object().and_then(|o| o.iter().next()) {
        Some((kind, Value::String(v))) if kind == "S" => AttributeValue::S(v.clone()),
        Some((kind, Value::String(v))) if kind == "N" => AttributeValue::N(v.clone()),
        _ => panic!("an attribute make.sh never wrote: {value}"),
    }
}

/// Puts every item of the old release's tables (`dynamodb/tables.json`, by the role of its
/// table) into `app`'s tables, as they were: the deployment after an update of its stack.
async fn load_old_tables(app: &TestApp) -> usize {
    let old: BTreeMap<String, Vec<serde_json::Map<String, Value>>> =
        serde_json::from_str(&fixture_text("dynamodb/tables.json")).unwrap();
    let tables = app.tables();
    let (dynamodb, _) = e2e::aws_clients().await;
    let mut loaded = 0;
    for (role, items) in old {
        let table = match role.as_str() {
            "consents" => &tables.consents,
            "audit" => &tables.audit,
            "heads" => &tables.heads,
            "checkpoints" => &tables.checkpoints,
            "requests" => &tables.requests,
            other => panic!("a table make.sh never dumped: {other}"),
        };
        for item in items {
            let item = item.iter().map(|(name, value)| (name.clone(), attribute(value))).collect();
            dynamodb.put_item().table_name(table).set_item(Some(item)).send().await.unwrap();
            loaded += 1;
        }
    }
    loaded
}

/// The old KMS key cannot be carried to the test's server: its public half (the JWK Set the
/// old CLI saved) stands for it beside today's checkpoint keys, as a stack's `CheckpointKey`
/// (which signed its checkpoints before the upgrade and after) stays published.
fn with_old_checkpoint_key(app: &TestApp) -> ExportKeys {
    let old: support_access_verify::JwkSet = serde_json::from_str(&fixture_text("dynamodb/jwks.json")).unwrap();
    let mut keys = (*app.services().checkpoint_keys).clone();
    keys.keys.extend(old.keys);
    ExportKeys::new(support_access_verify::KeyRing::from_jwks(keys).unwrap(), app.export_keys().receipts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_the_old_chains_go_on_and_the_marking_after_the_upgrade_seals_what_the_old_checkpoints_left() {
    let app = TestApp::on_aws(None).await;
    // After the fixture was written, as an upgrade is.
    app.clock.set(shared::ports::SystemClock.now());
    assert_eq!(load_old_tables(&app).await, 32, "19 events, 5 heads, 2 checkpoints and 4 leaves, 2 requests");
    let old_all = fixture_text("dynamodb/all.jsonl");
    let old_events = events_of(&old_all);
    let alice_head = old_events.values().filter(|e| e["user_id"] == "alice").max_by_key(|e| e["seq"].as_u64()).unwrap();
    let keys = with_old_checkpoint_key(&app);

    assert_eq!(app.grant("alice", json!({"duration_seconds": 3600})).await.status, 201);
    let minted = app.mint("alice").await;
    assert_eq!(minted.status, 201, "{}", minted.body);
    for _ in 0..2 {
        assert!(app.authorize(minted.str("access_token"), "GET", "/app/whoami").await.is_authorized);
    }

    // Before the marking, a checkpoint seals alice's head (moved, so marked, since the
    // upgrade) and not dave's, which moved before it: his event stays unsealed.
    let run = shared::app::checkpoint_all(app.services(), None).await.unwrap();
    assert_eq!(run.made.iter().map(|c| c.claims.seq).collect::<Vec<_>>(), [3]);
    let (all, _) = app.export_pages(&shared::app::ExportScope::All).await;
    let report = support_access_cli::verify_export(&all, &keys, Options { allow_unsealed: true }).unwrap();
    assert_eq!(report.unsealed(), [("dave".to_owned(), 1, 1)]);

    // `local-api mark-unsealed-heads`, once; then the next checkpoint seals him.
    assert_eq!(app.dynamo().mark_unsealed_heads(app.clock.now().unix()).await.unwrap(), 1);
    let run = shared::app::checkpoint_all(app.services(), None).await.unwrap();
    assert_eq!(run.made.iter().map(|c| c.claims.seq).collect::<Vec<_>>(), [4]);

    let (all, _) = app.export_pages(&shared::app::ExportScope::All).await;
    let report =
        support_access_cli::verify_export(&all, &keys, Options::default()).unwrap_or_else(|e| panic!("{e}\n{all}"));
    assert_eq!(report.checkpoints, [1, 2, 3, 4]);
    let events = events_of(&all);
    for (id, old) in &old_events {
        assert_eq!(events.get(id), Some(old), "event {id} as the old release wrote it");
    }
    let (old_checkpoints, checkpoints) = (checkpoints_of(&old_all), checkpoints_of(&all));
    for seq in [1, 2] {
        assert_eq!(checkpoints[&seq], old_checkpoints[&seq], "checkpoint {seq} as the old release signed it");
    }
    // alice's chain runs on from her old head.
    let (mine, _) =
        app.export_pages(&shared::app::ExportScope::User(shared::domain::UserId::parse("alice").unwrap())).await;
    let report = support_access_cli::verify_export(&mine, &keys, Options::default()).unwrap();
    let old_seq = alice_head["seq"].as_u64().unwrap();
    let next = events_of(&mine).into_values().find(|e| e["seq"].as_u64() == Some(old_seq + 1)).unwrap();
    assert_eq!((next["type"].as_str(), &next["prev_hash"]), (Some("consent.granted"), &alice_head["hash"]));
    assert_eq!(report.heads["alice"].0, old_seq + 4, "granted, issued, used twice");
}
