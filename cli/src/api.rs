//! The service's HTTP API as the support and audit staff's commands call it: an endpoint and
//! the caller's identity token (from flags or the environment), and every failure turned into
//! the problem+json the service answered, so a command prints what went wrong and why.

use std::borrow::Cow;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use support_access_verify::is_unprintable;

use crate::exit::Exit;

/// A failed call: the service's problem details, or why there were none.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The service answered with RFC 9457 problem details.
    #[error("{title} ({status} {slug}): {detail}{}{}", group_note(required_group), id_note(request_id))]
    Problem {
        status: u16,
        slug: String,
        title: String,
        detail: String,
        /// The problem's `request_id`, which the service's log carries too.
        request_id: Option<String>,
        /// On a `forbidden` refusal for want of a group: the group the route needs.
        required_group: Option<String>,
    },
    /// Some other error answer (a proxy, a gateway) without problem details.
    #[error("the service answered {status}: {body}{}", id_note(request_id))]
    Status {
        status: u16,
        body: String,
        /// API Gateway's `apigw-requestid` header, the id its access log and ours share.
        request_id: Option<String>,
    },
    #[error("cannot reach {endpoint}: {cause}")]
    Unreachable { endpoint: String, cause: String },
    #[error("the service answered something unreadable: {0}")]
    Unreadable(String),
    /// The endpoint is no http(s) URL; nothing was sent.
    #[error("--endpoint: {0}")]
    Endpoint(String),
    /// The HTTP client itself could not be built (no TLS roots, say).
    #[error("cannot start an HTTP client: {0}")]
    Client(String),
}

fn group_note(group: &Option<String>) -> String {
    group.as_ref().map(|g| format!("; required group: {g}")).unwrap_or_default()
}

fn id_note(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(" (request id {id})")).unwrap_or_default()
}

impl ApiError {
    /// The exit code this failure ends a command with: a refusal is to be fixed, a service
    /// that is unreachable, overloaded or failing is to be retried.
    pub fn exit(&self) -> Exit {
        let retry = |status: u16| status >= 500 || status == 429;
        match self {
            ApiError::Problem { status, .. } | ApiError::Status { status, .. } if retry(*status) => Exit::Unavailable,
            ApiError::Problem { .. } | ApiError::Status { .. } => Exit::Refused,
            ApiError::Unreachable { .. } | ApiError::Unreadable(_) => Exit::Unavailable,
            ApiError::Endpoint(_) => Exit::Usage,
            ApiError::Client(_) => Exit::Local,
        }
    }
}

#[derive(Deserialize)]
struct Problem {
    #[serde(rename = "type", default)]
    problem_type: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    required_group: Option<String>,
}

/// One page of `GET /audit`.
#[derive(Debug, Deserialize)]
pub struct AuditPage {
    pub events: Vec<Value>,
    pub next_cursor: Option<String>,
}

/// The filters of `GET /audit`, all optional (`from`/`to` in RFC 3339).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<String>,
    pub actor: Option<String>,
    pub event_type: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

