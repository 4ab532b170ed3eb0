//! An upgrade in place (#18): today's local-api started on a data directory that the release
//! before (commit 6cbabcb) wrote, `tests/fixtures/upgrade-6cbabcb` (its README says how).
//! What that release wrote keeps verifying: its chains go on where they stopped, its
//! checkpoints (signed by the token key, before checkpoints had a key of their own) stay in
//! every export beside the new ones, its users read their old events. An export the old CLI
//! saved has no receipt, which today's `verify` requires: it is refused by name, and the
//! same data exported again verifies (docs/operators.md, "Upgrading").

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde_json::{Value, json};
use shared::domain::Policy;
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
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
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
