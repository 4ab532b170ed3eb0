//! Cold-start wiring shared by every Lambda function: the policy and settings from the
//! environment, the SDK clients (and, where needed, the JWK Set) built once outside the
//! handler, and JSON logs. Each `functions/<job>/src/main.rs` is this plus its one handler.

use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;

use shared::app::CursorKey;
use shared::app::Services;
use shared::domain::Policy;
use shared::ports::SystemClock;

/// What a function needs beyond storage and signing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// It pages the audit log, so its cursors must open in every instance
    /// (`SUPPORT_ACCESS_CURSOR_KEY`).
    pub cursor_key: bool,
    /// It publishes or verifies tokens, so it reads the public keys (`kms:GetPublicKey`).
    pub public_keys: bool,
}

/// JSON logs to stdout, which Lambda ships to CloudWatch; level from `RUST_LOG` (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_current_span(false).without_time().init();
}

/// The cursor key from `SUPPORT_ACCESS_CURSOR_KEY` (base64 of at least 32 bytes) where the
/// function pages the audit log; a random one where it never does.
fn cursor_key(required: bool) -> Result<CursorKey, String> {
    if !required {
        return Ok(CursorKey::generate());
    }
    let raw =
        std::env::var("SUPPORT_ACCESS_CURSOR_KEY").map_err(|_| "SUPPORT_ACCESS_CURSOR_KEY: required".to_owned())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .map_err(|_| "SUPPORT_ACCESS_CURSOR_KEY: not base64".to_owned())?;
    if bytes.len() < CursorKey::LEN {
        return Err(format!("SUPPORT_ACCESS_CURSOR_KEY: at least {} bytes", CursorKey::LEN));
    }
    Ok(CursorKey::from_bytes(&bytes))
}

/// Every port of a Lambda function, from the environment (see
/// [`crate::services_from_env`]); a bad or missing setting is an error that names
/// it, and the function does not start.
pub async fn services_from_env(needs: Needs) -> Result<Services, String> {
    let policy = Policy::from_env().map_err(|e| e.to_string())?;
    let cursor_key = cursor_key(needs.cursor_key)?;
    crate::services_from_env(policy, Arc::new(SystemClock), cursor_key, needs.public_keys).await
}

/// As [`serve_http`], for a function that serves several routes of one job (the access
/// requests of an agent, or of a user): each request goes to the route its method and path
/// resolve to, and any other route is refused as API Gateway would (404/405).
pub async fn serve_routes(routes: &'static [shared::http::Route], needs: Needs) -> Result<(), lambda_http::Error> {
    init_tracing();
    let services = services_from_env(needs).await?;
    let services = &services;
    lambda_http::run(lambda_http::service_fn(move |request| async move {
        Ok::<_, Infallible>(shared::http::route_among(routes, request, services).await)
    }))
    .await
}

/// The whole life of an HTTP function: JSON logs, its ports built once from the environment,
/// then every API Gateway v2 request to `route`'s handler until Lambda stops the process.
pub async fn serve_http(route: shared::http::Route, needs: Needs) -> Result<(), lambda_http::Error> {
    init_tracing();
    let services = services_from_env(needs).await?;
    let services = &services;
    lambda_http::run(lambda_http::service_fn(move |request| async move {
        Ok::<_, Infallible>(shared::http::handle(route, request, services).await)
    }))
    .await
}
