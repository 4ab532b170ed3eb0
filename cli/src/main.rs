//! `support-access verify EXPORT.jsonl --jwks JWKS.json`: exit 0 when every chain in the
//! export is intact and sealed by a checkpoint signed with a key of the JWK Set, 1 naming the
//! first bad line when not, 2 when a file cannot be read or the JWK Set holds no usable key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use support_access_cli::{Options, VerifyFailure, verify_export};
use support_access_verify::{JwkSet, KeyRing};

#[derive(Parser)]
#[command(name = "support-access", version, about = "support-access: audit-log tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an audit-log export (from GET /audit/export): sequences, hashes, links, and the
    /// signed checkpoints that seal every chain.
    Verify {
        /// The export, JSON Lines.
        export: PathBuf,
        /// The service's JWK Set (GET /.well-known/jwks.json), saved to a file.
        #[arg(long)]
        jwks: PathBuf,
        /// Accept events newer than the last checkpoint of their stream (they are reported).
        #[arg(long)]
        allow_unsealed: bool,
    },
}

fn read(path: &Path) -> Result<String, ExitCode> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("support-access: cannot read {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn keys(path: &Path) -> Result<KeyRing, ExitCode> {
    let text = read(path)?;
    let unusable = |problem: String| {
        eprintln!("support-access: {} is not a usable JWK Set: {problem}", path.display());
        ExitCode::from(2)
    };
    let jwks: JwkSet = serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
    KeyRing::from_jwks(jwks).map_err(|e| unusable(e.to_string()))
}

fn verify(export: &Path, jwks: &Path, options: Options) -> Result<ExitCode, ExitCode> {
    let keys = keys(jwks)?;
    let text = read(export)?;
    match verify_export(&text, &keys, options) {
        Ok(report) => {
            println!(
                "OK: {} events in {} streams, every chain intact; {} checkpoints verified",
                report.events,
                report.heads.len(),
                report.checkpoints.len()
            );
            for (stream, (seq, hash)) in &report.heads {
                let sealed = report.sealed.get(stream).map_or("none".to_owned(), |s| format!("#{s}"));
                println!("  {stream}: {seq} events, head {hash}, sealed up to {sealed}");
            }
            for (stream, from, to) in report.unsealed() {
                println!("  note: {stream} #{from}..#{to} not sealed by a checkpoint yet (accepted)");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("BROKEN: {failure}");
            if let VerifyFailure::Broken { event_id: Some(id), .. } = &failure {
                println!("  first bad event: {id}");
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Verify { export, jwks, allow_unsealed } => {
            verify(&export, &jwks, Options { allow_unsealed }).unwrap_or_else(|code| code)
        }
    }
}
