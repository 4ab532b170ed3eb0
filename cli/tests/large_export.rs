//! `verify` reads an export as a stream: a large export (10,000 events over 100 streams and
//! a long one, 10 checkpoints) verifies clean from a file and from a pipe, and a tamper at
//! its very end (the last event edited, or cut off, or the receipt cut off) is still caught. The 10^6-event figure
//! is `scripts/bench-verify` (BENCHMARKS.md), too slow for the test command.

use std::io::{BufReader, Write};
use std::process::{Command, Stdio};

use support_access_cli::{Options, VerifyFailure, verify_stream};
use support_access_verify::ExportKeys;

mod support {
    pub mod large_export;
}
use support::large_export::{Shape, write_export};

const EVENTS: u64 = 10_000;

struct Export {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    keys_path: std::path::PathBuf,
    keys: ExportKeys,
    lines: Vec<String>,
}

fn export() -> Export {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    let jwks = write_export(Shape::of(EVENTS), &mut file).unwrap();
    let keys_path = dir.path().join("checkpoint-keys.json");
    std::fs::write(&keys_path, serde_json::to_string(&jwks).unwrap()).unwrap();
    let lines = std::fs::read_to_string(&path).unwrap().lines().map(str::to_owned).collect();
    Export { _dir: dir, path, keys_path, keys: ExportKeys::from_set(jwks).unwrap(), lines }
}

fn verify_file(path: &std::path::Path, keys: &ExportKeys) -> Result<support_access_cli::Report, VerifyFailure> {
    let mut input = BufReader::new(std::fs::File::open(path).unwrap());
    verify_stream(&mut input, keys, Options::default()).unwrap()
}

fn rewrite(export: &Export, lines: &[String]) -> std::path::PathBuf {
    let path = export.path.with_file_name("tampered.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// One export for every check (made and verified unoptimised, each pass costs seconds).
#[test]
fn a_large_export_verifies_from_a_file_and_a_pipe_and_a_tamper_at_its_end_is_caught() {
    let export = export();
    assert_eq!(Shape::of(EVENTS).events(), EVENTS);
    let cli = env!("CARGO_BIN_EXE_support-access");
    let out =
        Command::new(cli).arg("verify").arg(&export.path).arg("--checkpoint-keys").arg(&export.keys_path).output();
    let out = out.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("OK: 10000 events in 101 streams, every chain intact; 10 checkpoints verified"),
        "{stdout}"
    );
    assert!(stdout.contains("  long: 1000 events, head ") && stdout.contains("sealed up to #1000"), "{stdout}");

    // The last event cut off: the chain is intact, the last checkpoint's leaf is not.
    let last = EVENTS as usize - 1;
    let mut cut = export.lines.clone();
    cut.remove(last);
    match verify_file(&rewrite(&export, &cut), &export.keys) {
        Err(VerifyFailure::Checkpoint { seq: 10, problem, .. }) => assert!(problem.contains("cut off"), "{problem}"),
        other => panic!("expected the last checkpoint to fail, got {other:?}"),
    }

    // Cut short before its receipt: refused as such, even with every chain and checkpoint whole.
    let short = &export.lines[..export.lines.len() - 1];
    assert!(matches!(verify_file(&rewrite(&export, short), &export.keys), Err(VerifyFailure::NoReceipt)));

    // Through a pipe (spooled, since verify reads twice), with the last event edited: its
    // hash no longer matches, named at its line.
    let mut edited = export.lines.clone();
    edited[last] = edited[last].replace("\"read\"", "\"full\"");
    assert_ne!(edited[last], export.lines[last]);
    let mut child = Command::new(cli)
        .args(["verify", "/dev/stdin", "--checkpoint-keys"])
        .arg(&export.keys_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let text = edited.join("\n") + "\n";
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("TAMPERED: line {}: event {last}", last + 1)), "{stdout}");
}
