//! Tokens assembled from structured parts (a header of chosen and arbitrary parameters, a
//! payload that is either raw bytes or claims with arbitrary values, arbitrary signature
//! bytes), so the fuzzer gets past base64 and JSON into the header, key and claim checks.
//! Claims are also checked directly against arbitrary clocks: `exp`/`nbf` arithmetic at the
//! edges of `i64` must neither panic nor let a dead token live.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use support_access_fuzz::{KID, expected, keys};
use support_access_verify::{ImpersonationClaims, Rejection, check_claims, verify_signature};

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Any(String),
}

impl Text {
    fn pick(&self, known: &[&str]) -> Value {
        match self {
            Self::Known(i) => json!(known[*i as usize % known.len()]),
            Self::Any(s) => json!(s),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Raw(Vec<u8>),
    Claims { sub: Text, act: Text, cid: Text, jti: Text, scope: Text, iss: Text, aud: Text, times: [i64; 3] },
}

#[derive(Arbitrary, Debug)]
struct Input {
    alg: Option<Text>,
    typ: Option<Text>,
    kid: Option<Text>,
    extra: Vec<(Text, Text)>,
    payload: Payload,
    signature: Vec<u8>,
    now: i64,
    leeway: u16,
}

fuzz_target!(|input: Input| {
    let mut header = Map::new();
    if let Some(alg) = &input.alg {
        header.insert("alg".into(), alg.pick(&["ES256", "none", "HS256", "RS256", "ES384"]));
    }
    if let Some(typ) = &input.typ {
        header.insert("typ".into(), typ.pick(&["support-access+jwt", "JWT", "at+jwt"]));
    }
    if let Some(kid) = &input.kid {
        header.insert("kid".into(), kid.pick(&[KID, "other"]));
    }
    for (k, v) in &input.extra {
        let name = k.pick(&["jwk", "jku", "x5u", "x5c", "crit", "cty"]);
        header.insert(name.as_str().unwrap_or_default().to_owned(), v.pick(&["x"]));
    }
    let payload = match &input.payload {
        Payload::Raw(bytes) => bytes.clone(),
        Payload::Claims { sub, act, cid, jti, scope, iss, aud, times } => serde_json::to_vec(&json!({
            "iss": iss.pick(&["support-access"]), "aud": aud.pick(&["support-access-app"]),
            "sub": sub.pick(&["alice"]), "act": {"sub": act.pick(&["agent-7"])},
            "cid": cid.pick(&["c-1"]), "jti": jti.pick(&["j-1"]), "scope": scope.pick(&["read", "full"]),
            "reason": "fuzzing the verifier", "iat": times[0], "nbf": times[1], "exp": times[2],
        }))
        .unwrap(),
    };
    let token = format!(
        "{}.{}.{}",
        B64.encode(serde_json::to_vec(&header).unwrap()),
        B64.encode(&payload),
        B64.encode(&input.signature)
    );
    // Nobody here holds the private key: nothing assembled from parts may verify.
    assert!(verify_signature(&token, keys()).is_err(), "{token}");

    if let Ok(claims) = serde_json::from_slice::<ImpersonationClaims>(&payload) {
        let mut expected = expected();
        expected.leeway_seconds = i64::from(input.leeway);
        let leeway = i128::from(input.leeway);
        let (now, exp, nbf) = (i128::from(input.now), i128::from(claims.exp), i128::from(claims.nbf));
        match check_claims(&claims, &expected, input.now) {
            Ok(()) => {
                assert!(now < exp + leeway && now >= nbf - leeway, "{claims:?} at {now}");
                assert_eq!((claims.iss.as_str(), claims.aud.as_str()), ("support-access", "support-access-app"));
            }
            Err(Rejection::Expired) => assert!(now >= exp + leeway || exp + leeway > i128::from(i64::MAX)),
            Err(_) => {}
        }
    }
});
