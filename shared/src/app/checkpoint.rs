//! Sealing the audit log: a signed checkpoint over the chain heads that moved since the last
//! one (run on a schedule by the `checkpoint` Lambda, on a timer and on demand by local-api),
//! and the export that carries chains and checkpoints for `support-access verify`. The
//! format is `support_access_verify::checkpoint`'s.

use std::collections::HashSet;

use jsonwebtoken::jwk::JwkSet;
use serde_json::{Value, json};
use support_access_verify::checkpoint::{CHECKPOINT_TYPE, CheckpointClaims, link_of, seal_leaves};

use super::Services;
use crate::domain::{Timestamp, UserId};
use crate::ports::Signer;
use crate::ports::{ChainArchive, Checkpoint, SignerError, StoreError};
use crate::token::sign_jws;

use super::{ApiError, MAX_EXPORT_EVENTS};

/// Why no checkpoint was made. Nothing is half-written: the checkpoint and its leaves are
/// stored together, after signing.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Signer(#[from] SignerError),
}

/// Seals every chain head that moved since the latest checkpoint into a new one, signed by
/// `signer` and linked to the latest. Returns `None` when nothing moved (no empty checkpoint
/// is made). Two runs racing for the same `seq` cannot both land: the loser gets
/// [`StoreError::Conflict`] and the next run seals what it missed.
pub async fn make_checkpoint(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    issuer: &str,
    now: Timestamp,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let latest = archive.latest_checkpoint().await?;
    let heads = archive.unsealed_heads(latest.as_ref()).await?;
    if heads.is_empty() {
        return Ok(None);
    }
    let tree = seal_leaves(heads);
    let claims = CheckpointClaims {
        iss: issuer.to_owned(),
        seq: latest.as_ref().map_or(1, |c| c.claims.seq + 1),
        iat: now.unix(),
        prev: link_of(latest.as_ref().map(|c| c.jws.as_str())),
        root: tree.root,
        size: tree.leaves.len() as u64,
    };
    let jws = sign_jws(CHECKPOINT_TYPE, &claims, signer).await?;
    let checkpoint = Checkpoint { claims, jws };
    archive.append_checkpoint(&checkpoint, &tree.leaves).await?;
    Ok(Some(checkpoint))
}

/// `GET /audit/export`: one user's stream (or, without `user`, every stream, the
/// unattributed one included), oldest first, then the checkpoints that seal them, as the
/// JSON Lines `support-access verify` reads. Events keep their own `type`; checkpoints are
/// `{"type":"checkpoint","seq":…,"jws":…,"leaves":[…]}`, with only the exported streams'
/// leaves and their inclusion proofs.
pub async fn export_lines(services: &Services, user: Option<UserId>) -> Result<Vec<Value>, ApiError> {
    let streams = match &user {
        Some(user) => vec![user.as_str().to_owned()],
        None => services.chain_archive.streams().await?,
    };
    let too_long = || {
        ApiError::InvalidRequest(format!(
            "the export would hold more than {MAX_EXPORT_EVENTS} events; export one user at a time"
        ))
    };
    let mut lines = Vec::new();
    for stream in &streams {
        let mut after = 0;
        loop {
            let page = services.chain_archive.stream_events(stream, after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for event in page {
                lines.push(serde_json::to_value(&event).expect("an audit event serializes"));
            }
            if lines.len() > MAX_EXPORT_EVENTS {
                return Err(too_long());
            }
        }
    }
    for (checkpoint, leaves) in services.chain_archive.checkpoints(user.as_ref().map(|u| u.as_str())).await? {
        lines.push(json!({
            "type": "checkpoint",
            "seq": checkpoint.claims.seq,
            "jws": checkpoint.jws,
            "leaves": leaves,
        }));
    }
    Ok(lines)
}

/// The public keys that verify the checkpoints of `archive`: those of `signer` (which signs
/// new ones), and of `former` (keys that may have signed older ones, such as local-api's token
/// key before checkpoints had a key of their own) only those that signed a stored checkpoint,
/// so an export made before keeps verifying while no unused token key joins the set.
pub async fn checkpoint_keys(
    archive: &dyn ChainArchive,
    signer: &dyn Signer,
    former: &JwkSet,
) -> Result<JwkSet, CheckpointError> {
    let mut keys = signer.public_keys().await?;
    let signed: HashSet<String> = archive
        .checkpoints(None)
        .await?
        .iter()
        .filter_map(|(c, _)| jsonwebtoken::decode_header(&c.jws).ok()?.kid)
        .collect();
    for jwk in &former.keys {
        let kid = jwk.common.key_id.as_deref().unwrap_or_default();
        if signed.contains(kid) && !keys.keys.iter().any(|k| k.common.key_id == jwk.common.key_id) {
            keys.keys.push(jwk.clone());
        }
    }
    Ok(keys)
}

/// Seals pending heads now: the on-demand form (`local-api checkpoint`), with the ports'
/// own checkpoint signer, issuer and clock.
pub async fn checkpoint_now(services: &Services) -> Result<Option<Checkpoint>, CheckpointError> {
    make_checkpoint(
        services.chain_archive.as_ref(),
        services.checkpoint_signer.as_ref(),
        &services.policy.issuer,
        services.clock.now(),
    )
    .await
}
