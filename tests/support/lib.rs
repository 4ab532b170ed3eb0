//! Test support: API Gateway v2 events built from a real event fixture, an in-memory app on
//! a fixed clock, and helpers to read answers and prove that nothing was written.

pub mod aws_proxy;

use std::sync::Arc;
use std::time::Duration;

use std::path::PathBuf;

use adapter_aws::{DynamoStore, KmsSigner, Tables, create_signing_key, create_tables};
use adapter_embedded::{LocalSigner, SqliteStore};
use base64::Engine as _;
use serde_json::{Value, json};
use shared::app::CursorKey;
use shared::app::Services;
use shared::domain::{AuditEvent, AuditFilter, Consent, Policy, Timestamp, UserId};
use shared::lambda_events::{ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request};
use shared::ports::{AuditQuery, Clock, ExpirySweeper, FixedClock};

/// 2026-11-25T10:00:00Z.
pub const T0: i64 = 1_795_600_800;

const FIXTURE: &str = include_str!("../fixtures/apigw_v2_jwt_authorizer.json");
const AUTHORIZER_FIXTURE: &str = include_str!("../fixtures/apigw_v2_custom_authorizer_v2.json");

/// The identity that asks `/introspect` in tests: a resource server in the introspect group.
pub const RESOURCE_SERVER: &str = "rs-1";

/// The Lambda authorizer event (payload 2.0) API Gateway sends for `method` on `path`, with
/// `token` as the bearer in the identity source and the `authorization` header.
pub fn authorizer_event(token: Option<&str>, method: &str, path: &str) -> ApiGatewayV2CustomAuthorizerV2Request {
    let mut v: Value = serde_json::from_str(AUTHORIZER_FIXTURE).expect("fixture parses");
    v["rawPath"] = json!(path);
    v["routeArn"] = json!(format!("arn:aws:execute-api:us-east-1:123456789012:abcdef123/$default/{method}{path}"));
    v["requestContext"]["http"]["method"] = json!(method);
    v["requestContext"]["http"]["path"] = json!(path);
    match token {
        Some(t) => {
            v["identitySource"] = json!([format!("Bearer {t}")]);
            v["headers"]["authorization"] = json!(format!("Bearer {t}"));
        }
        None => {
            v.as_object_mut().unwrap().remove("identitySource");
        }
    }
    serde_json::from_value(v).expect("a valid authorizer event")
}

/// An API Gateway v2 event, edited from the fixture; with [`Event::signed_in`] or
/// [`Event::token_claim`], also the identity token the JWT authorizer validated, passed on in
/// the `authorization` header as on AWS.
#[derive(Clone)]
pub struct Event(Value, Option<serde_json::Map<String, Value>>);

impl Event {
    /// A request from `sub` (groups as API Gateway renders them, e.g. `[support auditor]`).
    pub fn new(method: &str, path: &str) -> Self {
        let mut v: Value = serde_json::from_str(FIXTURE).expect("fixture parses");
        v["rawPath"] = json!(path);
        v["requestContext"]["http"]["method"] = json!(method);
        v["requestContext"]["http"]["path"] = json!(path);
        Self(v, None)
    }

    fn claims(&mut self) -> &mut serde_json::Map<String, Value> {
        self.0["requestContext"]["authorizer"]["jwt"]["claims"].as_object_mut().expect("fixture has claims")
    }

    /// The caller's `sub` and the raw groups claim (`cognito:groups`), as API Gateway passes them.
    pub fn caller(mut self, sub: &str, groups: &str) -> Self {
        let claims = self.claims();
        claims.insert("sub".into(), json!(sub));
        claims.insert("cognito:groups".into(), json!(groups));
        self
    }

    /// A plain end user (no groups claim at all).
    pub fn user(mut self, sub: &str) -> Self {
        let claims = self.claims();
        claims.insert("sub".into(), json!(sub));
        claims.remove("cognito:groups");
        self
    }

    pub fn claim(mut self, name: &str, value: &str) -> Self {
        self.claims().insert(name.into(), json!(value));
        self
    }

    /// The caller's `sub` and groups (`cognito:groups`) as their identity token carries them,
    /// a JSON array, rendered into the context as API Gateway renders it (`[a b]`), with the
    /// token in the `authorization` header.
    pub fn signed_in(self, sub: &str, groups: &[&str]) -> Self {
        self.token_claim("sub", json!(sub)).token_claim("cognito:groups", json!(groups))
    }

    /// A claim of the identity token, real JSON, and its rendering in the context (every
    /// claim a string, an array `[a b]`): the event then carries the token in its
    /// `authorization` header, its other claims the context's (see [`Event::to_json`]).
    pub fn token_claim(mut self, name: &str, value: Value) -> Self {
        let rendered =
            adapter_embedded::stringify_claims(&serde_json::Map::from_iter([(name.to_owned(), value.clone())]));
        self.claims().insert(name.into(), json!(rendered[name]));
        self.1.get_or_insert_with(Default::default).insert(name.into(), value);
        self
    }

    /// No authorizer at all (a route without identity).
    pub fn anonymous(mut self) -> Self {
        self.0["requestContext"].as_object_mut().unwrap().remove("authorizer");
        self
    }

    pub fn query(mut self, raw: &str) -> Self {
        self.0["rawQueryString"] = json!(raw);
        self
    }

    pub fn body(mut self, raw: &str) -> Self {
        self.0["body"] = json!(raw);
        self
    }

    pub fn json(self, body: Value) -> Self {
        let raw = body.to_string();
        self.body(&raw)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0["headers"][name] = json!(value);
        self
    }

