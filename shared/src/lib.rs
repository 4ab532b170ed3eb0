//! The core every support-access function links: the domain (what a consent, a token and an
//! audit event are), the ports the use cases need (stores, signer, clock), the use cases
//! themselves with the [`app::Services`] they run on, and the HTTP mapping that turns API
//! Gateway v2 requests into use cases.
//!
//! Dependencies point inwards: `http` knows `app`, `app` knows `ports` and `domain`, `ports`
//! knows only `domain`; nothing here knows AWS or a storage engine. The adapters that fill
//! the ports are crates of their own (`adapter-aws`, `adapter-embedded`, `adapter-streams`),
//! so this crate's dependency tree has no AWS SDK and no SQLite in it.

pub mod app;
pub mod domain;
pub mod http;
pub mod identity;
pub mod ports;
pub mod token;

/// The API Gateway event types the authorizer takes and answers (from `aws_lambda_events`,
/// as `lambda_http` re-exports it), so a function crate needs no extra dependency.
pub use lambda_http::aws_lambda_events::apigw as lambda_events;
