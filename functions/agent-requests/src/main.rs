//! `POST /access-requests` and `GET /access-requests`: a support agent asks a user for access
//! (scope, duration, reason) and sees the state of the requests they filed. One function for
//! the agent's side of the job, so its role writes requests and the audit log, never consents.

use adapter_aws::lambda::{Needs, serve_routes};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(
        &[Route::FileAccessRequest, Route::AgentAccessRequests],
        Needs { cursor_key: true, ..Needs::default() },
    )
    .await
}