    /// An `application/x-www-form-urlencoded` body.
    pub fn form(self, pairs: &[(&str, &str)]) -> Self {
        let raw = serde_urlencoded::to_string(pairs).expect("pairs encode");
        self.header("content-type", "application/x-www-form-urlencoded").body(&raw)
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// The event as API Gateway sends it to Lambda. With an identity token, unless the test
    /// set its own `authorization`, the header carries a token whose claims are the context's
    /// (`iat`, `exp`, `auth_time` as numbers) and the token claims given; its signature is a
    /// placeholder, since API Gateway checked it before the function runs.
    pub fn to_json(&self) -> Value {
        let mut v = self.0.clone();
        if let Some(token_claims) = &self.1
            && v["headers"].get("authorization").is_none()
            && let Some(context) = v["requestContext"]["authorizer"]["jwt"]["claims"].as_object()
        {
            let mut claims: serde_json::Map<String, Value> = context
                .iter()
                .map(|(name, text)| {
                    let number = ["iat", "exp", "auth_time"]
                        .contains(&name.as_str())
                        .then(|| text.as_str()?.parse::<i64>().ok());
                    (name.clone(), number.flatten().map_or_else(|| text.clone(), |n| json!(n)))
                })
                .collect();
            claims.extend(token_claims.clone());
            let part = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let token = format!(
                "{}.{}.c2lnbmF0dXJl",
                part(json!({"alg": "RS256", "kid": "test"})),
                part(Value::Object(claims))
            );
            v["headers"]["authorization"] = json!(format!("Bearer {token}"));
        }
        v
    }

    /// The event as `lambda_http` hands it to a function.
    pub fn to_request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.to_json().to_string()).expect("a valid API Gateway v2 event")
    }
}

/// An answer, with its body parsed when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    /// The `Cache-Control` header (empty when absent).
    pub cache_control: String,
    pub body: Value,
}

impl Answer {
    /// The problem slug: the last segment of the problem `type`.
    pub fn slug(&self) -> &str {
        assert_eq!(self.content_type, "application/problem+json", "not a problem: {self:?}");
        self.body["type"].as_str().and_then(|t| t.rsplit('/').next()).unwrap_or("")
    }

    pub fn str(&self, field: &str) -> &str {
        self.body[field].as_str().unwrap_or_else(|| panic!("no string {field} in {}", self.body))
    }
}

/// Which adapters a test runs on: the embedded default, or DynamoDB and KMS on the API server
/// at `SUPPORT_ACCESS_TEST_AWS_ENDPOINT` (moto on loopback behind the AWS proxy, both
/// started by `scripts/test`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Aws,
}

/// The service on one backend and a fixed clock, handled exactly as by a Lambda.
pub struct TestApp {
    services: Services,
    pub clock: Arc<FixedClock>,
    pub backend: Backend,
    sqlite: Option<(Arc<SqliteStore>, PathBuf)>,
    aws: Option<AwsParts>,
    /// How long a sequenced store holds consent changes ([`TestApp::sequenced`]).
    hold: Duration,
    _dir: Option<tempfile::TempDir>,
}

struct AwsParts {
    store: Arc<DynamoStore>,
    key: String,
    dynamodb: aws_sdk_dynamodb::Client,
    tables: Tables,
}

/// The policy tests run with: the defaults, with the groups claim of the fixture (Cognito).
pub fn test_policy() -> Policy {
    Policy { groups_claim: "cognito:groups".into(), ..Policy::default() }
}

/// The test API server on loopback (`SUPPORT_ACCESS_TEST_AWS_ENDPOINT`).
pub fn aws_endpoint() -> String {
    let endpoint = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect(
        "SUPPORT_ACCESS_TEST_AWS_ENDPOINT is not set: run the README's test command (scripts/test), which starts the \
         DynamoDB/KMS API server on loopback",
    );
    assert!(endpoint.starts_with("http://127."), "tests only talk to loopback, not {endpoint}");
    endpoint
}

/// SDK clients for the test API server on loopback.
pub async fn aws_clients() -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client) {
    let config = sdk_config_for(&aws_endpoint()).await;
    (aws_sdk_dynamodb::Client::new(&config), aws_sdk_kms::Client::new(&config))
}

/// moto itself, behind the test command's proxy (`SUPPORT_ACCESS_TEST_MOTO_ENDPOINT`; the AWS
/// endpoint when no proxy stands in between): for tests and benches that put their own
/// [`aws_proxy::AwsProxy`] in front of it, or seed it directly.
pub fn moto_endpoint() -> String {
    let endpoint = std::env::var("SUPPORT_ACCESS_TEST_MOTO_ENDPOINT")
        .or_else(|_| std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT"))
        .expect("SUPPORT_ACCESS_TEST_MOTO_ENDPOINT is not set: run the README's test command (scripts/test)");
    assert!(endpoint.starts_with("http://127."), "tests only talk to loopback, not {endpoint}");
    endpoint
}

/// SDK clients for `endpoint` that never retry: a naive client, which sees every error the
/// server gives.
pub async fn naive_clients(endpoint: &str) -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client) {
    let config = sdk_config_with(endpoint, adapter_aws::timeouts(), aws_config::retry::RetryConfig::disabled()).await;
    (aws_sdk_dynamodb::Client::new(&config), aws_sdk_kms::Client::new(&config))
}

/// An EventBridge client for the test API server on loopback.
pub async fn eventbridge_client() -> aws_sdk_eventbridge::Client {
    let endpoint = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("SUPPORT_ACCESS_TEST_AWS_ENDPOINT is set");
    aws_sdk_eventbridge::Client::new(&sdk_config_for(&endpoint).await)
}

/// SDK settings for an API server at `endpoint` on loopback, with test credentials.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    sdk_config_with(endpoint, adapter_aws::timeouts(), aws_config::retry::RetryConfig::standard()).await
}

/// SDK settings for an API server at `endpoint` on loopback, with test credentials and the
/// given timeouts and retries: the one place the tests and benches build an SDK client.
pub async fn sdk_config_with(
    endpoint: &str,
    timeouts: aws_config::timeout::TimeoutConfig,
    retry: aws_config::retry::RetryConfig,
) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "tests"))
        .timeout_config(timeouts)
        .retry_config(retry)
        .load()
        .await
}

