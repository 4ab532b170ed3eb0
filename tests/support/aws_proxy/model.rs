//! What DynamoDB and KMS do under load that moto does not, as a configurable model the proxy
//! applies to each call: latency, transaction conflicts, per-partition throughput, size limits
//! and the KMS request quota. Every figure is AWS's published one (cited where it is set);
//! where AWS publishes none, the choice is said.
//!
//! The model sees only the HTTP traffic. It learns each table's key schema (and its global
//! secondary indexes) from `DescribeTable`, sizes items as DynamoDB documents, and charges
//! capacity as DynamoDB bills it. What it cannot see it approximates, and says so here:
//! - `UpdateItem` and `DeleteItem` are charged 1 write unit (the stored item's size is not
//!   in the request), and write no index partition;
//! - a `Query` or `Scan` is charged for the items it returns, not for those its filter
//!   dropped, and cut at 1 MB of returned items;
//! - a transaction conflicts only with another transaction or a single-item write, which is
//!   what DynamoDB documents ("Transaction conflict handling").

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Uniformly between `min_ms` and `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Span {
    pub const ZERO: Self = Self { min_ms: 0.0, max_ms: 0.0 };

    pub const fn ms(min_ms: f64, max_ms: f64) -> Self {
        Self { min_ms, max_ms }
    }
}

/// Latency per kind of call, before the server behind the proxy answers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// `GetItem`, `PutItem`, `UpdateItem`, `DeleteItem`.
    pub item: Span,
    /// `TransactWriteItems`, `TransactGetItems`.
    pub transaction: Span,
    /// `Query`, `Scan`.
    pub query: Span,
    /// `BatchWriteItem`, `BatchGetItem`.
    pub batch: Span,
    /// KMS `Sign`, `Verify`, `GetPublicKey`.
    pub kms: Span,
}

impl Latency {
    pub const ZERO: Self =
        Self { item: Span::ZERO, transaction: Span::ZERO, query: Span::ZERO, batch: Span::ZERO, kms: Span::ZERO };

    /// DynamoDB: "consistent, single-digit millisecond response times at any scale"
    /// (aws.amazon.com/dynamodb); a transaction does twice the work of a write (it is billed
    /// two units per KB, "Managing complex workflows with DynamoDB transactions") and is
    /// taken as twice as slow. KMS publishes no latency figure; 5-15 ms per `Sign` is the
    /// choice here (an in-region HTTPS call to an HSM-backed service).
    pub const AWS: Self = Self {
        item: Span::ms(3.0, 8.0),
        transaction: Span::ms(8.0, 18.0),
        query: Span::ms(4.0, 10.0),
        batch: Span::ms(5.0, 12.0),
        kms: Span::ms(5.0, 15.0),
    };

    pub fn of(&self, op: &Op) -> Span {
        match op {
            Op::Dynamo(name) => match name.as_str() {
                "GetItem" | "PutItem" | "UpdateItem" | "DeleteItem" => self.item,
                "TransactWriteItems" | "TransactGetItems" => self.transaction,
                "Query" | "Scan" => self.query,
                "BatchWriteItem" | "BatchGetItem" => self.batch,
                _ => Span::ZERO,
            },
            Op::Kms(name) if matches!(name.as_str(), "Sign" | "Verify" | "GetPublicKey") => self.kms,
            _ => Span::ZERO,
        }
    }

    pub fn scaled(mut self, factor: f64) -> Self {
        for span in [&mut self.item, &mut self.transaction, &mut self.query, &mut self.batch, &mut self.kms] {
            span.min_ms *= factor;
            span.max_ms *= factor;
        }
        self
    }
}

/// Per-partition throughput: DynamoDB serves at most 3,000 read units and 1,000 write units
/// per second from one partition, on-demand or provisioned ("Partitions and data distribution";
/// "Best practices for designing and using partition keys effectively"). Each partition key
/// value (of a table, or of a global secondary index: a write to the table is a write to each
/// index partition it lands in) has a bucket holding `burst_seconds` of its rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub read_units: f64,
    pub write_units: f64,
    /// How much unused throughput a partition keeps: DynamoDB's burst capacity is a table's
    /// (up to 300 s of unused provisioned capacity), never above a partition's hard limit;
    /// one second here means a partition never serves more than its limit in any second.
    pub burst_seconds: f64,
}

impl Throughput {
    pub const AWS: Self = Self { read_units: 3000.0, write_units: 1000.0, burst_seconds: 1.0 };
}

/// Everything the proxy models; each part can be switched off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub latency: Latency,
    /// Overlapping transactions on one item: the later is cancelled (`TransactionConflict`);
    /// a single-item write to an item of an ongoing transaction fails
    /// (`TransactionConflictException`).
    pub conflicts: bool,
    pub throughput: Option<Throughput>,
    /// Items of at most 400 KB; transactions of at most 100 actions and 4 MB; `BatchWriteItem`
    /// of at most 25 requests; `Query` and `Scan` pages of at most 1 MB.
    pub limits: bool,
    /// KMS requests per second to `Sign` and `Verify` with ECC keys, shared by the account and
    /// region ("AWS KMS request quotas": cryptographic operations, ECC, 300 per second).
    pub kms_per_second: Option<f64>,
}

impl Model {
    /// DynamoDB and KMS as AWS documents them.
    pub const AWS: Self = Self {
        latency: Latency::AWS,
        conflicts: true,
        throughput: Some(Throughput::AWS),
        limits: true,
        kms_per_second: Some(300.0),
    };

    /// A plain pass-through: the server behind the proxy as it is.
    pub const NONE: Self =
        Self { latency: Latency::ZERO, conflicts: false, throughput: None, limits: false, kms_per_second: None };
}

pub const MAX_ITEM_BYTES: usize = 400 * 1024;
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
pub const MAX_TRANSACTION_ITEMS: usize = 100;
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_BATCH_WRITES: usize = 25;

/// A call, by the service and operation of its `X-Amz-Target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Dynamo(String),
    Kms(String),
    Other(String),
}

