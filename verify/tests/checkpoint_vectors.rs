//! Checkpoint Merkle trees against golden vectors made by an independent implementation
//! (Python's `json` and `hashlib`, RFC 6962 written out), so a verifier in another language
//! can be written against the same file.

use serde_json::Value;
use support_access_verify::checkpoint::{CheckpointClaims, Leaf, ProvenLeaf, link_of, seal_leaves, verify_inclusion};

fn file() -> Value {
    serde_json::from_str(include_str!("vectors/checkpoint.json")).unwrap()
}

fn leaves(file: &Value) -> Vec<(Leaf, &Value)> {
    file["leaves"].as_array().unwrap().iter().map(|v| (serde_json::from_value(v["leaf"].clone()).unwrap(), v)).collect()
}

#[test]
fn the_leaves_encode_and_the_tree_roots_and_proves_as_recorded() {
    let file = file();
    let leaves = leaves(&file);
    for (leaf, v) in &leaves {
        assert_eq!(leaf.encoding(), v["encoding"].as_str().unwrap());
    }
    // Given in another order, the same heads make the same tree.
    let mut shuffled: Vec<Leaf> = leaves.iter().map(|(l, _)| l.clone()).collect();
    shuffled.reverse();
    let tree = seal_leaves(shuffled);
    assert_eq!(tree.root, file["root"].as_str().unwrap());
    for (proven, (_, v)) in tree.leaves.iter().zip(&leaves) {
        assert_eq!(proven.index, v["index"].as_u64().unwrap());
        let proof: Vec<String> = serde_json::from_value(v["proof"].clone()).unwrap();
        assert_eq!(proven.proof, proof, "{}", proven.leaf.stream);
    }
}

#[test]
fn the_recorded_proofs_verify_against_the_recorded_root_and_nothing_else_does() {
    let file = file();
    let claims = CheckpointClaims {
        iss: "support-access".into(),
        seq: 1,
        iat: 0,
        prev: link_of(None),
        root: file["root"].as_str().unwrap().into(),
        size: file["size"].as_u64().unwrap(),
    };
    for (leaf, v) in leaves(&file) {
        let proven = ProvenLeaf {
            leaf: leaf.clone(),
            index: v["index"].as_u64().unwrap(),
            proof: serde_json::from_value(v["proof"].clone()).unwrap(),
        };
        verify_inclusion(&claims, &proven).unwrap();
        let mut other = proven.clone();
        other.leaf.hash = link_of(Some("something else"));
        assert!(verify_inclusion(&claims, &other).is_err());
    }
    assert_eq!(link_of(Some(file["link"]["jws"].as_str().unwrap())), file["link"]["prev"].as_str().unwrap());
}
