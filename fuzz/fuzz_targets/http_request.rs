//! Hostile API Gateway v2 requests through the router, as a Lambda receives them: the real
//! event fixture with the method and path of any route (or near misses of it), an arbitrary
//! query, content type, body (raw bytes, a form, or JSON with the keys the routes read), caller
//! claims (`sub` and a groups claim in each form API Gateway and identity providers send) and
//! bearer token. One embedded store on a fixed clock serves input after input (a fresh one
//! every 10 000, so exports, which read the whole log, stay fast); the seeds (`fuzz/seeds.py`)
//! are one request per route that gets through. Whatever comes in: no panic, no 5xx, every
//! 4xx is a problem+json with a `type` and its own `status` (the token endpoint's, RFC 6749's
//! error JSON with a known `error`), and no route answers success to
//! a caller without the group it needs (or, on `/app/whoami`, without the service's token).
#![no_main]

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::LazyLock;

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use lambda_http::{Request, http};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use adapter_embedded::{LocalSigner, SqliteStore};
use shared::app::CursorKey;
use shared::domain::{Policy, Timestamp};
use shared::http::{MAX_BODY_BYTES, PROBLEM_CONTENT_TYPE, Route, parse_groups, route};
use shared::app::Services;
use shared::ports::FixedClock;

const FIXTURE: &str = include_str!("../../tests/fixtures/apigw_v2_jwt_authorizer.json");

/// 2026-11-25T10:00:00Z, the fixture's time.
const T0: i64 = 1_795_600_800;

/// The claim that lists groups in the fixture (Cognito's).
const GROUPS_CLAIM: &str = "cognito:groups";

/// API Gateway's quota on the request line and header values together (HTTP APIs): no
/// larger request ever reaches a Lambda (and `lambda_http` panics on a URI over 64 KiB).
const MAX_REQUEST_LINE_AND_HEADERS: usize = 10_240;

/// Every (method, path) the router answers, drawn from its own route table (`Route::all`),
/// a route that takes any method as GET, POST and DELETE, a path parameter as a well-formed
/// request id; a method the route refuses comes from the input's `method`. `fuzz/seeds.py`
/// picks routes, subs and groups by their index in these lists.
static ROUTES: LazyLock<Vec<(&'static str, String)>> = LazyLock::new(|| {
    Route::all()
        .flat_map(|route| {
            let methods = if route.methods().is_empty() { &["GET", "POST", "DELETE"][..] } else { route.methods() };
            let path = route.path().replace("{request_id}", "0190b4c8-7f00-7000-8000-000000000000");
            methods.iter().map(move |m| (*m, path.clone()))
        })
        .collect()
});
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// Every body field and query parameter some route reads.
const KEYS: &[&str] = &[
    "duration_seconds",
    "scope",
    "note",
    "user_id",
    "reason",
    "token",
    "token_type_hint",
    "actor",
    "from",
    "to",
    "type",
    "limit",
    "cursor",
    "grant_type",
    "subject_token",
    "subject_token_type",
    "requested_subject",
    "audience",
    "resource",
    "requested_token_type",
    "actor_token",
];
const TEXTS: &[&str] = &[
    "alice",
    "bob",
    "agent-7",
    "read",
    "full",
    "ticket 12345: billing page broken",
    "",
    " ",
    "2026-11-25T10:00:00Z",
    "2026-11-25T11:00:00+01:00",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00+23:59",
    "consent.granted",
    "token.used",
    "1",
    "50",
    "100",
    "101",
    "0",
    "-1",
    "urn:ietf:params:oauth:grant-type:token-exchange",
    "urn:ietf:params:oauth:token-type:id_token",
    "support-access-app",
];
const NUMBERS: &[i64] = &[900, 899, 3600, 604_800, 604_801, 0, -1, i64::MAX, i64::MIN];
const SUBS: &[&str] = &["alice", "bob", "agent-7", "auditor-1", "rs-1", " ", "al ice", "ALICE"];
const GROUPS: &[&str] = &["support", "auditor", "introspect", "supporters", "Support", "support auditor"];
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "APPLICATION/X-WWW-FORM-URLENCODED; charset=UTF-8",
    "text/plain",
    "multipart/form-data; boundary=x",
];

// The first variant of each choice is the well-formed one (arbitrary picks it from zero
// bytes), so a short input is a request that gets through and mutations stray from there.

