//! Notifications on AWS: the Audit table's stream (new images) is the outbox, so an event is
//! announced only once committed and publishing never runs inside a request; the `notifier`
//! function reads it, claims each use as its token's first in `FirstUses` (one conditional
//! put, first writer wins), and puts each announcement on an EventBridge bus (`detail` = the
//! CloudEvents envelope). On the sequenced path (#18) it reads the `AuditIntake` stream too,
//! for uses only: a use is durable once its intake item is, so it is announced without
//! waiting for the sequencer, and the sequencer's mark on the `Audit` item it appends
//! (`via_intake`) keeps the notifier from claiming it a second time there.

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::bundle::is_bundle;
use super::dynamodb::{DynamoStore, n, s, unavailable};
use super::items::{AuditItem, Item, appended_via_intake};
use super::sequencer::intake_event;
use shared::domain::{AuditEvent, AuditEventType, NOTIFICATION_SOURCE, Notification};
use shared::ports::{FirstUses, PublishError, Publisher, StoreError, first_use_claim_expiry};

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

/// The table a stream record came from: the name in its `eventSourceARN`
/// (`arn:aws:dynamodb:<region>:<account>:table/<name>/stream/<label>`).
fn source_table(record: &EventRecord) -> Option<&str> {
    record.event_source_arn.as_deref()?.split('/').nth(1)
}

impl DynamoStore {
    /// The events a batch of stream records brings the notifier, in order, each with its
    /// record's sequence number (to report a partial batch failure); only new items count. From
    /// the `AuditIntake` stream (a record whose source is this store's intake table): each
    /// `token.used`, announced before the sequencer appends it (the other types are announced
    /// from the `Audit` stream, in chain order). From the `Audit` stream (any other record):
    /// every event, but a `token.used` the sequencer appended from the intake (`via_intake`),
    /// announced from the intake already, and so every bundle (`crate::bundle`: uses from the
    /// intake only, never read here). A record that does not parse is logged and skipped,
    /// so one poison record cannot block the shard.
    pub fn stream_events_to_announce(&self, event: &Event) -> Vec<(String, AuditEvent)> {
        let mut out = Vec::new();
        for record in event.records.iter().filter(|r| r.event_name == "INSERT") {
            let item: Item = record.change.new_image.clone().into();
            let from_intake = source_table(record) == Some(self.tables.intake.as_str());
            let read = if from_intake {
                intake_event(&item).map(|e| Some(e).filter(|e| e.event_type == AuditEventType::TokenUsed))
            } else if is_bundle(&item) {
                Ok(None)
            } else {
                AuditItem::try_from(&item).map(|a| {
                    let announced = a.0.event_type == AuditEventType::TokenUsed && appended_via_intake(&item);
                    Some(a.0).filter(|_| !announced)
                })
            };
            match read {
                Ok(Some(e)) => out.push((record.change.sequence_number.clone().unwrap_or_default(), e)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(event_id = %record.event_id, from_intake, error = %e, "unreadable audit event in stream record")
                }
            }
        }
        out
    }
}

#[async_trait]
impl FirstUses for DynamoStore {
    /// One `PutItem` on `FirstUses`, on condition that the `jti` is unclaimed or claimed by
    /// this same event (a retry): one write unit per use, whatever the user's history. The
    /// item's `expires_at` (TTL) is [`first_use_claim_expiry`]; an expired item that TTL has
    /// not deleted yet still holds the claim, which is the right answer.
    async fn claim_first_use(&self, used: &AuditEvent) -> Result<bool, StoreError> {
        let Some(jti) = &used.jti else { return Ok(true) };
        let put = self
            .client
            .put_item()
            .table_name(&self.tables.first_uses)
            .item("jti", s(jti.as_str()))
            .item("event_id", s(used.event_id.as_str()))
            .item("expires_at", n(first_use_claim_expiry(used).unix()))
            .condition_expression("attribute_not_exists(jti) OR event_id = :e")
            .expression_attribute_values(":e", s(used.event_id.as_str()))
            .send()
            .await;
        match put {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }
}
