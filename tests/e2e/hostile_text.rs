//! Hostile text: what a user or agent types is displayed to others (the audit log, the
//! user's access log, the CLI's tables). A newline in a reason must not fake a row of
//! `support-access audit`; a right-to-left override or a line separator in a reason or note
//! is refused (400 `invalid-request`); and no caller may bear the names the log gives the
//! service (`support-access`) and an unidentified caller (`unknown`).

use e2e::{Event, TestApp};
use serde_json::json;
use shared::domain::Policy;

#[tokio::test]
async fn a_bidirectional_override_or_line_separator_in_a_reason_or_note_is_refused() {
    let app = TestApp::new().await;
    for note in ["billing \u{202E}4411 tekcit", "billing\u{2028}ticket", "ticket \u{2066}4411\u{2069}"] {
        let refused = app
            .call(Event::new("POST", "/consents").user("alice").json(json!({"duration_seconds": 900, "note": note})))
            .await;
        assert_eq!((refused.status, refused.slug()), (400, "invalid-request"), "{note:?}");
    }
    assert!(app.consent("alice").await.is_none(), "nothing granted");
    app.grant("alice", json!({"duration_seconds": 900, "note": "ticket 4411 \u{200C} \u{1F468}\u{200D}\u{1F469}"}))
        .await;
    let before = app.snapshot(&["alice"]).await;
    for reason in ["ticket 4411 \u{202E}kcab", "ticket 4411\u{2029}forged", "ticket \u{200F}4411"] {
        let refused = app
            .call(
                Event::new("POST", "/tokens")
                    .caller("agent-7", "[support]")
                    .json(json!({"user_id": "alice", "reason": reason})),
            )
            .await;
        assert_eq!((refused.status, refused.slug()), (400, "invalid-request"), "{reason:?}");
    }
    assert_eq!(app.snapshot(&["alice"]).await, before, "nothing written");
}

#[tokio::test]
async fn the_service_s_own_actor_names_are_no_caller_s() {
    let app = TestApp::new().await;
    for name in ["unknown", "support-access"] {
        let grant = app.call(Event::new("POST", "/consents").user(name).json(json!({"duration_seconds": 900}))).await;
        assert_eq!((grant.status, grant.slug()), (403, "forbidden"), "user {name}");
        let log = app.call(Event::new("GET", "/me/access-log").user(name)).await;
        assert_eq!((log.status, log.slug()), (403, "forbidden"), "user {name}");
    }
    app.grant("alice", json!({"duration_seconds": 900})).await;
    let before = app.snapshot(&["alice"]).await;
    for name in ["unknown", "support-access"] {
        let mint = app
            .call(
                Event::new("POST", "/tokens")
                    .caller(name, "[support]")
                    .json(json!({"user_id": "alice", "reason": "ticket 4411"})),
            )
            .await;
        assert_eq!((mint.status, mint.slug()), (403, "forbidden"), "agent {name}");
    }
    assert_eq!(app.snapshot(&["alice"]).await, before, "nothing written");
}

/// Runs the CLI to completion (on a blocking thread: the server runs on this test's runtime).
async fn cli(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || std::process::Command::new(e2e::cli_binary()).args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_reason_cannot_fake_a_row_of_the_cli_s_audit_table() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) = e2e::local_api_on_loopback(dir.path(), Policy::default()).await;
    let token = |sub: &str, groups: &[&str]| e2e::dev_token(&runtime, sub, groups);
    let http = reqwest::Client::new();
    let granted = http
        .post(format!("{base}/consents"))
        .bearer_auth(token("alice", &[]))
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    // A reason that, printed as it is, adds a row saying alice revoked her consent.
    let forged = "ticket 4411\n2026-11-25T10:00:01Z    consent.revoked  alice             alice             ";
    let minted = http
        .post(format!("{base}/tokens"))
        .bearer_auth(token("agent-7", &["support"]))
        .json(&json!({"user_id": "alice", "reason": forged}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 201, "a newline is allowed in a reason");

    let auditor = token("aud-1", &["auditor"]);
    let out = cli(vec![
        "audit".into(),
        "--endpoint".into(),
        base,
        "--token".into(),
        auditor,
        "--user".into(),
        "alice".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "a header, token.issued, consent.granted:\n{table}");
    assert!(!rows.iter().any(|r| r.starts_with("2026-11-25T10:00:01Z")), "{table}");
    assert!(
        rows[1].contains("token.issued") && rows[1].contains(r"reason=ticket 4411\n2026-11-25T10:00:01Z"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_an_export_on_the_terminal_carry_no_raw_format_character_yet_read_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runtime) = e2e::local_api_on_loopback(dir.path(), Policy::default()).await;
    // A reason may hold the zero-width joiner and non-joiner (Persian and emoji need them):
    // invisible, so a terminal must be shown them escaped.
    let reason = "ticket 4411 \u{200C} \u{1F468}\u{200D}\u{1F469}";
    let http = reqwest::Client::new();
    let granted = http
        .post(format!("{base}/consents"))
        .bearer_auth(e2e::dev_token(&runtime, "alice", &[]))
        .json(&json!({"duration_seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 201);
    let minted = http
        .post(format!("{base}/tokens"))
        .bearer_auth(e2e::dev_token(&runtime, "agent-7", &["support"]))
        .json(&json!({"user_id": "alice", "reason": reason}))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 201);
    let online = vec![
        "--endpoint".to_owned(),
        base,
        "--token".to_owned(),
        e2e::dev_token(&runtime, "aud-1", &["auditor"]),
        "--user".to_owned(),
        "alice".to_owned(),
    ];
    let run = |head: &[&str], tail: &[&str]| {
        cli(head
            .iter()
            .map(|s| s.to_string())
            .chain(online.clone())
            .chain(tail.iter().map(|s| s.to_string()))
            .collect())
    };
    let raw = |text: &str| text.chars().any(|c| c != '\n' && support_access_verify::is_unprintable(c));

    let json = run(&["audit"], &["--output", "json", "--type", "token.issued"]).await;
    let stdout = String::from_utf8(json.stdout).unwrap();
    assert!(json.status.success() && !raw(&stdout) && stdout.contains(r"\u200d"), "{stdout}");
    let event: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(event["reason"], reason, "the same value once read");

    let (file, keys) = (dir.path().join("alice.jsonl"), dir.path().join("keys.json"));
    let (file_s, keys_s) = (file.display().to_string(), keys.display().to_string());
    let printed = run(&["export"], &["--checkpoint-keys", &keys_s]).await;
    let printed = String::from_utf8(printed.stdout).unwrap();
    assert!(!raw(&printed) && printed.contains(r"\u200c"), "{printed}");
    assert!(run(&["export"], &["--file", &file_s]).await.status.success());
    assert!(raw(&std::fs::read_to_string(&file).unwrap()), "--file keeps the service's bytes");
    // Both verify alike: the escapes are JSON's, the values (and so the hashes) unchanged.
    let shown_copy = dir.path().join("shown.jsonl");
    std::fs::write(&shown_copy, &printed).unwrap();
    for export in [&file, &shown_copy] {
        let out = cli(vec![
            "verify".into(),
            export.display().to_string(),
            "--checkpoint-keys".into(),
            keys_s.clone(),
            "--allow-unsealed".into(),
        ])
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    }
}
