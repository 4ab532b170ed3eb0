//! The expiry recorder's logic, from real DynamoDB Streams event JSON to `consent.expired` on
//! the audit log in DynamoDB (moto on loopback). moto never deletes TTL'd items and its stream
//! records carry no `userIdentity`, so the records are the shape AWS documents, built here.

use adapter_aws::expiries_from_stream;
use aws_lambda_events::event::dynamodb::Event;
use e2e::{Backend, TestApp};
use serde_json::{Value, json};
use shared::domain::{AuditEventType, AuditFilter};

const FIXTURE: &str = include_str!("../fixtures/dynamodb_stream_consents.json");

fn ttl_record() -> Value {
    serde_json::from_str::<Value>(FIXTURE).unwrap()["Records"][0].clone()
}

fn event(records: Vec<Value>) -> Event {
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

async fn record_all(app: &TestApp, e: &Event) -> usize {
    let store = app.dynamo();
    let mut written = 0;
    for r in expiries_from_stream(e) {
        if shared::app::record_expiry(store.as_ref(), &r.consent, r.observed_at).await.unwrap() {
            written += 1;
        }
    }
    written
}

async fn expired_events(app: &TestApp) -> Vec<shared::domain::AuditEvent> {
    let page = shared::app::query_audit(
        app.services(),
        AuditFilter { event_type: Some(AuditEventType::ConsentExpired), ..Default::default() },
        100,
        None,
    )
    .await
    .unwrap();
    page.events
}

#[tokio::test]
async fn a_ttl_deletion_becomes_consent_expired_once_however_often_it_is_delivered() {
    let app = TestApp::on(Backend::Aws).await;
    let batch = event(vec![ttl_record()]);
    assert_eq!(record_all(&app, &batch).await, 1);
    assert_eq!(record_all(&app, &batch).await, 0, "redelivery writes nothing");

    let events = expired_events(&app).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.user_id.as_ref().unwrap().as_str(), "alice");
    assert_eq!(e.consent_id.as_ref().unwrap().as_str(), "0b7c6d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e");
    assert_eq!(e.expires_at.unwrap().unix(), 1_795_601_700);
    assert_eq!(e.at.unix(), 1_795_601_760, "when the stream saw it go");
    assert_eq!(e.actor.role, shared::domain::Role::System);
    assert_eq!(e.seq, 1);
}

#[tokio::test]
async fn a_users_own_delete_and_a_live_replacement_are_not_expiries() {
    let app = TestApp::on(Backend::Aws).await;
    let mut revoke = ttl_record();
    revoke.as_object_mut().unwrap().remove("userIdentity");
    let mut replaced_live = ttl_record();
    replaced_live["eventName"] = json!("MODIFY");
    replaced_live["dynamodb"]["ApproximateCreationDateTime"] = json!(1_795_601_000); // before expires_at
    let mut insert = ttl_record();
    insert["eventName"] = json!("INSERT");
    let mut other_service = ttl_record();
    other_service["userIdentity"]["principalId"] = json!("someone.example.com");
    assert_eq!(record_all(&app, &event(vec![revoke, replaced_live, insert, other_service])).await, 0);
    assert!(expired_events(&app).await.is_empty());
}

#[tokio::test]
async fn a_consent_replaced_after_it_ran_out_is_recorded_as_expired() {
    let app = TestApp::on(Backend::Aws).await;
    let mut replaced_expired = ttl_record();
    replaced_expired["eventName"] = json!("MODIFY");
    replaced_expired.as_object_mut().unwrap().remove("userIdentity");
    assert_eq!(record_all(&app, &event(vec![replaced_expired])).await, 1);
}

#[tokio::test]
async fn a_malformed_record_is_skipped_and_the_rest_of_the_batch_is_recorded() {
    let app = TestApp::on(Backend::Aws).await;
    let mut broken = ttl_record();
    broken["dynamodb"]["OldImage"].as_object_mut().unwrap().remove("expires_at");
    let mut bob = ttl_record();
    bob["dynamodb"]["OldImage"]["user_id"] = json!({"S": "bob"});
    bob["dynamodb"]["OldImage"]["consent_id"] = json!({"S": "c-bob-1"});
    assert_eq!(record_all(&app, &event(vec![broken, bob])).await, 1);
    assert_eq!(expired_events(&app).await[0].user_id.as_ref().unwrap().as_str(), "bob");
}
