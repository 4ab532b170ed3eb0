//! Property tests: no mutation of a valid token verifies, whatever is flipped, inserted,
//! deleted, swapped or re-encoded. Case counts are modest so the suite stays quick.

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use proptest::prelude::*;
use serde_json::{Value, json};
use support_access_verify::ecdsa::low_s;
use support_access_verify::{Expected, JwkSet, KeyRing, Rejection, TOKEN_TYPE, es256_public_jwk, verify};

const NOW: i64 = 1_795_600_800;

struct Fixture {
    keys: KeyRing,
    token: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let jwk = es256_public_jwk(key.public_key().as_ref()).unwrap();
    let kid = jwk.common.key_id.clone().unwrap();
    let header = json!({"alg": "ES256", "typ": TOKEN_TYPE, "kid": kid});
    let claims = json!({
        "iss": "support-access", "sub": "alice", "aud": "support-access-app",
        "iat": NOW, "nbf": NOW, "exp": NOW + 900, "jti": "j-1", "act": {"sub": "agent-7"},
        "cid": "c-1", "scope": "read", "reason": "ticket 4411: billing page broken",
    });
    let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    // aws-lc does not normalise `s`; the service only issues (and accepts) low-S.
    let sig = low_s(sig.as_ref().try_into().unwrap());
    Fixture {
        keys: KeyRing::from_jwks(JwkSet { keys: vec![jwk] }).unwrap(),
        token: format!("{input}.{}", B64.encode(sig)),
    }
});

fn verifies(token: &str) -> bool {
    verify(token, &FIXTURE.keys, &Expected::new("support-access", "support-access-app"), NOW).is_ok()
}

/// The payload with one claim replaced by `value`, re-encoded; header and signature kept.
fn with_claim(claim: &str, value: Value) -> String {
    let parts: Vec<&str> = FIXTURE.token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    claims[claim] = value;
    format!("{}.{}.{}", parts[0], B64.encode(claims.to_string()), parts[2])
}

#[test]
fn the_unmutated_token_verifies() {
    assert!(verifies(&FIXTURE.token), "the baseline must pass, or every property below is vacuous");
}

#[test]
fn the_high_s_twin_of_the_token_is_refused() {
    // (r, n - s) verifies as ECDSA for the same input and key; anyone can compute it.
    let (input, sig) = FIXTURE.token.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&B64.decode(sig).unwrap()).unwrap();
    let twin = p256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
    let twin = format!("{input}.{}", B64.encode(twin.to_bytes()));
    let expected = Expected::new("support-access", "support-access-app");
    assert_eq!(verify(&twin, &FIXTURE.keys, &expected, NOW), Err(Rejection::Malleable));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn flipping_any_bit_breaks_the_token(index in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = FIXTURE.token.clone().into_bytes();
        let i = index.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let mutated = String::from_utf8_lossy(&bytes).into_owned();
        prop_assert!(!verifies(&mutated), "flipped bit {bit} of byte {i}");
    }

    #[test]
    fn inserting_a_character_breaks_the_token(index in any::<prop::sample::Index>(), c in any::<char>()) {
        let mut token = FIXTURE.token.clone();
        let i = index.index(token.len() + 1);
        token.insert(i, c);
        prop_assert!(!verifies(&token), "inserted {c:?} at {i}");
    }

    #[test]
    fn deleting_characters_breaks_the_token(index in any::<prop::sample::Index>(), n in 1usize..8) {
        let mut token = FIXTURE.token.clone();
        let i = index.index(token.len());
        token.replace_range(i..(i + n).min(token.len()), "");
        prop_assert!(!verifies(&token), "deleted {n} at {i}");
    }

    #[test]
    fn replacing_a_character_breaks_the_token(index in any::<prop::sample::Index>(), c in prop::sample::select("AZaz09_.=+/-".chars().collect::<Vec<_>>())) {
        let mut token = FIXTURE.token.clone();
        let i = index.index(token.len());
        token.replace_range(i..i + 1, &c.to_string());
        prop_assume!(token != FIXTURE.token);
        prop_assert!(!verifies(&token), "replaced {i} by {c:?}");
    }

    #[test]
    fn reordering_the_segments_breaks_the_token(order in Just([0usize, 1, 2]).prop_shuffle()) {
        prop_assume!(order != [0, 1, 2]);
        let parts: Vec<&str> = FIXTURE.token.split('.').collect();
        let token = order.iter().map(|&i| parts[i]).collect::<Vec<_>>().join(".");
        prop_assert!(!verifies(&token), "order {order:?}");
    }

    #[test]
    fn re_encoding_the_payload_with_a_changed_claim_breaks_the_token(
        claim in prop::sample::select(vec!["sub", "scope", "cid", "jti", "exp", "nbf", "aud", "iss", "act"]),
        text in prop::sample::select(vec!["bob", "agent-8", "other", "full", "x"]),
        number in any::<i64>(),
    ) {
        let value = match claim {
            "exp" | "nbf" => json!(number),
            "scope" => json!("full"),
            "act" => json!({"sub": text}),
            _ => json!(text),
        };
        let token = with_claim(claim, value);
        prop_assume!(token != FIXTURE.token);
        prop_assert!(!verifies(&token), "changed {claim}");
    }
}
