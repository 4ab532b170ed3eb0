//! Whole chains and signed checkpoints on DynamoDB. The `Checkpoints` table holds two kinds
//! of item, both only ever put with `attribute_not_exists`:
//! - a checkpoint: `pk` = `checkpoint`, `sk` = its `seq` zero-padded to 20 digits, with its
//!   claims and JWS; put on condition that the one before it exists, so the sequence has no
//!   gap and two checkpointers racing cannot both land;
//! - a sealed head: `pk` = `leaf#<stream>`, `sk` = `<checkpoint seq padded>#<root>`, with its
//!   index and inclusion proof. Leaves are written before their checkpoint (a tree can hold
//!   more than one transaction's 100 items), so a leaf whose checkpoint never landed with the
//!   same root is an orphan of a failed run, and every read ignores it.
//!
//! A stream's leaves are read by their partition (a user's export); a checkpoint's leaves by
//! the index [`Tables::LEAVES_INDEX`] (`checkpoint`, `leaf_index`; every attribute), one
//! query per checkpoint however many streams it sealed (a full export). The index is built
//! from attributes every leaf always had, so DynamoDB backfills it for the leaves stored
//! before it existed: nothing to migrate.
//!
//! A full export lists the streams from `ChainHeads` a Scan page at a time, each page resumed
//! at the key of the last stream it reached (see [`ChainArchive::list_streams`]).
//!
//! Which heads moved since they were sealed is kept on the `ChainHeads` items themselves:
//! every write that moves a head sets `moved_shard` (0..[`MOVED_SHARDS`], by the stream's
//! hash) and, unless already set, `moved_at` ([`MarkMoved`], the one way to do it), keys of
//! the sparse index [`Tables::MOVED_INDEX`] (keys only). A checkpoint queries that index
//! (never a Scan), reads the heads consistently, and once it landed removes both attributes
//! from each head still at the sealed `seq` (a head that moved again stays marked).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, KeysAndAttributes, Put, TransactWriteItem};
use futures_util::{StreamExt, TryStreamExt};

use super::Tables;
use super::bundle::{MAX_BUNDLE_EVENTS, events_of_all};
use super::dynamodb::{DynamoStore, EXPIRY_MARKER_PREFIX, built, corrupt_head, head_of, n, s, unavailable};
use super::items::{Item, corrupt, get_n, get_s};
use shared::domain::AuditEvent;
use shared::ports::{
    ChainArchive, Checkpoint, CheckpointClaims, Leaf, MovedHead, MovedHeads, ProvenLeaf, StoreError, StreamsPage,
};

const CHECKPOINT_PK: &str = "checkpoint";
/// Items per transaction (DynamoDB's limit is 100).
const LEAVES_PER_TRANSACTION: usize = 100;
/// Transactions of leaves, reads of heads and unmarkings in flight at once.
const PARALLEL_CALLS: usize = 32;
/// Keys per `BatchGetItem` (DynamoDB's limit).
const KEYS_PER_BATCH_GET: usize = 100;
/// The most leaves one read of every checkpoint's leaves returns (see
/// [`ChainArchive::checkpoints`]): as many checkpoints as hold this many together, at least
/// one; four of the largest, about 4 MB, about what one export page holds.
const LEAVES_PER_READ: u64 = 4096;
/// Checkpoints whose leaves are read at once.
const PARALLEL_CHECKPOINTS: usize = 8;
/// How often a checkpoint's leaves are read again while the index shows fewer than it signs:
/// the index lags its table (a fraction of a second), and a checkpoint lands just after its
/// leaves. Past that, the leaves found are what the store holds (one deleted, which `verify`
/// names).
const INDEX_LAG_RETRIES: u32 = 3;

/// Partitions of the sparse index of moved heads: each index partition takes about 1,000
/// writes a second, and a head is written to the index only when it is marked or unmarked,
/// so 32 of them keep up with heads first moving at 32,000 a second.
pub const MOVED_SHARDS: u32 = 32;

