//! The canonical encoding and hashes of the audit chain against golden vectors made by an
//! independent implementation (Python's `json` and `hashlib`), so a verifier in another
//! language can be written against the same file.

use serde_json::Value;
use support_access_verify::chain::{ChainError, canonical_json, event_hash, verify_chains};

fn vectors() -> Vec<Value> {
    let file: Value = serde_json::from_str(include_str!("vectors/chain.json")).unwrap();
    file["vectors"].as_array().unwrap().clone()
}

#[test]
fn every_vector_encodes_and_hashes_as_recorded() {
    for v in vectors() {
        let mut without_hash = v["event"].clone();
        without_hash.as_object_mut().unwrap().remove("hash");
        assert_eq!(canonical_json(&without_hash), v["canonical"].as_str().unwrap());
        assert_eq!(event_hash(&v["event"]), v["hash"].as_str().unwrap());
    }
}

#[test]
fn the_vectors_form_intact_chains_and_any_edit_breaks_them() {
    let events: Vec<Value> = vectors().into_iter().map(|v| v["event"].clone()).collect();
    let heads = verify_chains(&events).unwrap();
    assert_eq!(heads["alice"].0, 2);
    assert_eq!(heads["~unattributed"].0, 1);

    let mut edited = events.clone();
    edited[1]["reason"] = Value::String("ticket 4412".into());
    assert!(matches!(verify_chains(&edited), Err(ChainError::Hash { index: 1, .. })));

    let dropped: Vec<Value> = vec![events[1].clone(), events[2].clone()];
    assert!(matches!(verify_chains(&dropped), Err(ChainError::Sequence { index: 0, seq: 2, expected: 1, .. })));

    let swapped = vec![events[1].clone(), events[0].clone()];
    assert!(matches!(verify_chains(&swapped), Err(ChainError::Sequence { index: 0, .. })));

    // Re-hashing an edited event does not help: the next event's prev_hash no longer links.
    let mut forged = events.clone();
    forged[0]["scope"] = Value::String("full".into());
    forged[0]["hash"] = Value::String(event_hash(&forged[0]));
    assert!(matches!(verify_chains(&forged), Err(ChainError::Link { index: 1, .. })));

    // Another user's event spliced into alice's stream.
    let mut spliced = events.clone();
    spliced[1]["user_id"] = Value::String("bob".into());
    assert!(verify_chains(&spliced).is_err());
}
