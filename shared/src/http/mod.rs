//! From API Gateway v2 requests (`lambda_http::Request`, the caller in
//! `requestContext.authorizer.jwt.claims`) to the use cases and back. Every Lambda and the
//! local API call [`answer`] with the route their request resolved to; errors become problem+json in `problem`. The
//! impersonation-token authorizer (`authorize_request`) takes API Gateway's authorizer event.

mod authorizer;
mod body;
mod caller;
mod cors;
mod problem;
mod routes;
mod summary;

pub use authorizer::{CONTEXT_KEYS, authorize_request, bearer_token, decide, undecided};
pub use body::MAX_BODY_BYTES;
pub(crate) use caller::token_list;
pub use caller::{Caller, parse_groups};
pub use cors::Cors;
pub use problem::{PROBLEM_CONTENT_TYPE, problem_type};
pub use routes::{Route, answer, resolve_among, route, unavailable};
pub use summary::{Decision, Summary};
