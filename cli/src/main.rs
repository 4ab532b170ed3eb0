//! The commands support and audit staff use every day:
//! - `request` access from a user (scope, duration, reason), who approves or denies it, and
//!   `status` of the requests one filed;
//! - `mint` an impersonation token for a user who consented (prints the token, or with
//!   `--header` an `Authorization` header);
//! - `audit`: the audit log with filters, as a table or JSON Lines, and `--follow` to keep
//!   printing new events;
//! - `export` a user's (or every) stream with its checkpoints, and `verify` an export offline:
//!   every chain intact and sealed by a checkpoint signed with a key of the JWK Set, tampered
//!   (naming the first bad line), or intact but not sealed yet.
//!
//! The online commands take the endpoint and the caller's identity token from `--endpoint` /
//! `SUPPORT_ACCESS_ENDPOINT` and `--token` / `SUPPORT_ACCESS_TOKEN`; a refusal prints the
//! service's problem details with its request id. Every command ends with a code of the one
//! table, [`Exit`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::collections::HashSet;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use support_access_cli::api::{
    Api, ApiError, AuditFilter, event_header, event_row, parse_duration, parse_endpoint, request_header, request_row,
    shown, shown_json,
};
use support_access_cli::exit::Exit;
use support_access_cli::{Options, VerifyFailure, verify_stream};
use support_access_verify::chain::hex;
use support_access_verify::{ExportKeySet, ExportKeys};

#[derive(Parser)]
#[command(
    name = "support-access",
    version,
    about = "support-access: ask users for access, mint impersonation tokens, read, export and verify the audit log",
    after_help = Exit::help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Columns for people, one row per line, every character a terminal could act on escaped.
    Table,
    /// One JSON object per line (JSON Lines), for scripts and `jq`.
    Json,
}

/// How a listing is printed: `--output json|table`, as the AWS CLI spells it.
#[derive(Args)]
struct Output {
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// The same as `--output json` (kept for the scripts that use it).
    #[arg(long, conflicts_with = "output")]
    json: bool,
}

impl Output {
    fn json(&self) -> bool {
        self.json || self.output == Format::Json
    }
}

/// Where the service is and who is calling.
#[derive(Args)]
struct Online {
    /// The API's base URL, e.g. https://abc.execute-api.eu-west-1.amazonaws.com or
    /// http://127.0.0.1:3000 (local-api).
    #[arg(long, env = "SUPPORT_ACCESS_ENDPOINT", value_parser = parse_endpoint)]
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
        #[command(flatten)]
        output: Output,
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
        /// Only events on this user's stream.
        #[arg(long)]
        user: Option<String>,
        /// Only events by this actor (an agent's, auditor's or operator's id, or a user's).
        #[arg(long)]
        actor: Option<String>,
        /// An event type, e.g. token.issued.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events at or after this time, RFC 3339, e.g. 2026-11-25T00:00:00Z.
        #[arg(long)]
        from: Option<String>,
        /// Only events at or before this time, RFC 3339, e.g. 2026-11-26T00:00:00Z.
        #[arg(long)]
        to: Option<String>,
        /// How many events at most (without --follow).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        output: Output,
        /// Keep printing new events as they happen (oldest first), until interrupted.
        #[arg(long)]
        follow: bool,
        /// Seconds between polls with --follow.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Save an export of one user's stream (or the unattributed one, or every stream) with
    /// its checkpoints (auditor group), for `verify`. The export comes in pages, each
    /// appended whole; into a file, the key sets that verify it are saved beside it
    /// (`<file>.jwks.json`, `<file>.checkpoint-keys.json`), and an interrupted export goes
    /// on with `--resume` (from `<file>.cursor`, removed when the export is complete).
    Export {
        #[command(flatten)]
        online: Online,
        /// Only this user's stream; every stream (the unattributed one too) when absent.
        #[arg(long, conflicts_with = "unattributed")]
        user: Option<String>,
        /// Only the unattributed stream (refusals no user can be named for, operator acts).
        #[arg(long)]
        unattributed: bool,
        /// Where to write it (JSON Lines) as the service sent it; standard output when absent,
        /// with every character a terminal could act on written as a JSON escape. (`-o` and
        /// `--output` still work here: `--output` names a format in the other commands.)
        #[arg(long, short = 'f', short_alias = 'o', alias = "output")]
        file: Option<PathBuf>,
        /// Also save the keys that verify the export (GET /.well-known/checkpoint-keys.json:
        /// the checkpoint keys and the receipt keys) here (with --file they are saved as
        /// `<file>.checkpoint-keys.json` anyway).
        #[arg(long = "checkpoint-keys", visible_alias = "jwks")]
        jwks: Option<PathBuf>,
        /// Go on with the interrupted export into --file from its last complete page (give
        /// the same --user or --unattributed as the first run).
        #[arg(long, requires = "file")]
        resume: bool,
    },
    /// Verify an audit-log export (from GET /audit/export): sequences, hashes, links, the
    /// signed checkpoints that seal every chain, and the signed receipt that ends the export.
    Verify {
        /// The export, JSON Lines.
        export: PathBuf,
        /// The keys that signed the checkpoints and the receipt: the service's
        /// /.well-known/checkpoint-keys.json, saved to a file (`export --file` saves it beside
        /// the export). Checkpoints verify against its `keys` alone, the receipt against its
        /// `receipt_keys` alone; a file saved before receipts had keys of their own verifies
        /// no receipt (export again).
        #[arg(long = "checkpoint-keys", visible_alias = "jwks")]
        jwks: PathBuf,
        /// Accept events newer than the last checkpoint of their stream (they are reported).
        #[arg(long)]
        allow_unsealed: bool,
    },
}

