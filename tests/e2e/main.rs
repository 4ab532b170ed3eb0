//! The end-to-end tests, one binary with a module per subject (one link of the AWS SDK and
//! every adapter instead of one per file). Each module's own documentation says what it
//! proves; `cargo test -p e2e --test end_to_end -- <module>::` runs one of them. The shared fixtures and
//! helpers are the `e2e` library (`tests/support`).
//!
//! The modules that touch DynamoDB or KMS need the moto server `scripts/test` starts, and
//! the AWS proxy it puts in front of it (`e2e::aws_proxy`, DynamoDB under load)
//! (`SUPPORT_ACCESS_TEST_AWS_ENDPOINT`); the rest run anywhere, in seconds.

mod access_requests;
mod apigw_flow;
mod attacks;
mod audit_export;
mod aws_model;
mod contract;
mod discovery;
mod entry_points;
mod expiry_stream;
mod faults;
mod hostile_text;
mod incident_response;
mod lambda_functions;
mod local_api_flow;
mod look_alike_roles;
mod notifications;
mod races;
mod refusals;
mod sequencer;
mod token_exchange;
mod upgrade;
mod verify_remote;
