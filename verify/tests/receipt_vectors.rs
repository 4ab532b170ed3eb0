//! The export receipt's line digest against golden vectors made by an independent
//! implementation (Python's `json` and `hashlib`), so a verifier in another language can be
//! written against the same file.

use serde_json::Value;
use support_access_verify::chain::{canonical_json, event_hash};
use support_access_verify::receipt::{LineDigest, empty_digest};

#[test]
fn the_line_digest_chains_as_recorded() {
    let file: Value = serde_json::from_str(include_str!("vectors/receipt.json")).unwrap();
    assert_eq!(empty_digest(), file["empty"].as_str().unwrap());
    assert_eq!(LineDigest::default().hex(), empty_digest());
    let mut digest = LineDigest::default();
    for step in file["lines"].as_array().unwrap() {
        let (line, item) = (&step["line"], step["item"].as_str().unwrap());
        match step["kind"].as_str().unwrap() {
            "event" => {
                assert_eq!(event_hash(line), item);
                digest.push_event(line["hash"].as_str().unwrap());
            }
            _ => {
                assert_eq!(canonical_json(line), item);
                digest.push_line(line);
            }
        }
        assert_eq!(digest.hex(), step["after"].as_str().unwrap(), "{}", step["kind"]);
        assert_eq!(LineDigest::from_hex(&digest.hex()), Some(digest));
    }
}
