//! The consent screen example page and its dev sign-in, served by local-api only.
//!
//! Why this exists: the service is an API, and the app that embeds it owns the real consent
//! screen. This page shows what that screen has to offer a user (grant, see, revoke, answer
//! support's access requests, read who acted as them) against the very API the app would
//! call, so the flow can be tried in a browser and tested end to end in headless Chromium.
//! It is static (one HTML, one script, one style sheet and an icon, compiled into the binary), served
//! with a strict Content-Security-Policy, and is not a Lambda route: nothing here is deployed.
//!
//! `POST /dev/sign-in` is the page's sign-in. It exists only in local-api, which binds to
//! 127.0.0.1, because the dev identity provider is itself a stand-in for the app's real IdP:
//! it issues a *user* identity token (never any group, so never a support, auditor or
//! introspect token) for a syntactically valid user id, for one hour, with no password; and
//! only to requests addressed to 127.0.0.1 or localhost, so a web page elsewhere cannot reach
//! it through DNS rebinding.

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use shared::domain::UserId;
use shared::http::{PROBLEM_CONTENT_TYPE, problem_type};

use crate::Runtime;

/// What the page may load and do: its own script, style and API, nothing else, no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Lifetime of a `/dev/sign-in` identity token.
pub const SIGN_IN_TTL_SECONDS: i64 = 3600;

/// The path of the dev sign-in.
pub const SIGN_IN_PATH: &str = "/dev/sign-in";

const INDEX_HTML: &str = include_str!("../page/index.html");
const CONSENT_JS: &str = include_str!("../page/consent.js");
const CONSENT_CSS: &str = include_str!("../page/consent.css");
const FAVICON_SVG: &str = include_str!("../page/favicon.svg");

type Response = hyper::Response<Full<Bytes>>;

/// The page's file at `path` with its content type, if `path` is one.
fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path {
        "/" | "/index.html" => Some(("text/html; charset=utf-8", INDEX_HTML)),
        "/consent.js" => Some(("text/javascript; charset=utf-8", CONSENT_JS)),
        "/consent.css" => Some(("text/css; charset=utf-8", CONSENT_CSS)),
        "/favicon.svg" => Some(("image/svg+xml", FAVICON_SVG)),
        _ => None,
    }
}

/// Whether this request is the page's (a page file or the dev sign-in) rather than the API's.
pub fn is_page_request(path: &str) -> bool {
    asset(path).is_some() || path == SIGN_IN_PATH
}

/// Whether `host` (the request's `Host` header) names this machine's loopback: a page on
/// another site that rebinds its own name to 127.0.0.1 (DNS rebinding) still sends its own
/// name, and so cannot sign in from a developer's browser.
pub(crate) fn is_loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    shared::domain::is_loopback_name(name)
}

/// Answers a page request (see [`is_page_request`]); `host` is the `Host` header, `body` the
/// request body, read up to one byte past `shared::http::MAX_BODY_BYTES`.
pub fn handle(method: &Method, path: &str, host: Option<&str>, body: &[u8], runtime: &Runtime) -> Response {
    if path == SIGN_IN_PATH {
        return match *method {
            Method::POST if !is_loopback_host(host) => problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                "the dev sign-in answers only requests addressed to 127.0.0.1 or localhost",
            ),
            Method::POST => sign_in(body, runtime),
            _ => with_allow(
                problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "use POST"),
                "POST",
            ),
        };
    }
    let Some((content_type, text)) = asset(path) else {
        return problem(StatusCode::NOT_FOUND, "not-found", "Not found", "no such route");
    };
    match *method {
        Method::GET | Method::HEAD => {
            let body = if *method == Method::HEAD { Bytes::new() } else { Bytes::from_static(text.as_bytes()) };
            let mut response = secured(hyper::Response::new(Full::new(body)));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
            response
        }
        _ => with_allow(
            problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", "use GET"),
            "GET, HEAD",
        ),
    }
}

