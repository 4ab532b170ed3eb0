//! `local-api`: run every route on the embedded default (`local-api`), print a dev identity
//! token (`local-api dev-token --sub alice --groups support`), or seal the audit log now
//! (`local-api checkpoint`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use local_api::Runtime;
use shared::domain::{Policy, SignIn};
use shared::ports::{Clock, SystemClock};
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(name = "local-api", version, about = "support-access: every route in one process, no AWS account needed")]
struct Cli {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 3000, global = true)]
    port: u16,
    /// Where the database and keys live [default: the user's data dir, else ./.support-access].
    #[arg(long, env = "SUPPORT_ACCESS_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Where consents, the audit log and the signing key live.
    #[arg(long, env = "SUPPORT_ACCESS_BACKEND", value_enum, default_value_t = Backend::Embedded, global = true)]
    backend: Backend,
    /// Seconds between sweeps that record expired consents (embedded backend).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sweep_seconds: u64,
    /// Seconds between signed checkpoints of the audit log (on AWS, the schedule's).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    checkpoint_seconds: u64,
    /// Where to POST a signed notification of every grant, revoke, expiry, access-request
    /// step, token issue and first use (CloudEvents JSON; see docs/app-developers.md). Embedded backend.
    #[arg(long, env = "SUPPORT_ACCESS_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// A file (mode 0600) holding the HMAC-SHA256 key of the webhook's
    /// `Support-Access-Signature` (at least 16 bytes); or set SUPPORT_ACCESS_WEBHOOK_SECRET.
    #[arg(long, value_name = "PATH")]
    webhook_secret_file: Option<PathBuf>,
    /// Refused: a secret on the command line is in every local user's process list.
    #[arg(long, hide = true, value_name = "VALUE")]
    webhook_secret: Option<String>,
    /// Connections served at once; past it the oldest idle one is closed for a new one, or
    /// the new one waits in the listen queue while all are busy. Keep it under the open-file
    /// limit (`ulimit -n`).
    #[arg(long, default_value_t = local_api::DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
    /// Browser origins allowed to call the API (CORS), comma-separated, e.g.
    /// `http://localhost:5173`; `*` for any. Empty: CORS off. Credentials are never allowed.
    #[arg(long, env = "SUPPORT_ACCESS_CORS_ALLOWED_ORIGINS", default_value = "")]
    cors_allowed_origins: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Backend {
    /// SQLite and a local signing key in the data directory.
    Embedded,
    /// DynamoDB and KMS (CONSENTS_TABLE, AUDIT_TABLE, CHAIN_HEADS_TABLE, CHECKPOINTS_TABLE, ACCESS_REQUESTS_TABLE, KMS_KEY_ID, AWS_*).
    Aws,
}

