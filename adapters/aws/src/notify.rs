//! Notifications on AWS: the Audit table's stream (new images) is the outbox, so an event is
//! announced only once committed and publishing never runs inside a request; the `notifier`
//! function reads it, asks the table whether a use is its token's first, and puts each
//! announcement on an EventBridge bus (`detail` = the CloudEvents envelope).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::dynamodb::{DynamoStore, n, s, unavailable};
use super::items::AuditItem;
use shared::domain::{AuditEvent, AuditEventType, NOTIFICATION_SOURCE, Notification};
use shared::ports::{PublishError, Publisher, StoreError, UseHistory};

/// How many pages of a user's stream a first-use check may read before answering "first".
const MAX_HISTORY_PAGES: usize = 10;

/// Puts notifications on an EventBridge bus: `source` `support-access`, `detail-type` the
/// audit event type (`token.used`), `detail` the CloudEvents envelope (its `id` is the audit
/// event id, the one to deduplicate by: EventBridge's own id differs per delivery).
pub struct EventBridgePublisher {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgePublisher {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: &str) -> Self {
        Self { client, bus: bus.to_owned() }
    }
}

#[async_trait]
impl Publisher for EventBridgePublisher {
    async fn publish(&self, notification: &Notification) -> Result<(), PublishError> {
        let detail = serde_json::to_string(notification).map_err(|e| PublishError(e.to_string()))?;
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(NOTIFICATION_SOURCE)
            .detail_type(notification.data.event_type.as_str())
            .detail(detail)
            .build();
        let out = self
            .client
            .put_events()
            .entries(entry)
            .send()
            .await
            .map_err(|e| PublishError(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string()))?;
        match out.entries().first() {
            Some(result) if result.error_code().is_some() => Err(PublishError(format!(
                "EventBridge refused the entry: {} {}",
                result.error_code().unwrap_or_default(),
                result.error_message().unwrap_or_default()
            ))),
            _ if out.failed_entry_count() > 0 => Err(PublishError("EventBridge refused the entry".into())),
            _ => Ok(()),
        }
    }
}

/// The audit events a batch of Audit-stream records inserted, in order, each with its
/// record's sequence number (to report a partial batch failure). A record that does not
/// parse is logged and skipped, so one poison record cannot block the shard.
pub fn audit_events_from_stream(event: &Event) -> Vec<(String, AuditEvent)> {
    let mut out = Vec::new();
    for record in &event.records {
        if record.event_name != "INSERT" {
            continue;
        }
        let item: HashMap<String, AttributeValue> = record.change.new_image.clone().into();
        match AuditItem::try_from(&item) {
            Ok(audit) => out.push((record.change.sequence_number.clone().unwrap_or_default(), audit.0)),
            Err(e) => {
                tracing::error!(event_id = %record.event_id, error = %e, "unreadable audit event in stream record")
            }
        }
    }
    out
}

#[async_trait]
impl UseHistory for DynamoStore {
    async fn is_first_use(&self, used: &AuditEvent) -> Result<bool, StoreError> {
        let Some(jti) = &used.jti else { return Ok(true) };
        // Walk the stream back from the use: the token's own `token.issued` ends the search.
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        for _ in 0..MAX_HISTORY_PAGES {
            let out = self
                .client
                .query()
                .table_name(&self.tables.audit)
                .key_condition_expression("#s = :s AND seq < :seq")
                .filter_expression("jti = :jti AND (#t = :used OR #t = :issued)")
                .projection_expression("#t")
                .expression_attribute_names("#s", "stream")
                .expression_attribute_names("#t", "type")
                .expression_attribute_values(":s", s(used.stream()))
                .expression_attribute_values(":seq", n(used.seq as i64))
                .expression_attribute_values(":jti", s(jti.as_str()))
                .expression_attribute_values(":used", s(AuditEventType::TokenUsed.as_str()))
                .expression_attribute_values(":issued", s(AuditEventType::TokenIssued.as_str()))
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            if let Some(newest) = out.items().first() {
                return Ok(newest.get("type").and_then(|t| t.as_s().ok()).map(String::as_str)
                    != Some(AuditEventType::TokenUsed.as_str()));
            }
            match out.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(true),
            }
        }
        Ok(true)
    }
}