#[derive(Arbitrary, Debug)]
enum Text {
    /// A value the field accepts (see [`valid`]).
    Valid,
    Known(u8),
    /// The token minted at start-up (valid until a fuzz input revokes or replaces its consent).
    Token,
    /// A cursor the service issued at start-up for `user_id=alice`.
    Cursor,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Known(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    /// A value the field accepts, with its JSON type (see [`valid`]).
    Valid,
    Null,
    Bool(bool),
    Number(u8),
    Int(i64),
    Float(f64),
    Text(Text),
}

#[derive(Arbitrary, Debug)]
enum Member {
    Leaf(Leaf),
    List(Vec<Leaf>),
    Object(Vec<(Key, Leaf)>),
}

#[derive(Arbitrary, Debug)]
enum BodyInput {
    /// The fields the route reads, in its format (JSON, or a form for `/introspect`), each
    /// left out or given an arbitrary value: the short way to a request that gets through.
    Expected(Vec<Option<Leaf>>),
    None,
    Bytes(Vec<u8>),
    Text(String),
    /// A JSON object; members are written in order, duplicates kept.
    Json(Vec<(Key, Member)>),
    Form(Vec<(Key, Text)>),
    /// A JSON object padded past the size limit.
    Oversized(u16),
}

#[derive(Arbitrary, Debug)]
enum PathShape {
    Exact,
    TrailingSlash,
    DoubleSlash,
    Uppercase,
    /// The route's path with one more segment (path-parameter text).
    Extra(String),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Query {
    /// The parameters the route reads, each left out or given an arbitrary value.
    Expected(Vec<Option<Text>>),
    None,
    Raw(String),
    Pairs(Vec<(Key, Text)>),
}

#[derive(Arbitrary, Debug)]
enum Sub {
    Known(u8),
    Absent,
    Empty,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Group {
    Known(u8),
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Groups {
    /// API Gateway's rendering of an array claim: `[a b]`.
    ApiGateway(Vec<Group>),
    JsonArray(Vec<Group>),
    Commas(Vec<Group>),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Claims {
    sub: Sub,
    groups: Option<Groups>,
    extra: Vec<(String, String)>,
}

#[derive(Arbitrary, Debug)]
enum Bearer {
    Minted,
    MintedLowercaseScheme,
    /// The minted token with one byte replaced.
    Tampered {
        at: u16,
        byte: u8,
    },
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    route: u8,
    method: Option<u8>,
    path: PathShape,
    query: Query,
    content_type: Option<Key>,
    body: BodyInput,
    caller: Option<Claims>,
    authorization: Option<Bearer>,
}

/// The service under test: one in-memory store, a local key, a fixed clock, and a token and
/// a cursor it issued, so inputs can reach past the signature and HMAC checks.
struct App {
    rt: tokio::runtime::Runtime,
    services: Services,
    template: Value,
    token: String,
    cursor: String,
}

/// Inputs one store serves before a fresh one replaces it. The audit log only grows and an
/// export reads all of it: with one store for the whole run, exports came to take 98% of the
/// time (43 ms each after 60 000 inputs) and the run slowed from 5 000 to 400 inputs/s.
const INPUTS_PER_STORE: usize = 10_000;

thread_local! {
    static APP: RefCell<Option<(Rc<App>, usize)>> = const { RefCell::new(None) };
}

/// The store of the moment (libFuzzer runs every input on one thread).
fn app() -> Rc<App> {
    APP.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(_, served)| *served >= INPUTS_PER_STORE) {
            *slot = Some((Rc::new(App::new()), 0));
        }
        let (app, served) = slot.as_mut().unwrap();
        *served += 1;
        app.clone()
    })
}

impl App {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let policy = Policy { groups_claim: GROUPS_CLAIM.into(), ..Policy::default() };
        let services = rt.block_on(async {
            let signer = std::sync::Arc::new(LocalSigner::generate());
            let keys = Services::keys_of(signer.as_ref()).await.unwrap();
            let clock = std::sync::Arc::new(FixedClock::at(Timestamp::from_unix(T0)));
            let store = std::sync::Arc::new(SqliteStore::in_memory().unwrap());
            // The token endpoint's identity provider: one whose key no input holds, so that no
            // subject token verifies (a token exchange never succeeds here; its refusals are fuzzed).
            Services::new(store, signer, keys, clock, policy, CursorKey::generate())
                .with_identity(adapter_embedded::DevIdentityProvider::generate().verifier())
        });
        let mut app =
            App { rt, services, template: serde_json::from_str(FIXTURE).unwrap(), token: "".into(), cursor: "".into() };
        let call = |app: &App, spec: Spec| {
            let response = app.rt.block_on(route(app.request(&spec).unwrap(), &app.services));
            (response.status().as_u16(), serde_json::from_slice::<Value>(response.body().as_ref()).unwrap_or_default())
        };
        let grant = Spec::new("POST", "/consents")
            .caller("alice", None)
            .json(json!({"duration_seconds": 604_800, "scope": "full"}));
        assert_eq!(call(&app, grant).0, 201);
        let mint = Spec::new("POST", "/tokens")
            .caller("agent-7", Some("[support]"))
            .json(json!({"user_id": "alice", "reason": "ticket 12345: fuzzing"}));
        let (status, minted) = call(&app, mint);
        assert_eq!(status, 201, "{minted}");
        app.token = minted["access_token"].as_str().unwrap().to_owned();
        let mut use_token = Spec::new("GET", "/app/whoami");
        use_token.authorization = Some(format!("Bearer {}", app.token));
        assert_eq!(call(&app, use_token).0, 200);
        let mut page = Spec::new("GET", "/audit").caller("auditor-1", Some("[auditor]"));
        page.query = "user_id=alice&limit=1".into();
        let (status, page) = call(&app, page);
        assert_eq!(status, 200, "{page}");
        app.cursor = page["next_cursor"].as_str().unwrap().to_owned();
        app
    }
}

/// One request in plain terms, before it becomes API Gateway's event.
struct Spec {
    method: String,
    path: String,
    query: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: Option<Vec<u8>>,
    /// The authorizer's claims, as API Gateway passes them (every value a string).
    claims: Option<Map<String, Value>>,
}

impl Spec {
    fn new(method: &str, path: &str) -> Self {
        Spec {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            content_type: None,
            authorization: None,
            body: None,
            claims: None,
        }
    }