fn read(path: &Path) -> Result<String, Exit> {
    std::fs::read_to_string(path).map_err(|e| {
        eprintln!("support-access: cannot read {}: {e}", shown(&path.display().to_string()));
        Exit::Local
    })
}

fn keys(path: &Path) -> Result<ExportKeys, Exit> {
    let text = read(path)?;
    let unusable = |problem: String| {
        let line = format!("{} is not a usable JWK Set: {problem}", path.display());
        eprintln!("support-access: {}", shown(&line));
        Exit::Local
    };
    let set: ExportKeySet = serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
    ExportKeys::from_set(set).map_err(|e| unusable(e.to_string()))
}

/// The export as a file [`verify_stream`] can read twice: the file itself, or what a pipe
/// (`/dev/stdin`) holds spooled to an unnamed temporary file, which leaves no trace.
fn seekable(path: &Path) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::File::open(path)?;
    if file.metadata()?.is_file() {
        return Ok(file);
    }
    let mut spool = tempfile::tempfile()?;
    std::io::copy(&mut file, &mut spool)?;
    std::io::Seek::rewind(&mut spool)?;
    Ok(spool)
}

/// Prints the verdict on an export and picks its exit: OK (0), TAMPERED (1) naming the first
/// bad line (or the missing receipt of a file cut short), or, when the caller did not accept an unsealed tail, UNSEALED (3) listing every
/// stream with events no checkpoint seals yet. Every text from the export goes through
/// [`shown`].
fn verify(export: &Path, jwks: &Path, allow_unsealed: bool) -> Result<Exit, Exit> {
    let keys = keys(jwks)?;
    let unreadable = |e: std::io::Error| {
        eprintln!("support-access: cannot read {}: {e}", shown(&export.display().to_string()));
        Exit::Local
    };
    let mut input = std::io::BufReader::with_capacity(1 << 16, seekable(export).map_err(unreadable)?);
    // Leniently, so that an unsealed tail is known whole; strictness is decided here.
    let report = match verify_stream(&mut input, &keys, Options { allow_unsealed: true }).map_err(unreadable)? {
        Ok(report) => report,
        Err(failure) => {
            println!("TAMPERED: {}", shown(&failure.to_string()));
            if let VerifyFailure::Broken { event_id: Some(id), .. } = &failure {
                println!("  first bad event: {}", shown(id));
            }
            return Ok(Exit::Tampered);
        }
    };
    let unsealed = report.unsealed();
    let (verdict, exit) = match (unsealed.is_empty(), allow_unsealed) {
        (false, false) => ("UNSEALED", Exit::Unsealed),
        _ => ("OK", Exit::Ok),
    };
    println!(
        "{verdict}: {} events in {} streams, every chain intact; {} checkpoints verified",
        report.events,
        report.heads.len(),
        report.checkpoints.len()
    );
    let whole = format!(
        "  whole as the service sent it: its receipt (signed at {}, Unix time) matches; newest checkpoint then: {}",
        report.receipt.iat, report.receipt.checkpoint
    );
    println!("{whole}");
    for (stream, (seq, hash)) in &report.heads {
        let sealed = report.sealed.get(stream).map_or("none".to_owned(), |s| format!("#{s}"));
        println!("{}", shown(&format!("  {stream}: {seq} events, head {hash}, sealed up to {sealed}")));
    }
    for (stream, from, to) in &unsealed {
        let line = match exit {
            Exit::Unsealed => format!("  not sealed yet: {stream} #{from}..#{to}"),
            _ => format!("  note: {stream} #{from}..#{to} not sealed by a checkpoint yet (accepted)"),
        };
        println!("{}", shown(&line));
    }
    if exit == Exit::Unsealed {
        println!(
            "No checkpoint vouches for these events yet: export again after the next checkpoint, or accept them with --allow-unsealed."
        );
    }
    Ok(exit)
}