impl Op {
    pub fn from_target(target: Option<&str>) -> Self {
        let Some(target) = target else { return Self::Other("?".into()) };
        let (service, name) = target.rsplit_once('.').unwrap_or(("", target));
        match service {
            "DynamoDB_20120810" => Self::Dynamo(name.to_owned()),
            "TrentService" => Self::Kms(name.to_owned()),
            _ => Self::Other(name.to_owned()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Dynamo(n) | Self::Kms(n) | Self::Other(n) => n,
        }
    }
}

/// A table's primary key and its global secondary indexes' keys, from `DescribeTable`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schema {
    pub hash: String,
    pub range: Option<String>,
    /// index name -> (hash, range)
    pub indexes: HashMap<String, (String, Option<String>)>,
}

fn key_schema(v: &Value) -> (String, Option<String>) {
    let mut hash = String::new();
    let mut range = None;
    for k in v.as_array().into_iter().flatten() {
        let name = k["AttributeName"].as_str().unwrap_or_default().to_owned();
        match k["KeyType"].as_str() {
            Some("HASH") => hash = name,
            Some("RANGE") => range = Some(name),
            _ => {}
        }
    }
    (hash, range)
}

impl Schema {
    /// From a `DescribeTable` answer.
    pub fn from_description(answer: &Value) -> Option<Self> {
        let table = &answer["Table"];
        let (hash, range) = key_schema(&table["KeySchema"]);
        if hash.is_empty() {
            return None;
        }
        let mut indexes = HashMap::new();
        for index in table["GlobalSecondaryIndexes"].as_array().into_iter().flatten() {
            if let Some(name) = index["IndexName"].as_str() {
                indexes.insert(name.to_owned(), key_schema(&index["KeySchema"]));
            }
        }
        Some(Self { hash, range, indexes })
    }
}

/// The size of one attribute value as DynamoDB counts it ("Item sizes and formats").
fn value_size(v: &Value) -> usize {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else { return 0 };
    match kind.as_str() {
        "S" => inner.as_str().map_or(0, str::len),
        // Numbers: about one byte per two significant digits, plus one.
        "N" => inner.as_str().map_or(1, |n| n.trim_start_matches(['-', '0']).replace('.', "").len().div_ceil(2) + 1),
        "B" => inner.as_str().map_or(0, |b| b.len() * 3 / 4),
        "BOOL" | "NULL" => 1,
        "SS" | "NS" | "BS" => {
            inner.as_array().into_iter().flatten().map(|e| value_size(&json!({ kind.trim_end_matches('S'): e }))).sum()
        }
        "L" => 3 + inner.as_array().into_iter().flatten().map(|e| 1 + value_size(e)).sum::<usize>(),
        "M" => 3 + inner.as_object().map_or(0, |m| m.iter().map(|(k, e)| 1 + k.len() + value_size(e)).sum()),
        _ => 0,
    }
}