    fn caller(mut self, sub: &str, groups: Option<&str>) -> Self {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(sub));
        if let Some(groups) = groups {
            claims.insert(GROUPS_CLAIM.into(), json!(groups));
        }
        self.claims = Some(claims);
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json".into());
        self.body = Some(body.to_string().into_bytes());
        self
    }
}

impl App {
    /// The event API Gateway would send for `spec`, as `lambda_http` hands it to a function;
    /// `None` when no such event can exist (a method or header value HTTP does not allow).
    fn request(&self, spec: &Spec) -> Option<Request> {
        let mut v = self.template.clone();
        v["rawPath"] = json!(spec.path);
        v["rawQueryString"] = json!(spec.query);
        v["requestContext"]["http"]["method"] = json!(spec.method);
        v["requestContext"]["http"]["path"] = json!(spec.path);
        let headers = v["headers"].as_object_mut()?;
        headers.remove("content-type");
        if let Some(ct) = &spec.content_type {
            headers.insert("content-type".into(), json!(ct));
        }
        if let Some(auth) = &spec.authorization {
            headers.insert("authorization".into(), json!(auth));
        }
        let header_bytes: usize = headers.values().filter_map(Value::as_str).map(str::len).sum();
        if spec.method.len() + spec.path.len() + spec.query.len() + header_bytes > MAX_REQUEST_LINE_AND_HEADERS {
            return None;
        }
        match &spec.body {
            None => {}
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) => v["body"] = json!(text),
                Err(_) => {
                    v["body"] = json!(B64.encode(bytes));
                    v["isBase64Encoded"] = json!(true);
                }
            },
        }
        match &spec.claims {
            None => {
                v["requestContext"].as_object_mut()?.remove("authorizer");
            }
            Some(claims) => v["requestContext"]["authorizer"]["jwt"]["claims"] = Value::Object(claims.clone()),
        }
        lambda_http::request::from_str(&v.to_string()).ok()
    }
}

/// The body fields a route reads (by the route's path), and whether they come as a form.
fn body_fields(path: &str) -> (&'static [&'static str], bool) {
    match path {
        "/consents" => (&["duration_seconds", "scope", "note"], false),
        "/tokens" => (&["user_id", "reason"], false),
        "/access-requests" => (&["user_id", "reason", "scope", "duration_seconds"], false),
        "/introspect" => (&["token", "token_type_hint"], true),
        _ => (&[], false),
    }
}

