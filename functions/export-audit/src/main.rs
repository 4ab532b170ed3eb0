//! `GET /audit/export`: one page of the audit log's export (a user's stream, the unattributed
//! one, or all) as JSON Lines, for offline verification of its hash chains. Its cursors are
//! sealed with the deployment's cursor key (the Secrets Manager secret), so any instance opens
//! the cursor another one made; its last page ends with the export's receipt, signed with the
//! receipt key (`RECEIPT_KEY_ID`, required), the one key it may sign with.
//! One Lambda behind API Gateway HTTP API: the ports are built once per cold start, and every
//! request goes to `shared::http`'s handler for this route, as in local-api.

use adapter_aws::lambda::{Needs, serve_http};
use lambda_http::Error;
use shared::http::Route;

#[tokio::main]
async fn main() -> Result<(), Error> {
    serve_http(Route::ExportAudit, Needs { cursor_key: true, receipt_key: true, ..Needs::default() }).await
}