pub struct Api {
    endpoint: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    /// A client for the API at `endpoint` (e.g. `https://abc.execute-api.eu-west-1.amazonaws.com`)
    /// calling as the holder of identity token `token`.
    pub fn new(endpoint: &str, token: &str) -> Result<Self, ApiError> {
        let endpoint = parse_endpoint(endpoint).map_err(ApiError::Endpoint)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ApiError::Client(e.to_string()))?;
        Ok(Self { endpoint, token: token.trim().to_owned(), http })
    }

    /// `POST /tokens`: the minted token's answer (`access_token`, `expires_at`, ...).
    pub async fn mint(&self, user_id: &str, reason: &str) -> Result<Value, ApiError> {
        let body = serde_json::json!({ "user_id": user_id, "reason": reason });
        let answer = self.send(self.http.post(self.url("/tokens")).json(&body)).await?;
        serde_json::from_str(&answer).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// `POST /access-requests`: the request as filed (`request_id`, `status`, `expires_at`, ...).
    pub async fn request(
        &self,
        user_id: &str,
        reason: &str,
        scope: &str,
        duration_seconds: i64,
    ) -> Result<Value, ApiError> {
        let body = serde_json::json!({
            "user_id": user_id, "reason": reason, "scope": scope, "duration_seconds": duration_seconds
        });
        let answer = self.send(self.http.post(self.url("/access-requests")).json(&body)).await?;
        serde_json::from_str(&answer).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// `GET /access-requests`: every one of the caller's requests, newest first (every page,
    /// following `next_cursor`).
    pub async fn requests(&self) -> Result<Vec<Value>, ApiError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100".to_owned())];
            query.extend(cursor.take().map(|c| ("cursor", c)));
            let answer = self.send(self.http.get(self.url("/access-requests")).query(&query)).await?;
            let mut page: Value = serde_json::from_str(&answer).map_err(|e| ApiError::Unreadable(e.to_string()))?;
            match page["requests"].take() {
                Value::Array(requests) => all.extend(requests),
                _ => return Err(ApiError::Unreadable("no requests array".into())),
            }
            match page["next_cursor"].take() {
                Value::String(next) => cursor = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// `GET /audit`: one page, newest first.
    pub async fn audit(&self, filter: &AuditFilter, limit: usize, cursor: Option<&str>) -> Result<AuditPage, ApiError> {
        let mut query: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        let pairs = [
            ("user_id", &filter.user_id),
            ("actor", &filter.actor),
            ("type", &filter.event_type),
            ("from", &filter.from),
            ("to", &filter.to),
        ];
        query.extend(pairs.into_iter().filter_map(|(k, v)| v.clone().map(|v| (k, v))));
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor.to_owned()));
        }
        let answer = self.send(self.http.get(self.url("/audit")).query(&query)).await?;
        serde_json::from_str(&answer).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// `GET /audit/export`: one page of the JSON Lines export of one user's stream, of the
    /// unattributed stream, or of every stream, from `cursor` (the start when `None`); with
    /// the cursor of the next page, from the answer's `Link: <…>; rel="next"`, `None` on the
    /// last.
    pub async fn export_page(
        &self,
        user_id: Option<&str>,
        unattributed: bool,
        cursor: Option<&str>,
    ) -> Result<(String, Option<String>), ApiError> {
        let mut query = Vec::new();
        if let Some(user) = user_id {
            query.push(("user_id", user));
        }
        if unattributed {
            query.push(("stream", "unattributed"));
        }
        if let Some(cursor) = cursor {
            query.push(("cursor", cursor));
        }
        let (body, headers) = self.send_keeping_headers(self.http.get(self.url("/audit/export")).query(&query)).await?;
        let next = headers.get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).find_map(next_cursor);
        Ok((body, next))
    }

    /// `GET /.well-known/jwks.json` (public): the keys that verify tokens.
    pub async fn jwks(&self) -> Result<String, ApiError> {
        self.send(self.http.get(self.url("/.well-known/jwks.json"))).await
    }

    /// `GET /.well-known/checkpoint-keys.json` (public): the keys that verify checkpoints.
    pub async fn checkpoint_keys(&self) -> Result<String, ApiError> {
        self.send(self.http.get(self.url("/.well-known/checkpoint-keys.json"))).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<String, ApiError> {
        Ok(self.send_keeping_headers(request).await?.0)
    }

    async fn send_keeping_headers(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(String, reqwest::header::HeaderMap), ApiError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| ApiError::Unreachable { endpoint: self.endpoint.clone(), cause: e.to_string() })?;
        let status = response.status().as_u16();
        let gateway_id = response.headers().get("apigw-requestid").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let problem = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
        let headers = response.headers().clone();
        let body = response.text().await.map_err(|e| ApiError::Unreadable(e.to_string()))?;
        if (200..300).contains(&status) {
            return Ok((body, headers));
        }
        match serde_json::from_str::<Problem>(&body) {
            Ok(p) if problem => Err(ApiError::Problem {
                status,
                slug: p.problem_type.rsplit('/').next().unwrap_or_default().to_owned(),
                title: p.title,
                detail: p.detail,
                request_id: p.request_id.or(gateway_id),
                required_group: p.required_group,
            }),
            _ => Err(ApiError::Status { status, body: body.chars().take(300).collect(), request_id: gateway_id }),
        }
    }
}