/// The part of a head's `SET` that marks it moved (see [`MarkMoved`]).
pub(crate) const MOVED_SET: &str = "moved_shard = :moved_shard, moved_at = if_not_exists(moved_at, :moved_at)";

/// The index partition of `stream`'s head (any value would do, the checkpoint reads every
/// partition, but one stream keeps one).
fn moved_shard(stream: &str) -> u32 {
    stream_shard(stream, MOVED_SHARDS)
}

/// `stream`'s partition of `shards`: FNV-1a, stable across builds.
pub(crate) fn stream_shard(stream: &str, shards: u32) -> u32 {
    let hash = stream.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % u64::from(shards)) as u32
}

/// Marks a head moved, in the same update that moves it: every writer of a head (the direct
/// path's transaction, the sequencer's update) adds [`MOVED_SET`] to its `SET` and calls
/// this with the time of the newest event it appends. `moved_at` keeps the first move since
/// the last seal, so a head that keeps moving is not pushed back behind quieter ones.
pub(crate) trait MarkMoved: Sized {
    fn mark_moved(self, stream: &str, at: i64) -> Self;
}

macro_rules! mark_moved {
    ($($builder:ty),*) => {$(
        impl MarkMoved for $builder {
            fn mark_moved(self, stream: &str, at: i64) -> Self {
                self.expression_attribute_values(":moved_shard", n(i64::from(moved_shard(stream))))
                    .expression_attribute_values(":moved_at", n(at))
            }
        }
    )*};
}

