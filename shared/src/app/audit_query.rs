use serde::Serialize;

use crate::domain::{AuditEvent, AuditFilter};
use crate::ports::{AuditQuery, Ports};

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
    ports: &Ports,
    filter: AuditFilter,
    limit: usize,
    cursor: Option<&str>,
) -> Result<AuditPageView, ApiError> {
    let after = cursor.map(|c| ports.cursor_key.open(c, &filter)).transpose()?;
    let page =
        ports.audit_reader.query(&AuditQuery { filter: filter.clone(), limit, after, now: ports.clock.now() }).await?;
    Ok(AuditPageView {
        events: page.events,
        next_cursor: page.next.map(|position| ports.cursor_key.seal(&filter, position)),
    })
}

/// The most events one export answers with; a longer stream is refused with a clear error
/// rather than truncated (a truncated chain would look like a tampered one).
pub const MAX_EXPORT_EVENTS: usize = 10_000;

/// `GET /audit/export`: one user's whole stream, oldest first, for offline verification of
/// its hash chain (`support-access verify`).
pub async fn export_stream(ports: &Ports, user: crate::domain::UserId) -> Result<Vec<AuditEvent>, ApiError> {
    let filter = AuditFilter { user_id: Some(user), ..AuditFilter::default() };
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let query = AuditQuery { filter: filter.clone(), limit: MAX_PAGE_SIZE, after, now: ports.clock.now() };
        let page = ports.audit_reader.query(&query).await?;
        events.extend(page.events);
        if events.len() > MAX_EXPORT_EVENTS {
            return Err(ApiError::InvalidRequest(format!(
                "the stream holds more than {MAX_EXPORT_EVENTS} events; export it in parts (not yet supported)"
            )));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    events.reverse();
    Ok(events)
}