#[derive(Subcommand)]
enum Command {
    /// Create the DynamoDB tables and a KMS signing key at the configured AWS endpoint and
    /// print the settings as `export` lines: `eval "$(local-api setup-aws)"`.
    SetupAws,
    /// Once after upgrading an AWS deployment from a version that did not mark moved chain
    /// heads: mark every head a checkpoint has not sealed yet, so the next checkpoints do
    /// (docs/operators.md, "Checkpoints"). Reads the AWS settings from the environment.
    MarkUnsealedHeads,
    /// Seal the audit log now: signed checkpoints over every chain head that moved since the
    /// last one, at most 1,024 heads each (the server also does this every --checkpoint-seconds).
    Checkpoint,
    /// Print an identity token from the dev identity provider that this local API accepts.
    DevToken {
        /// The caller's user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Comma-separated groups, e.g. `support` or `support,auditor`.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600)]
        ttl_seconds: i64,
        /// Comma-separated authentication methods (`amr`), e.g. `pwd,mfa`, for the step-up
        /// policy (SUPPORT_ACCESS_STEP_UP_AMR).
        #[arg(long, value_delimiter = ',')]
        amr: Vec<String>,
        /// How many seconds ago the sign-in happened (`auth_time`), for
        /// SUPPORT_ACCESS_STEP_UP_MAX_AGE_SECONDS.
        #[arg(long, default_value_t = 0)]
        signed_in_seconds_ago: i64,
    },
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir().map(|d| d.join("support-access")).unwrap_or_else(|| PathBuf::from(".support-access"))
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(message) = run(Cli::parse()).await {
        eprintln!("local-api: {message}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if cli.webhook_secret.is_some() {
        return Err("--webhook-secret VALUE is refused: every local user sees it in the process list (rotate \
             that secret); give it with --webhook-secret-file PATH (mode 0600) or SUPPORT_ACCESS_WEBHOOK_SECRET"
            .into());
    }
    let mut policy = Policy::from_env().map_err(|e| e.to_string())?;
    // The tokens' issuer is this server's own base URL unless SUPPORT_ACCESS_ISSUER says
    // otherwise: what the listener is bound to, never a request's Host header (which any
    // page can set). The subcommands that do not listen name the configured port.
    let issuer_is_set = std::env::var("SUPPORT_ACCESS_ISSUER").is_ok_and(|v| !v.trim().is_empty());
    let cors = shared::http::Cors::parse(&cli.cors_allowed_origins)
        .map_err(|e| format!("--cors-allowed-origins / SUPPORT_ACCESS_CORS_ALLOWED_ORIGINS: {e}"))?;
    let data_dir = cli.data_dir.unwrap_or_else(default_data_dir);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let Some(Command::SetupAws) = cli.command {
        print!("{}", local_api::setup_aws().await?);
        return Ok(());
    }
    if let Some(Command::MarkUnsealedHeads) = cli.command {
        let marked = local_api::mark_unsealed_heads(clock.now().unix()).await?;
        println!("marked {marked} chain heads that no checkpoint has sealed yet");
        return Ok(());
    }
    if let Some(Command::DevToken { sub, groups, ttl_seconds, amr, signed_in_seconds_ago }) = cli.command {
        // Only the data directory's identity key is needed, whatever the backend.
        let (runtime, created) = Runtime::embedded_identity(&data_dir)?;
        if created {
            // The usual slip is a missing --data-dir: say so where it shows, not on stdout.
            eprintln!(
                "local-api dev-token: created a new dev identity key in {}; only a local-api using this data \
                 directory accepts the token (start it, or mint, with the same --data-dir)",
                data_dir.display()
            );
        }
        let now = clock.now();
        let sign_in = SignIn { amr, auth_time: Some(now.plus_seconds(-signed_in_seconds_ago)) };
        println!("{}", runtime.issue_signed_in(&sub, &groups, &sign_in, now, ttl_seconds));
        return Ok(());
    }
    // The server binds first, so that its issuer is the address it really listens on (a
    // `--port 0` picks one).
    let listener = match cli.command {
        Some(Command::Checkpoint) => None,
        _ => Some(
            TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, cli.port)))
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1:{}: {e}", cli.port))?,
        ),
    };
    let addr = match &listener {
        Some(listener) => listener.local_addr().map_err(|e| e.to_string())?,
        None => SocketAddr::from((Ipv4Addr::LOCALHOST, cli.port)),
    };
    if !issuer_is_set {
        policy.issuer = format!("http://{addr}");
    }
    let mut runtime = match cli.backend {
        Backend::Embedded => Runtime::embedded(&data_dir, policy, clock.clone()).await?,
        Backend::Aws => Runtime::aws(&data_dir, policy, clock.clone()).await?,
    };
    runtime.cors = cors;
    let runtime = Arc::new(runtime);
    let Some(listener) = listener else {
        let run = shared::app::checkpoint_all(&runtime.services, None)
            .await
            .map_err(|e| format!("checkpoint failed: {e}"))?;
        for c in &run.made {
            println!("checkpoint {} sealed {} chain heads (root {})", c.claims.seq, c.claims.size, c.claims.root)
        }
        if run.made.is_empty() {
            println!("nothing to seal: no chain moved since the last checkpoint");
        }
        return Ok(());
    };

    let secret = local_api::webhook::secret(
        cli.webhook_secret_file.as_deref(),
        std::env::var(local_api::webhook::SECRET_ENV).ok(),
    )?;
    let webhook = match (&cli.webhook_url, secret) {
        (None, _) => None,
        (Some(_), _) if runtime.outbox.is_none() => {
            return Err("--webhook-url needs the embedded backend (on AWS, the Audit stream feeds EventBridge)".into());
        }
        (Some(url), Some(secret)) => Some(Arc::new(local_api::webhook::Webhook::new(url, &secret)?)),
        (Some(_), None) => {
            return Err("--webhook-url needs --webhook-secret-file PATH or SUPPORT_ACCESS_WEBHOOK_SECRET".into());
        }
    };
    println!("local-api listening on http://{addr} (data in {})", data_dir.display());
    tokio::spawn(local_api::sweep_expired(runtime.clone(), Duration::from_secs(cli.sweep_seconds)));
    tokio::spawn(local_api::checkpoint_every(runtime.clone(), Duration::from_secs(cli.checkpoint_seconds)));
    if let Some(webhook) = webhook {
        println!("notifications go to {}", cli.webhook_url.as_deref().unwrap_or_default());
        tokio::spawn(local_api::relay_notifications(
            runtime.clone(),
            webhook,
            shared::app::RelaySettings::default(),
            Arc::default(),
        ));
    }
    // Unattributed refusals are written per window by a task, never by the refused request;
    // on a graceful shutdown the open window is written too (a crash loses it: SECURITY.md).
    tokio::spawn(shared::app::flush_refusals_every(runtime.services.clone()));
    local_api::serve_limited(listener, runtime.clone(), cli.max_connections as usize, shutdown_signal()).await;
    match shared::app::flush_refusals(&runtime.services).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(refusals = n, "wrote the unattributed refusals of the last window"),
        Err(e) => tracing::error!(error = %e, "the last window of unattributed refusals could not be written"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