/// SDK clients for setting up and seeding the server at `endpoint`: timeouts long enough for
/// a cold moto (its first call of a service imports it, and a first `CreateTable` beside
/// others can take seconds) and for big batches, so a setup call is never retried after a
/// timeout, which for `CreateTable` would fail with "table already exists".
pub async fn setup_clients(endpoint: &str) -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client) {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(Duration::from_secs(60))
        .operation_timeout(Duration::from_secs(120))
        .build();
    let config = sdk_config_with(endpoint, timeouts, aws_config::retry::RetryConfig::standard()).await;
    (aws_sdk_dynamodb::Client::new(&config), aws_sdk_kms::Client::new(&config))
}

/// Fresh tables (named with a random suffix) and a fresh signing key on the server at
/// `endpoint`: storage of a deployment's own.
pub async fn fresh_deployment(endpoint: &str) -> (Tables, String) {
    let (dynamodb, kms) = setup_clients(endpoint).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let tables = Tables {
        consents: format!("Consents-{suffix}"),
        audit: format!("Audit-{suffix}"),
        heads: format!("ChainHeads-{suffix}"),
        checkpoints: format!("Checkpoints-{suffix}"),
        requests: format!("AccessRequests-{suffix}"),
        controls: format!("Controls-{suffix}"),
        first_uses: format!("FirstUses-{suffix}"),
        intake: format!("AuditIntake-{suffix}"),
    };
    create_tables(&dynamodb, &tables).await.unwrap();
    let key = create_signing_key(&kms).await.unwrap();
    (tables, key)
}

/// The embedded ports on `store` as local-api wires them: a token key, and a checkpoint key
/// and a receipt key of their own.
async fn embedded_services(store: Arc<SqliteStore>, clock: Arc<FixedClock>, policy: Policy) -> Services {
    let signer = Arc::new(LocalSigner::generate());
    let keys = Services::keys_of(signer.as_ref()).await.unwrap();
    let checkpoint_signer = Arc::new(LocalSigner::generate());
    let checkpoint_keys = shared::ports::Signer::public_keys(checkpoint_signer.as_ref()).await.unwrap();
    let receipt_signer = Arc::new(LocalSigner::generate());
    let receipt_keys = shared::ports::Signer::public_keys(receipt_signer.as_ref()).await.unwrap();
    Services::new(store, signer, keys, clock, policy, CursorKey::generate())
        .with_checkpoint_signer(checkpoint_signer, checkpoint_keys)
        .unwrap()
        .with_receipt_signer(receipt_signer, receipt_keys)
        .unwrap()
}

impl TestApp {
    /// The embedded default, in memory.
    pub async fn new() -> Self {
        Self::with_policy(test_policy()).await
    }

    pub async fn with_policy(policy: Policy) -> Self {
        let clock = Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let services = embedded_services(store.clone(), clock.clone(), policy).await;
        Self::in_memory(services, store, clock)
    }

    /// The embedded default as it was wired before checkpoints had a key of their own: the
    /// token key signs them too (and receipts, which then verify nowhere).
    pub async fn with_one_key() -> Self {
        let clock = Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
        let store = Arc::new(SqliteStore::in_memory().unwrap());
        let signer = Arc::new(LocalSigner::generate());
        let keys = Services::keys_of(signer.as_ref()).await.unwrap();
        let services = Services::new(store.clone(), signer, keys, clock.clone(), test_policy(), CursorKey::generate());
        Self::in_memory(services, store, clock)
    }

    fn in_memory(services: Services, store: Arc<SqliteStore>, clock: Arc<FixedClock>) -> Self {
        Self {
            services,
            clock,
            backend: Backend::Embedded,
            sqlite: Some((store, PathBuf::new())),
            aws: None,
            hold: Self::SEQUENCER_HOLD,
            _dir: None,
        }
    }

