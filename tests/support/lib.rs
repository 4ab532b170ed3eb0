//! Test support: API Gateway v2 events built from a real event fixture, an in-memory app on
//! a fixed clock, and helpers to read answers and prove that nothing was written.

use std::sync::Arc;

use serde_json::{Value, json};
use shared::adapters::embedded::EmbeddedRuntime;
use shared::domain::{AuditEvent, AuditFilter, Consent, Policy, Timestamp, UserId};
use shared::lambda_events::{ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request};
use shared::ports::{AuditQuery, Clock, FixedClock, Ports};

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

/// An API Gateway v2 event, edited from the fixture.
#[derive(Clone)]
pub struct Event(Value);

impl Event {
    /// A request from `sub` (groups as API Gateway renders them, e.g. `[support auditor]`).
    pub fn new(method: &str, path: &str) -> Self {
        let mut v: Value = serde_json::from_str(FIXTURE).expect("fixture parses");
        v["rawPath"] = json!(path);
        v["requestContext"]["http"]["method"] = json!(method);
        v["requestContext"]["http"]["path"] = json!(path);
        Self(v)
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

    /// The event as `lambda_http` hands it to a function.
    pub fn to_request(&self) -> lambda_http::Request {
        lambda_http::request::from_str(&self.0.to_string()).expect("a valid API Gateway v2 event")
    }
}

/// An answer, with its body parsed when it is JSON.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
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

/// The service on in-memory adapters and a fixed clock, handled exactly as by a Lambda.
pub struct TestApp {
    pub runtime: EmbeddedRuntime,
    pub clock: Arc<FixedClock>,
}

/// The policy tests run with: the defaults, with the groups claim of the fixture (Cognito).
pub fn test_policy() -> Policy {
    Policy { groups_claim: "cognito:groups".into(), ..Policy::default() }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_policy(test_policy()).await
    }

    pub async fn with_policy(policy: Policy) -> Self {
        let clock = Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
        let runtime = EmbeddedRuntime::in_memory(policy, clock.clone()).await;
        Self { runtime, clock }
    }

    pub fn ports(&self) -> &Ports {
        &self.runtime.ports
    }

    pub async fn call(&self, event: Event) -> Answer {
        let response = shared::http::route(event.to_request(), self.ports()).await;
        let status = response.status().as_u16();
        let content_type =
            response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let bytes: &[u8] = response.body().as_ref();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(bytes).expect("JSON body") };
        Answer { status, content_type, body }
    }

    /// The Lambda authorizer's answer for `token` used with `method` on `path`.
    pub async fn authorize(&self, token: &str, method: &str, path: &str) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
        shared::http::authorize_request(authorizer_event(Some(token), method, path), self.ports()).await
    }

    /// `POST /introspect` for `token`, asked by [`RESOURCE_SERVER`] (in the introspect group).
    pub async fn introspect(&self, token: &str) -> Answer {
        self.call(Event::new("POST", "/introspect").caller(RESOURCE_SERVER, "[introspect]").form(&[("token", token)]))
            .await
    }

    /// Every audit event, newest first (all pages).
    pub async fn audit(&self) -> Vec<AuditEvent> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .ports()
                .audit_reader
                .query(&AuditQuery { filter: AuditFilter::default(), limit: 100, after })
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
        self.ports().consents.current(&UserId::parse(user).unwrap(), self.clock.now()).await.unwrap()
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