/// The `cursor` of a `Link` header's `rel="next"` link (`<?user_id=…&cursor=…>; rel="next"`).
fn next_cursor(link: &str) -> Option<String> {
    link.split(',').find_map(|link| {
        let (target, params) = link.trim().split_once(';')?;
        if !params.split(';').any(|p| p.trim() == "rel=\"next\"") {
            return None;
        }
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let query = target.split_once('?')?.1;
        query.split('&').find_map(|pair| pair.strip_prefix("cursor=")).map(str::to_owned)
    })
}

/// One event as a table row: time, type, user, actor, and what it was about (reason,
/// detail, scope), for people reading the log in a terminal.
pub fn event_row(event: &Value) -> String {
    let text = |key: &str| event[key].as_str().unwrap_or("-");
    let about = ["reason", "detail", "scope"]
        .iter()
        .filter_map(|k| event[*k].as_str().map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(" ");
    // A pending event (decided, not yet on its chain) says so, in the type column it changes.
    let kind = match event["pending"].as_bool() {
        Some(true) => format!("{} (pending)", text("type")),
        _ => text("type").to_owned(),
    };
    row(text("at"), &kind, text("user_id"), event["actor"]["sub"].as_str().unwrap_or("-"), &about)
}

/// One access request as a table row: id, user, status, scope and duration, and when it was
/// decided (or until when it waits).
pub fn request_row(request: &Value) -> String {
    let text = |key: &str| request[key].as_str().unwrap_or("-");
    let when = match request["decided_at"].as_str() {
        Some(at) => format!("decided {at}"),
        None => format!("until {}", text("expires_at")),
    };
    let consent = request["consent_id"].as_str().map(|c| format!(" consent={c}")).unwrap_or_default();
    let what = format!("{} {}s", text("scope"), request["duration_seconds"].as_i64().unwrap_or(0));
    request_columns(text("request_id"), text("user_id"), text("status"), &what, &format!("{when}{consent}"))
}

/// The header line above [`request_row`]s.
pub fn request_header() -> String {
    request_columns("REQUEST", "USER", "STATUS", "ASKED", "WHEN")
}

fn request_columns(id: &str, user: &str, status: &str, what: &str, when: &str) -> String {
    let [id, user, status, what, when] = [id, user, status, what, when].map(shown);
    format!("{id:<36}  {user:<16}  {status:<8}  {what:<12}  {when}")
}

/// A duration as typed: seconds (`3600`) or a number with `m`, `h` or `d` (`15m`, `1h`, `7d`).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let seconds_per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?} is not a duration like 3600, 15m, 1h or 7d"))
}