    /// `backend` with fresh storage of its own: a SQLite file, or new tables and a new KMS key.
    pub async fn on(backend: Backend) -> Self {
        let clock = Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
        match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("support-access.db");
                let store = Arc::new(SqliteStore::open(&path).unwrap());
                let services = embedded_services(store.clone(), clock.clone(), test_policy()).await;
                let hold = Self::SEQUENCER_HOLD;
                Self { services, clock, backend, sqlite: Some((store, path)), aws: None, hold, _dir: Some(dir) }
            }
            Backend::Aws => Self::on_aws(None).await,
        }
    }

    /// How long the embedded sequencer holds a consent change in the tests of #18 (the uses'
    /// deadline there is half of it), instead of [`shared::ports::SEQUENCER_HOLD`].
    pub const SEQUENCER_HOLD: Duration = Duration::from_millis(300);

    /// The same on DynamoDB: moto serializes every call of the whole suite, so under its load
    /// one put took over a second (2 s was too short for the uses' half of it).
    pub const AWS_SEQUENCER_HOLD: Duration = Duration::from_millis(5_000);

    /// `backend` with every audit event going through the intake and the sequencer (#18).
    pub async fn sequenced(backend: Backend) -> Self {
        let hold = match backend {
            Backend::Embedded => Self::SEQUENCER_HOLD,
            Backend::Aws => Self::AWS_SEQUENCER_HOLD,
        };
        Self::sequenced_with_hold(backend, hold).await
    }

    /// How long this app's store holds consent changes (a [`TestApp::sequenced`] app).
    pub fn sequencer_hold(&self) -> Duration {
        self.hold
    }

    /// As [`TestApp::sequenced`], holding consent changes for `hold`.
    pub async fn sequenced_with_hold(backend: Backend, hold: Duration) -> Self {
        if backend == Backend::Aws {
            return Self::aws_app(None, Some(hold)).await;
        }
        let clock = Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("support-access.db");
        let store = Arc::new(SqliteStore::open(&path).unwrap().with_sequencer_hold(hold));
        let services =
            embedded_services(store.clone(), clock.clone(), test_policy()).await.with_audit_intake(store.clone());
        Self { services, clock, backend, sqlite: Some((store, path)), aws: None, hold, _dir: Some(dir) }
    }

    /// Whether this app's events go through the intake and the sequencer.
    pub fn is_sequenced(&self) -> bool {
        self.services.audit_intake.is_some()
    }

    /// Runs the sequencer until nothing is pending (consent changes wait out their hold). A
    /// run that fails for want of the store (moto timing out under the suite's load) is run
    /// again, as the function's retries would: a repeated run changes nothing.
    pub async fn settle(&self) {
        for _ in 0..200 {
            match self.sequencer().sequence(1_000).await {
                Ok(run) if run.pending == 0 => return,
                Ok(_) | Err(shared::ports::StoreError::Unavailable(_)) => {}
                Err(e) => panic!("sequencer: {e}"),
            }
            tokio::time::sleep(self.hold / 4).await;
        }
        panic!("the sequencer never drained the intake");
    }

    /// A use of `consent` by `agent-7`, decided now (`GET /app/whoami`), as the authorizer
    /// records it through the intake (#18).
    pub fn decided_use(&self, consent: &Consent) -> AuditEvent {
        use shared::domain::{Actor, AgentId, AuditEventType, Role};
        AuditEvent::new(
            AuditEventType::TokenUsed,
            self.clock.now(),
            Some(consent.user_id.clone()),
            Actor { sub: AgentId::parse("agent-7").unwrap(), role: Role::Support },
        )
        .with_consent(&consent.consent_id, consent.scope, consent.expires_at)
        .with_detail("GET /app/whoami")
    }

    /// The intake of a [`TestApp::sequenced`] app.
    pub fn intake(&self) -> Arc<dyn shared::ports::AuditIntake> {
        match (&self.sqlite, &self.aws) {
            (Some((store, _)), _) => store.clone(),
            (_, Some(aws)) => aws.store.clone(),
            _ => unreachable!("a backend"),
        }
    }

    /// The sequencer of a [`TestApp::sequenced`] app.
    pub fn sequencer(&self) -> Arc<dyn shared::ports::Sequencer> {
        match (&self.sqlite, &self.aws) {
            (Some((store, _)), _) => store.clone(),
            (_, Some(aws)) => aws.store.clone(),
            _ => unreachable!("a backend"),
        }
    }

    /// The AWS backend with fresh tables and key; its ports talk to the API server through
    /// `via` (an [`aws_proxy::AwsProxy`]) when given.
    pub async fn on_aws(via: Option<&str>) -> Self {
        Self::aws_app(via, None).await
    }

    /// As [`TestApp::sequenced_with_hold`] on DynamoDB, the ports talking to the API server
    /// through `via` (an [`aws_proxy::AwsProxy`]).
    pub async fn sequenced_on_aws(via: &str, hold: Duration) -> Self {
        Self::aws_app(Some(via), Some(hold)).await
    }

    /// As [`TestApp::on_aws`]; with `sequencer_hold`, a store that sequences its chains (#18).
    async fn aws_app(via: Option<&str>, sequencer_hold: Option<Duration>) -> Self {
        let clock = Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
        let (dynamodb, kms) = aws_clients().await;
        let (tables, key) = fresh_deployment(&aws_endpoint()).await;
        let (port_dynamodb, port_kms) = match via {
            Some(endpoint) => {
                let config = sdk_config_for(endpoint).await;
                (aws_sdk_dynamodb::Client::new(&config), aws_sdk_kms::Client::new(&config))
            }
            None => (dynamodb.clone(), kms.clone()),
        };
        let port_kms_for_receipts = port_kms.clone();
        let signer = Arc::new(KmsSigner::new(port_kms, &key, &[]).unwrap());
        let keys = Services::keys_of(signer.as_ref()).await.unwrap();
        // moto serializes every request, so contended appends take far longer than on
        // DynamoDB: the contract suite's 50-writer case needs more than the default.
        let store = DynamoStore::new(port_dynamodb, tables.clone()).with_append_budget(Duration::from_secs(60));
        let store = Arc::new(match sequencer_hold {
            Some(hold) => store.with_sequencer_hold(hold),
            None => store,
        });
        // Receipts get a KMS key of their own, as on the stack (the token key signs checkpoints
        // here, as a Lambda's only key would).
        let receipt_key = create_signing_key(&kms).await.unwrap();
        let receipt_signer = Arc::new(KmsSigner::new(port_kms_for_receipts, &receipt_key, &[]).unwrap());
        let receipt_keys = shared::ports::Signer::public_keys(receipt_signer.as_ref()).await.unwrap();
        let services = Services::new(store.clone(), signer, keys, clock.clone(), test_policy(), CursorKey::generate())
            .with_receipt_signer(receipt_signer, receipt_keys)
            .unwrap();
        let services = match sequencer_hold {
            Some(_) => services.with_audit_intake(store.clone()),
            None => services,
        };
        Self {
            services,
            clock,
            backend: Backend::Aws,
            sqlite: None,
            aws: Some(AwsParts { store, key, dynamodb, tables }),
            hold: sequencer_hold.unwrap_or(Self::SEQUENCER_HOLD),
            _dir: None,
        }
    }

    /// The environment a Lambda function of this deployment runs with: the AWS endpoint (the
    /// test API server), the table names and the signing key.
    pub fn function_env(&self) -> Vec<(String, String)> {
        let aws = self.aws.as_ref().expect("an AWS backend");
        let endpoint = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").unwrap();
        [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("CONSENTS_TABLE", aws.tables.consents.as_str()),
            ("AUDIT_TABLE", aws.tables.audit.as_str()),
            ("CHAIN_HEADS_TABLE", aws.tables.heads.as_str()),
            ("CHECKPOINTS_TABLE", aws.tables.checkpoints.as_str()),
            ("ACCESS_REQUESTS_TABLE", aws.tables.requests.as_str()),
            ("CONTROLS_TABLE", aws.tables.controls.as_str()),
            ("FIRST_USES_TABLE", aws.tables.first_uses.as_str()),
            ("AUDIT_INTAKE_TABLE", aws.tables.intake.as_str()),
            ("KMS_KEY_ID", aws.key.as_str()),
            ("SUPPORT_ACCESS_GROUPS_CLAIM", "cognito:groups"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The embedded store's expiry sweep (DynamoDB has TTL and the stream instead).
    pub fn sweeper(&self) -> &dyn ExpirySweeper {
        self.sqlite.as_ref().expect("the sweep belongs to the embedded store").0.as_ref()
    }

    /// The first-use claims the notifier (AWS) or the relay (embedded) announces uses by.
    pub fn first_uses(&self) -> Arc<dyn shared::ports::FirstUses> {
        match (&self.sqlite, &self.aws) {
            (Some((store, _)), _) => store.clone(),
            (_, Some(aws)) => aws.store.clone(),
            _ => unreachable!("a backend"),
        }
    }

    /// Whether this app runs on DynamoDB and KMS (the test server), rather than embedded.
    pub fn on_dynamodb(&self) -> bool {
        self.aws.is_some()
    }

    /// The DynamoDB tables (an AWS backend).
    pub fn tables(&self) -> &Tables {
        &self.aws.as_ref().expect("an AWS backend").tables
    }

    /// The users the sequencer lists as stalled (the `#stalled#<shard>` partitions of
    /// `AuditIntake`), read straight from the table, sorted.
    pub async fn stalled_list(&self) -> Vec<String> {
        let (dynamodb, _) = aws_clients().await;
        let out = dynamodb
            .scan()
            .table_name(&self.tables().intake)
            .filter_expression("begins_with(#s, :p)")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S(adapter_aws::STALLED_PREFIX.into()),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let mut streams: Vec<String> =
            out.items().iter().map(|i| i["order"].as_s().expect("a listed stream").clone()).collect();
        streams.sort();
        streams
    }

    /// The DynamoDB store, for the expiry recorder.
    pub fn dynamo(&self) -> Arc<DynamoStore> {
        self.aws.as_ref().expect("an AWS backend").store.clone()
    }

    /// A store on the same tables that appends each event directly (no intake): a function of
    /// the release before, still running while a deploy turns `SequencedAudit` on.
    pub fn direct_store(&self) -> DynamoStore {
        let aws = self.aws.as_ref().expect("an AWS backend");
        DynamoStore::new(aws.dynamodb.clone(), aws.tables.clone()).with_append_budget(Duration::from_secs(60))
    }

    /// Makes KMS unreachable for signing (a signer whose endpoint refuses connections): every
    /// `Sign` fails from now on, as in a KMS outage.
    pub async fn break_signing_key(&mut self) {
        let aws = self.aws.as_ref().expect("an AWS backend");
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let config = sdk_config_for(&endpoint).await;
        self.services.signer = Arc::new(KmsSigner::new(aws_sdk_kms::Client::new(&config), &aws.key, &[]).unwrap());
    }

    /// Makes every audit write fail from now on, inside the store: a trigger that aborts
    /// inserts into the SQLite audit table, or a DynamoDB store whose audit table is gone.
    pub async fn break_audit_writes(&mut self) {
        match (&self.sqlite, &self.aws) {
            (Some((_, path)), _) => {
                let conn = rusqlite::Connection::open(path).expect("a file database (use TestApp::on)");
                conn.execute_batch(
                    "CREATE TRIGGER injected_fault BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'injected'); END;",
                )
                .unwrap();
            }
            (_, Some(aws)) => {
                let tables = Tables { audit: format!("{}-missing", aws.tables.audit), ..aws.tables.clone() };
                let broken = Arc::new(DynamoStore::new(aws.dynamodb.clone(), tables));
                self.services.consent_writer = broken.clone();
                self.services.token_ledger = broken.clone();
                self.services.audit_appender = broken;
            }
            _ => unreachable!(),
        }
    }

    /// Writes `events` (built in order, as for an empty stream) straight into the store as a
    /// sealed chain: one SQLite transaction, or DynamoDB batch writes of 25, one after another
    /// (with the chain head), so tens of thousands of events take seconds on both backends.
    /// The events keep their `user_id` (the unattributed stream when `None`).
    pub async fn seed_chain(&self, events: impl IntoIterator<Item = AuditEvent>) {
        let mut hash = support_access_verify::chain::GENESIS.to_owned();
        let mut sealed = Vec::new();
        for (i, event) in events.into_iter().enumerate() {
            let event = event.seal(i as u64 + 1, &hash);
            hash = event.hash.clone();
            sealed.push(event);
        }
        let Some(last) = sealed.last().cloned() else { return };
        match (&self.sqlite, &self.aws) {
            (Some((_, path)), _) => {
                let mut conn = rusqlite::Connection::open(path).expect("a file database (use TestApp::on)");
                let tx = conn.transaction().unwrap();
                for e in &sealed {
                    tx.execute(
                        "INSERT INTO audit (stream, seq, event_id, type, at, user_id, actor, body, hash)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        rusqlite::params![
                            e.stream(),
                            e.seq as i64,
                            e.event_id.as_str(),
                            e.event_type.as_str(),
                            e.at.unix(),
                            e.user_id.as_ref().map(|u| u.as_str()),
                            e.actor.sub.as_str(),
                            serde_json::to_string(e).unwrap(),
                            e.hash,
                        ],
                    )
                    .unwrap();
                }
                tx.commit().unwrap();
            }
            (_, Some(aws)) => {
                use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
                let put = |item| {
                    WriteRequest::builder()
                        .put_request(PutRequest::builder().set_item(Some(item)).build().unwrap())
                        .build()
                };
                let writes: Vec<WriteRequest> = sealed.iter().map(|e| put(adapter_aws::audit_item(e))).collect();
                // One batch at a time, with the setup client's timeouts: the test server runs
                // one call at a time, so batches sent at once gain nothing there and queue the
                // calls of the tests running beside this one past their 5 s timeouts.
                let (dynamodb, _) = setup_clients(&aws_endpoint()).await;
                for batch in writes.chunks(25) {
                    let call = dynamodb.batch_write_item().request_items(&aws.tables.audit, batch.to_vec());
                    let answer = call.send().await.unwrap();
                    assert!(answer.unprocessed_items().is_none_or(|u| u.is_empty()), "items left unprocessed");
                }
                let head = std::collections::HashMap::from([
                    ("stream".to_owned(), AttributeValue::S(last.stream().to_owned())),
                    ("seq".to_owned(), AttributeValue::N(last.seq.to_string())),
                    ("hash".to_owned(), AttributeValue::S(last.hash.clone())),
                    ("at".to_owned(), AttributeValue::N(last.at.unix().to_string())),
                    // Marked moved, as the writers mark a head (any index partition will do).
                    ("moved_shard".to_owned(), AttributeValue::N("0".into())),
                    ("moved_at".to_owned(), AttributeValue::N(last.at.unix().to_string())),
                ]);
                dynamodb.put_item().table_name(&aws.tables.heads).set_item(Some(head)).send().await.unwrap();
            }
            _ => unreachable!(),
        }
    }

    /// Every page of the export of `scope`, followed from the first, concatenated; with the
    /// number of pages.
    pub async fn export_pages(&self, scope: &shared::app::ExportScope) -> (String, usize) {
        let (mut text, mut pages, mut cursor) = (String::new(), 0, None::<String>);
        loop {
            let page = shared::app::export_page(self.services(), scope, cursor.as_deref()).await.unwrap();
            text.push_str(&page.lines);
            pages += 1;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return (text, pages),
            }
        }
    }

    /// What an administrator with write access to the store can do that no role of the
    /// service may: delete the last event of `stream` and the leaf of `checkpoint` that sealed
    /// it (dropping the embedded store's append-only triggers first; on DynamoDB the head
    /// item is set back to the event before, as a careful administrator would).
    pub async fn delete_last_event_and_its_leaf(&self, stream: &str, checkpoint: &shared::ports::Checkpoint) {
        let seq = checkpoint.claims.seq;
        match (&self.sqlite, &self.aws) {
            (Some((_, path)), _) => {
                let conn = rusqlite::Connection::open(path).expect("a file database (use TestApp::on)");
                conn.execute_batch("DROP TRIGGER audit_no_delete; DROP TRIGGER checkpoint_leaves_no_delete;").unwrap();
                conn.execute(
                    "DELETE FROM audit WHERE stream = ?1 AND seq = (SELECT MAX(seq) FROM audit WHERE stream = ?1)",
                    [stream],
                )
                .unwrap();
                let deleted = conn
                    .execute(
                        "DELETE FROM checkpoint_leaves WHERE stream = ?1 AND checkpoint = ?2",
                        rusqlite::params![stream, seq as i64],
                    )
                    .unwrap();
                assert_eq!(deleted, 1, "checkpoint {seq} sealed {stream}");
            }
            (_, Some(aws)) => {
                use aws_sdk_dynamodb::types::AttributeValue;
                let (dynamodb, _) = setup_clients(&aws_endpoint()).await;
                let archive = self.services.chain_archive.as_ref();
                let mut all = Vec::new();
                loop {
                    let events = archive.stream_events(stream, all.len() as u64, 500).await.unwrap();
                    if events.is_empty() {
                        break;
                    }
                    all.extend(events);
                }
                let last = &all[all.len().checked_sub(2).expect("two events at least")..];
                let gone = &last[1];
                dynamodb
                    .delete_item()
                    .table_name(&aws.tables.audit)
                    .key("stream", AttributeValue::S(stream.to_owned()))
                    .key("seq", AttributeValue::N(gone.seq.to_string()))
                    .send()
                    .await
                    .unwrap();
                dynamodb
                    .delete_item()
                    .table_name(&aws.tables.checkpoints)
                    .key("pk", AttributeValue::S(format!("leaf#{stream}")))
                    .key("sk", AttributeValue::S(format!("{seq:020}#{}", checkpoint.claims.root)))
                    .condition_expression("attribute_exists(pk)")
                    .send()
                    .await
                    .unwrap();
                let before = &last[0];
                let head = std::collections::HashMap::from([
                    ("stream".to_owned(), AttributeValue::S(stream.to_owned())),
                    ("seq".to_owned(), AttributeValue::N(before.seq.to_string())),
                    ("hash".to_owned(), AttributeValue::S(before.hash.clone())),
                    ("at".to_owned(), AttributeValue::N(before.at.unix().to_string())),
                ]);
                dynamodb.put_item().table_name(&aws.tables.heads).set_item(Some(head)).send().await.unwrap();
            }
            _ => unreachable!(),
        }
    }

    pub async fn mend_audit_writes(&mut self) {
        match (&self.sqlite, &self.aws) {
            (Some((_, path)), _) => {
                rusqlite::Connection::open(path).unwrap().execute_batch("DROP TRIGGER injected_fault;").unwrap();
            }
            (_, Some(aws)) => {
                self.services.consent_writer = aws.store.clone();
                self.services.token_ledger = aws.store.clone();
                self.services.audit_appender = aws.store.clone();
            }
            _ => unreachable!(),
        }
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Puts `wrap(archive)` in place of the app's chain archive: a test that slows or counts
    /// the reads of an export.
    pub fn wrap_chain_archive(
        &mut self,
        wrap: impl FnOnce(Arc<dyn shared::ports::ChainArchive>) -> Arc<dyn shared::ports::ChainArchive>,
    ) {
        self.services.chain_archive = wrap(self.services.chain_archive.clone());
    }

    /// Puts a [`ProbedArchive`] over the app's chain archive, each read of events taking
    /// `event_delay`; returns how many checkpoints each read of them answered, as they come.
    pub fn probe_chain_archive(&mut self, event_delay: Duration) -> Arc<std::sync::Mutex<Vec<usize>>> {
        let checkpoint_reads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let reads = checkpoint_reads.clone();
        self.wrap_chain_archive(|inner| Arc::new(ProbedArchive { inner, event_delay, checkpoint_reads: reads }));
        checkpoint_reads
    }

    /// Bounds this app's export pages by `budget` (small: many pages out of a few lines).
    pub fn set_export_budget(&mut self, budget: shared::app::ExportBudget) {
        self.services.export_budget = budget;
    }

    /// On AWS, the chain archive reads through a client with the setup clients' timeouts
    /// instead of the functions' (2 s an attempt, 5 s a call): moto walks and sorts a whole
    /// table in Python for every `Query` and serializes each item it returns (1-4 s for 500
    /// events of a 22,500-event table on a loaded test machine, where DynamoDB takes tens of
    /// milliseconds), so a test that exports tens of thousands of events would time out on
    /// the test server's pace, not on the code's. Nothing changes on the embedded backend.
    pub async fn archive_at_test_server_pace(&mut self) {
        if let Some(aws) = &self.aws {
            let (dynamodb, _) = setup_clients(&aws_endpoint()).await;
            self.services.chain_archive = Arc::new(DynamoStore::new(dynamodb, aws.tables.clone()));
        }
    }

    /// The keys that verify this app's checkpoints, as a key ring.
    pub fn checkpoint_ring(&self) -> shared::token::KeyRing {
        shared::token::KeyRing::from_jwks((*self.services.checkpoint_keys).clone()).unwrap()
    }

    /// The keys that verify this app's exports (its checkpoint-keys.json: the checkpoint keys
    /// and the receipt keys, each for its kind).
    pub fn export_keys(&self) -> support_access_verify::ExportKeys {
        support_access_verify::ExportKeys::from_set(support_access_verify::ExportKeySet {
            keys: self.services.checkpoint_keys.keys.clone(),
            receipt_keys: self.services.receipt_keys.keys.clone(),
        })
        .unwrap()
    }

    /// The raw answer: status, content type and body text (for non-JSON bodies).
    pub async fn call_raw(&self, event: Event) -> (u16, String, String) {
        let response = shared::http::route(event.to_request(), self.services()).await;
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = String::from_utf8(response.body().as_ref().to_vec()).unwrap();
        (response.status().as_u16(), content_type, body)
    }

    pub async fn call(&self, event: Event) -> Answer {
        let response = shared::http::route(event.to_request(), self.services()).await;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let cache_control =
            response.headers().get("cache-control").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let bytes: &[u8] = response.body().as_ref();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(bytes).expect("JSON body") };
        Answer { status, content_type, cache_control, body }
    }

    /// The Lambda authorizer's answer for `token` used with `method` on `path`.
    pub async fn authorize(&self, token: &str, method: &str, path: &str) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
        shared::http::authorize_request(authorizer_event(Some(token), method, path), self.services()).await
    }

    /// `POST /introspect` for `token`, asked by [`RESOURCE_SERVER`] (in the introspect group).
    pub async fn introspect(&self, token: &str) -> Answer {
        self.call(Event::new("POST", "/introspect").caller(RESOURCE_SERVER, "[introspect]").form(&[("token", token)]))
            .await
    }

    /// `POST /introspect/uses`: [`RESOURCE_SERVER`] reports that it served `method` on `path`
    /// with `token`.
    pub async fn report_use(&self, token: &str, method: &str, path: &str) -> Answer {
        let report = json!({"token": token, "method": method, "path": path});
        self.call(Event::new("POST", "/introspect/uses").caller(RESOURCE_SERVER, "[introspect]").json(report)).await
    }

    /// Every audit event, newest first (all pages).
    pub async fn audit(&self) -> Vec<AuditEvent> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .services()
                .audit_reader
                .query(&AuditQuery { filter: AuditFilter::default(), limit: 100, after, now: self.clock.now() })
                .await
                .unwrap();
            all.extend(page.events);
            match page.next {
                Some(n) => after = Some(n),
                None => return all,
            }
        }
    }

    pub async fn consent(&self, user: &str) -> Option<Consent> {
        self.services().consent_reader.current(&UserId::parse(user).unwrap(), self.clock.now()).await.unwrap()
    }

    /// What storage holds for `users`: their consents and the whole audit log.
    pub async fn snapshot(&self, users: &[&str]) -> (Vec<Option<Consent>>, Vec<AuditEvent>) {
        let mut consents = Vec::new();
        for u in users {
            consents.push(self.consent(u).await);
        }
        (consents, self.audit().await)
    }

    /// Grants `user` a consent through the API and returns it.
    pub async fn grant(&self, user: &str, body: Value) -> Answer {
        self.call(Event::new("POST", "/consents").user(user).json(body)).await
    }

    /// Mints a token for `user` as agent `agent-7` (in the support group).
    pub async fn mint(&self, user: &str) -> Answer {
        self.call(
            Event::new("POST", "/tokens")
                .caller("agent-7", "[support]")
                .json(json!({"user_id": user, "reason": "ticket 4411: billing page broken"})),
        )
        .await
    }
}

