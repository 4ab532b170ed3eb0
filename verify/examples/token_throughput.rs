//! Tokens per second through this verifier, for the cross-language baseline
//! (`scripts/bench-pyjwt`, which runs PyJWT on the same token set in the same run).
//!
//! `token_throughput generate DIR [COUNT]` writes DIR/jwks.json and DIR/tokens.txt (COUNT
//! distinct ES256 tokens of the service's shape, one key, valid for an hour);
//! `token_throughput verify DIR [SECONDS]` verifies them round-robin, first without the
//! cache (every token fully verified: `verify`), then through a warm [`VerifiedCache`]
//! (`VerifiedCache::verify_signature` + `check_claims`, as the service does), and prints
//! `first <tokens/s>` and `cached <tokens/s>`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use support_access_verify::Clock as _;
use support_access_verify::{Expected, KeyRing, SystemClock, VerifiedCache, check_claims, es256_public_jwk, verify};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["generate", dir, ref rest @ ..] => generate(dir, rest.first().map_or(1000, |n| n.parse().unwrap())),
        ["verify", dir, ref rest @ ..] => run(dir, rest.first().map_or(3.0, |s| s.parse().unwrap())),
        _ => {
            eprintln!("usage: token_throughput generate DIR [COUNT] | verify DIR [SECONDS]");
            std::process::exit(2);
        }
    }
}

fn generate(dir: &str, count: usize) {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let jwk = es256_public_jwk(key.public_key().as_ref()).unwrap();
    let encoding = EncodingKey::from_ec_der(key.to_pkcs8v1().unwrap().as_ref());
    let mut header = Header::new(Algorithm::ES256);
    header.typ = Some(support_access_verify::TOKEN_TYPE.into());
    header.kid = jwk.common.key_id.clone();
    let t = SystemClock.now_unix();
    let tokens: Vec<String> = (0..count)
        .map(|_| {
            let claims = json!({
                "iss": "support-access", "sub": "alice", "aud": "support-access-app",
                "iat": t, "nbf": t, "exp": t + 3600,
                "jti": uuid::Uuid::new_v4().to_string(), "act": {"sub": "agent-7"},
                "cid": "26c16f5d-a412-44a7-af22-870826a0f133", "scope": "read",
                "reason": "ticket 4411: billing page broken",
            });
            support_access_verify::ecdsa::with_low_s(&jsonwebtoken::encode(&header, &claims, &encoding).unwrap())
        })
        .collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(format!("{dir}/jwks.json"), serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap()).unwrap();
    std::fs::write(format!("{dir}/tokens.txt"), tokens.join("\n") + "\n").unwrap();
}

fn run(dir: &str, seconds: f64) {
    let jwks: JwkSet = serde_json::from_str(&std::fs::read_to_string(format!("{dir}/jwks.json")).unwrap()).unwrap();
    let keys = KeyRing::from_jwks(jwks).unwrap();
    let tokens: Vec<String> =
        std::fs::read_to_string(format!("{dir}/tokens.txt")).unwrap().lines().map(str::to_owned).collect();
    let expected = Expected::new("support-access", "support-access-app");
    let budget = Duration::from_secs_f64(seconds);

    let first = rate(&tokens, budget, |t| {
        verify(black_box(t), &keys, &expected, SystemClock.now_unix()).unwrap();
    });
    let cache = VerifiedCache::new(tokens.len().max(1));
    for t in &tokens {
        cache.verify_signature(t, &keys, SystemClock.now_unix()).unwrap();
    }
    let cached = rate(&tokens, budget, |t| {
        let now = SystemClock.now_unix();
        let claims = cache.verify_signature(black_box(t), &keys, now).unwrap();
        check_claims(&claims, &expected, now).unwrap();
    });
    println!("first {first:.0}");
    println!("cached {cached:.0}");
}

/// Verifications per second of `tokens`, round-robin over the whole set, for about `budget`.
fn rate(tokens: &[String], budget: Duration, mut f: impl FnMut(&str)) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    loop {
        for _ in 0..64 {
            f(&tokens[n % tokens.len()]);
            n += 1;
        }
        if start.elapsed() >= budget {
            return n as f64 / start.elapsed().as_secs_f64();
        }
    }
}