/// The query parameters a route reads.
fn query_fields(path: &str) -> &'static [&'static str] {
    match path {
        "/audit" => &["user_id", "actor", "from", "to", "type", "limit", "cursor"],
        "/audit/export" => &["user_id", "stream", "cursor"],
        "/me/access-log" => &["limit", "cursor"],
        _ => &[],
    }
}

/// A value `key` accepts, so inputs get past validation to the use cases (the cursor is for
/// `user_id=alice`, the token for alice's consent, both from start-up).
fn valid(key: &str, app: &App) -> Value {
    match key {
        "duration_seconds" => json!(3600),
        "scope" => json!("read"),
        "note" => json!("fuzzing"),
        "user_id" => json!("alice"),
        "reason" => json!("ticket 12345: fuzzing"),
        "token" => json!(app.token),
        "token_type_hint" => json!("access_token"),
        "actor" => json!("agent-7"),
        "from" => json!("2026-11-25T00:00:00Z"),
        "to" => json!("2026-11-26T00:00:00Z"),
        "type" => json!("token.issued"),
        "limit" => json!("10"),
        "cursor" => json!(app.cursor),
        "grant_type" => json!("urn:ietf:params:oauth:grant-type:token-exchange"),
        "subject_token_type" => json!("urn:ietf:params:oauth:token-type:id_token"),
        "requested_subject" => json!("alice"),
        "audience" => json!("support-access-app"),
        // An identity token of no provider the service trusts: the service's own token.
        "subject_token" => json!(app.token),
        _ => json!("x"),
    }
}

