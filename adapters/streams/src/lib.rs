//! The DynamoDB Streams records the functions read, with the event types only (no AWS SDK):
//! which records of the `Consents` table are expiries ([`expiries_from_stream`]), and which
//! users a batch of the `AuditIntake` table's records names ([`intake_batch`]).
//!
//! An expiry: a TTL deletion is a `REMOVE` by the DynamoDB service itself
//! (`userIdentity.type = Service`, `principalId = dynamodb.amazonaws.com`); a user's revoke is
//! a `REMOVE` without that identity and is already audited. A consent replaced by a new grant after it had run out
//! (before TTL got to it) shows as a `MODIFY` whose old image had expired: an expiry too.
//!
//! A crate of its own: reading records needs only the event types, so the fuzz harness
//! parses them without compiling the AWS SDK.

use std::collections::BTreeMap;

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde::Deserialize;

use shared::domain::{Consent, ConsentId, Note, Scope, Timestamp, UserId};

/// A consent that ran out, and when the stream saw it go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryRecord {
    pub consent: Consent,
    pub observed_at: Timestamp,
}

#[derive(Deserialize)]
struct ConsentImage {
    user_id: String,
    consent_id: String,
    scope: String,
    #[serde(default)]
    note: String,
    granted_at: i64,
    expires_at: i64,
}

fn is_ttl_deletion(record: &EventRecord) -> bool {
    record.user_identity.as_ref().is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

fn consent_from(record: &EventRecord) -> Result<Consent, String> {
    let image: ConsentImage = serde_dynamo::from_item(record.change.old_image.clone()).map_err(|e| e.to_string())?;
    Ok(Consent {
        consent_id: ConsentId::parse(&image.consent_id).map_err(|e| e.to_string())?,
        user_id: UserId::parse(&image.user_id).map_err(|e| e.to_string())?,
        scope: Scope::parse(&image.scope).map_err(|e| e.to_string())?,
        note: Note::parse(&image.note).map_err(|e| e.to_string())?,
        granted_at: Timestamp::from_unix(image.granted_at),
        expires_at: Timestamp::from_unix(image.expires_at),
    })
}

/// The expiries in a batch of stream records. A record that claims to be an expiry but does
/// not parse is logged and skipped, so one poison record cannot block the shard forever.
pub fn expiries_from_stream(event: &Event) -> Vec<ExpiryRecord> {
    let mut out = Vec::new();
    for record in &event.records {
        let observed_at = Timestamp::from_unix(record.change.approximate_creation_date_time.timestamp());
        let candidate = match record.event_name.as_str() {
            "REMOVE" if is_ttl_deletion(record) => true,
            "MODIFY" => true,
            _ => false,
        };
        if !candidate || record.change.old_image.is_empty() {
            continue;
        }
        match consent_from(record) {
            // A MODIFY is an expiry only if the replaced consent had already run out.
            Ok(consent) if record.event_name == "MODIFY" && consent.is_active(observed_at) => {}
            Ok(consent) => out.push(ExpiryRecord { consent, observed_at }),
            Err(e) => tracing::error!(event_id = %record.event_id, error = %e, "unreadable consent in stream record"),
        }
    }
    out
}

/// What a batch of `AuditIntake` stream records names: the streams (users, or the
/// unattributed stream) with a new intake item, each with its records' sequence numbers, and
/// the records that name none. The records are only a trigger: the sequencer reads each named
/// stream's pending items from the table itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IntakeBatch {
    pub streams: BTreeMap<String, Vec<String>>,
    /// When each stream's oldest record of the batch was written (the records'
    /// `ApproximateCreationDateTime`, unix seconds): how long its events have waited.
    pub oldest: BTreeMap<String, i64>,
    /// Sequence numbers of `INSERT` records without a readable `stream` key: reported as
    /// failed, so that after its retries the batch is kept (the failed-batches bucket) and an
    /// operator sees it, instead of an intake item nobody sequences.
    pub unreadable: Vec<String>,
}

#[derive(Deserialize)]
struct IntakeKey {
    stream: String,
}

/// The partition prefix of the `AuditIntake` items that list stalled streams (`#stalled#0`
/// and on, see `adapter_aws`'s sequencer): not a user's stream (`#` is in no identifier), so
/// never a trigger. The sequencer's event filter leaves their records out; a batch that has
/// one anyway skips it.
pub const STALLED_PREFIX: &str = "#stalled#";

/// How long a stream's events may wait for the sequencer before it lists the stream as
/// stalled: far past its healthy lag (under a second, up to a hold more behind a consent
/// change), so a healthy stack lists nothing.
pub const STALE_AFTER_SECONDS: i64 = 10;

