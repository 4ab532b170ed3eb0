//! Cold-start wiring shared by every Lambda function: the policy and settings read (and
//! checked) from the environment at init, the SDK clients, public keys and secrets built in
//! the background from there ([`Deferred`]), JSON logs, and one log line with metrics per
//! request ([`crate::telemetry`]). Each `functions/<job>/src/main.rs` is this plus its one
//! handler.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_http::{Request, RequestExt};
use shared::app::{ApiError, CursorKey, Services};
use shared::domain::Policy;
use shared::http::Route;
use shared::ports::SystemClock;
use tokio::sync::OnceCell;

use crate::telemetry;
use crate::{AwsSettings, CursorSource};

/// What a function needs beyond storage and signing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// It pages (the audit log, access requests), so its cursors must open in every instance
    /// (a client's next page may reach another one): the key is the
    /// Secrets Manager secret `SUPPORT_ACCESS_CURSOR_SECRET_ARN` names.
    pub cursor_key: bool,
    /// It publishes or verifies tokens, so it reads the public keys (`kms:GetPublicKey`).
    pub public_keys: bool,
    /// It signs export receipts (export-audit), so `RECEIPT_KEY_ID` is required: without it
    /// its `KMS_KEY_ID` would sign, and no verifier accepts a receipt but by a receipt key.
    pub receipt_key: bool,
    /// It verifies the app's identity tokens itself (the authorizer, the token exchange), from the identity
    /// provider the environment names (`crate::identity_from_env`), when it names one.
    pub identity: bool,
}

/// JSON logs to stdout, which Lambda ships to CloudWatch, in Powertools' keys (`level`,
/// `message`, `timestamp`, then the event's fields); level from `RUST_LOG` (default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .init();
}

/// The instant `margin` before an invocation's deadline (`Lambda-Runtime-Deadline-Ms`, the
/// context's `deadline`: milliseconds since the epoch), on this process's monotonic clock: how
/// long a function that loops may keep going and still answer.
pub fn until_deadline(deadline_ms: u64, margin: Duration) -> Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(margin)
}

type Build<T> = dyn Fn() -> Pin<Box<dyn Future<Output = Result<T, String>> + Send>> + Send + Sync;

/// What a function builds once per process with calls to AWS (its SDK clients, the JWK Set,
/// the cursor secret): started in the background at init, so that the runtime asks for the
/// first event at once, and awaited by the first request, which therefore is never refused
/// for it being under way. A build that fails is logged and tried again by the next request
/// (which answers 503, or denies, if it fails too).
pub struct Deferred<T> {
    cell: Arc<OnceCell<T>>,
    build: Arc<Build<T>>,
}

impl<T: Send + Sync + 'static> Deferred<T> {
    /// Starts `build` now on the runtime (call it inside one).
    pub fn start<F, Fut>(build: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
    {
        let build: Arc<Build<T>> = Arc::new(move || Box::pin(build()));
        let deferred = Self { cell: Arc::new(OnceCell::new()), build };
        let (cell, build) = (deferred.cell.clone(), deferred.build.clone());
        tokio::spawn(async move {
            if let Err(e) = cell.get_or_try_init(|| build()).await {
                tracing::error!(error = %e, "set-up failed; the next request tries again");
            }
        });
        deferred
    }

    /// The built value, waiting for the build under way (or making one, if it failed).
    pub async fn get(&self) -> Result<&T, String> {
        self.cell.get_or_try_init(|| (self.build)()).await
    }
}

/// A cursor key fetched in the background ([`crate::CursorSource::Secret`]): a request that
/// needs it waits for the fetch under way, or makes another if it failed (503 if that fails).
#[async_trait::async_trait]
impl shared::app::CursorKeys for Deferred<CursorKey> {
    async fn key(&self) -> Result<&CursorKey, ApiError> {
        self.get().await.map_err(ApiError::Unavailable)
    }
}