mark_moved!(
    aws_sdk_dynamodb::types::builders::UpdateBuilder,
    aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder
);

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

    /// Every chain head (not the expiry markers that share the table): a Scan of the whole
    /// table, for the one-off marking of [`Self::mark_unsealed_heads`] alone.
    async fn heads(&self) -> Result<Vec<Leaf>, StoreError> {
        let mut heads = Vec::new();
        let mut start = None;
        loop {
            let scan = self
                .client
                .scan()
                .table_name(&self.tables.heads)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
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

    /// Marks moved every head past what a checkpoint sealed of it: once, after an upgrade
    /// from a version that did not mark heads (`local-api mark-unsealed-heads`; see
    /// docs/operators.md). A Scan and one query per head, as the checkpoint did before; safe
    /// to repeat and to run beside the writers (a head marked already keeps its `moved_at`).
    /// Returns how many it marked.
    pub async fn mark_unsealed_heads(&self, now: i64) -> Result<usize, StoreError> {
        let mut marked = 0;
        for head in self.heads().await? {
            if head.seq > self.last_sealed(&head.stream).await? {
                self.client
                    .update_item()
                    .table_name(&self.tables.heads)
                    .key("stream", s(&head.stream))
                    .update_expression(format!("SET {MOVED_SET}"))
                    .mark_moved(&head.stream, now)
                    .send()
                    .await
                    .map_err(unavailable)?;
                marked += 1;
            }
        }
        Ok(marked)
    }

    /// The leaves of `checkpoint` (those made with its root: orphans of a failed run left
    /// out), by leaf index: one query of [`Tables::LEAVES_INDEX`] (more for over 1 MB, about
    /// 1,000 leaves), asked again up to [`INDEX_LAG_RETRIES`] times while it finds fewer than
    /// the checkpoint signs.
    async fn leaves_of(&self, checkpoint: &Checkpoint) -> Result<Vec<ProvenLeaf>, StoreError> {
        let c = &checkpoint.claims;
        let mut attempt = 0;
        loop {
            let (mut leaves, mut start) = (Vec::new(), None);
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.tables.checkpoints)
                    .index_name(Tables::LEAVES_INDEX)
                    .key_condition_expression("#c = :c")
                    .expression_attribute_names("#c", "checkpoint")
                    .expression_attribute_values(":c", AttributeValue::N(c.seq.to_string()))
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in page.items() {
                    let (_, root, leaf) = leaf_of(item)?;
                    if root == c.root {
                        leaves.push(leaf);
                    }
                }
                match page.last_evaluated_key() {
                    Some(key) => start = Some(key.clone()),
                    None => break,
                }
            }
            if leaves.len() as u64 >= c.size || attempt == INDEX_LAG_RETRIES {
                leaves.sort_by_key(|l| l.index);
                return Ok(leaves);
            }
            attempt += 1;
            tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
        }
    }

    /// The oldest marked streams of one index partition, and whether more are left.
    async fn moved_of_shard(&self, shard: u32, limit: usize) -> Result<(Vec<String>, bool), StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.tables.heads)
            .index_name(Tables::MOVED_INDEX)
            .key_condition_expression("moved_shard = :shard")
            .expression_attribute_values(":shard", n(i64::from(shard)))
            .scan_index_forward(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(unavailable)?;
        let streams =
            page.items().iter().map(|i| Ok(str_of_head(i, "stream")?.to_owned())).collect::<Result<_, _>>()?;
        Ok((streams, page.last_evaluated_key().is_some()))
    }

    /// The items of `table` at `keys`, read consistently (`BatchGetItem`, 100 keys a call,
    /// 32 calls in flight; keys the service left unprocessed asked again after a pause), with
    /// the attributes `projection` names (`None`: all of them), in no particular order.
    pub(super) async fn batch_get(
        &self,
        table: &str,
        keys: Vec<Item>,
        projection: Option<&str>,
    ) -> Result<Vec<Item>, StoreError> {
        let names = [("#s", "stream"), ("#q", "seq"), ("#h", "hash")];
        // Collected first: a lazy map's closure would make this future not `Send` for every lifetime.
        let chunks: Vec<Vec<Item>> = keys.chunks(KEYS_PER_BATCH_GET).map(<[Item]>::to_vec).collect();
        let reads: Vec<_> = chunks
            .into_iter()
            .map(|chunk| async move {
                let mut request = KeysAndAttributes::builder().set_keys(Some(chunk)).consistent_read(true);
                if let Some(projection) = projection {
                    request = request.projection_expression(projection);
                    for (name, attribute) in names.iter().filter(|(name, _)| projection.contains(name)) {
                        request = request.expression_attribute_names(*name, *attribute);
                    }
                }
                let mut request = Some(request.build().map_err(|e| StoreError::Unavailable(e.to_string()))?);
                let (mut items, mut attempt) = (Vec::new(), 0u32);
                while let Some(keys) = request.take() {
                    let out =
                        self.client.batch_get_item().request_items(table, keys).send().await.map_err(unavailable)?;
                    items.extend(out.responses().and_then(|r| r.get(table)).into_iter().flatten().cloned());
                    request = out.unprocessed_keys().and_then(|u| u.get(table)).cloned();
                    if request.is_some() {
                        // Throttled keys: back off a little, as the SDK does for whole calls.
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(6))).await;
                    }
                }
                Ok::<_, StoreError>(items)
            })
            .collect();
        let items: Vec<Vec<Item>> =
            futures_util::stream::iter(reads).buffer_unordered(PARALLEL_CALLS).try_collect().await?;
        Ok(items.into_iter().flatten().collect())
    }

    /// The heads of `streams` read consistently, those still marked moved, with `moved_at`,
    /// less those `latest` sealed at their current `seq`.
    async fn marked_heads(
        &self,
        streams: &[String],
        latest: Option<&Checkpoint>,
    ) -> Result<Vec<MovedHead>, StoreError> {
        let keys = streams.iter().map(|stream| HashMap::from([("stream".to_owned(), s(stream))])).collect();
        let mut heads = Vec::new();
        for item in self.batch_get(&self.tables.heads, keys, Some("#s, #q, #h, moved_at")).await? {
            // Unmarked since the index was read (it lags its table): sealed already.
            let Some(moved_at) = item.get("moved_at") else { continue };
            let stream = str_of_head(&item, "stream")?;
            let (seq, hash) = head_of(&item).ok_or_else(|| corrupt_head(stream))?;
            let moved_at = moved_at.as_n().ok().and_then(|n| n.parse().ok()).ok_or_else(|| corrupt_head(stream))?;
            heads.push(MovedHead { head: Leaf { stream: stream.to_owned(), seq, hash }, moved_at });
        }
        let Some(latest) = latest else { return Ok(heads) };
        // A run that landed `latest` unmarks its heads after it landed: until it did, they
        // still look moved. Their leaves in `latest` say so (one key each, no query).
        let sk = format!("{}#{}", seq_key(latest.claims.seq), latest.claims.root);
        let keys = heads
            .iter()
            .map(|h| HashMap::from([("pk".to_owned(), s(&leaf_pk(&h.head.stream))), ("sk".to_owned(), s(&sk))]))
            .collect();
        let mut sealed = std::collections::HashSet::new();
        for item in self.batch_get(&self.tables.checkpoints, keys, Some("#s, #q")).await? {
            sealed.insert((str_of(&item, "stream")?.to_owned(), num_of(&item, "seq")?));
        }
        heads.retain(|h| !sealed.contains(&(h.head.stream.clone(), h.head.seq)));
        Ok(heads)
    }
}

