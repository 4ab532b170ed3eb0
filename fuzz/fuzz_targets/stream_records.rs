//! Arbitrary bytes as a DynamoDB Streams event (the JSON Lambda receives), through
//! `expiries_from_stream` and `intake_batch`. Beyond "never panics": records are judged one by
//! one (a batch yields exactly what its records yield alone, in order), an expiry only ever
//! comes from a `REMOVE` by the DynamoDB service (TTL) or from a `MODIFY` whose replaced
//! consent had already run out when the stream saw it, stamped with that record's time, and
//! only an `INSERT` names a stream to sequence (or is reported as naming none), except an entry
//! of the list of stalled streams, which names nothing.
#![no_main]

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use libfuzzer_sys::fuzz_target;
use adapter_streams::{IntakeBatch, STALLED_PREFIX, expiries_from_stream, intake_batch};
use shared::domain::Timestamp;

fn by_ttl(record: &EventRecord) -> bool {
    record.user_identity.as_ref().is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com")
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Event>(data) else { return };
    let batch = expiries_from_stream(&event);

    let mut one_by_one = Vec::new();
    for record in &event.records {
        let mut alone = Event::default();
        alone.records = vec![record.clone()];
        let found = expiries_from_stream(&alone);
        assert!(found.len() <= 1, "{record:?}");
        if let Some(expiry) = found.first() {
            // The record's time as every timestamp is kept: clamped to years 0-9999 (a record
            // dated 1795795601000 s, a milliseconds value read as seconds, is stamped 9999-12-31).
            let observed = Timestamp::from_unix(record.change.approximate_creation_date_time.timestamp());
            assert_eq!(expiry.observed_at, observed);
            match record.event_name.as_str() {
                "REMOVE" => assert!(by_ttl(record), "a user's delete became an expiry: {record:?}"),
                "MODIFY" => assert!(!expiry.consent.is_active(expiry.observed_at), "a live consent expired"),
                other => panic!("a {other:?} record became an expiry"),
            }
        }
        one_by_one.extend(found);
    }
    assert_eq!(batch, one_by_one);

    let intake = intake_batch(&event);
    let mut merged = IntakeBatch::default();
    for record in &event.records {
        let mut alone = Event::default();
        alone.records = vec![record.clone()];
        let one = intake_batch(&alone);
        let named = one.streams.values().map(Vec::len).sum::<usize>() + one.unreadable.len();
        let listed = matches!(
            record.change.keys.inner().get("stream"),
            Some(serde_dynamo::AttributeValue::S(s)) if s.starts_with(STALLED_PREFIX)
        );
        assert_eq!(named, usize::from(record.event_name == "INSERT" && !listed), "{record:?}");
        for (stream, numbers) in one.streams {
            assert!(!stream.is_empty() && !stream.starts_with(STALLED_PREFIX));
            merged.streams.entry(stream).or_default().extend(numbers);
        }
        for (stream, at) in one.oldest {
            merged.oldest.entry(stream).and_modify(|old| *old = (*old).min(at)).or_insert(at);
        }
        merged.unreadable.extend(one.unreadable);
    }
    assert_eq!(intake, merged);
});
