//! `GET /me/access-requests` and `POST /me/access-requests/{request_id}/{approve,deny}`: the
//! user's side of access requests. An approval grants the consent exactly as requested, so
//! this function's role may write consents; the user's own id keys every lookup.

use lambda_http::Error;
use shared::http::Route;
use shared::lambda::{Needs, serve_routes};

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(&[Route::MyAccessRequests, Route::ApproveAccessRequest, Route::DenyAccessRequest], Needs::default())
        .await
}