/// The streams a batch of `AuditIntake` stream records names. Only `INSERT` records count:
/// a `MODIFY` is a mark of a sequenced item by an earlier release, a `REMOVE` a TTL deletion.
pub fn intake_batch(event: &Event) -> IntakeBatch {
    let mut batch = IntakeBatch::default();
    for record in event.records.iter().filter(|r| r.event_name == "INSERT") {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        match serde_dynamo::from_item::<_, IntakeKey>(record.change.keys.clone()) {
            Ok(key) if key.stream.starts_with(STALLED_PREFIX) => {}
            Ok(key) if !key.stream.is_empty() => {
                let written = record.change.approximate_creation_date_time.timestamp();
                batch.oldest.entry(key.stream.clone()).and_modify(|at| *at = (*at).min(written)).or_insert(written);
                batch.streams.entry(key.stream).or_default().push(sequence_number)
            }
            Ok(_) => {
                tracing::error!(event_id = %record.event_id, "intake stream record with an empty stream key");
                batch.unreadable.push(sequence_number);
            }
            Err(e) => {
                tracing::error!(event_id = %record.event_id, error = %e, "unreadable intake stream record");
                batch.unreadable.push(sequence_number);
            }
        }
    }
    batch
}

impl IntakeBatch {
    /// The streams whose oldest record was written more than [`STALE_AFTER_SECONDS`] before
    /// `now` (unix seconds): delivered again after a failed run, or behind a backlog.
    pub fn stale(&self, now: i64) -> Vec<String> {
        self.oldest.iter().filter(|(_, at)| now - **at > STALE_AFTER_SECONDS).map(|(s, _)| s.clone()).collect()
    }

    /// The answer to the event source: every record of the streams `retry` names, and every
    /// unreadable record, as a batch item failure (the source delivers the batch again from
    /// the lowest of them; the streams done meanwhile find nothing to do twice).
    pub fn response<'a>(&self, retry: impl IntoIterator<Item = &'a String>) -> DynamoDbEventResponse {
        let mut failed: Vec<&String> = retry.into_iter().filter_map(|s| self.streams.get(s)).flatten().collect();
        failed.extend(&self.unreadable);
        // Numeric order (sequence numbers are decimal strings of any length).
        failed.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        failed.dedup();
        let mut response = DynamoDbEventResponse::default();
        for sequence_number in failed {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(sequence_number.clone());
            response.batch_item_failures.push(failure);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(name: &str, sequence_number: &str, keys: serde_json::Value) -> serde_json::Value {
        record_at(name, sequence_number, keys, 1795601760)
    }

    fn record_at(name: &str, sequence_number: &str, keys: serde_json::Value, written: i64) -> serde_json::Value {
        json!({
            "eventID": format!("e{sequence_number}"),
            "eventName": name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": written,
                "Keys": keys,
                "SequenceNumber": sequence_number,
                "SizeBytes": 100,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/AuditIntake/stream/2026-12-03T10:00:00.000"
        })
    }

    fn keys(stream: &str) -> serde_json::Value {
        json!({"stream": {"S": stream}, "order": {"S": "0001795601760000000#e"}})
    }

    #[test]
    fn a_batch_names_its_inserted_streams_and_reports_exactly_the_failed_ones() {
        let event: Event = serde_json::from_value(json!({"Records": [
            record("INSERT", "100", keys("alice")),
            record("INSERT", "101", json!({"order": {"S": "x"}})),
            record("INSERT", "102", keys("bob")),
            record("MODIFY", "103", keys("carol")),
            record("INSERT", "104", keys("alice")),
            record("REMOVE", "105", keys("dave")),
            record("INSERT", "106", json!({"stream": {"S": ""}, "order": {"S": "x"}})),
            record("INSERT", "107", json!({"stream": {"BOOL": true}, "order": {"S": "x"}})),
        ]}))
        .unwrap();
        let batch = intake_batch(&event);
        assert_eq!(
            batch.streams,
            BTreeMap::from([("alice".into(), vec!["100".into(), "104".into()]), ("bob".into(), vec!["102".into()])])
        );
        assert_eq!(batch.unreadable, ["101", "106", "107"]);
        let ids = |r: DynamoDbEventResponse| -> Vec<String> {
            r.batch_item_failures.into_iter().filter_map(|f| f.item_identifier).collect()
        };
        assert_eq!(ids(batch.response([])), ["101", "106", "107"]);
        assert_eq!(
            ids(batch.response([&"alice".to_owned(), &"nobody".to_owned()])),
            ["100", "101", "104", "106", "107"]
        );
    }

    #[test]
    fn a_stream_is_stale_when_its_oldest_record_waited_past_the_bound_and_list_entries_trigger_nothing() {
        let now = 1_795_601_760;
        let event: Event = serde_json::from_value(json!({"Records": [
            record_at("INSERT", "100", keys("alice"), now - 2),
            record_at("INSERT", "101", keys("bob"), now - 1),
            record_at("INSERT", "102", keys("bob"), now - STALE_AFTER_SECONDS - 1),
            record_at("INSERT", "103", keys("carol"), now - STALE_AFTER_SECONDS),
            record_at("INSERT", "104", json!({"stream": {"S": "#stalled#3"}, "order": {"S": "dave"}}), now - 600),
        ]}))
        .unwrap();
        let batch = intake_batch(&event);
        assert_eq!(batch.streams.keys().collect::<Vec<_>>(), ["alice", "bob", "carol"]);
        assert!(batch.unreadable.is_empty(), "a list entry is neither a trigger nor unreadable");
        assert_eq!(batch.oldest["bob"], now - STALE_AFTER_SECONDS - 1);
        assert_eq!(batch.stale(now), ["bob"]);
        assert_eq!(batch.stale(now + 1), ["bob", "carol"]);
    }
}
