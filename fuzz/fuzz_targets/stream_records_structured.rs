//! DynamoDB Streams records of the `Consents` table built from parts, so every input reaches
//! the expiry rules: a `REMOVE` by the DynamoDB service (TTL) or by anyone else, a `MODIFY`,
//! an `INSERT` or any other name, at any time, with an old image whose attributes are the
//! right ones, missing, or arbitrary values of any DynamoDB type. Checks: never a panic; a
//! TTL `REMOVE` of a well-formed image yields exactly that consent; a user's `REMOVE` and an
//! `INSERT` never yield an expiry; a `MODIFY` yields one only if the old consent had already
//! run out at the record's time; a batch yields what its records yield one by one. Seeds:
//! `fuzz/seeds.py`.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use aws_lambda_events::event::dynamodb::{Event, EventRecord, UserIdentity};
use chrono::DateTime;
use libfuzzer_sys::fuzz_target;
use serde_dynamo::AttributeValue;
use adapter_streams::expiries_from_stream;
use shared::domain::{Consent, ConsentId, Note, Scope, Timestamp, UserId};

const USERS: &[&str] = &["alice", "bob", "a.b_c@d:e+f-1"];
const CONSENTS: &[&str] = &["0b7c6d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e", "c-1"];
const NOTES: &[&str] = &["", "billing", "ticket 4411: billing page broken"];

#[derive(Arbitrary, Debug)]
enum Name {
    Remove,
    Modify,
    Insert,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Identity {
    /// What DynamoDB's TTL deletions carry.
    Ttl,
    None,
    /// Another service, or a near miss of DynamoDB's identity.
    Service(String),
    Any {
        type_: String,
        principal_id: String,
    },
}

/// An arbitrary DynamoDB value, nested at most one level.
#[derive(Arbitrary, Debug)]
enum Value {
    S(String),
    N(String),
    Int(i64),
    Bool(bool),
    Null,
    B(Vec<u8>),
    Ss(Vec<String>),
    L(Vec<String>),
    M(Vec<(String, String)>),
}

/// One attribute of the old image: the right value, none, or anything.
#[derive(Arbitrary, Debug)]
enum Field {
    Right(u8),
    Missing,
    Any(Value),
}

#[derive(Arbitrary, Debug)]
struct Image {
    user_id: Field,
    consent_id: Field,
    scope: Field,
    note: Field,
    granted_at: Field,
    expires_at: Field,
    extra: Vec<(String, Value)>,
}

#[derive(Arbitrary, Debug)]
struct Record {
    name: Name,
    identity: Identity,
    observed_at: i64,
    granted_at: i64,
    expires_at: i64,
    image: Option<Image>,
}

impl Value {
    fn attribute(&self) -> AttributeValue {
        match self {
            Value::S(s) => AttributeValue::S(s.clone()),
            Value::N(n) => AttributeValue::N(n.clone()),
            Value::Int(i) => AttributeValue::N(i.to_string()),
            Value::Bool(b) => AttributeValue::Bool(*b),
            Value::Null => AttributeValue::Null(true),
            Value::B(b) => AttributeValue::B(b.clone()),
            Value::Ss(list) => AttributeValue::Ss(list.clone()),
            Value::L(list) => AttributeValue::L(list.iter().map(|s| AttributeValue::S(s.clone())).collect()),
            Value::M(pairs) => {
                AttributeValue::M(pairs.iter().map(|(k, v)| (k.clone(), AttributeValue::S(v.clone()))).collect())
            }
        }
    }
}

fn pick<'a>(list: &[&'a str], i: u8) -> &'a str {
    list[usize::from(i) % list.len()]
}

impl Record {
    fn observed_at(&self) -> DateTime<chrono::Utc> {
        DateTime::from_timestamp(self.observed_at, 0).unwrap_or_default()
    }