/// Every port of a Lambda function, from the environment (see [`AwsSettings::from_env`] and
/// [`crate::services`]): a bad or missing setting is an error that names it, and the function
/// does not start; the calls (SDK configuration, public keys, cursor secret) are [`Deferred`].
pub fn services_from_env(needs: Needs) -> Result<Deferred<Services>, String> {
    let policy = Policy::from_env().map_err(|e| e.to_string())?;
    let settings = AwsSettings::from_env()?;
    let cursor_secret = match needs.cursor_key {
        true => Some(
            std::env::var("SUPPORT_ACCESS_CURSOR_SECRET_ARN")
                .map_err(|_| "SUPPORT_ACCESS_CURSOR_SECRET_ARN: required".to_owned())?,
        ),
        false => None,
    };
    if needs.receipt_key && !settings.has_receipt_key() {
        return Err("RECEIPT_KEY_ID: required (this function signs export receipts)".to_owned());
    }
    let identity = match needs.identity {
        true => crate::identity_from_env()?.map(Arc::new),
        false => None,
    };
    Ok(Deferred::start(move || {
        let (settings, policy, identity) = (settings.clone(), policy.clone(), identity.clone());
        // A function that never pages gets a random key: its cursors are never handed out.
        let cursor = cursor_secret
            .clone()
            .map_or_else(|| CursorSource::Key(Box::new(CursorKey::generate())), CursorSource::Secret);
        async move {
            let config = crate::sdk_config().await;
            let services =
                crate::services(&settings, &config, policy, Arc::new(SystemClock), cursor, needs.public_keys).await?;
            Ok(Services { identity, ..services })
        }
    }))
}

/// As [`serve_http`], for a function that serves several routes of one job (the access
/// requests of an agent, or of a user): each request goes to the route its method and path
/// resolve to, and any other route is refused as API Gateway would (404/405).
pub async fn serve_routes(routes: &'static [Route], needs: Needs) -> Result<(), lambda_http::Error> {
    serve(move |request| shared::http::resolve_among(routes, request), needs).await
}

/// The whole life of an HTTP function: JSON logs, its ports built once from the environment,
/// then every API Gateway v2 request to `route`'s handler until Lambda stops the process.
pub async fn serve_http(route: Route, needs: Needs) -> Result<(), lambda_http::Error> {
    serve(move |_| Ok(route), needs).await
}

async fn serve(
    resolve: impl Fn(&Request) -> Result<Route, ApiError> + Copy + Send + Sync,
    needs: Needs,
) -> Result<(), lambda_http::Error> {
    init_tracing();
    let services = services_from_env(needs)?;
    let services = &services;
    lambda_http::run(lambda_http::service_fn(move |request: Request| async move {
        let started = Instant::now();
        let cold_start = telemetry::cold_start();
        let context = request.lambda_context_ref().cloned();
        let resolved = resolve(&request);
        let (response, summary) = match services.get().await {
            Ok(services) => shared::http::answer(resolved, request, services).await,
            Err(e) => shared::http::unavailable(&resolved, &request, e),
        };
        telemetry::log_request(&summary, context.as_ref(), started.elapsed(), cold_start);
        Ok::<_, Infallible>(response)
    }))
    .await
}

/// The app API's authorizer's whole life: as [`serve_http`], every authorizer event (an
/// impersonation token, or the user's own identity token) decided by [`shared::http::decide`] (fails closed while its set-up cannot be made).
pub async fn serve_authorizer() -> Result<(), lambda_http::Error> {
    use lambda_http::lambda_runtime::{self, LambdaEvent};
    use shared::lambda_events::{ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request};
    init_tracing();
    // The JWK Set is fetched once per process; the live consent check runs on every call.
    // The identity provider's keys are fetched on the first identity token, and cached.
    let services = services_from_env(Needs { public_keys: true, identity: true, ..Needs::default() })?;
    let services = &services;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
            let started = Instant::now();
            let cold_start = telemetry::cold_start();
            let LambdaEvent { payload, context } = event;
            let (response, summary) = match services.get().await {
                Ok(services) => shared::http::decide(payload, services).await,
                Err(e) => shared::http::undecided(&payload, &e),
            };
            telemetry::log_request(&summary, Some(&context), started.elapsed(), cold_start);
            Ok::<ApiGatewayV2CustomAuthorizerSimpleResponse, Infallible>(response)
        },
    ))
    .await
}
