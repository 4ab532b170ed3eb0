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
    /// On a sequencing store, a user's pending events come first ([`AuditEvent::is_pending`]):
    /// each is served with `"pending": true`, which no sealed event carries.
    #[serde(serialize_with = "marked_pending")]
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
    let after = services.cursor_key.open_cursor(cursor, &filter).await?;
    let page = services
        .audit_reader
        .query(&AuditQuery { filter: filter.clone(), limit, after, now: services.clock.now() })
        .await?;
    let next_cursor = services.cursor_key.seal_cursor(&filter, page.next).await?;
    Ok(AuditPageView { events: page.events, next_cursor })
}

/// An event as the API serves it: `"pending": true` beside its own fields while it awaits the
/// sequencer. A view only: the event's hash covers its own fields ([`AuditEvent::seal`]), never
/// this marker.
#[derive(Serialize)]
struct Marked<'a> {
    #[serde(flatten)]
    event: &'a AuditEvent,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pending: bool,
}

fn marked_pending<S: serde::Serializer>(events: &[AuditEvent], out: S) -> Result<S::Ok, S::Error> {
    out.collect_seq(events.iter().map(|event| Marked { event, pending: event.is_pending() }))
}
