//! The JWT attack matrix: one row per attack, each token run through every entry point (the
//! local `/app/whoami` route, the Lambda authorizer, `POST /introspect`, a use reported on
//! `POST /introspect/uses`), each proving the refusal and the audit event it leaves (its
//! reason code; attributed to the user only when the signature verified). Rows just within the leeway prove the boundary from the other side.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64};
use e2e::{RESOURCE_SERVER, T0, TestApp};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use shared::domain::{AuditEvent, AuditEventType, Role};

#[derive(Debug, Clone, Copy)]
enum Attack {
    /// Control row: the token as minted.
    Untouched,
    AlgNone,
    Hs256KeyedWithPublicPem,
    Hs256KeyedWithPublicJwk,
    Rs256,
    OtherKeyWithKnownKid,
    UnknownKid,
    MissingKid,
    EmbeddedJwk,
    Jku,
    X5u,
    X5c,
    MissingTyp,
    PlainJwtTyp,
    OtherTyp,
    WrongIssuer,
    WrongAudience,
    ExpiredBeyondLeeway,
    ExpiredWithinLeeway,
    NotYetValidBeyondLeeway,
    NotYetValidWithinLeeway,
    TamperedPayload,
    TruncatedSignature,
    DerSignature,
    /// The minted token with `s` replaced by `n - s` (no key needed), after the original was
    /// used once, so it sits in the verified-token cache.
    HighSTwin,
    /// The minted header and claims signed by the checkpoint key (its own `kid`): what the
    /// checkpoint signer could forge if its key were a token key.
    CheckpointKeySigned,
    ReplacedConsent,
    RevokedConsent,
    ExpiredConsent,
    WriteWithReadToken,
    Oversized,
    GarbageBase64,
    /// `exp` near 2^63 once passed and its `token.used` broke the user's log reads (503).
    FarFutureExp,
    /// Times before the epoch, or a lifetime longer than any policy gives a token.
    NegativeIat,
    LifetimeBeyondLongest,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Accepted,
    /// Refused everywhere with this reason code; `attributed` when the event names the user.
    Refused {
        code: &'static str,
        attributed: bool,
    },
    /// A `read` token on a write: refused by the routes that know the method, while
    /// introspection (no method) answers active with the scope for the resource server.
    ScopeRefused,
}

use Attack::*;
use Expect::*;

const fn unattributed(code: &'static str) -> Expect {
    Refused { code, attributed: false }
}

const fn attributed(code: &'static str) -> Expect {
    Refused { code, attributed: true }
}

const MATRIX: &[(Attack, &str, Expect)] = &[
    (Untouched, "GET", Accepted),
    (AlgNone, "GET", unattributed("algorithm")),
    (Hs256KeyedWithPublicPem, "GET", unattributed("algorithm")),
    (Hs256KeyedWithPublicJwk, "GET", unattributed("algorithm")),
    (Rs256, "GET", unattributed("algorithm")),
    (OtherKeyWithKnownKid, "GET", unattributed("signature")),
    (UnknownKid, "GET", unattributed("unknown-kid")),
    (MissingKid, "GET", unattributed("unknown-kid")),
    (EmbeddedJwk, "GET", unattributed("embedded-key")),
    (Jku, "GET", unattributed("embedded-key")),
    (X5u, "GET", unattributed("embedded-key")),
    (X5c, "GET", unattributed("embedded-key")),
    (MissingTyp, "GET", unattributed("typ")),
    (PlainJwtTyp, "GET", unattributed("typ")),
    (OtherTyp, "GET", unattributed("typ")),
    (WrongIssuer, "GET", attributed("issuer")),
    (WrongAudience, "GET", attributed("audience")),
    (ExpiredBeyondLeeway, "GET", attributed("expired")),
    (ExpiredWithinLeeway, "GET", Accepted),
    (NotYetValidBeyondLeeway, "GET", attributed("not-yet-valid")),
    (NotYetValidWithinLeeway, "GET", Accepted),
    (TamperedPayload, "GET", unattributed("signature")),
    (TruncatedSignature, "GET", unattributed("signature")),
    (DerSignature, "GET", unattributed("signature")),
    (HighSTwin, "GET", unattributed("malleable")),
    (CheckpointKeySigned, "GET", unattributed("unknown-kid")),
    (ReplacedConsent, "GET", attributed("consent-replaced")),
    (RevokedConsent, "GET", attributed("no-consent")),
    (ExpiredConsent, "GET", attributed("no-consent")),
    (WriteWithReadToken, "POST", ScopeRefused),
    (Oversized, "GET", unattributed("oversized")),
    (GarbageBase64, "GET", unattributed("malformed")),
    (FarFutureExp, "GET", unattributed("claims")),
    (NegativeIat, "GET", unattributed("claims")),
    (LifetimeBeyondLongest, "GET", unattributed("claims")),
];