/// Prints a failed call (the service's problem, request id included) and picks its exit.
fn failed(e: ApiError) -> Exit {
    eprintln!("support-access: {}", shown(&e.to_string()));
    e.exit()
}

fn connect(online: &Online) -> Result<Api, Exit> {
    Api::new(&online.endpoint, &online.token).map_err(failed)
}

async fn request(online: Online, user: String, reason: String, scope: String, duration: i64) -> Result<Exit, Exit> {
    let filed = connect(&online)?.request(&user, &reason, &scope, duration).await.map_err(failed)?;
    println!("{}", shown(filed["request_id"].as_str().unwrap_or("?")));
    let until = filed["expires_at"].as_str().unwrap_or("?");
    let line = format!("asked {user} for {scope} access for {duration}s; pending until {until} (see `status`)");
    eprintln!("support-access: {}", shown(&line));
    Ok(Exit::Ok)
}

/// One value of a listing, as `--output` asks.
fn print_item(item: &serde_json::Value, json: bool, row: fn(&serde_json::Value) -> String) {
    if json { println!("{}", shown_json(&item.to_string())) } else { println!("{}", row(item)) }
}

async fn status(online: Online, id: Option<String>, user: Option<String>, json: bool) -> Result<Exit, Exit> {
    let requests = connect(&online)?.requests().await.map_err(failed)?;
    let field = |r: &serde_json::Value, key: &str| r[key].as_str().map(str::to_owned);
    let listed: Vec<_> = requests
        .iter()
        .filter(|r| id.is_none() || field(r, "request_id") == id)
        .filter(|r| user.is_none() || field(r, "user_id") == user)
        .collect();
    if let (Some(id), true) = (&id, listed.is_empty()) {
        eprintln!("support-access: no request {} among yours", shown(id));
        return Ok(Exit::Refused);
    }
    if !json {
        println!("{}", request_header());
    }
    listed.into_iter().for_each(|r| print_item(r, json, request_row));
    Ok(Exit::Ok)
}

async fn mint(online: Online, user: String, reason: String, header: bool) -> Result<Exit, Exit> {
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
    Ok(Exit::Ok)
}

async fn audit(
    online: Online,
    filter: AuditFilter,
    limit: usize,
    json: bool,
    follow: Option<Duration>,
) -> Result<Exit, Exit> {
    let api = connect(&online)?;
    if !json {
        println!("{}", event_header());
    }
    let Some(interval) = follow else {
        let mut printed = 0;
        let mut cursor = None;
        while printed < limit {
            let page = api.audit(&filter, (limit - printed).min(100), cursor.as_deref()).await.map_err(failed)?;
            page.events.iter().for_each(|e| print_item(e, json, event_row));
            printed += page.events.len();
            match page.next_cursor {
                Some(next) if !page.events.is_empty() => cursor = Some(next),
                _ => break,
            }
        }
        return Ok(Exit::Ok);
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
            print_item(event, json, event_row);
        }
        seen.extend(fresh.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)));
        first = false;
        tokio::time::sleep(interval).await;
    }
}

