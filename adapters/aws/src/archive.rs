//! Whole chains and signed checkpoints on DynamoDB. The `Checkpoints` table holds two kinds
//! of item, both only ever put with `attribute_not_exists`:
//! - a checkpoint: `pk` = `checkpoint`, `sk` = its `seq` zero-padded to 20 digits, with its
//!   claims and JWS; put on condition that the one before it exists, so the sequence has no
//!   gap and two checkpointers racing cannot both land;
//! - a sealed head: `pk` = `leaf#<stream>`, `sk` = `<checkpoint seq padded>#<root>`, with its
//!   index and inclusion proof. Leaves are written before their checkpoint (a tree can hold
//!   more than one transaction's 100 items), so a leaf whose checkpoint never landed with the
//!   same root is an orphan of a failed run, and every read ignores it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};

use super::dynamodb::{DynamoStore, EXPIRY_MARKER_PREFIX, built, corrupt_head, head_of, s, unavailable};
use super::items::{AuditItem, Item, corrupt, get_n, get_s};
use shared::domain::AuditEvent;
use shared::ports::{ChainArchive, Checkpoint, CheckpointClaims, Leaf, ProvenLeaf, StoreError};

const CHECKPOINT_PK: &str = "checkpoint";
/// A checkpoint that has not been signed for this long before the latest one cannot have
/// missed a head: heads written earlier than `latest.iat - HEAD_LOOKBACK_SECONDS` were sealed
/// already. The margin covers clock skew between functions and transactions in flight.
const HEAD_LOOKBACK_SECONDS: i64 = 900;
/// Items per transaction (DynamoDB's limit is 100).
const LEAVES_PER_TRANSACTION: usize = 100;

fn seq_key(seq: u64) -> String {
    format!("{seq:020}")
}

fn leaf_pk(stream: &str) -> String {
    format!("leaf#{stream}")
}

/// What a malformed item of this table is reported as.
const TABLE: &str = "checkpoints table";

fn str_of<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, TABLE, name)
}

fn num_of(item: &Item, name: &str) -> Result<u64, StoreError> {
    u64::try_from(get_n(item, TABLE, name)?).map_err(|_| corrupt(TABLE, name))
}

/// A checkpoint item as the domain's checkpoint (a function: the orphan rule keeps `TryFrom`
/// between two types of other crates out of this one).
fn checkpoint_of(item: &Item) -> Result<Checkpoint, StoreError> {
    let claims: CheckpointClaims =
        serde_json::from_str(str_of(item, "claims")?).map_err(|_| corrupt(TABLE, "claims"))?;
    Ok(Checkpoint { claims, jws: str_of(item, "jws")?.to_owned() })
}

/// A leaf item as (checkpoint seq, root it was made for, the leaf).
fn leaf_of(item: &Item) -> Result<(u64, String, ProvenLeaf), StoreError> {
    let proof = str_of(item, "proof")?;
    let leaf = ProvenLeaf {
        leaf: Leaf {
            stream: str_of(item, "stream")?.to_owned(),
            seq: num_of(item, "seq")?,
            hash: str_of(item, "hash")?.to_owned(),
        },
        index: num_of(item, "leaf_index")?,
        proof: serde_json::from_str(proof).map_err(|_| corrupt(TABLE, "proof"))?,
    };
    Ok((num_of(item, "checkpoint")?, str_of(item, "root")?.to_owned(), leaf))
}

fn leaf_item(checkpoint: &Checkpoint, l: &ProvenLeaf) -> Item {
    let c = &checkpoint.claims;
    HashMap::from([
        ("pk".to_owned(), s(&leaf_pk(&l.leaf.stream))),
        ("sk".to_owned(), s(&format!("{}#{}", seq_key(c.seq), c.root))),
        ("stream".to_owned(), s(&l.leaf.stream)),
        ("seq".to_owned(), AttributeValue::N(l.leaf.seq.to_string())),
        ("hash".to_owned(), s(&l.leaf.hash)),
        ("leaf_index".to_owned(), AttributeValue::N(l.index.to_string())),
        ("proof".to_owned(), s(&serde_json::to_string(&l.proof).expect("hex strings serialize"))),
        ("checkpoint".to_owned(), AttributeValue::N(c.seq.to_string())),
        ("root".to_owned(), s(&c.root)),
    ])
}