/// An item's size: the names of its attributes plus their values.
pub fn item_size(item: &Value) -> usize {
    item.as_object().map_or(0, |m| m.iter().map(|(k, v)| k.len() + value_size(v)).sum())
}

/// One item a call touches: its table, its primary key (as canonical JSON) and what it costs.
#[derive(Debug, Clone, PartialEq)]
pub struct Touch {
    pub table: String,
    pub key: String,
    /// The write units each partition is charged: its table's (twice in a transaction), then
    /// each index's it lands in (an index write is a standard write, billed as such).
    pub charges: Vec<(String, f64)>,
    pub bytes: usize,
}

impl Touch {
    /// What the write is billed: the table's units and every index's.
    pub fn write_units(&self) -> f64 {
        self.charges.iter().map(|(_, u)| u).sum()
    }
}

fn attr_json(item: &Map<String, Value>, name: &str) -> String {
    item.get(name).map(Value::to_string).unwrap_or_default()
}

/// The primary key of `item` (a full item or a key) in `table`, and the partitions it lands
/// in: its table's, then each index's whose key it carries.
pub fn locate(table: &str, schema: &Schema, item: &Value) -> (String, Vec<String>) {
    let empty = Map::new();
    let fields = item.as_object().unwrap_or(&empty);
    let pk = attr_json(fields, &schema.hash);
    let sk = schema.range.as_deref().map(|r| attr_json(fields, r)).unwrap_or_default();
    let mut partitions = vec![format!("{table}|{pk}")];
    // An index holds only the items that carry every attribute of its key (a sparse index).
    for (name, (hash, range)) in &schema.indexes {
        if fields.contains_key(hash) && range.as_ref().is_none_or(|r| fields.contains_key(r)) {
            partitions.push(format!("{table}/{name}|{}", attr_json(fields, hash)));
        }
    }
    (format!("{table}|{pk}|{sk}"), partitions)
}

fn units(bytes: usize, per: usize) -> f64 {
    bytes.div_ceil(per).max(1) as f64
}