const PATH: &str = "/app/whoami";
const LEEWAY: i64 = 30;

/// A token split into its decoded header and claims.
fn split(token: &str) -> (Value, Value, String) {
    let parts: Vec<&str> = token.split('.').collect();
    let decode = |s: &str| serde_json::from_slice::<Value>(&B64.decode(s).unwrap()).unwrap();
    (decode(parts[0]), decode(parts[1]), parts[2].to_owned())
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()))
}

/// A JWS over `header` and `claims` signed by the service's own key: only what the row
/// changed can be why it is refused.
async fn ours(app: &TestApp, header: &Value, claims: &Value) -> String {
    let input = signing_input(header, claims);
    let sig = app.services().signer.sign(input.as_bytes()).await.unwrap();
    format!("{input}.{}", B64.encode(sig.raw))
}

/// A JWS signed by an attacker's own P-256 key.
fn attackers(header: &Value, claims: &Value) -> String {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    let input = signing_input(header, claims);
    let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn attacker_jwk() -> Value {
    let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
    serde_json::to_value(shared::token::es256_public_jwk(key.public_key().as_ref()).unwrap()).unwrap()
}

/// Our public key as the SPKI PEM text an HS256 confusion attack would use as the secret.
fn public_pem(jwk: &Value) -> String {
    let coord = |c: &str| B64.decode(jwk[c].as_str().unwrap()).unwrap();
    let mut der = hex_prefix();
    der.push(0x04);
    der.extend(coord("x"));
    der.extend(coord("y"));
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

/// The SubjectPublicKeyInfo header of an uncompressed P-256 key.
fn hex_prefix() -> Vec<u8> {
    let hex = "3059301306072a8648ce3d020106082a8648ce3d030107034200";
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = signing_input(header, claims);
    let sig =
        jsonwebtoken::crypto::sign(input.as_bytes(), &EncodingKey::from_secret(secret), Algorithm::HS256).unwrap();
    format!("{input}.{sig}")
}

fn rs256(header: &Value, claims: &Value) -> String {
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let input = signing_input(header, claims);
    let mut sig = vec![0; key.public_modulus_len()];
    key.sign(&aws_lc_rs::signature::RSA_PKCS1_SHA256, &SystemRandom::new(), input.as_bytes(), &mut sig).unwrap();
    format!("{input}.{}", B64.encode(sig))
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

fn without(mut v: Value, key: &str) -> Value {
    v.as_object_mut().unwrap().remove(key);
    v
}

/// Builds the row's token on a fresh app where alice granted a one-hour `read` consent and
/// agent-7 minted `token` at T0; may change the consent or the clock as the attack needs.
async fn forge(attack: Attack, app: &TestApp, token: &str) -> String {
    let (header, claims, sig) = split(token);
    let jwks = app.services().keys.jwks().clone();
    let our_jwk = serde_json::to_value(&jwks.keys[0]).unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    match attack {
        Untouched | WriteWithReadToken => token.to_owned(),
        AlgNone => format!("{}.", signing_input(&json!({"alg": "none", "typ": "support-access+jwt"}), &claims)),
        Hs256KeyedWithPublicPem => {
            hs256(&with(header, "alg", json!("HS256")), &claims, public_pem(&our_jwk).as_bytes())
        }
        Hs256KeyedWithPublicJwk => hs256(&with(header, "alg", json!("HS256")), &claims, our_jwk.to_string().as_bytes()),
        Rs256 => rs256(&with(header, "alg", json!("RS256")), &claims),
        OtherKeyWithKnownKid => attackers(&header, &claims),
        UnknownKid => ours(app, &with(header, "kid", json!("rotated-out-or-made-up")), &claims).await,
        MissingKid => ours(app, &without(header, "kid"), &claims).await,
        EmbeddedJwk => {
            // The classic: sign with your own key and hand it over in the header.
            let jwk = attacker_jwk();
            attackers(&with(without(header, "kid"), "jwk", jwk), &claims)
        }
        Jku => ours(app, &with(header, "jku", json!("https://attacker.example/jwks.json")), &claims).await,
        X5u => ours(app, &with(header, "x5u", json!("https://attacker.example/cert.pem")), &claims).await,
        X5c => ours(app, &with(header, "x5c", json!(["MIIB"])), &claims).await,
        MissingTyp => ours(app, &without(header, "typ"), &claims).await,
        PlainJwtTyp => ours(app, &with(header, "typ", json!("JWT")), &claims).await,
        OtherTyp => ours(app, &with(header, "typ", json!("at+jwt")), &claims).await,
        WrongIssuer => ours(app, &header, &with(claims, "iss", json!("https://evil.example"))).await,
        WrongAudience => ours(app, &header, &with(claims, "aud", json!("another-app"))).await,
        ExpiredBeyondLeeway => {
            app.clock.set(shared::domain::Timestamp::from_unix(exp + LEEWAY));
            token.to_owned()
        }
        ExpiredWithinLeeway => {
            app.clock.set(shared::domain::Timestamp::from_unix(exp + LEEWAY - 1));
            token.to_owned()
        }
        NotYetValidBeyondLeeway => ours(app, &header, &with(claims, "nbf", json!(T0 + LEEWAY + 1))).await,
        NotYetValidWithinLeeway => ours(app, &header, &with(claims, "nbf", json!(T0 + LEEWAY))).await,
        TamperedPayload => {
            let tampered = with(with(claims, "scope", json!("full")), "sub", json!("bob"));
            format!("{}.{sig}", signing_input(&header, &tampered))
        }
        TruncatedSignature => {
            let raw = B64.decode(&sig).unwrap();
            format!("{}.{}", signing_input(&header, &claims), B64.encode(&raw[..48]))
        }
        DerSignature => {
            // What KMS returns, passed through unconverted.
            let raw = B64.decode(&sig).unwrap();
            let der = p256::ecdsa::Signature::from_slice(&raw).unwrap().to_der();
            format!("{}.{}", signing_input(&header, &claims), B64.encode(der.as_bytes()))
        }
        HighSTwin => {
            let used = app.call(e2e::Event::new("GET", PATH).anonymous().bearer(token)).await;
            assert_eq!(used.status, 200, "the original is accepted (and cached)");
            let sig = p256::ecdsa::Signature::from_slice(&B64.decode(&sig).unwrap()).unwrap();
            let twin = p256::ecdsa::Signature::from_scalars(sig.r(), -*sig.s()).unwrap();
            let (input, _) = token.rsplit_once('.').unwrap();
            format!("{input}.{}", B64.encode(twin.to_bytes()))
        }
        CheckpointKeySigned => {
            let checkpoints = &app.services().checkpoint_signer;
            let header = with(header, "kid", json!(checkpoints.key_id()));
            let input = signing_input(&header, &claims);
            let sig = checkpoints.sign(input.as_bytes()).await.unwrap();
            format!("{input}.{}", B64.encode(sig.raw))
        }
        ReplacedConsent => {
            assert_eq!(app.grant("alice", json!({"duration_seconds": 7200})).await.status, 201);
            token.to_owned()
        }
        RevokedConsent => {
            let revoked = app.call(e2e::Event::new("DELETE", "/consents/current").user("alice")).await;
            assert_eq!(revoked.status, 204);
            token.to_owned()
        }
        ExpiredConsent => {
            // A 15-minute consent: the token's exp is its expiry. Ten seconds later the token
            // is still within its leeway, but the consent is gone, and that decides.
            assert_eq!(app.grant("alice", json!({"duration_seconds": 900})).await.status, 201);
            let short = app.mint("alice").await.str("access_token").to_owned();
            app.clock.set(shared::domain::Timestamp::from_unix(T0 + 910));
            short
        }
        Oversized => {
            let padded = with(claims, "pad", json!("p".repeat(8 * 1024)));
            ours(app, &header, &padded).await
        }
        GarbageBase64 => "eyJhbGciOiJFUzI1NiJ9!.%%%not base64%%%.***".to_owned(),
        FarFutureExp => ours(app, &header, &with(claims, "exp", json!(1_i64 << 62))).await,
        NegativeIat => ours(app, &header, &with(claims, "iat", json!(-1))).await,
        LifetimeBeyondLongest => {
            let longest = support_access_verify::MAX_TOKEN_LIFETIME_SECONDS;
            ours(app, &header, &with(claims, "exp", json!(T0 + longest + 1))).await
        }
    }
}

fn token_events(events: &[AuditEvent]) -> usize {
    events.iter().filter(|e| matches!(e.event_type, AuditEventType::TokenUsed | AuditEventType::TokenRejected)).count()
}

fn newest(events: &[AuditEvent]) -> &AuditEvent {
    events.first().expect("an event was written")
}

/// The whole log, newest first, once this process's unattributed refusals are written (they
/// are counted per window, `shared::app::flush_refusals`).
async fn flushed(app: &TestApp) -> Vec<AuditEvent> {
    shared::app::flush_refusals(app.services()).await.unwrap();
    app.audit().await
}

/// What a refusal event says of its one refusal: its detail, or for an unattributed one (a
/// window of one refusal here) the sample of its window.
fn refusal_detail(event: &AuditEvent, attributed: bool) -> &str {
    let detail = event.detail.as_deref().unwrap_or_default();
    if attributed {
        return detail;
    }
    assert_eq!(shared::app::refused_in(event), Some(1), "{detail}");
    detail.split_once("; sample: ").map_or("", |(_, sample)| sample)
}

/// The refusal event of one entry point: its type, reason code, and who it names.
fn assert_refusal(event: &AuditEvent, code: &str, attributed: bool, entry: &str, row: &str) {
    assert_eq!(event.event_type, AuditEventType::TokenRejected, "{row} via {entry}: {event:?}");
    let detail = refusal_detail(event, attributed);
    assert_eq!(detail.split(' ').next(), Some(code), "{row} via {entry}: detail {detail:?}");
    if attributed {
        assert_eq!(event.user_id.as_ref().map(|u| u.as_str()), Some("alice"), "{row} via {entry}");
        assert_eq!(event.actor.sub.as_str(), "agent-7", "{row} via {entry}");
        assert!(event.jti.is_some() && event.consent_id.is_some(), "{row} via {entry}");
    } else {
        assert_eq!(event.user_id, None, "{row} via {entry}: an unverified token names no user");
        assert_eq!(event.actor.role, Role::Unknown, "{row} via {entry}");
        assert!(event.jti.is_none() && event.consent_id.is_none(), "{row} via {entry}");
    }
}

#[tokio::test]
async fn every_attack_is_refused_on_every_entry_point_and_audited_with_its_reason() {
    for &(attack, method, expect) in MATRIX {
        let row = format!("{attack:?}");
        let app = TestApp::new().await;
        assert_eq!(app.grant("alice", json!({"duration_seconds": 3600, "scope": "read"})).await.status, 201);
        let minted = app.mint("alice").await;
        let token = forge(attack, &app, minted.str("access_token")).await;
        let before = token_events(&app.audit().await);

        // 1. The local API's demo route.
        let whoami = app.call(e2e::Event::new(method, PATH).anonymous().bearer(&token)).await;
        let after_whoami = flushed(&app).await;
        // 2. The Lambda authorizer, with the same method and path.
        let authorizer = app.authorize(&token, method, PATH).await;
        let after_authorizer = flushed(&app).await;
        // 3. Introspection by a resource server.
        let introspected = app.introspect(&token).await;
        let after_introspect = flushed(&app).await;
        assert_eq!(introspected.status, 200, "{row}: {introspected:?}");
        // 4. A use reported by a resource server, with the same method and path.
        let reported = app.report_use(&token, method, PATH).await;
        let after_report = flushed(&app).await;

        match expect {
            Accepted => {
                assert_eq!(whoami.status, 200, "{row}: {whoami:?}");
                assert_eq!(whoami.str("user_id"), "alice");
                assert!(authorizer.is_authorized, "{row}");
                assert_eq!(authorizer.context["user_id"], "alice", "{row}");
                assert_eq!(introspected.body["active"], true, "{row}");
                for (events, entry) in [(&after_whoami, "whoami"), (&after_authorizer, "authorizer")] {
                    assert_eq!(newest(events).event_type, AuditEventType::TokenUsed, "{row} via {entry}");
                }
                assert_eq!(after_introspect, after_authorizer, "{row}: introspection is not a use");
                assert_eq!(reported.status, 200, "{row}: {reported:?}");
                assert_eq!(reported.str("user_id"), "alice");
                assert_eq!(newest(&after_report).event_type, AuditEventType::TokenUsed, "{row} via the report");
            }
            Refused { code, attributed } => {
                assert_eq!((whoami.status, whoami.slug()), (401, "unauthenticated"), "{row}");
                assert_eq!(whoami.str("detail"), "the impersonation token was refused", "{row}: no reason leaks");
                assert!(!authorizer.is_authorized, "{row}");
                assert_eq!(authorizer.context, json!({}), "{row}: a denial carries no context");
                assert_eq!(introspected.body, json!({"active": false}), "{row}: inactive says nothing more");
                for (events, entry) in
                    [(&after_whoami, "whoami"), (&after_authorizer, "authorizer"), (&after_introspect, "introspect")]
                {
                    assert_refusal(newest(events), code, attributed, entry, &row);
                }
                let via = refusal_detail(newest(&after_introspect), attributed);
                assert_eq!(via, format!("{code} introspect by {RESOURCE_SERVER}"), "{row}");
                assert_eq!((reported.status, reported.slug()), (403, "use-refused"), "{row}: {reported:?}");
                assert_refusal(newest(&after_report), code, attributed, "report", &row);
                let via = refusal_detail(newest(&after_report), attributed);
                assert_eq!(via, format!("{code} {method} {PATH} reported by {RESOURCE_SERVER}"), "{row}");
            }
            ScopeRefused => {
                assert_eq!((whoami.status, whoami.slug()), (403, "forbidden"), "{row}");
                assert!(!authorizer.is_authorized, "{row}");
                assert_refusal(newest(&after_whoami), "scope", true, "whoami", &row);
                assert_refusal(newest(&after_authorizer), "scope", true, "authorizer", &row);
                assert_eq!(
                    (introspected.body["active"].as_bool(), introspected.str("scope")),
                    (Some(true), "read"),
                    "{row}: the resource server gets the scope and enforces it"
                );
                assert_eq!(after_introspect, after_authorizer, "{row}: introspection writes nothing");
                assert_eq!((reported.status, reported.slug()), (403, "use-refused"), "{row}: {reported:?}");
                assert_refusal(newest(&after_report), "scope", true, "report", &row);
            }
        }
        // Whatever the token said, the user's own access log still reads.
        let log = app.call(e2e::Event::new("GET", "/me/access-log").user("alice")).await;
        assert_eq!(log.status, 200, "{row}: {log:?}");
        // Exactly one token event per use (reading an expired consent also records its expiry).
        assert_eq!(token_events(&after_whoami), before + 1, "{row}: whoami writes one token event");
        assert_eq!(token_events(&after_authorizer), before + 2, "{row}: the authorizer writes one token event");
        let introspected_events = token_events(&after_introspect);
        assert_eq!(token_events(&after_report), introspected_events + 1, "{row}: a report writes one token event");
    }
}
