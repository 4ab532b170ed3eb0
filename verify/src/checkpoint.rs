//! Signed checkpoints: what makes the audit log's chains hold against someone who can write
//! the database (an administrator can recompute every hash of a chain, but cannot sign).
//!
//! A checkpoint is a compact JWS (ES256, `typ` [`CHECKPOINT_TYPE`], a `kid` of the JWK Set)
//! whose claims ([`CheckpointClaims`]) carry the root of an RFC 6962 (Certificate
//! Transparency) Merkle tree over the chain heads that moved since the checkpoint before it,
//! and `prev`, the SHA-256 of that checkpoint's compact JWS ([`link_of`]), so checkpoints form
//! a chain of their own. A leaf is a head `(stream, seq, hash)`; its bytes are the canonical
//! JSON of `{"hash":…,"seq":…,"stream":…}` (see [`crate::chain`]), hashed as RFC 6962 does
//! (`SHA-256(0x00 || leaf)`, inner nodes `SHA-256(0x01 || left || right)`), leaves sorted by
//! stream. An export carries, per checkpoint, only its own streams' leaves with their
//! inclusion proofs (the RFC 6962 audit path, hex), so one user's export names no other user.
//! `tests/vectors/checkpoint.json` holds golden vectors from an independent implementation.

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{HashableLeaf, InclusionProof, RootHash};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::{GENESIS, canonical_json, hex};
use crate::check::{SignatureForm, verify_jws};
use crate::{KeyRing, Rejection};

/// The `typ` of a checkpoint JWS; a token (`support-access+jwt`) can never pass for one.
pub const CHECKPOINT_TYPE: &str = "support-access-checkpoint+jwt";

/// One chain head sealed by a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Leaf {
    pub stream: String,
    pub seq: u64,
    pub hash: String,
}

impl Leaf {
    /// The leaf's bytes in the tree: canonical JSON of its three members.
    pub fn encoding(&self) -> String {
        canonical_json(&serde_json::json!({ "stream": self.stream, "seq": self.seq, "hash": self.hash }))
    }
}

impl HashableLeaf for Leaf {
    fn hash<H: ct_merkle::digest::Update>(&self, hasher: &mut H) {
        hasher.update(self.encoding().as_bytes());
    }
}

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// The service that signed it (the tokens' issuer).
    pub iss: String,
    /// 1, 2, 3, … without a gap.
    pub seq: u64,
    /// When it was made (Unix seconds).
    pub iat: i64,
    /// [`link_of`] the previous checkpoint's JWS; [`GENESIS`] for the first.
    pub prev: String,
    /// The Merkle tree's root, lowercase hex.
    pub root: String,
    /// How many leaves the tree has.
    pub size: u64,
}

/// A leaf as an export carries it: where it sits in its checkpoint's tree, and the proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvenLeaf {
    #[serde(flatten)]
    pub leaf: Leaf,
    pub index: u64,
    /// The RFC 6962 audit path, leaf to root, each hash lowercase hex.
    pub proof: Vec<String>,
}

/// A tree built over a checkpoint's leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedTree {
    /// Lowercase hex.
    pub root: String,
    /// The leaves in tree order (sorted), each with its proof.
    pub leaves: Vec<ProvenLeaf>,
}

/// Builds the tree over `leaves` (sorted first, so the same heads always give the same root).
/// `leaves` must not be empty: a checkpoint with nothing new is not made.
pub fn seal_leaves(mut leaves: Vec<Leaf>) -> SealedTree {
    leaves.sort();
    let mut tree: MemoryBackedTree<Sha256, Leaf> = MemoryBackedTree::new();
    for leaf in &leaves {
        tree.push(leaf.clone());
    }
    let root = hex(tree.root().as_bytes());
    let leaves = leaves
        .into_iter()
        .enumerate()
        .map(|(i, leaf)| {
            let proof = tree.prove_inclusion(i);
            let proof = proof.as_bytes().chunks(32).map(hex).collect();
            ProvenLeaf { leaf, index: i as u64, proof }
        })
        .collect();
    SealedTree { root, leaves }
}

/// Why a checkpoint or one of its leaves does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint's signature does not hold ({0})")]
    Signature(Rejection),
    #[error("the leaf of {stream} #{seq} is not in the signed tree")]
    NotIncluded { stream: String, seq: u64 },
    #[error("{0} is not lowercase hex SHA-256")]
    BadHex(String),
}

/// Verifies a checkpoint's signature (ES256, `typ` [`CHECKPOINT_TYPE`], a key of `keys`) and
/// returns its claims. Either ECDSA form of the signature is accepted: checkpoints stored
/// before the service normalised `s` must keep verifying, and a checkpoint's twin seals the
/// same root (its link `prev` is over the bytes, so a swapped twin breaks the next link).
pub fn verify_checkpoint(jws: &str, keys: &KeyRing) -> Result<CheckpointClaims, CheckpointError> {
    verify_jws(jws, keys, CHECKPOINT_TYPE, SignatureForm::Either).map_err(CheckpointError::Signature)
}

