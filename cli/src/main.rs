//! The commands support and audit staff use every day:
//! - `request` access from a user (scope, duration, reason), who approves or denies it, and
//!   `status` of the requests one filed;
//! - `mint` an impersonation token for a user who consented (prints the token, or with
//!   `--header` an `Authorization` header);
//! - `audit`: the audit log with filters, as a table or JSON Lines, and `--follow` to keep
//!   printing new events;
//! - `export` a user's (or every) stream with its checkpoints, and `verify` an export offline:
//!   exit 0 when every chain is intact and sealed by a checkpoint signed with a key of the JWK
//!   Set, 1 naming the first bad line when not, 2 when a file cannot be read or the JWK Set
//!   holds no usable key.
//!
//! The online commands take the endpoint and the caller's identity token from `--endpoint` /
//! `SUPPORT_ACCESS_ENDPOINT` and `--token` / `SUPPORT_ACCESS_TOKEN`; a refusal prints the
//! service's problem details and exits 1 (2 when the service cannot be reached).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::collections::HashSet;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use support_access_cli::api::{
    Api, ApiError, AuditFilter, event_header, event_row, parse_duration, request_header, request_row, shown,
};
use support_access_cli::{Options, VerifyFailure, verify_export};
use support_access_verify::{JwkSet, KeyRing};

#[derive(Parser)]
#[command(name = "support-access", version, about = "support-access: audit-log tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the service is and who is calling.
#[derive(Args)]
struct Online {
    /// The API's base URL, e.g. https://abc.execute-api.eu-west-1.amazonaws.com or
    /// http://127.0.0.1:3000 (local-api).
    #[arg(long, env = "SUPPORT_ACCESS_ENDPOINT")]
    endpoint: String,
    /// Your identity token from the app's identity provider (`local-api dev-token` locally).
    #[arg(long, env = "SUPPORT_ACCESS_TOKEN", hide_env_values = true)]
    token: String,
}