/// A JSON value as a query or form field carries it.
fn text_of(value: Value) -> String {
    match value {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

/// Percent-encodes what a client could not send raw in a URI (API Gateway only ever passes on
/// a valid request line); `%` itself stays, so malformed escapes still get through.
fn uri_text(text: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b) || keep.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a header value may hold: visible ASCII and spaces, trimmed.
fn header_text(text: &str) -> String {
    text.chars().filter(|c| (' '..='~').contains(c)).collect::<String>().trim().to_owned()
}

impl Text {
    fn render(&self, key: &str, app: &App) -> String {
        match self {
            Text::Known(i) => pick(TEXTS, *i).to_owned(),
            Text::Valid => text_of(valid(key, app)),
            Text::Token => app.token.clone(),
            Text::Cursor => app.cursor.clone(),
            Text::Any(s) => s.clone(),
        }
    }
}

impl Key {
    fn render(&self) -> &str {
        match self {
            Key::Known(i) => pick(KEYS, *i),
            Key::Any(s) => s,
        }
    }
}

impl Leaf {
    fn to_json(&self, key: &str, app: &App) -> Value {
        match self {
            Leaf::Valid => valid(key, app),
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => json!(b),
            Leaf::Number(i) => json!(NUMBERS[usize::from(*i) % NUMBERS.len()]),
            Leaf::Int(n) => json!(n),
            // NaN and infinities have no JSON form; serde_json writes them as null.
            Leaf::Float(f) => json!(f),
            Leaf::Text(t) => json!(t.render(key, app)),
        }
    }

    /// The value as a form field carries it.
    fn to_text(&self, key: &str, app: &App) -> String {
        text_of(self.to_json(key, app))
    }
}

impl Member {
    fn to_json(&self, key: &str, app: &App) -> Value {
        match self {
            Member::Leaf(leaf) => leaf.to_json(key, app),
            Member::List(items) => Value::Array(items.iter().map(|l| l.to_json(key, app)).collect()),
            Member::Object(members) => Value::Object(
                members.iter().map(|(k, l)| (k.render().to_owned(), l.to_json(k.render(), app))).collect::<Map<_, _>>(),
            ),
        }
    }
}

impl Group {
    fn render(&self) -> &str {
        match self {
            Group::Known(i) => pick(GROUPS, *i),
            Group::Any(s) => s,
        }
    }
}

impl Groups {
    fn render(&self) -> String {
        let names = |list: &[Group]| list.iter().map(|g| g.render().to_owned()).collect::<Vec<_>>();
        match self {
            Groups::ApiGateway(list) => format!("[{}]", names(list).join(" ")),
            Groups::JsonArray(list) => serde_json::to_string(&names(list)).unwrap(),
            Groups::Commas(list) => names(list).join(","),
            Groups::Raw(raw) => raw.clone(),
        }
    }
}

impl Input {
    fn spec(&self, app: &App) -> Spec {
        let (method, route_path) = &ROUTES[usize::from(self.route) % ROUTES.len()];
        let (method, route_path) = (*method, route_path.as_str());
        let method = self.method.map_or(method, |i| pick(METHODS, i));
        let path = match &self.path {
            PathShape::Exact => route_path.to_owned(),
            PathShape::TrailingSlash => format!("{route_path}/"),
            PathShape::DoubleSlash => format!("/{route_path}"),
            PathShape::Uppercase => route_path.to_uppercase(),
            PathShape::Extra(segment) => format!("{route_path}/{}", uri_text(segment, b"")),
            PathShape::Any(any) => format!("/{}", uri_text(any, b"/")),
        };
        let mut spec = Spec::new(method, &path);
        spec.query = match &self.query {
            Query::None => String::new(),
            Query::Raw(raw) => uri_text(raw, b"/?"),
            Query::Pairs(pairs) => {
                let pairs: Vec<(&str, String)> =
                    pairs.iter().map(|(k, v)| (k.render(), v.render(k.render(), app))).collect();
                serde_urlencoded::to_string(pairs).unwrap()
            }
            Query::Expected(values) => {
                let pairs: Vec<(&str, String)> = query_fields(route_path)
                    .iter()
                    .zip(values)
                    .filter_map(|(k, v)| Some((*k, v.as_ref()?.render(k, app))))
                    .collect();
                serde_urlencoded::to_string(pairs).unwrap()
            }
        };
        spec.content_type = self.content_type.as_ref().map(|ct| match ct {
            Key::Known(i) => pick(CONTENT_TYPES, *i).to_owned(),
            Key::Any(s) => header_text(s),
        });
        spec.body = match &self.body {
            BodyInput::None => None,
            BodyInput::Bytes(bytes) => Some(bytes.clone()),
            BodyInput::Text(text) => Some(text.clone().into_bytes()),
            BodyInput::Json(members) => {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, m)| format!("{}:{}", json!(k.render()), m.to_json(k.render(), app)))
                    .collect();
                Some(format!("{{{}}}", members.join(",")).into_bytes())
            }
            BodyInput::Form(pairs) => {
                let pairs: Vec<(&str, String)> =
                    pairs.iter().map(|(k, v)| (k.render(), v.render(k.render(), app))).collect();
                Some(serde_urlencoded::to_string(pairs).unwrap().into_bytes())
            }
            BodyInput::Oversized(extra) => {
                let note = "x".repeat(MAX_BODY_BYTES + usize::from(*extra));
                Some(json!({"duration_seconds": 900, "note": note}).to_string().into_bytes())
            }
            BodyInput::Expected(values) => {
                let (fields, form) = body_fields(route_path);
                let present = fields.iter().zip(values).filter_map(|(k, v)| Some((*k, v.as_ref()?)));
                if spec.content_type.is_none() {
                    spec.content_type = Some(pick(CONTENT_TYPES, if form { 2 } else { 0 }).to_owned());
                }
                Some(if form {
                    let pairs: Vec<(&str, String)> = present.map(|(k, v)| (k, v.to_text(k, app))).collect();
                    serde_urlencoded::to_string(pairs).unwrap().into_bytes()
                } else {
                    let object: Map<String, Value> = present.map(|(k, v)| (k.to_owned(), v.to_json(k, app))).collect();
                    Value::Object(object).to_string().into_bytes()
                })
            }
        };
        spec.claims = self.caller.as_ref().map(|c| {
            // The fixture's other claims (iss, aud, email...), then the caller's.
            let mut claims = app.template["requestContext"]["authorizer"]["jwt"]["claims"].as_object().unwrap().clone();
            claims.remove("sub");
            claims.remove(GROUPS_CLAIM);
            match &c.sub {
                Sub::Absent => None,
                Sub::Empty => claims.insert("sub".into(), json!("")),
                Sub::Known(i) => claims.insert("sub".into(), json!(pick(SUBS, *i))),
                Sub::Any(s) => claims.insert("sub".into(), json!(s)),
            };
            if let Some(groups) = &c.groups {
                claims.insert(GROUPS_CLAIM.into(), json!(groups.render()));
            }
            for (name, value) in &c.extra {
                claims.insert(name.clone(), json!(value));
            }
            claims
        });
        spec.authorization = self.authorization.as_ref().map(|b| match b {
            Bearer::Minted => format!("Bearer {}", app.token),
            Bearer::MintedLowercaseScheme => format!("bearer {}", app.token),
            Bearer::Tampered { at, byte } => {
                let mut token = app.token.clone().into_bytes();
                let at = usize::from(*at) % token.len();
                token[at] = *byte;
                header_text(&format!("Bearer {}", String::from_utf8_lossy(&token)))
            }
            Bearer::Any(s) => header_text(s),
        });
        spec
    }
}