fn str_of_head<'a>(item: &'a Item, name: &str) -> Result<&'a str, StoreError> {
    get_s(item, "chain heads table", name)
}

#[async_trait]
impl ChainArchive for DynamoStore {
    /// One consistent Scan page of `ChainHeads` (the stream names alone), from the key of
    /// `after`; the expiry markers that share the table are left out.
    async fn list_streams(&self, after: Option<&str>, limit: usize) -> Result<StreamsPage, StoreError> {
        let page = self
            .client
            .scan()
            .table_name(&self.tables.heads)
            .consistent_read(true)
            .projection_expression("#s")
            .expression_attribute_names("#s", "stream")
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .set_exclusive_start_key(after.map(|after| HashMap::from([("stream".to_owned(), s(after))])))
            .send()
            .await
            .map_err(unavailable)?;
        let mut streams = Vec::new();
        for item in page.items() {
            let stream = str_of_head(item, "stream")?;
            if !stream.starts_with(EXPIRY_MARKER_PREFIX) {
                streams.push(stream.to_owned());
            }
        }
        let next = page.last_evaluated_key().map(|key| str_of_head(key, "stream").map(str::to_owned)).transpose()?;
        Ok(StreamsPage { streams, next })
    }

    /// From `after_seq - MAX_BUNDLE_EVENTS` on: a bundle is keyed by its first `seq`, so the
    /// one holding `after_seq + 1` (an export page may end inside a bundle) is at most that far
    /// below, and this stays one `Query` (the items below `after_seq` it reads, 48 at most, are
    /// dropped).
    async fn stream_events(&self, stream: &str, after_seq: u64, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let from = after_seq.saturating_sub(MAX_BUNDLE_EVENTS as u64 - 1);
        let out = self
            .client
            .query()
            .table_name(&self.tables.audit)
            .key_condition_expression("#s = :s AND seq > :after")
            .expression_attribute_names("#s", "stream")
            .expression_attribute_values(":s", s(stream))
            .expression_attribute_values(":after", AttributeValue::N(from.to_string()))
            .scan_index_forward(true)
            .consistent_read(true)
            .limit(i32::try_from(limit.saturating_add((after_seq - from) as usize)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(unavailable)?;
        // A bundle holding `after_seq` holds events at or below it too; one holding more than
        // `limit` past it is cut (a read from the last event returned reads it again).
        let mut events = events_of_all(out.items())?;
        events.retain(|e| e.seq > after_seq);
        events.truncate(limit);
        Ok(events)
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.partition(CHECKPOINT_PK, false, Some(1)).await?.first().map(checkpoint_of).transpose()
    }

    /// One query of each index partition (in parallel) for its oldest marked streams (twice
    /// its share of `limit`), the oldest `limit` of them, then their heads read consistently
    /// (`BatchGetItem`, 100 a call), and their leaves in `latest` likewise: about
    /// `limit / 25 + 34` calls, whatever the table holds.
    async fn moved_heads(&self, latest: Option<&Checkpoint>, limit: usize) -> Result<MovedHeads, StoreError> {
        if limit == 0 {
            return Ok(MovedHeads::default());
        }
        let per_shard = limit.div_ceil(MOVED_SHARDS as usize) * 2;
        let shards =
            futures_util::future::try_join_all((0..MOVED_SHARDS).map(|shard| self.moved_of_shard(shard, per_shard)))
                .await?;
        let mut more = shards.iter().any(|(_, more)| *more);
        let streams: Vec<String> = shards.into_iter().flat_map(|(streams, _)| streams).collect();
        let mut heads = self.marked_heads(&streams, latest).await?;
        heads.sort_by(|a, b| (a.moved_at, &a.head.stream).cmp(&(b.moved_at, &b.head.stream)));
        if heads.len() > limit {
            heads.truncate(limit);
            more = true;
        }
        Ok(MovedHeads { heads, more })
    }

    /// One conditional `UpdateItem` a head (32 in flight): `REMOVE` the mark if the head is
    /// still at the sealed `seq`; a failed condition is a head that moved again, left marked.
    async fn unmark_sealed(&self, heads: &[Leaf]) -> Result<(), StoreError> {
        let unmark: Vec<_> = heads
            .iter()
            .map(|head| (head.stream.clone(), head.seq))
            .map(|(stream, seq)| async move {
                let sent = self
                    .client
                    .update_item()
                    .table_name(&self.tables.heads)
                    .key("stream", s(&stream))
                    .update_expression("REMOVE moved_shard, moved_at")
                    .condition_expression("#q = :q")
                    .expression_attribute_names("#q", "seq")
                    .expression_attribute_values(":q", n(seq as i64))
                    .send()
                    .await;
                match sent {
                    Ok(_) => Ok(()),
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
                    Err(e) => Err(unavailable(e)),
                }
            })
            .collect();
        futures_util::stream::iter(unmark).buffer_unordered(PARALLEL_CALLS).try_collect::<Vec<()>>().await?;
        Ok(())
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
        // The leaves in parallel transactions of conditional puts (not BatchWriteItem, whose
        // permission would also allow deletes): none is visible before the checkpoint item,
        // written last, lands.
        let chunks = leaves
            .chunks(LEAVES_PER_TRANSACTION)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|l| Ok(TransactWriteItem::builder().put(new(leaf_item(checkpoint, l))?).build()))
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let writes: Vec<_> = chunks
            .into_iter()
            .map(|items| async move {
                match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                    Ok(_) => Ok(()),
                    // A racing checkpointer wrote the very same leaves (same seq, same root) first.
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => {
                        Err(StoreError::Conflict(format!(
                            "checkpoint {} is being written by another run",
                            checkpoint.claims.seq
                        )))
                    }
                    Err(e) => Err(unavailable(e)),
                }
            })
            .collect();
        futures_util::stream::iter(writes).buffer_unordered(PARALLEL_CALLS).try_collect::<Vec<()>>().await?;
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
        let mut checkpoints: Vec<Checkpoint> = items.iter().map(checkpoint_of).collect::<Result<_, _>>()?;
        // As many as hold `LEAVES_PER_READ` leaves together (at least one), each checkpoint's
        // leaves by the index: never a query per stream.
        let mut leaves = 0;
        let keep = checkpoints.iter().position(|c| {
            leaves += c.claims.size;
            leaves > LEAVES_PER_READ
        });
        checkpoints.truncate(keep.map_or(checkpoints.len(), |keep| keep.max(1)));
        // Collected first: a lazy map's closure would make this future not `Send` for every lifetime.
        let reads: Vec<_> = checkpoints.iter().map(|c| self.leaves_of(c)).collect();
        let leaves: Vec<Vec<ProvenLeaf>> =
            futures_util::stream::iter(reads).buffered(PARALLEL_CHECKPOINTS).try_collect().await?;
        Ok(checkpoints.into_iter().zip(leaves).collect())
    }
}
