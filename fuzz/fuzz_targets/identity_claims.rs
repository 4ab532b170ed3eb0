//! The caller's identity from API Gateway's claims. `parse_groups` on any text never panics
//! and never yields an empty group, and never reads a `[..]` rendering with whitespace inside
//! (two groups, or one named with a space?) as any group; a list of plausible group names
//! reads back the same from a JSON array and a comma list, and from API Gateway's `[a b]`
//! only when it has at most one entry; `Caller::from_request` on any claims map never panics,
//! is authenticated exactly when `sub` is present and non-empty, and is in exactly the groups
//! `parse_groups` reads from the policy's claim, or, with the identity token in the
//! `Authorization` header, exactly the entries of the token's own groups array.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerJwtDescription, ApiGatewayV2httpRequestContext,
};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use libfuzzer_sys::fuzz_target;
use shared::app::ApiError;
use shared::domain::Policy;
use shared::http::{Caller, parse_groups};

const KNOWN: &[&str] = &["support", "auditor", "introspect", "support-lead", "admins@corp", "team:ops"];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Context {
    /// No request context at all (not behind API Gateway).
    None,
    /// API Gateway without an authorizer.
    NoAuthorizer,
    /// An authorizer that is not the JWT one (a Lambda authorizer's context).
    NoJwt,
    Claims(HashMap<String, String>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    raw: String,
    names: Vec<Name>,
    context: Context,
    /// Whether the groups claim is the policy's default (`groups`) or Cognito's.
    cognito: bool,
    /// The identity token's own groups array, passed on in the `Authorization` header with
    /// the context's `sub`, `iat`, `exp` and `jti`; `None`: no token.
    token_groups: Option<Vec<String>>,
}

/// A group name as identity providers issue them: no whitespace, commas, quotes or brackets,
/// which the `[a b]` and comma forms could not carry.
fn plausible(name: &Name) -> Option<String> {
    let name = match name {
        Name::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
        Name::Any(s) => s.chars().filter(|c| c.is_alphanumeric() || "._:@+-/=".contains(*c)).collect(),
    };
    (!name.is_empty()).then_some(name)
}

fn request(context: &Context, token: Option<&serde_json::Value>) -> Request {
    let mut request = Request::new(Body::Empty);
    if let Some(payload) = token {
        let token = format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload.to_string()));
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    match context {
        Context::None => return request,
        Context::NoAuthorizer => {}
        Context::NoJwt => ctx.authorizer = Some(ApiGatewayRequestAuthorizer::default()),
        Context::Claims(claims) => {
            let mut jwt = ApiGatewayRequestAuthorizerJwtDescription::default();
            jwt.claims = claims.clone();
            let mut authorizer = ApiGatewayRequestAuthorizer::default();
            authorizer.jwt = Some(jwt);
            ctx.authorizer = Some(authorizer);
        }
    }
    request = request.with_request_context(RequestContext::ApiGatewayV2(ctx));
    request
}

fuzz_target!(|input: Input| {
    let read = parse_groups(&input.raw);
    for group in &read {
        assert!(!group.is_empty(), "{group:?} from {:?}", input.raw);
    }
    let raw = input.raw.trim();
    if raw.starts_with('[') && serde_json::from_str::<Vec<String>>(raw).is_err() {
        let inner = raw.trim_start_matches('[').trim_end_matches(']').trim();
        if inner.contains(char::is_whitespace) {
            assert!(read.is_empty(), "{read:?} from the ambiguous {raw:?}");
        }
    }

    let names: Vec<String> = input.names.iter().filter_map(plausible).collect();
    let api_gateway = format!("[{}]", names.join(" "));
    let json_array = serde_json::to_string(&names).unwrap();
    let commas = names.join(",");
    for encoded in [&json_array, &commas] {
        assert_eq!(parse_groups(encoded), names, "{encoded:?}");
    }
    let expected: &[String] = if names.len() <= 1 { &names } else { &[] };
    assert_eq!(parse_groups(&api_gateway), expected, "{api_gateway:?}");

    let policy = if input.cognito {
        Policy { groups_claim: "cognito:groups".into(), ..Policy::default() }
    } else {
        Policy::default()
    };
    let claims = match &input.context {
        Context::Claims(claims) => Some(claims),
        _ => None,
    };
    // The token API Gateway validated: the context's identifying claims, its own groups array.
    let token = input.token_groups.as_ref().map(|groups| {
        let mut payload = serde_json::Map::new();
        for name in ["sub", "iat", "exp", "jti"] {
            if let Some(value) = claims.and_then(|c| c.get(name)) {
                payload.insert(name.into(), value.clone().into());
            }
        }
        payload.insert(policy.groups_claim.clone(), groups.clone().into());
        serde_json::Value::Object(payload)
    });
    match Caller::from_request(&request(&input.context, token.as_ref()), &policy) {
        Ok(caller) => {
            let claims = claims.expect("a caller needs claims");
            assert!(claims.get("sub").is_some_and(|s| !s.is_empty()));
            let groups = match &input.token_groups {
                Some(groups) => groups.iter().filter(|g| !g.is_empty()).cloned().collect(),
                None => claims.get(&policy.groups_claim).map(|g| parse_groups(g)).unwrap_or_default(),
            };
            for group in &groups {
                assert!(caller.in_group(group), "{group:?}");
            }
            for role in [&policy.support_group, &policy.auditor_group, &policy.introspect_group] {
                assert_eq!(caller.in_group(role), groups.contains(role), "{role}");
            }
            // Ids are validated when used, never trusted because the authorizer passed them.
            if let Ok(user) = caller.user_id() {
                assert_eq!(Some(user.as_str()), claims.get("sub").map(String::as_str));
            }
        }
        Err(e) => {
            assert!(matches!(e, ApiError::Unauthenticated), "{e:?}");
            assert!(claims.is_none_or(|c| c.get("sub").is_none_or(|s| s.is_empty())));
        }
    }
});
