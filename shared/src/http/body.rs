use lambda_http::Request;
use serde::de::DeserializeOwned;

use crate::app::ApiError;

/// Largest request body accepted (docs/design.md): larger ones get 413 before any parsing.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The request's JSON body as `T` (whose serde attributes refuse unknown fields).
pub(crate) fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    // serde would also accept an array for a struct (`[900]`); every body here is an object.
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => return Err(ApiError::InvalidRequest("a JSON body is required".into())),
        Some(b'{') => {}
        Some(_) => return Err(ApiError::InvalidRequest("the body must be a JSON object".into())),
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidRequest(format!("the body is not valid: {e}")))
}

/// Refuses a body where the route takes none (a decision on an access request), so nothing
/// the client sends can seem to shape what is decided: it is decided as it was asked.
pub(crate) fn no_body(req: &Request) -> Result<(), ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    Err(ApiError::InvalidRequest(
        "this route takes no body: a request is approved or denied exactly as it was filed".into(),
    ))
}

/// The request's `application/x-www-form-urlencoded` body as `T` (RFC 7662 requests).
pub(crate) fn form_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
    }
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return Err(ApiError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()));
    }
    serde_urlencoded::from_bytes(bytes).map_err(|e| ApiError::InvalidRequest(format!("the form is not valid: {e}")))
}

/// The request's query string as `T`.
pub(crate) fn query<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let raw = req.uri().query().unwrap_or("");
    serde_urlencoded::from_str(raw).map_err(|e| ApiError::InvalidRequest(format!("the query is not valid: {e}")))
}