/// `text` as a terminal must show it: every character no display may pass through as it is
/// (`support_access_verify::is_unprintable`: control characters and the newline, format
/// characters such as the bidirectional overrides and zero-width characters, line and
/// paragraph separators) written escaped, `\n` or `\u{202e}`, so text from the service, an
/// export or a user can neither fake a row nor reorder or hide one. The one escaping of every
/// human-readable output of this CLI (rows, status lines, errors that echo the service);
/// JSON output stays JSON.
pub fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unprintable) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unprintable(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// JSON text (one value, or JSON Lines) as a terminal must show it: every character [`shown`]
/// escapes but the newline between lines, written as the JSON escape `\u202e` (a pair of them
/// beyond the BMP), which every JSON reader decodes back to the same character. Valid JSON
/// holds such characters only inside strings, so the values are unchanged: `jq` reads the
/// same data, and an export printed this way verifies as the file does.
pub fn shown_json(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| c != '\n' && is_unprintable(c);
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// An `--endpoint` as typed, checked before anything is sent: an http or https URL with a
/// host (API Gateway's stage path allowed), without credentials, query or fragment; without
/// its trailing slash. `127.0.0.1:3000` is refused with the fix, not sent as a relative URL.
pub fn parse_endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    let examples = "e.g. https://abc.execute-api.eu-west-1.amazonaws.com, or http://127.0.0.1:3000 for local-api";
    let url = match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        // `127.0.0.1:3000` is no URL, and `localhost:3000` one with the scheme `localhost`.
        _ if !text.contains("://") => {
            return Err(format!("{} has no scheme: write http://{0} or https://{0}", shown(text)));
        }
        Ok(url) => return Err(format!("the scheme must be http or https, not {}; {examples}", shown(url.scheme()))),
        Err(e) => return Err(format!("{} is not a URL ({e}); {examples}", shown(text))),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{} names no host; {examples}", shown(text)));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the endpoint must carry no user name or password: your token goes in --token".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{} has a query or fragment; give the API's base URL, {examples}", shown(text)));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// The header line above [`event_row`]s, laid out by the same columns.
pub fn event_header() -> String {
    row("AT", "TYPE", "USER", "ACTOR", "ABOUT")
}

fn row(at: &str, event_type: &str, user: &str, actor: &str, about: &str) -> String {
    let [at, event_type, user, actor, about] = [at, event_type, user, actor, about].map(shown);
    format!("{at:<20}  {event_type:<15}  {user:<16}  {actor:<16}  {about}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_cursor_is_read_from_the_link_header() {
        assert_eq!(next_cursor("<?user_id=a%2Bb&cursor=abc.def>; rel=\"next\"").as_deref(), Some("abc.def"));
        assert_eq!(next_cursor("<?cursor=x>; rel=\"prev\", <?cursor=y>; rel=\"next\"").as_deref(), Some("y"));
        for none in ["", "<?cursor=x>; rel=\"prev\"", "garbage", "<?user_id=a>; rel=\"next\""] {
            assert_eq!(next_cursor(none), None, "{none}");
        }
    }

    #[test]
    fn a_row_names_time_type_user_actor_and_what_it_was_about() {
        let event = serde_json::json!({
            "at": "2026-11-25T10:00:00Z", "type": "token.issued", "user_id": "alice",
            "actor": {"sub": "agent-7", "role": "support"}, "reason": "ticket 4411"
        });
        let row = event_row(&event);
        for part in ["2026-11-25T10:00:00Z", "token.issued", "alice", "agent-7", "reason=ticket 4411"] {
            assert!(row.contains(part), "{row}");
        }
    }

    #[test]
    fn durations_read_as_people_type_them() {
        assert_eq!(parse_duration("3600"), Ok(3600));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        for bad in ["", "h", "1w", "-1h", "0", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_row_shows_its_state_and_what_was_asked() {
        let row = request_row(&serde_json::json!({
            "request_id": "0190f3a2-0000-7000-8000-000000000000", "user_id": "alice", "status": "approved",
            "scope": "read", "duration_seconds": 3600, "decided_at": "2026-11-25T10:10:00Z", "consent_id": "c-1"
        }));
        for part in ["alice", "approved", "read 3600s", "decided 2026-11-25T10:10:00Z", "consent=c-1"] {
            assert!(row.contains(part), "{row}");
        }
    }

    #[test]
    fn hostile_text_is_shown_escaped_on_one_row() {
        let event = serde_json::json!({
            "at": "2026-11-25T10:00:00Z", "type": "token.issued", "user_id": "alice",
            "actor": {"sub": "agent-7", "role": "support"},
            "reason": "ticket 1\n2026-11-25T10:00:01Z  consent.revoked  alice  alice\u{202e}gnp.exe\u{200b}\u{2028}x\t\u{1b}[2J"
        });
        let row = event_row(&event);
        assert_eq!(row.lines().count(), 1, "{row}");
        for part in ["ticket 1\\n2026", "\\u{202e}gnp.exe\\u{200b}\\u{2028}x\\t\\u{1b}[2J"] {
            assert!(row.contains(part), "{row}");
        }
        let request =
            request_row(&serde_json::json!({"request_id": "r\n1", "user_id": "bob\u{2066}", "status": "pending"}));
        assert!(request.contains("r\\n1") && request.contains("bob\\u{2066}"), "{request}");
        assert_eq!(shown("plain, é, \u{1F600}, zwj-free"), "plain, é, \u{1F600}, zwj-free");
        assert!(matches!(shown("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_is_shown_escaped_yet_reads_back_the_same() {
        let value = serde_json::json!({"reason": "a\u{202e}b\u{1b}[2J\u{85}\u{2028}\u{e0041}", "n": 1});
        let text = format!("{value}\n{value}\n");
        let shown = shown_json(&text);
        assert!(!shown.chars().any(|c| c != '\n' && is_unprintable(c)), "{shown}");
        assert!(shown.contains(r"\u202e") && shown.contains(r"\udb40\udc41"), "{shown}");
        for line in shown.lines() {
            assert_eq!(serde_json::from_str::<Value>(line).unwrap(), value);
        }
        assert!(matches!(shown_json("{\"a\":\"é\"}\n"), Cow::Borrowed(_)));
    }

    #[test]
    fn an_endpoint_without_a_scheme_is_refused_with_the_fix() {
        let no_scheme = parse_endpoint("127.0.0.1:3917").unwrap_err();
        assert!(no_scheme.contains("no scheme") && no_scheme.contains("http://127.0.0.1:3917"), "{no_scheme}");
        assert!(parse_endpoint("localhost:3000").unwrap_err().contains("http://localhost:3000"));
        for bad in ["ftp://host", "http://", "https://user:pw@host", "http://host/?a=1", "", "http://host#x"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_endpoint(" http://127.0.0.1:3000/ ").unwrap(), "http://127.0.0.1:3000");
        let stage = "https://abc.execute-api.eu-west-1.amazonaws.com/prod";
        assert_eq!(parse_endpoint(stage).unwrap(), stage);
    }

    #[test]
    fn a_problem_names_its_request_id_and_the_missing_group_and_picks_the_exit() {
        let forbidden = ApiError::Problem {
            status: 403,
            slug: "forbidden".into(),
            title: "Forbidden".into(),
            detail: "the caller lacks the group this route needs".into(),
            request_id: Some("req-9".into()),
            required_group: Some("auditor".into()),
        };
        let text = forbidden.to_string();
        assert!(
            text.contains("403 forbidden") && text.contains("required group: auditor") && text.contains("req-9"),
            "{text}"
        );
        assert_eq!(forbidden.exit(), Exit::Refused);
        let busy = ApiError::Status { status: 503, body: "busy".into(), request_id: None };
        assert_eq!((busy.exit(), busy.to_string().contains("request id")), (Exit::Unavailable, false));
        assert_eq!(ApiError::Status { status: 429, body: String::new(), request_id: None }.exit(), Exit::Unavailable);
        assert_eq!(ApiError::Endpoint("x".into()).exit(), Exit::Usage);
    }

    #[test]
    fn a_pending_event_says_so_and_a_sealed_one_does_not() {
        let event = serde_json::json!({"type": "token.used", "user_id": "alice", "actor": {"sub": "agent-7"}});
        assert!(!event_row(&event).contains("pending"));
        let mut pending = event.clone();
        pending["pending"] = serde_json::Value::Bool(true);
        assert!(event_row(&pending).contains("token.used (pending)"), "{}", event_row(&pending));
    }

    #[test]
    fn an_unattributed_event_shows_dashes_not_a_panic() {
        let row = event_row(&serde_json::json!({"type": "token.rejected", "actor": {}}));
        assert!(row.contains("token.rejected") && row.contains('-'), "{row}");
    }
}