#[derive(Subcommand)]
enum Command {
    /// Ask a user for access (support group): they approve or deny it in the app, and an
    /// approval grants exactly this scope and duration.
    Request {
        #[command(flatten)]
        online: Online,
        /// The user whose account you need.
        #[arg(long)]
        user: String,
        /// Why (a ticket): the user reads it before deciding.
        #[arg(long)]
        reason: String,
        /// `read` (GET, HEAD, OPTIONS only) or `full`.
        #[arg(long, default_value = "read", value_parser = ["read", "full"])]
        scope: String,
        /// How long the access would last once approved: seconds, or 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        duration: i64,
    },
    /// The state of every request you filed, newest first (support group): pending, approved
    /// (with the consent it granted), denied or expired.
    Status {
        #[command(flatten)]
        online: Online,
        /// Only this request (exit 1 when it is not one of yours).
        request_id: Option<String>,
        /// Only requests for this user.
        #[arg(long)]
        user: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mint an impersonation token for a user who consented (support group).
    Mint {
        #[command(flatten)]
        online: Online,
        /// The user to act as.
        #[arg(long)]
        user: String,
        /// Why (a ticket): it goes on the user's access log.
        #[arg(long)]
        reason: String,
        /// Print `Authorization: Bearer <token>` instead of the bare token.
        #[arg(long)]
        header: bool,
    },
    /// Read the audit log, newest first (auditor group).
    Audit {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// An event type, e.g. token.issued.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// RFC 3339, e.g. 2026-11-25T00:00:00Z.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// How many events at most (without --follow).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep printing new events as they happen (oldest first), until interrupted.
        #[arg(long)]
        follow: bool,
        /// Seconds between polls with --follow.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Save an export of one user's stream (or every stream) with its checkpoints (auditor
    /// group), for `verify`.
    Export {
        #[command(flatten)]
        online: Online,
        #[arg(long)]
        user: Option<String>,
        /// Where to write it (JSON Lines); standard output when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Also save the service's checkpoint keys (GET /.well-known/checkpoint-keys.json) here,
        /// to verify the export with.
        #[arg(long = "checkpoint-keys", visible_alias = "jwks")]
        jwks: Option<PathBuf>,
    },
    /// Verify an audit-log export (from GET /audit/export): sequences, hashes, links, and the
    /// signed checkpoints that seal every chain.
    Verify {
        /// The export, JSON Lines.
        export: PathBuf,
        /// The keys that signed the checkpoints: the service's checkpoint keys (GET
        /// /.well-known/checkpoint-keys.json), saved to a file. A JWK Set saved from
        /// /.well-known/jwks.json before checkpoints were published apart works too.
        #[arg(long = "checkpoint-keys", visible_alias = "jwks")]
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
                println!("{}", shown(&format!("  {stream}: {seq} events, head {hash}, sealed up to {sealed}")));
            }
            for (stream, from, to) in report.unsealed() {
                println!(
                    "{}",
                    shown(&format!("  note: {stream} #{from}..#{to} not sealed by a checkpoint yet (accepted)"))
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(failure) => {
            println!("BROKEN: {}", shown(&failure.to_string()));
            if let VerifyFailure::Broken { event_id: Some(id), .. } = &failure {
                println!("  first bad event: {}", shown(id));
            }
            Ok(ExitCode::from(1))
        }
    }
}

/// Prints a failed call and picks the exit code: 1 for a refusal, 2 when unreachable.
fn failed(e: ApiError) -> ExitCode {
    eprintln!("support-access: {}", shown(&e.to_string()));
    match e {
        ApiError::Unreachable { .. } => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn connect(online: &Online) -> Result<Api, ExitCode> {
    Api::new(&online.endpoint, &online.token).map_err(failed)
}

async fn request(
    online: Online,
    user: String,
    reason: String,
    scope: String,
    duration: i64,
) -> Result<ExitCode, ExitCode> {
    let filed = connect(&online)?.request(&user, &reason, &scope, duration).await.map_err(failed)?;
    println!("{}", shown(filed["request_id"].as_str().unwrap_or("?")));
    let until = filed["expires_at"].as_str().unwrap_or("?");
    let line = format!("asked {user} for {scope} access for {duration}s; pending until {until} (see `status`)");
    eprintln!("support-access: {}", shown(&line));
    Ok(ExitCode::SUCCESS)
}

async fn status(online: Online, id: Option<String>, user: Option<String>, json: bool) -> Result<ExitCode, ExitCode> {
    let requests = connect(&online)?.requests().await.map_err(failed)?;
    let field = |r: &serde_json::Value, key: &str| r[key].as_str().map(str::to_owned);
    let listed: Vec<_> = requests
        .iter()
        .filter(|r| id.is_none() || field(r, "request_id") == id)
        .filter(|r| user.is_none() || field(r, "user_id") == user)
        .collect();
    if let (Some(id), true) = (&id, listed.is_empty()) {
        eprintln!("support-access: no request {} among yours", shown(id));
        return Ok(ExitCode::from(1));
    }
    if !json {
        println!("{}", request_header());
    }
    for r in listed {
        if json { println!("{r}") } else { println!("{}", request_row(r)) }
    }
    Ok(ExitCode::SUCCESS)
}

async fn mint(online: Online, user: String, reason: String, header: bool) -> Result<ExitCode, ExitCode> {
    let minted = connect(&online)?.mint(&user, &reason).await.map_err(failed)?;
    let token =
        minted["access_token"].as_str().ok_or_else(|| failed(ApiError::Unreadable("no access_token".into())))?;
    let token = shown(token);
    if header {
        println!("Authorization: Bearer {token}")
    } else {
        println!("{token}")
    }
    let (scope, until) = (minted["scope"].as_str().unwrap_or("?"), minted["expires_at"].as_str().unwrap_or("?"));
    eprintln!("support-access: {}", shown(&format!("token for {user} ({scope} scope) until {until}")));
    Ok(ExitCode::SUCCESS)
}

fn print_event(event: &serde_json::Value, json: bool) {
    if json { println!("{event}") } else { println!("{}", event_row(event)) }
}

async fn audit(
    online: Online,
    filter: AuditFilter,
    limit: usize,
    json: bool,
    follow: Option<Duration>,
) -> Result<ExitCode, ExitCode> {
    let api = connect(&online)?;
    if !json {
        println!("{}", event_header());
    }
    let Some(interval) = follow else {
        let mut printed = 0;
        let mut cursor = None;
        while printed < limit {
            let page = api.audit(&filter, (limit - printed).min(100), cursor.as_deref()).await.map_err(failed)?;
            page.events.iter().for_each(|e| print_event(e, json));
            printed += page.events.len();
            match page.next_cursor {
                Some(next) if !page.events.is_empty() => cursor = Some(next),
                _ => break,
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    // Follow: poll the newest page and print what was not printed yet, oldest first. Events
    // are deduplicated by id; a page of 100 per poll is plenty at human pace, and a burst
    // beyond it is reported rather than silently skipped.
    let mut seen: HashSet<String> = HashSet::new();
    let mut first = true;
    loop {
        let page = api.audit(&filter, 100, None).await.map_err(failed)?;
        let fresh: Vec<_> =
            page.events.iter().filter(|e| e["event_id"].as_str().is_some_and(|id| !seen.contains(id))).collect();
        if !first && fresh.len() == page.events.len() && page.next_cursor.is_some() {
            eprintln!("support-access: more than 100 new events since the last poll; older ones are not shown");
        }
        let shown = if first { fresh.len().min(limit) } else { fresh.len() };
        for event in fresh.iter().take(shown).rev() {
            print_event(event, json);
        }
        seen.extend(fresh.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
        first = false;
        tokio::time::sleep(interval).await;
    }
}

async fn export(
    online: Online,
    user: Option<String>,
    output: Option<PathBuf>,
    jwks: Option<PathBuf>,
) -> Result<ExitCode, ExitCode> {
    let api = connect(&online)?;
    let lines = api.export(user.as_deref()).await.map_err(failed)?;
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|e| {
            eprintln!("support-access: cannot write {}: {e}", path.display());
            ExitCode::from(2)
        })
    };
    match &output {
        Some(path) => write(path, &lines)?,
        None => print!("{lines}"),
    }
    if let Some(path) = &jwks {
        write(path, &api.checkpoint_keys().await.map_err(failed)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    let online = async move {
        match command {
            Command::Verify { export, jwks, allow_unsealed } => verify(&export, &jwks, Options { allow_unsealed }),
            Command::Request { online, user, reason, scope, duration } => {
                request(online, user, reason, scope, duration).await
            }
            Command::Status { online, request_id, user, json } => status(online, request_id, user, json).await,
            Command::Mint { online, user, reason, header } => mint(online, user, reason, header).await,
            Command::Audit { online, user, actor, event_type, from, to, limit, json, follow, interval } => {
                let filter = AuditFilter { user_id: user, actor, event_type, from, to };
                let follow = follow.then(|| Duration::from_secs_f64(interval.clamp(0.1, 3600.0)));
                audit(online, filter, limit, json, follow).await
            }
            Command::Export { online, user, output, jwks } => export(online, user, output, jwks).await,
        }
    };
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(online).unwrap_or_else(|code| code),
        Err(e) => {
            eprintln!("support-access: cannot start: {e}");
            ExitCode::from(2)
        }
    }
}
