//! Incident response, for the operator group: engage, read and lift the emergency stop, and
//! revoke every live token of one agent. The only function whose role writes the `Controls`
//! table; the functions on the grant, mint, approval and use paths only read it.

use adapter_aws::lambda::{Needs, serve_routes};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_routes(
        &[Route::GetEmergencyStop, Route::EngageEmergencyStop, Route::LiftEmergencyStop, Route::RevokeAgentTokens],
        Needs::default(),
    )
    .await
}