/// local-api on a loopback port of its own, serving until the test ends, on the embedded
/// store in `dir` with `policy`: its base URL and runtime (whose dev identity provider issues
/// the tests' identity tokens, see [`dev_token`]).
pub async fn local_api_on_loopback(dir: &std::path::Path, policy: Policy) -> (String, Arc<local_api::Runtime>) {
    local_api_bound_first(dir, |_| (policy, None)).await
}

/// As [`local_api_on_loopback`], configured the way its binary is: bound first, so that
/// `configure` knows its base URL (the binary's default issuer), then given its policy and
/// CORS setting.
pub async fn local_api_bound_first(
    dir: &std::path::Path,
    configure: impl FnOnce(&str) -> (Policy, Option<shared::http::Cors>),
) -> (String, Arc<local_api::Runtime>) {
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await.expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let (policy, cors) = configure(&base);
    let mut runtime = local_api::Runtime::embedded(dir, policy, Arc::new(shared::ports::SystemClock))
        .await
        .expect("local-api starts");
    runtime.cors = cors;
    let runtime = Arc::new(runtime);
    tokio::spawn(local_api::serve(listener, runtime.clone(), std::future::pending()));
    (base, runtime)
}

/// Sends `req` and answers its status and JSON body (`null` when empty): every test that
/// calls local-api over HTTP reads its answers this way.
pub async fn send_json(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("local-api answers");
    let status = res.status().as_u16();
    let text = res.text().await.expect("a body");
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("a JSON body") })
}

