//! The service's hot paths beside a baseline in the same run (compare ratios, not absolute
//! times): a bare `jsonwebtoken::decode` of the same ES256 token with the same key.
//!
//! - `verify`: the baseline, `support_access_verify::verify` (first verification), and the
//!   verified-token cache's hit (signature step cached, claims still checked on the clock).
//! - `authorize`: the whole `shared::app::authorize` path on the embedded store (a SQLite file
//!   in WAL mode with `synchronous=FULL`, so each audit write is fsynced before the answer),
//!   with and without the verified-token cache: one request at a time (the latency), then 32
//!   concurrent requests on a runtime with one worker per core (the throughput) beside the
//!   bare decode under the same 32-way concurrency.
//! - `mint`, `grant` on the embedded store with the local signer, beside the floor of a
//!   durable write (one committed SQLite INSERT with the same settings); the DER to raw signature
//!   conversion of the KMS signer; the canonical audit hash (`AuditEvent::seal`).
//!
//! `cargo bench -p e2e --bench hot_paths`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapter_aws::der_signature_to_raw;
use adapter_embedded::{LocalSigner, SqliteStore};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::Method;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use shared::app::Services;
use shared::app::{CursorKey, authorize, grant_consent, mint_token};
use shared::domain::{
    Actor, AgentId, AuditEvent, AuditEventType, ConsentDuration, Note, Policy, Reason, Role, Scope, SignIn, Timestamp,
    UserId,
};
use shared::ports::FixedClock;
use shared::token;
use support_access_verify::VerifiedCache;
use tokio::runtime::Runtime;

/// Concurrent requests in the throughput benches.
const CONCURRENCY: usize = 32;

fn now() -> Timestamp {
    Timestamp::from_unix(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64)
}

/// The embedded store on a file (durable: WAL, `synchronous=FULL`), the local signer, a clock
/// fixed at the real time (so the baseline decode, which reads the machine's clock, agrees).
struct Bench {
    services: Services,
    user: UserId,
    agent: AgentId,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new(rt: &Runtime) -> Self {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let store = Arc::new(SqliteStore::open(&dir.path().join("bench.db")).unwrap());
        let signer = Arc::new(LocalSigner::generate());
        let keys = rt.block_on(Services::keys_of(signer.as_ref())).unwrap();
        let clock = Arc::new(FixedClock::at(now()));
        let services = Services::new(store, signer, keys, clock, Policy::default(), CursorKey::generate());
        let user = UserId::parse("alice").unwrap();
        let agent = AgentId::parse("agent-7").unwrap();
        let bench = Self { services, user, agent, _dir: dir };
        rt.block_on(bench.grant()).unwrap();
        bench
    }

    async fn grant(&self) -> Result<(), shared::app::ApiError> {
        let duration = ConsentDuration::parse(24 * 3600, &self.services.policy).unwrap();
        grant_consent(&self.services, &self.user, duration, Scope::Read, Note::default()).await.map(|_| ())
    }

    async fn mint(&self) -> String {
        let reason = Reason::parse("ticket 4411: billing page broken").unwrap();
        mint_token(&self.services, &self.agent, &SignIn::default(), &self.user, reason).await.unwrap().access_token
    }

    /// The same ports without the verified-token cache (every use verifies the signature).
    fn uncached(&self) -> Services {
        Services { verified: Arc::new(VerifiedCache::new(0)), ..self.services.clone() }
    }

    /// The baseline: a bare `jsonwebtoken::decode` with the same key, checking iss/aud/exp.
    fn baseline(&self) -> (DecodingKey, Validation) {
        let jwk = self.services.keys.jwks().keys[0].clone();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.services.policy.issuer]);
        validation.set_audience(&[&self.services.policy.audience]);
        (DecodingKey::from_jwk(&jwk).unwrap(), validation)
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) {
    jsonwebtoken::decode::<serde_json::Value>(black_box(token), key, validation).unwrap();
}

async fn authorize_ok(services: &Services, token: &str) {
    authorize(services, black_box(token), &Method::GET, "/app/whoami").await.unwrap();
}

