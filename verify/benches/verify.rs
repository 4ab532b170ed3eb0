//! Token verification beside its baselines, in one run (compare ratios, not absolute times):
//! a bare `jsonwebtoken::decode` of the same ES256 token with the same key, and a raw aws-lc
//! ECDSA P-256 verify of the same signature (the physical floor of any verifier). Also the
//! audit chain's event hash.
//!
//! `cargo bench -p support-access-verify --bench verify`

use std::hint::black_box;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::json;
use support_access_verify::{Expected, JwkSet, KeyRing, chain, es256_public_jwk, verify};

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn bench(c: &mut Criterion) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let pkcs8 = key.to_pkcs8v1().unwrap();
    let public = key.public_key().as_ref().to_vec();
    let jwk = es256_public_jwk(&public).unwrap();
    let kid = jwk.common.key_id.clone().unwrap();
    let keys = KeyRing::from_jwks(JwkSet { keys: vec![jwk.clone()] }).unwrap();

    // A token of the shape the service mints.
    let t = now();
    let claims = json!({
        "iss": "support-access", "sub": "alice", "aud": "support-access-app",
        "iat": t, "nbf": t, "exp": t + 900,
        "jti": "b39a3570-8352-4429-a24a-6cec08a9c1a5", "act": {"sub": "agent-7"},
        "cid": "26c16f5d-a412-44a7-af22-870826a0f133", "scope": "read",
        "reason": "ticket 4411: billing page broken",
    });
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some("support-access+jwt".into());
    header.kid = Some(kid);
    let token = support_access_verify::ecdsa::with_low_s(
        &jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(pkcs8.as_ref())).unwrap(),
    );
    let expected = Expected::new("support-access", "support-access-app");

    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&["support-access"]);
    validation.set_audience(&["support-access-app"]);
    assert!(verify(&token, &keys, &expected, t).is_ok());
    assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).is_ok());

    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = B64.decode(signature).unwrap();
    let raw_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public);
    assert!(raw_key.verify(signing_input.as_bytes(), &signature).is_ok());

    let mut group = c.benchmark_group("verify");
    group.bench_function("floor: aws-lc ECDSA P-256 verify", |b| {
        b.iter(|| raw_key.verify(black_box(signing_input.as_bytes()), black_box(&signature)).unwrap())
    });
    group.bench_function("baseline: jsonwebtoken::decode", |b| {
        b.iter(|| jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &decoding, &validation).unwrap())
    });
    group.bench_function("support_access_verify::verify", |b| {
        b.iter(|| verify(black_box(&token), &keys, &expected, t).unwrap())
    });
    group.finish();

    let event = json!({
        "event_id": "7f1c2d3e-0000-4000-8000-000000000002", "type": "token.issued",
        "at": "2026-11-25T10:05:00Z", "user_id": "alice", "actor": {"sub": "agent-7", "role": "support"},
        "seq": 2, "prev_hash": chain::GENESIS, "consent_id": "c-1", "jti": "j-1", "scope": "read",
        "reason": "ticket 4411: billing page broken", "expires_at": "2026-11-25T10:20:00Z",
    });
    c.bench_function("audit chain: event_hash", |b| b.iter(|| chain::event_hash(black_box(&event))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