/// An identity token of local-api's dev identity provider for `sub` in `groups`, valid for
/// an hour from now.
pub fn dev_token(runtime: &local_api::Runtime, sub: &str, groups: &[&str]) -> String {
    let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    runtime.identity.issue(sub, &groups, shared::ports::SystemClock.now(), 3600)
}

/// An app's chain archive as an export sees it, probed: each read of events takes
/// `event_delay` (a store that answers slowly: throttled, retrying, far away), and each read
/// of checkpoints notes how many it answered in `checkpoint_reads`.
pub struct ProbedArchive {
    inner: Arc<dyn shared::ports::ChainArchive>,
    event_delay: Duration,
    checkpoint_reads: Arc<std::sync::Mutex<Vec<usize>>>,
}

#[async_trait::async_trait]
impl shared::ports::ChainArchive for ProbedArchive {
    async fn list_streams(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<shared::ports::StreamsPage, shared::ports::StoreError> {
        self.inner.list_streams(after, limit).await
    }
    async fn stream_events(
        &self,
        stream: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, shared::ports::StoreError> {
        tokio::time::sleep(self.event_delay).await;
        self.inner.stream_events(stream, after_seq, limit).await
    }
    async fn latest_checkpoint(&self) -> Result<Option<shared::ports::Checkpoint>, shared::ports::StoreError> {
        self.inner.latest_checkpoint().await
    }
    async fn moved_heads(
        &self,
        latest: Option<&shared::ports::Checkpoint>,
        limit: usize,
    ) -> Result<shared::ports::MovedHeads, shared::ports::StoreError> {
        self.inner.moved_heads(latest, limit).await
    }
    async fn unmark_sealed(&self, heads: &[shared::ports::Leaf]) -> Result<(), shared::ports::StoreError> {
        self.inner.unmark_sealed(heads).await
    }
    async fn append_checkpoint(
        &self,
        checkpoint: &shared::ports::Checkpoint,
        leaves: &[shared::ports::ProvenLeaf],
    ) -> Result<(), shared::ports::StoreError> {
        self.inner.append_checkpoint(checkpoint, leaves).await
    }
    async fn checkpoints(
        &self,
        stream: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(shared::ports::Checkpoint, Vec<shared::ports::ProvenLeaf>)>, shared::ports::StoreError> {
        let answer = self.inner.checkpoints(stream, after, limit).await?;
        self.checkpoint_reads.lock().unwrap().push(answer.len());
        Ok(answer)
    }
}

/// The `support-access` CLI binary (built by `cargo build --workspace --bins`, which
/// scripts/test runs first), from `SUPPORT_ACCESS_BIN_DIR` or the workspace's debug target.
pub fn cli_binary() -> PathBuf {
    let dir = std::env::var_os("SUPPORT_ACCESS_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join("support-access");
    assert!(path.exists(), "{} is missing: build the workspace binaries first (scripts/test does)", path.display());
    path
}

/// Runs each named `async fn case(app: TestApp)` of the calling test file twice: on the
/// embedded store and on DynamoDB/KMS (moto), as `embedded::case` and `dynamodb_kms::case`.
/// `on_both_backends!(make; cases)` builds each app with `TestApp::make(backend)` instead of
/// [`TestApp::on`] (`sequenced`, say).
#[macro_export]
macro_rules! on_both_backends {
    ($make:ident; $($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::TestApp::$make($crate::Backend::Embedded).await).await;
                }
            )*
        }
        mod dynamodb_kms {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::TestApp::$make($crate::Backend::Aws).await).await;
                }
            )*
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::on_both_backends!(on; $($case),*);
    };
}