/// `n` uses of `work` spread over [`CONCURRENCY`] tasks on `rt`; the wall time of all of them.
fn concurrent<F, Fut>(rt: &Runtime, n: u64, work: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENCY as u64)
            .map(|i| {
                let work = work.clone();
                let share = n / CONCURRENCY as u64 + u64::from(i < n % CONCURRENCY as u64);
                tokio::spawn(async move {
                    for _ in 0..share {
                        work().await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        start.elapsed()
    })
}

fn single_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn one_worker_per_core() -> Runtime {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread().worker_threads(cores).enable_all().build().unwrap()
}

fn verify_benches(c: &mut Criterion) {
    let rt = single_thread();
    let bench = Bench::new(&rt);
    let token = rt.block_on(bench.mint());
    let (key, validation) = bench.baseline();
    let services = &bench.services;
    let expected = token::expected(&services.policy);
    let t = services.clock.now().unix();
    decode(&token, &key, &validation);

    let mut group = c.benchmark_group("token verification");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: jsonwebtoken::decode", |b| b.iter(|| decode(&token, &key, &validation)));
    group.bench_function("support_access_verify::verify (first verification)", |b| {
        b.iter(|| support_access_verify::verify(black_box(&token), &services.keys, &expected, t).unwrap())
    });
    let cache = VerifiedCache::default();
    group.bench_function("VerifiedCache hit + check_claims (repeated verification)", |b| {
        b.iter(|| {
            let claims = cache.verify_signature(black_box(&token), &services.keys, t).unwrap();
            support_access_verify::check_claims(&claims, &expected, t).unwrap();
            claims
        })
    });
    group.finish();
}

fn authorize_benches(c: &mut Criterion) {
    let rt = single_thread();
    let bench = Bench::new(&rt);
    let token = rt.block_on(bench.mint());
    let (key, validation) = bench.baseline();
    let uncached = bench.uncached();
    rt.block_on(authorize_ok(&bench.services, &token));

    let mut group = c.benchmark_group("authorize, one request at a time");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: jsonwebtoken::decode", |b| b.iter(|| decode(&token, &key, &validation)));
    group.bench_function("authorize (uncached verify + consent read + durable audit write)", |b| {
        b.iter(|| rt.block_on(authorize_ok(&uncached, &token)))
    });
    group.bench_function("authorize (cached verify + consent read + durable audit write)", |b| {
        b.iter(|| rt.block_on(authorize_ok(&bench.services, &token)))
    });
    group.finish();

    let rt = one_worker_per_core();
    let token: Arc<str> = token.into();
    let (key, validation) = (Arc::new(key), Arc::new(validation));
    let mut group = c.benchmark_group(format!("authorize, {CONCURRENCY} concurrent requests"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: jsonwebtoken::decode", |b| {
        b.iter_custom(|n| {
            let (token, key, validation) = (token.clone(), key.clone(), validation.clone());
            concurrent(&rt, n, move || {
                let (token, key, validation) = (token.clone(), key.clone(), validation.clone());
                async move { decode(&token, &key, &validation) }
            })
        })
    });
    for (name, services) in [("uncached", uncached.clone()), ("cached", bench.services.clone())] {
        group.bench_function(format!("authorize ({name} verify, durable audit write)"), |b| {
            b.iter_custom(|n| {
                let (token, services) = (token.clone(), services.clone());
                concurrent(&rt, n, move || {
                    let (token, services) = (token.clone(), services.clone());
                    async move { authorize_ok(&services, &token).await }
                })
            })
        });
    }
    group.finish();
}

fn write_benches(c: &mut Criterion) {
    let rt = single_thread();
    let bench = Bench::new(&rt);
    let token = rt.block_on(bench.mint());
    let (key, validation) = bench.baseline();

    let mut group = c.benchmark_group("writes on the embedded store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: jsonwebtoken::decode", |b| b.iter(|| decode(&token, &key, &validation)));
    // The floor of any durable write here: one committed INSERT on a SQLite file with the
    // store's settings (WAL, synchronous=FULL) on the same disk, i.e. one fsync.
    let floor = rusqlite::Connection::open(bench._dir.path().join("floor.db")).unwrap();
    floor.pragma_update(None, "journal_mode", "WAL").unwrap();
    floor.pragma_update(None, "synchronous", "FULL").unwrap();
    floor.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    group.bench_function("floor: one durable SQLite commit (WAL, synchronous=FULL)", |b| {
        b.iter(|| floor.execute("INSERT INTO t (x) VALUES (?1)", [black_box(1)]).unwrap())
    });
    group.bench_function("mint (consent read + local ES256 sign + durable token.issued)", |b| {
        b.iter(|| rt.block_on(bench.mint()))
    });
    group.bench_function("grant (durable consent + consent.granted)", |b| {
        b.iter(|| rt.block_on(bench.grant()).unwrap())
    });
    group.finish();

    let signer = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).unwrap();
    let (signing_input, _) = token.rsplit_once('.').unwrap();
    let der = signer.sign(&SystemRandom::new(), signing_input.as_bytes()).unwrap();
    let der = der.as_ref().to_vec();
    let event = AuditEvent::new(
        AuditEventType::TokenUsed,
        bench.services.clock.now(),
        Some(bench.user.clone()),
        Actor { sub: bench.agent.clone(), role: Role::Support },
    )
    .with_detail("GET /app/whoami");
    let prev = "a".repeat(64);

    let mut group = c.benchmark_group("pure");
    group.bench_function("baseline: jsonwebtoken::decode", |b| b.iter(|| decode(&token, &key, &validation)));
    group.bench_function("der_signature_to_raw (KMS DER to JOSE r||s)", |b| {
        b.iter(|| der_signature_to_raw(black_box(&der)).unwrap())
    });
    group.bench_function("canonical audit hash (AuditEvent::seal)", |b| {
        b.iter_batched(|| event.clone(), |e| e.seal(black_box(7), &prev), BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, verify_benches, authorize_benches, write_benches);
criterion_main!(benches);