/// `<file><suffix>`: the files an export into `file` keeps beside it.
fn beside(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Where an interrupted export into a file goes on, saved as `<file>.cursor` after each
/// complete page: the next page's cursor, and what it belongs to, so that `--resume` goes on
/// only with the same export into the same file (a cursor alone would append another
/// export's pages, or pages after a file someone edited or cut, and the result would fail
/// verification far from the cause).
#[derive(serde::Serialize, serde::Deserialize)]
struct ExportState {
    /// The service it was made by (a cursor opens only with that service's key).
    endpoint: String,
    /// What the export covers: `user:<id>`, `unattributed` or `all`.
    export: String,
    cursor: String,
    /// The length of the file up to the last complete page (what a crash may have
    /// half-appended past it is cut off on `--resume`).
    bytes: u64,
    /// SHA-256 (hex) of those first `bytes` bytes of the file.
    sha256: String,
}

struct ExportArgs {
    user: Option<String>,
    unattributed: bool,
    file: Option<PathBuf>,
    jwks: Option<PathBuf>,
    resume: bool,
}

impl ExportArgs {
    fn scope(&self) -> String {
        match (&self.user, self.unattributed) {
            (Some(user), _) => format!("user:{user}"),
            (None, true) => "unattributed".to_owned(),
            (None, false) => "all".to_owned(),
        }
    }
}

/// The file of an export and its `.cursor`, and the running hash of what the file holds.
struct ExportFile {
    file: std::fs::File,
    path: PathBuf,
    state_path: PathBuf,
    hash: sha2::Sha256,
}

/// Opens `path` for an export: a fresh file (any `.cursor` of an earlier export removed),
/// or with `resume` the interrupted one, checked against its `.cursor` and cut to its last
/// complete page; with the cursor to go on from.
fn open_export(path: &Path, args: &ExportArgs, endpoint: &str) -> Result<(ExportFile, Option<String>), Exit> {
    use sha2::Digest;
    use std::io::Read;
    let local = |path: &Path, e: std::io::Error| {
        eprintln!("support-access: cannot write {}: {e}", shown(&path.display().to_string()));
        Exit::Local
    };
    let state_path = beside(path, ".cursor");
    if !args.resume {
        match std::fs::remove_file(&state_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(local(&state_path, e)),
            _ => {}
        }
        let file = std::fs::File::create(path).map_err(|e| local(path, e))?;
        return Ok((ExportFile { file, path: path.to_owned(), state_path, hash: sha2::Sha256::new() }, None));
    }
    let state_name = state_path.display().to_string();
    let shown_state = shown(&state_name);
    let state: ExportState = serde_json::from_str(&read(&state_path)?).map_err(|e| {
        eprintln!("support-access: {shown_state} is no export state: {e}");
        Exit::Local
    })?;
    let refuse = |why: String| {
        eprintln!("support-access: {shown_state} does not belong to this export: {why}; export again without --resume");
        Exit::Local
    };
    if state.endpoint != endpoint {
        return Err(refuse(format!("it was made with {}", shown(&state.endpoint))));
    }
    if state.export != args.scope() {
        return Err(refuse(format!("it is the export of {}, not of {}", shown(&state.export), shown(&args.scope()))));
    }
    let mut file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| local(path, e))?;
    let mut hash = sha2::Sha256::new();
    let (mut held, mut buffer) = (0u64, vec![0u8; 1 << 16]);
    let mut prefix = (&mut file).take(state.bytes);
    loop {
        let n = prefix.read(&mut buffer).map_err(|e| local(path, e))?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        held += n as u64;
    }
    if held != state.bytes || hex(&hash.clone().finalize()) != state.sha256 {
        return Err(refuse(format!("{} is not the file it was saved with", shown(&path.display().to_string()))));
    }
    file.set_len(state.bytes).map_err(|e| local(path, e))?;
    Ok((ExportFile { file, path: path.to_owned(), state_path, hash }, Some(state.cursor)))
}