    /// The record, and the consent its old image holds when every attribute is right.
    fn build(&self) -> (EventRecord, Option<Consent>) {
        let mut record = EventRecord::default();
        record.event_id = "c4ca4238a0b923820dcc509a6f75849b".into();
        record.event_name = match &self.name {
            Name::Remove => "REMOVE".into(),
            Name::Modify => "MODIFY".into(),
            Name::Insert => "INSERT".into(),
            Name::Any(s) => s.clone(),
        };
        record.user_identity = match &self.identity {
            Identity::None => None,
            Identity::Ttl => Some(("Service", "dynamodb.amazonaws.com")),
            Identity::Service(principal) => Some(("Service", principal.as_str())),
            Identity::Any { type_, principal_id } => Some((type_.as_str(), principal_id.as_str())),
        }
        .map(|(type_, principal_id)| {
            let mut identity = UserIdentity::default();
            identity.type_ = type_.into();
            identity.principal_id = principal_id.into();
            identity
        });
        record.change.approximate_creation_date_time = self.observed_at();
        let Some(image) = &self.image else { return (record, None) };

        let mut item = HashMap::new();
        let mut right = true;
        let mut put = |name: &str, field: &Field, value: AttributeValue| match field {
            Field::Right(_) => drop(item.insert(name.to_owned(), value)),
            Field::Missing => right &= name == "note",
            Field::Any(v) => {
                right = false;
                item.insert(name.to_owned(), v.attribute());
            }
        };
        let text = |field: &Field, list: &[&'static str]| match field {
            Field::Right(i) => pick(list, *i),
            _ => "",
        };
        let (user, consent_id, note) =
            (text(&image.user_id, USERS), text(&image.consent_id, CONSENTS), text(&image.note, NOTES));
        let scope = match image.scope {
            Field::Right(i) if i % 2 == 0 => Scope::Read,
            _ => Scope::Full,
        };
        put("user_id", &image.user_id, AttributeValue::S(user.into()));
        put("consent_id", &image.consent_id, AttributeValue::S(consent_id.into()));
        put("scope", &image.scope, AttributeValue::S(scope.as_str().into()));
        put("note", &image.note, AttributeValue::S(note.into()));
        put("granted_at", &image.granted_at, AttributeValue::N(self.granted_at.to_string()));
        put("expires_at", &image.expires_at, AttributeValue::N(self.expires_at.to_string()));
        for (name, value) in &image.extra {
            // Another attribute leaves the consent as it is, unless it replaces one of the six
            // or is a number DynamoDB would never have stored (its numbers always parse).
            let six = ["user_id", "consent_id", "scope", "note", "granted_at", "expires_at"];
            let storable = !matches!(value, Value::N(n) if n.parse::<f64>().is_err());
            right &= storable && !six.contains(&name.as_str()) && !item.contains_key(name);
            item.insert(name.clone(), value.attribute());
        }
        record.change.old_image = item.into();
        let consent = right.then(|| Consent {
            consent_id: ConsentId::parse(consent_id).unwrap(),
            user_id: UserId::parse(user).unwrap(),
            scope,
            note: Note::parse(note).unwrap(),
            granted_at: Timestamp::from_unix(self.granted_at),
            expires_at: Timestamp::from_unix(self.expires_at),
        });
        (record, consent)
    }
}

fuzz_target!(|records: Vec<Record>| {
    let mut event = Event::default();
    let mut expected = Vec::new();
    for input in &records {
        let (record, consent) = input.build();
        let observed_at = Timestamp::from_unix(input.observed_at().timestamp());
        let mut alone = Event::default();
        alone.records = vec![record.clone()];
        let found = expiries_from_stream(&alone);
        assert!(found.len() <= 1);
        // AWS documents TTL deletions by this identity, whichever variant produced it.
        let ttl = record
            .user_identity
            .as_ref()
            .is_some_and(|u| u.type_ == "Service" && u.principal_id == "dynamodb.amazonaws.com");
        match (record.event_name.as_str(), found.first()) {
            ("REMOVE", Some(_)) => assert!(ttl, "a REMOVE by {:?} became an expiry", input.identity),
            ("REMOVE", None) if ttl => assert!(consent.is_none(), "a TTL deletion of {consent:?} was missed"),
            ("MODIFY", Some(expiry)) => {
                assert!(!expiry.consent.is_active(observed_at), "{:?} was live at {observed_at:?}", expiry.consent)
            }
            ("MODIFY", None) => {
                assert!(consent.as_ref().is_none_or(|c| c.is_active(observed_at)), "an expired replacement was missed")
            }
            (name, Some(_)) if name != "REMOVE" && name != "MODIFY" => panic!("a {name:?} record became an expiry"),
            _ => {}
        }
        if let (Some(expiry), Some(consent)) = (found.first(), &consent) {
            assert_eq!(&expiry.consent, consent);
        }
        for expiry in &found {
            assert_eq!(expiry.observed_at, observed_at);
        }
        expected.extend(found);
        event.records.push(record);
    }
    assert_eq!(expiries_from_stream(&event), expected, "a batch yields what its records yield one by one");
});
