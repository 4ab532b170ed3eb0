//! `GET /me/access-requests` and `POST /me/access-requests/{request_id}/{approve,deny}`: the
//! user's side of access requests. An approval grants the consent exactly as requested, so
//! this function's role may write consents; the user's own id keys every lookup.

use adapter_aws::lambda::{Needs, serve_routes};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(
        &[Route::MyAccessRequests, Route::ApproveAccessRequest, Route::DenyAccessRequest],
        Needs { cursor_key: true, ..Needs::default() },
    )
    .await
}