async fn export(online: Online, args: ExportArgs) -> Result<Exit, Exit> {
    use sha2::Digest;
    use std::io::{Seek, Write};
    let api = connect(&online)?;
    let local = |path: &Path, e: std::io::Error| {
        eprintln!("support-access: cannot write {}: {e}", shown(&path.display().to_string()));
        Exit::Local
    };
    let write = |path: &Path, text: &str| std::fs::write(path, text).map_err(|e| local(path, e));
    let (mut out, mut cursor) = match &args.file {
        Some(path) => {
            let (file, cursor) = open_export(path, &args, &online.endpoint)?;
            (Some(file), cursor)
        }
        None => (None, None),
    };
    // A spinner with the count so far; drawn only when standard error is a terminal.
    let progress = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} support-access: exported {msg} ({elapsed})")
            .expect("a valid template"),
    );
    let (mut lines, mut pages) = (0usize, 0usize);
    loop {
        let (page, next) =
            api.export_page(args.user.as_deref(), args.unattributed, cursor.as_deref()).await.map_err(failed)?;
        match &mut out {
            Some(out) => {
                let path = &out.path;
                out.file.seek(std::io::SeekFrom::End(0)).map_err(|e| local(path, e))?;
                out.file.write_all(page.as_bytes()).and_then(|()| out.file.sync_data()).map_err(|e| local(path, e))?;
                out.hash.update(page.as_bytes());
                if let Some(next) = &next {
                    let state = ExportState {
                        endpoint: online.endpoint.clone(),
                        export: args.scope(),
                        cursor: next.clone(),
                        bytes: out.file.metadata().map_err(|e| local(path, e))?.len(),
                        sha256: hex(&out.hash.clone().finalize()),
                    };
                    let tmp = beside(&out.state_path, ".tmp");
                    write(&tmp, &serde_json::to_string(&state).expect("serializes"))?;
                    std::fs::rename(&tmp, &out.state_path).map_err(|e| local(&out.state_path, e))?;
                }
            }
            None => print!("{}", shown_json(&page)),
        }
        lines += page.lines().count();
        pages += 1;
        progress.set_message(format!("{lines} lines in {pages} pages"));
        progress.tick();
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    progress.finish();
    if let Some(out) = &out {
        write(&beside(&out.path, ".jwks.json"), &api.jwks().await.map_err(failed)?)?;
        write(&beside(&out.path, ".checkpoint-keys.json"), &api.checkpoint_keys().await.map_err(failed)?)?;
        match std::fs::remove_file(&out.state_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(local(&out.state_path, e)),
            _ => {}
        }
    }
    if let Some(path) = &args.jwks {
        write(path, &api.checkpoint_keys().await.map_err(failed)?)?;
    }
    Ok(Exit::Ok)
}

fn main() -> ExitCode {
    let command = match Cli::try_parse() {
        Ok(cli) => cli.command,
        Err(e) => {
            // clap's own message; `--help` and `--version` are no error.
            let _ = e.print();
            return if e.use_stderr() { Exit::Usage } else { Exit::Ok }.into();
        }
    };
    let online = async move {
        match command {
            Command::Verify { export, jwks, allow_unsealed } => verify(&export, &jwks, allow_unsealed),
            Command::Request { online, user, reason, scope, duration } => {
                request(online, user, reason, scope, duration).await
            }
            Command::Status { online, request_id, user, output } => {
                status(online, request_id, user, output.json()).await
            }
            Command::Mint { online, user, reason, header } => mint(online, user, reason, header).await,
            Command::Audit { online, user, actor, event_type, from, to, limit, output, follow, interval } => {
                let filter = AuditFilter { user_id: user, actor, event_type, from, to };
                let follow = follow.then(|| Duration::from_secs_f64(interval.clamp(0.1, 3600.0)));
                audit(online, filter, limit, output.json(), follow).await
            }
            Command::Export { online, user, unattributed, file, jwks, resume } => {
                export(online, ExportArgs { user, unattributed, file, jwks, resume }).await
            }
        }
    };
    let exit = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(online).unwrap_or_else(|exit| exit),
        Err(e) => {
            eprintln!("support-access: cannot start: {e}");
            Exit::Local
        }
    };
    exit.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_and_argument_of_every_command_has_help() {
        let mut cli = Cli::command();
        cli.build();
        for command in cli.get_subcommands() {
            for arg in command.get_arguments() {
                let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                assert!(!help.trim().is_empty(), "{} {} has no help", command.get_name(), arg.get_id());
            }
        }
    }

    #[test]
    fn the_help_names_every_command_s_job_and_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for part in ["ask users for access", "mint", "verify", "Exit codes:", "3  verify: intact"] {
            assert!(help.contains(part), "{part}: {help}");
        }
    }

    #[test]
    fn json_is_output_json_and_the_two_conflict() {
        let output = |args: &[&str]| {
            let base = ["support-access", "status", "--endpoint", "http://127.0.0.1:1", "--token", "t"];
            match Cli::try_parse_from(base.iter().chain(args)).map(|c| c.command) {
                Ok(Command::Status { output, .. }) => Ok(output.json()),
                Ok(_) => unreachable!(),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(output(&[]), Ok(false));
        assert_eq!(output(&["--output", "table"]), Ok(false));
        assert_eq!(output(&["--output", "json"]), Ok(true));
        assert_eq!(output(&["--json"]), Ok(true));
        assert_eq!(output(&["--json", "--output", "table"]), Err(clap::error::ErrorKind::ArgumentConflict));
        assert_eq!(output(&["--output", "yaml"]), Err(clap::error::ErrorKind::InvalidValue));
    }
}
