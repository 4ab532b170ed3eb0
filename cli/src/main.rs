//! `support-access verify EXPORT.jsonl`: exit 0 when every chain in the export is intact,
//! 1 naming the first bad event when one is not, 2 when the file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "support-access", version, about = "support-access: audit-log tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify an audit-log export (from GET /audit/export): sequences, hashes and links.
    Verify {
        /// The export, JSON Lines.
        export: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Verify { export } => {
            let text = match std::fs::read_to_string(&export) {
                Ok(text) => text,
                Err(e) => {
                    eprintln!("support-access: cannot read {}: {e}", export.display());
                    return ExitCode::from(2);
                }
            };
            match support_access_cli::verify_export(&text) {
                Ok(report) => {
                    println!("OK: {} events in {} streams, every chain intact", report.events, report.heads.len());
                    for (stream, (seq, hash)) in &report.heads {
                        println!("  {stream}: {seq} events, head {hash}");
                    }
                    ExitCode::SUCCESS
                }
                Err(failure) => {
                    println!("BROKEN: {failure}");
                    if let support_access_cli::VerifyFailure::Broken { event_id: Some(id), .. } = &failure {
                        println!("  first bad event: {id}");
                    }
                    ExitCode::from(1)
                }
            }
        }
    }
}