/// The items a write call touches, in the order of the request; `schema` gives a table's keys.
pub fn writes(op: &str, body: &Value, schema: &dyn Fn(&str) -> Option<Schema>) -> Vec<Touch> {
    let mut out = Vec::new();
    let mut push = |table: &str, item: &Value, full: bool, factor: f64| {
        let Some(schema) = schema(table) else { return };
        let (key, mut partitions) = locate(table, &schema, item);
        if !full {
            partitions.truncate(1);
        }
        let bytes = if full { item_size(item) } else { 0 };
        let charges = partitions
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, if i == 0 { factor } else { 1.0 } * units(bytes, 1024)))
            .collect();
        out.push(Touch { table: table.to_owned(), key, charges, bytes });
    };
    let table = body["TableName"].as_str().unwrap_or_default();
    match op {
        "PutItem" => push(table, &body["Item"], true, 1.0),
        "UpdateItem" | "DeleteItem" => push(table, &body["Key"], false, 1.0),
        "TransactWriteItems" => {
            for action in body["TransactItems"].as_array().into_iter().flatten() {
                if let Some(put) = action.get("Put") {
                    push(put["TableName"].as_str().unwrap_or_default(), &put["Item"], true, 2.0);
                }
                for kind in ["Update", "Delete", "ConditionCheck"] {
                    if let Some(a) = action.get(kind) {
                        push(a["TableName"].as_str().unwrap_or_default(), &a["Key"], false, 2.0);
                    }
                }
            }
        }
        "BatchWriteItem" => {
            for (table, requests) in body["RequestItems"].as_object().into_iter().flatten() {
                for r in requests.as_array().into_iter().flatten() {
                    if let Some(put) = r.get("PutRequest") {
                        push(table, &put["Item"], true, 1.0);
                    } else if let Some(delete) = r.get("DeleteRequest") {
                        push(table, &delete["Key"], false, 1.0);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// Why a request is refused before it runs, as DynamoDB words it.
pub fn over_limit(op: &str, body: &Value, touches: &[Touch]) -> Option<String> {
    if touches.iter().any(|t| t.bytes > MAX_ITEM_BYTES) {
        return Some("Item size has exceeded the maximum allowed size".into());
    }
    match op {
        "TransactWriteItems" | "TransactGetItems" => {
            let n = body["TransactItems"].as_array().map_or(0, Vec::len);
            if n > MAX_TRANSACTION_ITEMS {
                return Some(format!(
                    "1 validation error detected: Value at 'transactItems' failed to satisfy constraint: Member must \
                     have length less than or equal to {MAX_TRANSACTION_ITEMS} (got {n})"
                ));
            }
            if touches.iter().map(|t| t.bytes).sum::<usize>() > MAX_TRANSACTION_BYTES {
                return Some("Transaction request cannot be larger than 4 MB".into());
            }
        }
        "BatchWriteItem" if touches.len() > MAX_BATCH_WRITES => {
            return Some(format!(
                "1 validation error detected: Value at 'requestItems' failed to satisfy constraint: Member must have \
                 length less than or equal to {MAX_BATCH_WRITES}"
            ));
        }
        _ => {}
    }
    None
}

/// The partition a read call reads (table or index, and the partition key's value), from its
/// `Key` or its `KeyConditionExpression`.
pub fn read_partition(op: &str, body: &Value, schema: &Schema) -> Option<String> {
    let table = body["TableName"].as_str()?;
    match op {
        "GetItem" => Some(format!("{table}|{}", attr_json(body["Key"].as_object()?, &schema.hash))),
        "Query" => {
            let (space, hash) = match body["IndexName"].as_str() {
                Some(index) => (format!("{table}/{index}"), schema.indexes.get(index)?.0.clone()),
                None => (table.to_owned(), schema.hash.clone()),
            };
            let names = body["ExpressionAttributeNames"].as_object();
            let expression = body["KeyConditionExpression"].as_str()?;
            // "#u = :u AND at_key < :k": the equality whose left side names the hash key.
            expression.split(" AND ").chain(expression.split(" and ")).find_map(|clause| {
                let (left, right) = clause.split_once('=')?;
                let left = left.trim().trim_start_matches('(');
                let left = names.and_then(|n| n.get(left)).and_then(Value::as_str).unwrap_or(left);
                (left == hash).then(|| {
                    let placeholder = right.trim().trim_end_matches(')');
                    format!("{space}|{}", body["ExpressionAttributeValues"][placeholder])
                })
            })
        }
        _ => None,
    }
}

/// Read units of a `GetItem` of an item of `bytes` (0: no item): 4 KB per unit, half for an
/// eventually consistent read.
pub fn get_item_units(request: &Value, bytes: usize) -> f64 {
    let factor = if request["ConsistentRead"].as_bool().unwrap_or(false) { 1.0 } else { 0.5 };
    factor * units(bytes, 4096)
}

/// Read units of an answer: 4 KB per unit, rounded up once per page for `Query` and `Scan`
/// and once per item otherwise; eventually consistent reads cost half, transactional twice.
pub fn read_units(op: &str, request: &Value, answer: &Value) -> f64 {
    let consistent = request["ConsistentRead"].as_bool().unwrap_or(false);
    let factor = if consistent { 1.0 } else { 0.5 };
    match op {
        "GetItem" => get_item_units(request, answer.get("Item").map_or(0, item_size)),
        "Query" | "Scan" => {
            let bytes: usize = answer["Items"].as_array().into_iter().flatten().map(item_size).sum();
            factor * units(bytes, 4096)
        }
        "TransactGetItems" => answer["Responses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| 2.0 * units(r.get("Item").map_or(0, item_size), 4096))
            .sum(),
        "BatchGetItem" => answer["Responses"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, items)| items.as_array().into_iter().flatten())
            .map(|i| factor * units(item_size(i), 4096))
            .sum(),
        _ => 0.0,
    }
}

/// A `Query` or `Scan` answer cut to DynamoDB's 1 MB page: the items up to 1 MB, with
/// `LastEvaluatedKey` at the last one kept (its table key, and its index key for an index).
/// `None` when the page is within the limit.
pub fn cut_page(request: &Value, answer: &Value, schema: &Schema) -> Option<Value> {
    let items = answer["Items"].as_array()?;
    let mut bytes = 0;
    let mut kept = 0;
    for item in items {
        bytes += item_size(item);
        if bytes > MAX_PAGE_BYTES {
            break;
        }
        kept += 1;
    }
    if kept == items.len() {
        return None;
    }
    let kept = kept.max(1);
    let last = items[kept - 1].as_object()?;
    let mut key = Map::new();
    let mut names = vec![Some(schema.hash.clone()), schema.range.clone()];
    if let Some((hash, range)) = request["IndexName"].as_str().and_then(|i| schema.indexes.get(i)) {
        names.push(Some(hash.clone()));
        names.push(range.clone());
    }
    for name in names.into_iter().flatten() {
        if let Some(v) = last.get(&name) {
            key.insert(name, v.clone());
        }
    }
    let mut cut = answer.clone();
    cut["Items"] = Value::Array(items[..kept].to_vec());
    cut["Count"] = json!(kept);
    cut["ScannedCount"] = json!(kept);
    cut["LastEvaluatedKey"] = Value::Object(key);
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audit_schema() -> Schema {
        Schema {
            hash: "stream".into(),
            range: Some("seq".into()),
            indexes: HashMap::from([("by-time".into(), ("time_bucket".into(), Some("at_key".into())))]),
        }
    }

    #[test]
    fn an_item_is_sized_as_dynamodb_counts_it() {
        assert_eq!(item_size(&json!({"a": {"S": "héllo"}})), 1 + 6);
        assert_eq!(item_size(&json!({"n": {"N": "12345"}})), 1 + 4);
        assert_eq!(item_size(&json!({"m": {"M": {"k": {"BOOL": true}}}})), 1 + 3 + 1 + 1 + 1);
    }

    #[test]
    fn a_write_lands_in_its_table_partition_and_each_index_partition_it_carries() {
        let body = json!({"TableName": "Audit", "Item": {"stream": {"S": "alice"}, "seq": {"N": "7"},
            "time_bucket": {"S": "2026-12"}, "at_key": {"S": "1#alice#7"}}});
        let touches = writes("PutItem", &body, &|_| Some(audit_schema()));
        assert_eq!(touches.len(), 1);
        let partitions: Vec<&str> = touches[0].charges.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(partitions, vec![r#"Audit|{"S":"alice"}"#, r#"Audit/by-time|{"S":"2026-12"}"#]);
        assert_eq!(touches[0].write_units(), 2.0, "one unit in the table, one in the index");
    }

    #[test]
    fn an_item_without_every_attribute_of_an_index_key_is_not_in_that_index() {
        let body = json!({"TableName": "Audit", "Item": {"stream": {"S": "alice"}, "seq": {"N": "7"}, "time_bucket": {"S": "2026-12"}}});
        let touches = writes("PutItem", &body, &|_| Some(audit_schema()));
        let partitions: Vec<&str> = touches[0].charges.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(partitions, vec![r#"Audit|{"S":"alice"}"#]);
        assert_eq!(touches[0].write_units(), 1.0, "the table's unit alone: the index is sparse");
    }

    #[test]
    fn a_query_reads_the_partition_its_key_condition_names() {
        let body = json!({"TableName": "Audit", "KeyConditionExpression": "#s = :s AND seq > :q",
            "ExpressionAttributeNames": {"#s": "stream"}, "ExpressionAttributeValues": {":s": {"S": "bob"}, ":q": {"N": "1"}}});
        assert_eq!(read_partition("Query", &body, &audit_schema()).as_deref(), Some(r#"Audit|{"S":"bob"}"#));
    }

    #[test]
    fn a_page_over_one_megabyte_is_cut_with_the_key_of_its_last_item() {
        let big = "x".repeat(300 * 1024);
        let items: Vec<Value> =
            (0..5).map(|i| json!({"stream": {"S": "a"}, "seq": {"N": i.to_string()}, "p": {"S": big}})).collect();
        let cut = cut_page(&json!({}), &json!({"Items": items, "Count": 5}), &audit_schema()).unwrap();
        assert_eq!(cut["Count"], 3);
        assert_eq!(cut["LastEvaluatedKey"], json!({"stream": {"S": "a"}, "seq": {"N": "2"}}));
    }
}