impl DynamoStore {
    /// Every item of partition `pk` of the checkpoints table, in sort-key order (`forward`)
    /// or reversed, at most `limit` when given.
    async fn partition(&self, pk: &str, forward: bool, limit: Option<usize>) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.tables.checkpoints)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .scan_index_forward(forward)
                .consistent_read(true)
                .set_limit(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            out.extend(page.items().iter().cloned());
            if limit.is_some_and(|l| out.len() >= l) {
                out.truncate(limit.unwrap_or(usize::MAX));
                return Ok(out);
            }
            match page.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => return Ok(out),
            }
        }
    }

    /// One query of partition `pk` of the checkpoints table: the items with `sk >= from`
    /// (and `sk <= to`, when given) in sort-key order, at most `limit` (DynamoDB may answer
    /// fewer: at most 1 MB), from `start`; and the key to go on from, if more may follow.
    async fn range(
        &self,
        pk: &str,
        from: &str,
        to: Option<&str>,
        limit: Option<usize>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let query = self
            .client
            .query()
            .table_name(&self.tables.checkpoints)
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":from", s(from))
            .consistent_read(true)
            .set_limit(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .set_exclusive_start_key(start);
        let query = match to {
            Some(to) => query
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":to", s(to)),
            None => query.key_condition_expression("pk = :pk AND sk >= :from"),
        };
        let page = query.send().await.map_err(unavailable)?;
        Ok((page.items().to_vec(), page.last_evaluated_key().cloned()))
    }

    /// The checkpoint at `seq`, if it exists.
    async fn checkpoint_at(&self, seq: u64) -> Result<Option<Checkpoint>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.tables.checkpoints)
            .key("pk", s(CHECKPOINT_PK))
            .key("sk", s(&seq_key(seq)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item().map(checkpoint_of).transpose()
    }

    /// The leaves of `stream` past checkpoint `after` whose checkpoint landed (same seq,
    /// same root), oldest first, read `limit` at a time until one landed or none is left (a
    /// read of orphans alone, rare, would otherwise look like the end).
    async fn committed_leaves(
        &self,
        stream: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(Checkpoint, Vec<ProvenLeaf>)>, StoreError> {
        let (mut out, mut start) = (Vec::new(), None);
        loop {
            let (items, next) = self.range(&leaf_pk(stream), &seq_key(after + 1), None, Some(limit), start).await?;
            for item in &items {
                let (seq, root, leaf) = leaf_of(item)?;
                if let Some(checkpoint) = self.checkpoint_at(seq).await?
                    && checkpoint.claims.root == root
                {
                    out.push((checkpoint, vec![leaf]));
                }
            }
            match next {
                Some(key) if out.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    /// The last `seq` a landed checkpoint sealed of `stream` (0 if none).
    async fn last_sealed(&self, stream: &str) -> Result<u64, StoreError> {
        // Newest first; orphans (rare: a failed run) are skipped until a landed one is found.
        for item in self.partition(&leaf_pk(stream), false, Some(8)).await? {
            let (seq, root, leaf) = leaf_of(&item)?;
            if self.checkpoint_at(seq).await?.is_some_and(|c| c.claims.root == root) {
                return Ok(leaf.leaf.seq);
            }
        }
        Ok(0)
    }

    /// Every chain head (not the expiry markers that share the table), optionally only those
    /// that moved at or after `since` (Unix seconds).
    async fn heads(&self, since: Option<i64>) -> Result<Vec<Leaf>, StoreError> {
        let mut heads = Vec::new();
        let mut start = None;
        loop {
            let mut scan = self
                .client
                .scan()
                .table_name(&self.tables.heads)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some(since) = since {
                scan = scan
                    .filter_expression("#at >= :since")
                    .expression_attribute_names("#at", "at")
                    .expression_attribute_values(":since", AttributeValue::N(since.to_string()));
            }
            let page = scan.send().await.map_err(unavailable)?;
            for item in page.items() {
                let stream = get_s(item, "chain heads table", "stream")?;
                if stream.starts_with(EXPIRY_MARKER_PREFIX) {
                    continue;
                }
                let (seq, hash) = head_of(item).ok_or_else(|| corrupt_head(stream))?;
                heads.push(Leaf { stream: stream.to_owned(), seq, hash });
            }
            match page.last_evaluated_key() {
                Some(key) => start = Some(key.clone()),
                None => break,
            }
        }
        heads.sort();
        Ok(heads)
    }
}

#[async_trait]
impl ChainArchive for DynamoStore {
    async fn streams(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.heads(None).await?.into_iter().map(|h| h.stream).collect())
    }

    async fn stream_events(&self, stream: &str, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.tables.audit)
            .key_condition_expression("#s = :s AND seq > :after")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(":s", s(stream))
            .expression_attribute_values(":after", AttributeValue::N(after_seq.to_string()))
            .scan_index_forward(true)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(unavailable)?;
        out.items().iter().map(|i| AuditItem::try_from(i).map(|a| a.0)).collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.partition(CHECKPOINT_PK, false, Some(1)).await?.first().map(checkpoint_of).transpose()
    }

    async fn unsealed_heads(&self, latest: Option<&Checkpoint>) -> Result<Vec<Leaf>, StoreError> {
        let since = latest.map(|c| c.claims.iat - HEAD_LOOKBACK_SECONDS);
        let mut unsealed = Vec::new();
        for head in self.heads(since).await? {
            if head.seq > self.last_sealed(&head.stream).await? {
                unsealed.push(head);
            }
        }
        Ok(unsealed)
    }

    async fn append_checkpoint(&self, checkpoint: &Checkpoint, leaves: &[ProvenLeaf]) -> Result<(), StoreError> {
        let new = |item: Item| {
            built(
                Put::builder()
                    .table_name(&self.tables.checkpoints)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build(),
            )
        };
        for chunk in leaves.chunks(LEAVES_PER_TRANSACTION) {
            let items = chunk
                .iter()
                .map(|l| Ok(TransactWriteItem::builder().put(new(leaf_item(checkpoint, l))?).build()))
                .collect::<Result<Vec<_>, StoreError>>()?;
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => {}
                // A racing checkpointer wrote the very same leaves (same seq, same root) first.
                Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                    return Err(StoreError::Conflict(format!(
                        "checkpoint {} is being written by another run",
                        checkpoint.claims.seq
                    )));
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        let c = &checkpoint.claims;
        let mut items = vec![
            TransactWriteItem::builder()
                .put(new(HashMap::from([
                    ("pk".to_owned(), s(CHECKPOINT_PK)),
                    ("sk".to_owned(), s(&seq_key(c.seq))),
                    ("claims".to_owned(), s(&serde_json::to_string(c).expect("claims serialize"))),
                    ("jws".to_owned(), s(&checkpoint.jws)),
                ]))?)
                .build(),
        ];
        if c.seq > 1 {
            let previous = ConditionCheck::builder()
                .table_name(&self.tables.checkpoints)
                .key("pk", s(CHECKPOINT_PK))
                .key("sk", s(&seq_key(c.seq - 1)))
                .condition_expression("attribute_exists(pk)");
            items.push(TransactWriteItem::builder().condition_check(built(previous.build())?).build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                Err(StoreError::Conflict(format!("checkpoint {} is taken or out of turn", c.seq)))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn checkpoints(
        &self,
        stream: Option<&str>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(Checkpoint, Vec<ProvenLeaf>)>, StoreError> {
        if let Some(stream) = stream {
            return self.committed_leaves(stream, after, limit).await;
        }
        let (items, _) = self.range(CHECKPOINT_PK, &seq_key(after + 1), None, Some(limit), None).await?;
        let checkpoints: Vec<Checkpoint> = items.iter().map(checkpoint_of).collect::<Result<_, _>>()?;
        let (Some(first), Some(last)) = (checkpoints.first(), checkpoints.last()) else { return Ok(Vec::new()) };
        let (from, to) = (seq_key(first.claims.seq), format!("{}#~", seq_key(last.claims.seq)));
        let roots: HashMap<u64, &str> = checkpoints.iter().map(|c| (c.claims.seq, c.claims.root.as_str())).collect();
        // Each stream's leaves of these checkpoints alone (the sort key starts with the
        // checkpoint's seq; a root is hex, below `~`), orphans left out.
        let mut leaves: BTreeMap<u64, Vec<ProvenLeaf>> = BTreeMap::new();
        for stream in self.streams().await? {
            let mut start = None;
            loop {
                let (items, next) = self.range(&leaf_pk(&stream), &from, Some(&to), None, start).await?;
                for item in &items {
                    let (seq, root, leaf) = leaf_of(item)?;
                    if roots.get(&seq) == Some(&root.as_str()) {
                        leaves.entry(seq).or_default().push(leaf);
                    }
                }
                match next {
                    Some(key) => start = Some(key),
                    None => break,
                }
            }
        }
        Ok(checkpoints
            .into_iter()
            .map(|checkpoint| {
                let mut mine = leaves.remove(&checkpoint.claims.seq).unwrap_or_default();
                mine.sort_by_key(|l| l.index);
                (checkpoint, mine)
            })
            .collect())
    }
}
