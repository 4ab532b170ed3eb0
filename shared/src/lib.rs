//! The one crate every support-access function links: the domain (what a consent, a token
//! and an audit event are), the ports the domain needs (stores, signer, clock), the adapters
//! that fill them, and the HTTP mapping that turns API Gateway v2 requests into use cases.
//!
//! Dependencies point inwards: `http` and `adapters` know `domain` and `ports`; `domain`
//! knows nothing of AWS, HTTP or storage.

pub mod adapters;
pub mod app;
pub mod domain;
pub mod http;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod ports;
pub mod token;

/// The API Gateway event types the authorizer takes and answers (from `aws_lambda_events`,
/// as `lambda_http` re-exports it), so the future Lambda crate needs no extra dependency.
pub use lambda_http::aws_lambda_events::apigw as lambda_events;
