use serde::Serialize;

use super::Services;
use crate::domain::{AuditEvent, AuditFilter};
use crate::ports::AuditQuery;

use super::ApiError;

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 100;

/// One page of `GET /audit` or `GET /me/access-log`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditPageView {
    pub events: Vec<AuditEvent>,
    /// Opaque; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Events matching `filter`, newest first. The caller decides the filter (an auditor's own,
/// or a user's forced to their own id); the cursor only works with the filter it was made for.
pub async fn query_audit(
    services: &Services,
    filter: AuditFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<AuditPageView, ApiError> {
    let after = cursor.map(|c| services.cursor_key.open(c, &filter)).transpose()?;
    let page = services
        .audit_reader
        .query(&AuditQuery { filter: filter.clone(), limit, after, now: services.clock.now() })
        .await?;
    Ok(AuditPageView {
        events: page.events,
        next_cursor: page.next.map(|position| services.cursor_key.seal(&filter, position)),
    })
}