/// The project's Python (`SUPPORT_ACCESS_TEST_PYTHON`, else `./.venv`), which has PyJWT and
/// boto3 (scripts/test installs them).
/// Runs `tests/eventbridge_sink.py` (moto's EventBridge, SQS and DynamoDB Streams, through
/// boto3) with the project's Python: `args` are its command and that command's arguments
/// (the test server's endpoint goes between them); what it printed.
pub fn moto_sink(args: &[&str]) -> String {
    let endpoint = std::env::var("SUPPORT_ACCESS_TEST_AWS_ENDPOINT").expect("the moto endpoint (scripts/test)");
    let out = std::process::Command::new(python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("eventbridge_sink.py"))
        .arg(args[0])
        .arg(&endpoint)
        .args(&args[1..])
        .output()
        .unwrap();
    assert!(out.status.success(), "eventbridge_sink.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Every record of `table`'s DynamoDB stream on the test server so far, as the event a
/// stream-triggered function receives (`{"Records": [...]}`).
pub fn stream_event(table: &str) -> Value {
    serde_json::from_str(&moto_sink(&["records", table])).unwrap()
}

pub fn python() -> PathBuf {
    let path = std::env::var_os("SUPPORT_ACCESS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "{} is missing: run the README's test command (scripts/test), which installs it",
        path.display()
    );
    path
}
