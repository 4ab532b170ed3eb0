//! RFC 9457 problem details: the one place an [`ApiError`] becomes a response. The `type` is
//! a stable URI whose last segment is the slug clients switch on; causes of 503s go to the
//! log, never to the client.

use http::{HeaderValue, StatusCode, header};
use http_api_problem::HttpApiProblem;
use lambda_http::{Body, Response};

use crate::app::ApiError;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// The `type` URI for a slug (a tag URI: globally unique without owning a domain).
pub fn problem_type(slug: &str) -> String {
    format!("tag:support-access,2026:problems/{slug}")
}

fn parts(e: &ApiError) -> (StatusCode, &'static str, &'static str) {
    match e {
        ApiError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid-request", "Invalid request"),
        ApiError::Unauthenticated | ApiError::UnauthenticatedHint(_) | ApiError::TokenRefused => {
            (StatusCode::UNAUTHORIZED, "unauthenticated", "Not authenticated")
        }
        ApiError::Forbidden(_) | ApiError::MissingGroup(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
        ApiError::UseRefused => (StatusCode::FORBIDDEN, "use-refused", "Use refused"),
        ApiError::NoConsent => (StatusCode::FORBIDDEN, "no-consent", "No active consent"),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
        ApiError::MethodNotAllowed { .. } => {
            (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
        }
        ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
        ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large"),
        ApiError::FeatureDisabled => (StatusCode::FORBIDDEN, "feature-disabled", "Feature disabled"),
        // 403, not 503: an operator's decision, not an outage a client should retry into.
        ApiError::EmergencyStop => (StatusCode::FORBIDDEN, "emergency-stop", "Emergency stop engaged"),
        ApiError::StepUpRequired(_) => (StatusCode::FORBIDDEN, "step-up-required", "Step-up authentication required"),
        ApiError::SelfImpersonation => (StatusCode::FORBIDDEN, "self-impersonation", "Self-impersonation refused"),
        ApiError::SelfApproval => (StatusCode::FORBIDDEN, "self-approval", "Self-approval refused"),
        ApiError::RequestNotPending(_) => (StatusCode::CONFLICT, "request-not-pending", "Request not pending"),
        ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
        // Only the token endpoint refuses so, in OAuth's shape ([`oauth_error_response`]);
        // anywhere else they would be a request's fault like any other.
        ApiError::UnsupportedGrantType | ApiError::InvalidTarget(_) | ApiError::InvalidScope(_) => {
            (StatusCode::BAD_REQUEST, "invalid-request", "Invalid request")
        }
    }
}

/// The problem+json response for `error`, carrying `request_id`.
pub(crate) fn problem_response(error: &ApiError, request_id: &str) -> Response<Body> {
    let (status, slug, title) = parts(error);
    let detail = match error {
        ApiError::Unavailable(cause) => {
            tracing::error!(request_id, cause, "dependency unavailable");
            "a dependency is unavailable; nothing was changed, try again shortly".to_owned()
        }
        other => other.to_string(),
    };
    let mut problem = HttpApiProblem::new(status)
        .type_url(problem_type(slug))
        .title(title)
        .detail(detail)
        .value("request_id", &request_id);
    if let ApiError::MissingGroup(group) = error {
        // A member apart from `detail`, so a client reads it without parsing prose.
        problem = problem.value("required_group", group);
    }
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(serde_json::to_string(&problem).expect("a problem always serializes")))
        .expect("a static status and headers always build");
    match error {
        ApiError::Unauthenticated | ApiError::UnauthenticatedHint(_) | ApiError::TokenRefused => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        ApiError::StepUpRequired(_) => {
            // RFC 9470's challenge, so an OAuth client knows to re-authenticate the agent.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer error="insufficient_user_authentication""#),
            );
        }
        ApiError::MethodNotAllowed { allow } => {
            // Method names from the route table: always a valid header value.
            if let Ok(allow) = HeaderValue::from_str(allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
        }
        ApiError::Unavailable(_) => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        _ => {}
    }
    response
}

/// The RFC 6749 section 5.2 error code (and status) of `error` at the token endpoint
/// (`POST /token`, RFC 8693), the same errors as everywhere else seen through OAuth's eyes.
/// RFC 8693 section 2.2.2 says a request that is not valid, or whose `subject_token` is
/// invalid or unacceptable by policy, is `invalid_request`: so are a subject who is not in
/// the support group, whose `sub` is reserved, or whose sign-in misses the step-up policy.
/// What the grant itself refuses (no live consent, self-impersonation, the service switched
/// off or stopped) is `invalid_grant`: the user's consent is the grant. `invalid_client` never
/// applies (a public client: the subject token is the credential), and a dependency that
/// failed is 503 `temporarily_unavailable`, whose cause goes to the log only. No wildcard: a
/// new error does not compile until it is mapped here too.
fn oauth_parts(e: &ApiError) -> (StatusCode, &'static str) {
    let invalid_request = (StatusCode::BAD_REQUEST, "invalid_request");
    let invalid_grant = (StatusCode::BAD_REQUEST, "invalid_grant");
    match e {
        ApiError::InvalidRequest(_)
        | ApiError::PayloadTooLarge { .. }
        | ApiError::Unauthenticated
        | ApiError::UnauthenticatedHint(_)
        | ApiError::TokenRefused
        | ApiError::UseRefused
        | ApiError::Forbidden(_)
        | ApiError::MissingGroup(_)
        | ApiError::StepUpRequired(_)
        | ApiError::NotFound(_)
        | ApiError::MethodNotAllowed { .. } => invalid_request,
        ApiError::NoConsent
        | ApiError::SelfImpersonation
        | ApiError::SelfApproval
        | ApiError::FeatureDisabled
        | ApiError::EmergencyStop
        | ApiError::Conflict(_)
        | ApiError::RequestNotPending(_) => invalid_grant,
        ApiError::UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        ApiError::InvalidTarget(_) => (StatusCode::BAD_REQUEST, "invalid_target"),
        ApiError::InvalidScope(_) => (StatusCode::BAD_REQUEST, "invalid_scope"),
        ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable"),
    }
}

/// `text` in the characters RFC 6749 allows in `error_description` (visible ASCII and space,
/// without `"` and `\`); any other becomes `?`.
fn oauth_description(text: &str) -> String {
    text.chars().map(|c| if matches!(c, ' '..='~') && c != '"' && c != '\\' { c } else { '?' }).collect()
}

/// The token endpoint's error response for `error` (RFC 6749 section 5.2): `error` and
/// `error_description`, and, as extension members, `problem_type` (the problem `type` the
/// rest of the API answers for the same error, so a client tells a step-up from a missing
/// group without parsing prose) and `request_id`. Never cached (section 5.1).
pub(crate) fn oauth_error_response(error: &ApiError, request_id: &str) -> Response<Body> {
    let (status, code) = oauth_parts(error);
    let description = match error {
        ApiError::Unavailable(cause) => {
            tracing::error!(request_id, cause, "dependency unavailable");
            "a dependency is unavailable; nothing was changed, try again shortly".to_owned()
        }
        ApiError::MissingGroup(group) => format!("the subject token's identity is not in the group {group}"),
        other => other.to_string(),
    };
    let body = serde_json::json!({
        "error": code,
        "error_description": oauth_description(&description),
        "problem_type": problem_type(parts(error).1),
        "request_id": request_id,
    });
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::PRAGMA, "no-cache")
        .body(Body::from(body.to_string()))
        .expect("a static status and headers always build");
    if let ApiError::Unavailable(_) = error {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_cause_never_reaches_the_client() {
        let r = problem_response(&ApiError::Unavailable("ThrottlingException: arn:aws:secret".into()), "req-1");
        assert_eq!(r.status(), 503);
        let body = std::str::from_utf8(r.body().as_ref()).unwrap().to_owned();
        assert!(!body.contains("Throttling") && !body.contains("arn:"), "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], problem_type("unavailable"));
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["status"], 503);
    }

    /// One error of each kind. The match has no wildcard, so a new variant does not compile
    /// until it is listed here, and then `openapi.yaml` must name its slug and status.
    fn one_of_each() -> Vec<ApiError> {
        let all = vec![
            ApiError::InvalidRequest("x".into()),
            ApiError::Unauthenticated,
            ApiError::UnauthenticatedHint("x".into()),
            ApiError::TokenRefused,
            ApiError::UseRefused,
            ApiError::Forbidden("x"),
            ApiError::MissingGroup("support".into()),
            ApiError::NoConsent,
            ApiError::NotFound("x"),
            ApiError::MethodNotAllowed { allow: "GET".into() },
            ApiError::Conflict("x"),
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::FeatureDisabled,
            ApiError::EmergencyStop,
            ApiError::StepUpRequired(crate::domain::StepUpMissing::Method),
            ApiError::SelfImpersonation,
            ApiError::SelfApproval,
            ApiError::RequestNotPending(crate::domain::RequestStatus::Denied),
            ApiError::Unavailable("x".into()),
            ApiError::UnsupportedGrantType,
            ApiError::InvalidTarget("x".into()),
            ApiError::InvalidScope("x".into()),
        ];
        for e in &all {
            match e {
                ApiError::InvalidRequest(_)
                | ApiError::Unauthenticated
                | ApiError::UnauthenticatedHint(_)
                | ApiError::TokenRefused
                | ApiError::UseRefused
                | ApiError::Forbidden(_)
                | ApiError::MissingGroup(_)
                | ApiError::NoConsent
                | ApiError::NotFound(_)
                | ApiError::MethodNotAllowed { .. }
                | ApiError::Conflict(_)
                | ApiError::PayloadTooLarge { .. }
                | ApiError::FeatureDisabled
                | ApiError::EmergencyStop
                | ApiError::StepUpRequired(_)
                | ApiError::SelfImpersonation
                | ApiError::SelfApproval
                | ApiError::RequestNotPending(_)
                | ApiError::Unavailable(_)
                | ApiError::UnsupportedGrantType
                | ApiError::InvalidTarget(_)
                | ApiError::InvalidScope(_) => {}
            }
        }
        all
    }

    /// The `enum` items of the component schema `name` in `openapi.yaml`, sorted.
    fn openapi_enum(name: &str) -> Vec<String> {
        let spec = include_str!("../../../openapi.yaml");
        let schema = &spec[spec.find(&format!("\n    {name}:\n")).unwrap_or_else(|| panic!("no schema {name}"))..];
        let items = &schema[schema.find("\n      enum:\n").unwrap_or_else(|| panic!("{name} has no enum"))..];
        let mut out: Vec<String> =
            items.lines().skip(2).map_while(|line| line.strip_prefix("        - ")).map(str::to_owned).collect();
        out.sort();
        out
    }

    /// Generated clients parse every problem into one `Problem` whose `type` and `status` are
    /// enums: a slug or status the spec does not list would fail to parse in a client.
    #[test]
    fn openapi_lists_exactly_the_problem_types_and_statuses() {
        let (mut types, mut statuses): (Vec<_>, Vec<_>) = one_of_each()
            .iter()
            .map(|e| {
                let (status, slug, _) = parts(e);
                (problem_type(slug), status.as_u16().to_string())
            })
            .unzip();
        for list in [&mut types, &mut statuses] {
            list.sort();
            list.dedup();
        }
        assert_eq!(openapi_enum("ProblemType"), types);
        assert_eq!(openapi_enum("ProblemStatus"), statuses);
    }

    #[test]
    fn a_missing_group_refusal_names_the_group_the_route_needs() {
        let r = problem_response(&ApiError::MissingGroup("auditor".into()), "req-2");
        assert_eq!(r.status(), 403);
        let v: serde_json::Value = serde_json::from_slice(r.body().as_ref()).unwrap();
        assert_eq!(v["type"], problem_type("forbidden"));
        assert_eq!((v["required_group"].as_str(), v["request_id"].as_str()), (Some("auditor"), Some("req-2")));
        let other = problem_response(&ApiError::Forbidden("the identity's sub is not a usable id"), "req-3");
        let v: serde_json::Value = serde_json::from_slice(other.body().as_ref()).unwrap();
        assert!(v.get("required_group").is_none(), "{v}");
    }

    #[test]
    fn every_slug_is_the_last_segment_of_its_type() {
        let t = problem_type("no-consent");
        assert_eq!(t.rsplit('/').next(), Some("no-consent"));
    }

    #[test]
    fn every_error_has_an_oauth_code_and_the_token_endpoint_s_own_have_theirs() {
        for e in one_of_each() {
            let r = oauth_error_response(&e, "req-4");
            let v: serde_json::Value = serde_json::from_slice(r.body().as_ref()).unwrap();
            let expected_status = if matches!(e, ApiError::Unavailable(_)) { 503 } else { 400 };
            assert_eq!(r.status(), expected_status, "{e:?}");
            assert_eq!(
                (r.headers()[header::CACHE_CONTROL].to_str().unwrap(), r.headers()[header::PRAGMA].to_str().unwrap()),
                ("no-store", "no-cache")
            );
            assert_eq!(v["problem_type"], problem_type(parts(&e).1), "{e:?}");
            assert_eq!(v["request_id"], "req-4");
            let description = v["error_description"].as_str().unwrap();
            assert!(description.chars().all(|c| matches!(c, ' '..='~') && c != '"' && c != '\\'), "{description:?}");
        }
        let code = |e: ApiError| oauth_parts(&e).1;
        assert_eq!(code(ApiError::UnsupportedGrantType), "unsupported_grant_type");
        assert_eq!(code(ApiError::InvalidTarget("x".into())), "invalid_target");
        assert_eq!(code(ApiError::InvalidScope("x".into())), "invalid_scope");
        assert_eq!(code(ApiError::NoConsent), "invalid_grant");
        assert_eq!(code(ApiError::MissingGroup("support".into())), "invalid_request");
        assert_eq!(code(ApiError::Unavailable("x".into())), "temporarily_unavailable");
        let hostile =
            oauth_error_response(&ApiError::InvalidRequest("the form is not valid: \"caf\u{e9}\"\n".into()), "r");
        let v: serde_json::Value = serde_json::from_slice(hostile.body().as_ref()).unwrap();
        assert_eq!(v["error_description"], "the form is not valid: ?caf???");
        let unavailable = oauth_error_response(&ApiError::Unavailable("ThrottlingException: arn:aws:x".into()), "r");
        assert!(!std::str::from_utf8(unavailable.body().as_ref()).unwrap().contains("arn:"));
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "1");
    }
}