/// Checks that `leaf` sits in the tree of `claims`.
pub fn verify_inclusion(claims: &CheckpointClaims, leaf: &ProvenLeaf) -> Result<(), CheckpointError> {
    let root = digest_of(&claims.root)?;
    let mut proof = Vec::with_capacity(leaf.proof.len() * 32);
    for h in &leaf.proof {
        proof.extend_from_slice(&digest_of(h)?);
    }
    let not_included = || CheckpointError::NotIncluded { stream: leaf.leaf.stream.clone(), seq: leaf.leaf.seq };
    let proof = InclusionProof::<Sha256>::try_from_bytes(proof).map_err(|_| not_included())?;
    let root = RootHash::<Sha256>::new(root.into(), claims.size);
    root.verify_inclusion(&leaf.leaf, leaf.index, &proof).map_err(|_| not_included())
}

/// What the next checkpoint's `prev` must be: the lowercase hex SHA-256 of this one's compact
/// JWS (or [`GENESIS`] before the first).
pub fn link_of(jws: Option<&str>) -> String {
    jws.map_or_else(|| GENESIS.to_owned(), |jws| hex(&Sha256::digest(jws.as_bytes())))
}

fn digest_of(text: &str) -> Result<[u8; 32], CheckpointError> {
    let bad = || CheckpointError::BadHex(text.chars().take(80).collect());
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(stream: &str, seq: u64) -> Leaf {
        Leaf { stream: stream.into(), seq, hash: hex(&Sha256::digest(format!("{stream}{seq}"))) }
    }

    fn claims(tree: &SealedTree) -> CheckpointClaims {
        CheckpointClaims {
            iss: "support-access".into(),
            seq: 1,
            iat: 0,
            prev: GENESIS.into(),
            root: tree.root.clone(),
            size: tree.leaves.len() as u64,
        }
    }

    /// RFC 6962 §2.1 written out for three leaves, independently of the crate:
    /// MTH = H(0x01 || H(0x01 || H(0x00||a) || H(0x00||b)) || H(0x00||c)).
    #[test]
    fn the_root_is_rfc_6962_over_the_canonical_leaves() {
        let leaves = vec![leaf("carol", 1), leaf("alice", 3), leaf("bob", 2)];
        let h = |prefix: u8, parts: &[&[u8]]| {
            let mut d = Sha256::new();
            d.update([prefix]);
            for p in parts {
                d.update(p);
            }
            d.finalize()
        };
        let mut sorted = leaves.clone();
        sorted.sort();
        let l: Vec<_> = sorted.iter().map(|x| h(0, &[x.encoding().as_bytes()])).collect();
        let left = h(1, &[&l[0], &l[1]]);
        let root = h(1, &[&left, &l[2]]);
        assert_eq!(seal_leaves(leaves).root, hex(&root));
        assert_eq!(leaf("a", 1).encoding(), format!(r#"{{"hash":"{}","seq":1,"stream":"a"}}"#, leaf("a", 1).hash));
    }

    #[test]
    fn every_leaf_proves_its_inclusion_and_no_other_leaf_does() {
        for n in 1..=9u64 {
            let tree = seal_leaves((0..n).map(|i| leaf(&format!("user-{i}"), i + 1)).collect());
            let c = claims(&tree);
            for l in &tree.leaves {
                verify_inclusion(&c, l).unwrap();
                let mut forged = l.clone();
                forged.leaf.seq += 1;
                assert!(verify_inclusion(&c, &forged).is_err(), "n={n}");
                let mut moved = l.clone();
                moved.index = (moved.index + 1) % n;
                assert!(n == 1 || verify_inclusion(&c, &moved).is_err(), "n={n}");
            }
        }
    }

    #[test]
    fn a_proof_with_bad_hex_is_an_error_not_a_panic() {
        let tree = seal_leaves(vec![leaf("a", 1), leaf("b", 1)]);
        let mut l = tree.leaves[0].clone();
        l.proof[0] = "zz".into();
        assert!(matches!(verify_inclusion(&claims(&tree), &l), Err(CheckpointError::BadHex(_))));
        l.proof.clear();
        assert!(verify_inclusion(&claims(&tree), &l).is_err());
    }

    #[test]
    fn the_first_checkpoint_links_to_genesis_and_later_ones_to_the_jws() {
        assert_eq!(link_of(None), GENESIS);
        assert_eq!(link_of(Some("a.b.c")), hex(&Sha256::digest(b"a.b.c")));
    }
}
