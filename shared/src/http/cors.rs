//! CORS for browser apps on other origins, as API Gateway's `CorsConfiguration` does it on AWS
//! (the template's `CorsAllowedOrigins` and the lists below) and local-api with this code
//! (`--cors-allowed-origins`). Off unless origins are listed. A preflight (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) is answered 204 before any route or identity
//! check, as API Gateway answers it; the allow headers go only to a listed origin, and every
//! answer says `Vary: Origin` so no cache hands one origin's answer to another. Credentials
//! are never allowed (no `Access-Control-Allow-Credentials`, whatever the list): the API takes
//! bearer tokens a script sets itself, never cookies, so a browser has nothing ambient to send.

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::domain::origin_problem;

/// The methods a cross-origin script may use: every method of the route table.
pub const ALLOW_METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
/// The request headers it may set beyond the safelisted ones: the bearer token and JSON bodies.
pub const ALLOW_HEADERS: &[&str] = &["authorization", "content-type"];
/// How long (seconds) a browser may keep a preflight's answer.
pub const MAX_AGE_SECONDS: u32 = 600;

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// `*`: any origin (never with credentials, which are never allowed).
    AnyOrigin,
    /// Exactly these origins, as browsers send them in `Origin`.
    Origins(Vec<String>),
}

impl Cors {
    /// The setting from its comma-separated list (`CorsAllowedOrigins`,
    /// `--cors-allowed-origins`): `None` (off) when empty; `*` alone for any origin; else
    /// each entry an origin (`https://app.example.com`, no path or trailing slash: what a
    /// browser sends, so what is compared byte for byte).
    pub fn parse(list: &str) -> Result<Option<Self>, String> {
        let list = list.trim();
        if list.is_empty() {
            return Ok(None);
        }
        if list == "*" {
            return Ok(Some(Self::AnyOrigin));
        }
        let mut origins = Vec::new();
        for origin in list.split(',').map(str::trim) {
            if origin == "*" {
                return Err("* stands alone: it is every origin".into());
            }
            if let Some(problem) = origin_problem(origin) {
                return Err(format!("{origin:?} {problem}"));
            }
            origins.push(origin.to_owned());
        }
        Ok(Some(Self::Origins(origins)))
    }

    /// `Access-Control-Allow-Origin` for a request from `origin`, if it is allowed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        match self {
            Self::AnyOrigin => Some(HeaderValue::from_static("*")),
            Self::Origins(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()).then(|| origin.clone()),
        }
    }

    /// The answer to a CORS preflight (always 204; the allow headers only for an allowed
    /// origin), or `None` when the request is not one and goes on to its route.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<(StatusCode, HeaderMap)> {
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let mut out = HeaderMap::new();
        out.insert(
            header::VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        if let Some(allow) = self.allow_origin(Some(origin)) {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
            let list = |items: &[&str]| HeaderValue::from_str(&items.join(", ")).expect("tokens make a header value");
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, list(ALLOW_METHODS));
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, list(ALLOW_HEADERS));
            out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECONDS));
        }
        Some((StatusCode::NO_CONTENT, out))
    }

    /// Adds to an answer what a cross-origin request from `origin` needs: `Vary: Origin`
    /// always, `Access-Control-Allow-Origin` for an allowed origin.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(allow) = self.allow_origin(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, pairs: &[(&str, &str)]) -> (Method, HeaderMap) {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        (method, headers)
    }

    #[test]
    fn the_list_is_off_when_empty_any_with_a_lone_star_and_else_exact_origins() {
        assert_eq!(Cors::parse("").unwrap(), None);
        assert_eq!(Cors::parse(" ").unwrap(), None);
        assert_eq!(Cors::parse("*").unwrap(), Some(Cors::AnyOrigin));
        assert_eq!(
            Cors::parse("https://app.example.com, http://localhost:5173").unwrap(),
            Some(Cors::Origins(vec!["https://app.example.com".into(), "http://localhost:5173".into()]))
        );
        for bad in
            ["https://app.example.com/", "app.example.com", "https://App.example.com", "*,https://a.example", ","]
        {
            assert!(Cors::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_preflight_from_a_listed_origin_gets_the_allow_headers_and_never_credentials() {
        let cors = Cors::parse("https://app.example.com").unwrap().unwrap();
        let (m, h) = request(
            Method::OPTIONS,
            &[("origin", "https://app.example.com"), ("access-control-request-method", "POST")],
        );
        let (status, out) = cors.preflight(&m, &h).unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_METHODS], ALLOW_METHODS.join(", "));
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_HEADERS], ALLOW_HEADERS.join(", "));
        assert_eq!(out[header::ACCESS_CONTROL_MAX_AGE], MAX_AGE_SECONDS.to_string());
        assert!(out[header::VARY].to_str().unwrap().starts_with("Origin"));
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));

        // Another origin: answered, with nothing that lets the browser go on.
        let (m, h) =
            request(Method::OPTIONS, &[("origin", "https://evil.example"), ("access-control-request-method", "POST")]);
        let (status, out) = cors.preflight(&m, &h).unwrap();
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert!(out.contains_key(header::VARY));

        // Not a preflight: an OPTIONS without the request method, or without an Origin.
        let (m, h) = request(Method::OPTIONS, &[("origin", "https://app.example.com")]);
        assert!(cors.preflight(&m, &h).is_none());
        let (m, h) = request(Method::OPTIONS, &[("access-control-request-method", "GET")]);
        assert!(cors.preflight(&m, &h).is_none());
        let (m, h) =
            request(Method::GET, &[("origin", "https://app.example.com"), ("access-control-request-method", "GET")]);
        assert!(cors.preflight(&m, &h).is_none());
    }

    #[test]
    fn a_star_allows_any_origin_as_star_and_still_never_credentials() {
        let cors = Cors::parse("*").unwrap().unwrap();
        let mut headers = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://anyone.example")), &mut headers);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let (m, h) = request(Method::OPTIONS, &[("origin", "null"), ("access-control-request-method", "GET")]);
        assert_eq!(cors.preflight(&m, &h).unwrap().1[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    }

    #[test]
    fn an_answer_varies_on_origin_and_names_only_a_listed_one() {
        let cors = Cors::parse("https://app.example.com").unwrap().unwrap();
        let mut headers = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://app.example.com")), &mut headers);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(headers[header::VARY], "Origin");
        let mut headers = HeaderMap::new();
        cors.decorate(Some(&HeaderValue::from_static("https://app.example.com.evil.example")), &mut headers);
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        let mut headers = HeaderMap::new();
        cors.decorate(None, &mut headers);
        assert!(!headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }

    /// The template's `CorsConfiguration` says what this module does, so a browser sees one
    /// behaviour on AWS and locally.
    #[test]
    fn the_sam_template_allows_the_same_methods_headers_and_age_and_never_credentials() {
        let template = include_str!("../../../infra/template.yaml");
        let at = template.find("CorsConfiguration: !If").expect("the HTTP API's CORS configuration");
        let block: String = template[at..].lines().take(9).collect::<Vec<_>>().join("\n");
        assert!(block.contains(&format!("AllowMethods: [{}]", ALLOW_METHODS.join(", "))), "{block}");
        assert!(block.contains(&format!("AllowHeaders: [{}]", ALLOW_HEADERS.join(", "))), "{block}");
        assert!(block.contains(&format!("MaxAge: {MAX_AGE_SECONDS}")), "{block}");
        assert!(block.contains("AllowCredentials: false"), "{block}");
    }
}