/// `POST /dev/sign-in` `{"sub": "alice"}` → `{"token": "..."}`: a user identity token, no
/// groups, one hour; 400 problem+json for anything but a JSON object with a valid user id.
fn sign_in(body: &[u8], runtime: &Runtime) -> Response {
    let invalid = |detail: String| problem(StatusCode::BAD_REQUEST, "invalid-request", "Invalid request", &detail);
    if body.len() > shared::http::MAX_BODY_BYTES {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            &format!("the body may be at most {} bytes", shared::http::MAX_BODY_BYTES),
        );
    }
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return invalid(format!("the body must be a JSON object {{\"sub\": \"...\"}}: {e}")),
    };
    let Some(object) = request.as_object() else {
        return invalid("the body must be a JSON object {\"sub\": \"...\"}".into());
    };
    if let Some(unknown) = object.keys().find(|k| *k != "sub") {
        return invalid(format!("unknown field `{unknown}`: only `sub` is accepted (dev sign-in never grants groups)"));
    }
    let Some(sub) = object.get("sub").and_then(Value::as_str) else {
        return invalid("`sub` (a string) is required".into());
    };
    let user = match UserId::parse(sub) {
        Ok(user) => user,
        Err(e) => return invalid(format!("sub is not a valid user id: {e}")),
    };
    let now = runtime.services.clock.now();
    let token = runtime.identity.issue(user.as_str(), &[], now, SIGN_IN_TTL_SECONDS);
    tracing::info!(sub = user.as_str(), "dev sign-in");
    json_response(StatusCode::OK, &json!({ "token": token, "expires_in": SIGN_IN_TTL_SECONDS }))
}

/// Adds the page's security headers.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = secured(hyper::Response::new(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An RFC 9457 problem in the API's own shape (type URI, title, status, detail, request id).
fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    let body = json!({
        "type": problem_type(slug),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "request_id": uuid::Uuid::new_v4().to_string(),
    });
    let mut response = json_response(status, &body);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
    response
}

fn with_allow(mut response: Response, allow: &'static str) -> Response {
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_inline_and_writes_no_html_from_data() {
        assert!(!INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="), "no inline script or style");
        assert!(INDEX_HTML.contains(r#"<script src="/consent.js""#));
        assert!(INDEX_HTML.contains(r#"href="/consent.css""#));
        for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            assert!(!CONSENT_JS.contains(sink), "consent.js uses {sink}");
        }
    }

    /// The access log reads as sentences: consent.js has one for every event type the domain
    /// has, and plain words for every refusal code an event's `detail` can carry.
    #[test]
    fn every_event_type_has_a_sentence_and_every_refusal_plain_words() {
        use shared::domain::{AuditEventType, StepUpMissing};
        use shared::token::Rejection;
        for t in AuditEventType::ALL {
            assert!(CONSENT_JS.contains(&format!("'{}': (", t.as_str())), "no sentence for {}", t.as_str());
        }
        // token.rejected carries a rejection's code; token.denied one of the refusals written
        // in app::mint_token and app::access_request.
        let denials = ["feature-disabled", "emergency-stop", "self-impersonation", "no-consent", "consent-changed"];
        let codes = Rejection::ALL
            .iter()
            .map(|r| r.code())
            .chain(denials)
            .chain(["self-approval"])
            .chain([StepUpMissing::Method.code(), StepUpMissing::Recency.code()]);
        for code in codes {
            assert!(CONSENT_JS.contains(&format!("'{code}': '")), "no plain words for the refusal {code}");
        }
    }

    #[test]
    fn only_a_loopback_host_may_sign_in() {
        for host in ["127.0.0.1:3000", "localhost:3000", "LOCALHOST", "[::1]:3000", "127.0.0.1"] {
            assert!(is_loopback_host(Some(host)), "{host}");
        }
        for host in ["evil.example:3000", "127.0.0.1.evil.example", "localhost.evil.example:80", "[::2]:3000", ""] {
            assert!(!is_loopback_host(Some(host)), "{host}");
        }
        assert!(!is_loopback_host(None));
    }

    #[test]
    fn only_the_page_paths_are_the_pages() {
        for path in ["/", "/index.html", "/consent.js", "/consent.css", "/favicon.svg", "/dev/sign-in"] {
            assert!(is_page_request(path), "{path}");
        }
        for path in ["/consents", "/consent.js/", "/dev", "/dev/sign-in/x", "/me/access-log", ""] {
            assert!(!is_page_request(path), "{path}");
        }
    }
}