fuzz_target!(|input: Input| {
    let app = &*app();
    let spec = input.spec(app);
    let Some(request) = app.request(&spec) else { return };
    let resolved = Route::resolve(request.method(), request.uri().path()).ok();
    let response = app.rt.block_on(route(request, &app.services));

    let status = response.status().as_u16();
    let content_type = response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let body: &[u8] = response.body().as_ref();
    let shown = String::from_utf8_lossy(body);
    assert!(status < 500, "{status} {shown}");
    if status >= 400 && resolved == Some(Route::TokenExchange) {
        // The token endpoint answers RFC 6749's error JSON, not problem+json.
        assert_eq!(content_type, "application/json", "{status} {shown}");
        let error: Value = serde_json::from_slice(body).expect("an OAuth error is JSON");
        let codes = ["invalid_request", "invalid_grant", "unsupported_grant_type", "invalid_scope", "invalid_target"];
        assert!(error["error"].as_str().is_some_and(|e| codes.contains(&e)), "{shown}");
        assert!(error["error_description"].as_str().is_some_and(|d| d.chars().all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\')), "{shown}");
        return;
    }
    if status >= 400 {
        assert_eq!(content_type, PROBLEM_CONTENT_TYPE, "{status} {shown}");
        let problem: Value = serde_json::from_slice(body).expect("a problem is JSON");
        assert!(problem["type"].as_str().is_some_and(|t| !t.is_empty()), "{shown}");
        assert_eq!(problem["status"].as_u64(), Some(u64::from(status)), "{shown}");
        return;
    }
    match content_type {
        "" => assert!(status == 204 && body.is_empty(), "{status} {shown}"),
        "application/json" => drop(serde_json::from_slice::<Value>(body).expect("a JSON answer parses")),
        "application/x-ndjson" => {
            for line in shown.lines() {
                serde_json::from_str::<Value>(line).expect("every export line parses");
            }
        }
        other => panic!("unexpected content type {other:?} for {status}"),
    }

    // Success is only ever for a caller the route lets in.
    let claim = |name: &str| spec.claims.as_ref().and_then(|c| c.get(name)).and_then(Value::as_str);
    let groups = claim(GROUPS_CLAIM).map(parse_groups).unwrap_or_default();
    let in_group = |name: &str| groups.iter().any(|g| g == name);
    match resolved {
        Some(Route::MintToken) => assert!(in_group("support"), "minted for {:?}", spec.claims),
        Some(Route::TokenExchange) => panic!("a token exchange succeeded with no verifiable subject token: {shown}"),
        Some(Route::QueryAudit | Route::ExportAudit) => assert!(in_group("auditor"), "audit for {:?}", spec.claims),
        Some(Route::Introspect | Route::ReportUse) => {
            assert!(in_group("introspect"), "introspected or reported a use for {:?}", spec.claims)
        }
        Some(Route::FileAccessRequest | Route::AgentAccessRequests) => {
            assert!(in_group("support"), "access requests for {:?}", spec.claims)
        }
        Some(
            Route::GetEmergencyStop | Route::EngageEmergencyStop | Route::LiftEmergencyStop | Route::RevokeAgentTokens,
        ) => assert!(in_group("operator"), "operator route for {:?}", spec.claims),
        Some(Route::Whoami) => {
            let bearer = spec.authorization.as_deref().unwrap_or("");
            assert!(bearer.ends_with(&app.token), "whoami let {bearer:?} in");
        }
        Some(
            Route::GrantConsent
            | Route::GetConsent
            | Route::RevokeConsent
            | Route::AccessLog
            | Route::MyAccessRequests
            | Route::ApproveAccessRequest
            | Route::DenyAccessRequest,
        ) => {
            assert!(claim("sub").is_some_and(|s| !s.is_empty()), "{:?}", spec.claims)
        }
        Some(
            Route::Jwks | Route::CheckpointKeys | Route::AuthorizationServerMetadata | Route::OpenIdConfiguration,
        )
        | None => {}
    }
});
