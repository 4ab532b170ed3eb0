//! The load model of the test proxy (`e2e::aws_proxy`), each behaviour shown failing a naive
//! client (the SDK with retries off) on moto behind its own proxy: transaction conflicts,
//! per-partition throttling of a table and of an index, the 400 KB item, the 1 MB page, the
//! transaction's 100 actions and 4 MB, `BatchWriteItem`'s 25, the KMS quota and latency.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, Put, PutRequest, ScalarAttributeType, TransactWriteItem, WriteRequest,
};
use e2e::aws_proxy::AwsProxy;
use e2e::aws_proxy::model::{Latency, Model, Span, Throughput};
use e2e::{moto_endpoint, naive_clients, setup_clients};

/// A table keyed by `p` (partition) and `s` (sort), with an index `by-g` on `g`.
async fn table(direct: &Client) -> String {
    let name = format!("Model-{}", uuid::Uuid::new_v4().simple());
    let attr = |n: &str, t| AttributeDefinition::builder().attribute_name(n).attribute_type(t).build().unwrap();
    let key = |n: &str, t| KeySchemaElement::builder().attribute_name(n).key_type(t).build().unwrap();
    direct
        .create_table()
        .table_name(&name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("p", ScalarAttributeType::S))
        .attribute_definitions(attr("s", ScalarAttributeType::N))
        .attribute_definitions(attr("g", ScalarAttributeType::S))
        .key_schema(key("p", KeyType::Hash))
        .key_schema(key("s", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("by-g")
                .key_schema(key("g", KeyType::Hash))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    name
}

/// A proxy with only `model`'s behaviour, in front of moto, and a naive client through it.
async fn setup(model: Model) -> (AwsProxy, Client, aws_sdk_kms::Client, Client, String) {
    let moto = moto_endpoint();
    let proxy = AwsProxy::start_with(&moto, model).await;
    let (dynamodb, kms) = naive_clients(&proxy.endpoint).await;
    let (direct, _) = setup_clients(&moto).await;
    let name = table(&direct).await;
    (proxy, dynamodb, kms, direct, name)
}

fn item(p: &str, s: u32, padding: usize) -> std::collections::HashMap<String, AttributeValue> {
    std::collections::HashMap::from([
        ("p".to_owned(), AttributeValue::S(p.to_owned())),
        ("s".to_owned(), AttributeValue::N(s.to_string())),
        ("x".to_owned(), AttributeValue::S("x".repeat(padding))),
    ])
}

fn put(table: &str, item: std::collections::HashMap<String, AttributeValue>) -> TransactWriteItem {
    TransactWriteItem::builder().put(Put::builder().table_name(table).set_item(Some(item)).build().unwrap()).build()
}

fn code<E: ProvideErrorMetadata, R>(
    r: &Result<R, aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.as_service_error().and_then(|e| e.code()).unwrap_or("not a service error").to_owned(),
    }
}

fn only(model: impl FnOnce(&mut Model)) -> Model {
    let mut m = Model::NONE;
    model(&mut m);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_transactions_on_one_item_cancel_the_later_and_block_single_writes() {
    let slow = Latency { transaction: Span::ms(400.0, 400.0), ..Latency::ZERO };
    let (proxy, dynamodb, _, _, table) = setup(only(|m| {
        m.conflicts = true;
        m.latency = slow;
    }))
    .await;
    let first = {
        let (dynamodb, table) = (dynamodb.clone(), table.clone());
        tokio::spawn(async move {
            dynamodb.transact_write_items().transact_items(put(&table, item("hot", 1, 10))).send().await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A naive client: the same item, in another transaction, while the first is ongoing.
    let second = dynamodb
        .transact_write_items()
        .transact_items(put(&table, item("cold", 1, 10)))
        .transact_items(put(&table, item("hot", 1, 20)))
        .send()
        .await;
    let err = second.as_ref().unwrap_err().as_service_error().unwrap();
    let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) =
        err
    else {
        panic!("not cancelled: {err:?}")
    };
    let codes: Vec<_> = c.cancellation_reasons().iter().map(|r| r.code().unwrap_or_default().to_owned()).collect();
    assert_eq!(codes, ["None", "TransactionConflict"]);
    let single = dynamodb.put_item().table_name(&table).set_item(Some(item("hot", 1, 30))).send().await;
    assert_eq!(code(&single), "TransactionConflictException");
    // Another item is free all along.
    let elsewhere = dynamodb.put_item().table_name(&table).set_item(Some(item("cold", 2, 30))).send().await;
    assert_eq!(code(&elsewhere), "ok");
    assert!(first.await.unwrap().is_ok(), "the earlier transaction commits");
    // Once it has, the item takes writes again.
    let after = dynamodb.put_item().table_name(&table).set_item(Some(item("hot", 1, 40))).send().await;
    assert_eq!(code(&after), "ok");
    let stats = proxy.stats();
    assert_eq!((stats["TransactWriteItems"].conflicts, stats["PutItem"].conflicts), (1, 1), "{stats:?}");
}

/// `items` written all at once; how many were throttled, and the seconds from the first call to
/// the last answer (an upper bound on how long the partition's bucket refilled meanwhile).
async fn burst_of_writes(
    dynamodb: &Client,
    table: &str,
    items: Vec<std::collections::HashMap<String, AttributeValue>>,
) -> (usize, f64) {
    let started = Instant::now();
    let calls = items.into_iter().map(|i| dynamodb.put_item().table_name(table).set_item(Some(i)).send());
    let answers = futures::future::join_all(calls).await;
    let elapsed = started.elapsed().as_secs_f64();
    (answers.iter().filter(|r| code(r) == "ProvisionedThroughputExceededException").count(), elapsed)
}

/// The fewest of `calls` requests of `units` each a partition must throttle when its bucket
/// holds `rate` units (one second of burst) and refills at `rate` a second for `elapsed`
/// seconds. A loaded machine spreads a burst out, so the bound follows the measured time
/// instead of assuming every call arrived at once (which made these tests flaky under load).
fn fewest_throttled(calls: usize, units: f64, rate: f64, elapsed: f64) -> usize {
    let admitted = ((rate + rate * elapsed) / units).floor() as usize;
    calls.saturating_sub(admitted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_partition_serves_a_thousand_write_units_a_second_and_throttles_the_rest() {
    let (proxy, dynamodb, _, _, table) = setup(only(|m| m.throughput = Some(Throughput::AWS))).await;
    // 30 writes of 100 KB (100 units each) to one partition: 3,000 units where 1,000 fit at
    // once, plus 1,000 for every second the burst takes to arrive.
    let hot: Vec<_> = (0..30).map(|s| item("hot", s, 100 * 1024)).collect();
    let (throttled, elapsed) = burst_of_writes(&dynamodb, &table, hot).await;
    let fewest = fewest_throttled(30, 100.0, 1000.0, elapsed);
    assert!((fewest..=20).contains(&throttled), "throttled {throttled} of 30 in {elapsed:.2} s (at least {fewest})");
    assert!(throttled > 0, "3,000 units in {elapsed:.2} s to one partition");
    // The same writes over 30 partitions: none throttled.
    let spread: Vec<_> = (0..30).map(|s| item(&format!("p{s}"), s, 100 * 1024)).collect();
    assert_eq!(burst_of_writes(&dynamodb, &table, spread).await.0, 0);
    assert_eq!(proxy.stats()["PutItem"].throttled as usize, throttled);

    // Reads: 150 consistent reads of a 300 KB item (75 units each), where 3,000 units fit at
    // once, plus 3,000 a second.
    dynamodb.put_item().table_name(&table).set_item(Some(item("big", 0, 300 * 1024))).send().await.unwrap();
    let key = std::collections::HashMap::from([
        ("p".to_owned(), AttributeValue::S("big".into())),
        ("s".to_owned(), AttributeValue::N("0".into())),
    ]);
    let started = Instant::now();
    let reads = (0..150)
        .map(|_| dynamodb.get_item().table_name(&table).set_key(Some(key.clone())).consistent_read(true).send());
    let answers = futures::future::join_all(reads).await;
    let elapsed = started.elapsed().as_secs_f64();
    let throttled = answers.iter().filter(|r| code(r) == "ProvisionedThroughputExceededException").count();
    let fewest = fewest_throttled(150, 75.0, 3000.0, elapsed);
    assert!((fewest..=110).contains(&throttled), "throttled {throttled} of 150 reads in {elapsed:.2} s");
    assert!(throttled > 0, "11,250 units of reads in {elapsed:.2} s from one partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_index_partition_throttles_writes_spread_over_the_table() {
    let (_proxy, dynamodb, _, _, table) = setup(only(|m| m.throughput = Some(Throughput::AWS))).await;
    // 30 items in 30 table partitions, all in one index partition (`g`), as every audit event
    // of a month lands in one time bucket.
    let items: Vec<_> = (0..30)
        .map(|s| {
            let mut i = item(&format!("p{s}"), s, 100 * 1024);
            i.insert("g".into(), AttributeValue::S("2026-12".into()));
            i
        })
        .collect();
    let (throttled, elapsed) = burst_of_writes(&dynamodb, &table, items).await;
    let fewest = fewest_throttled(30, 100.0, 1000.0, elapsed);
    assert!((fewest..=20).contains(&throttled), "throttled {throttled} of 30 in {elapsed:.2} s (at least {fewest})");
    assert!(throttled > 0, "3,000 index units in {elapsed:.2} s to one index partition");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_transactions_and_batches_past_dynamodbs_limits_are_refused() {
    let (proxy, dynamodb, _, _, table) = setup(only(|m| m.limits = true)).await;
    // 400 KB (409,600 bytes) counts attribute names and values (p, s, x); moto refuses
    // items over 405,000 bytes by its own count, so the item that fits stays under both.
    let fits = 404_000;
    let ok = dynamodb.put_item().table_name(&table).set_item(Some(item("a", 1, fits))).send().await;
    assert_eq!(code(&ok), "ok");
    let over = dynamodb.put_item().table_name(&table).set_item(Some(item("a", 2, 400 * 1024))).send().await;
    assert_eq!(code(&over), "ValidationException");

    let actions = |n: u32, size: usize| (0..n).map(|s| put(&table, item("t", s, size))).collect::<Vec<_>>();
    let hundred = dynamodb.transact_write_items().set_transact_items(Some(actions(100, 10))).send().await;
    assert_eq!(code(&hundred), "ok");
    let hundred_one = dynamodb.transact_write_items().set_transact_items(Some(actions(101, 10))).send().await;
    assert_eq!(code(&hundred_one), "ValidationException");
    let four_mb = dynamodb.transact_write_items().set_transact_items(Some(actions(11, 390 * 1024))).send().await;
    assert_eq!(code(&four_mb), "ValidationException");

    let writes = |n: u32| {
        (0..n)
            .map(|s| {
                WriteRequest::builder()
                    .put_request(PutRequest::builder().set_item(Some(item("b", s, 10))).build().unwrap())
                    .build()
            })
            .collect::<Vec<_>>()
    };
    let batch = dynamodb.batch_write_item().request_items(&table, writes(25)).send().await;
    assert_eq!(code(&batch), "ok");
    let batch = dynamodb.batch_write_item().request_items(&table, writes(26)).send().await;
    assert_eq!(code(&batch), "ValidationException");
    assert_eq!(proxy.stats()["TransactWriteItems"].over_limit, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_answers_at_most_one_megabyte_and_a_one_page_reader_misses_the_rest() {
    let (_proxy, dynamodb, _, direct, table) = setup(only(|m| m.limits = true)).await;
    for s in 0..5 {
        direct.put_item().table_name(&table).set_item(Some(item("log", s, 300 * 1024))).send().await.unwrap();
    }
    let query = || {
        dynamodb
            .query()
            .table_name(&table)
            .key_condition_expression("p = :p")
            .expression_attribute_values(":p", AttributeValue::S("log".into()))
    };
    let page = query().send().await.unwrap();
    assert_eq!(page.items().len(), 3, "a naive reader of one page sees 3 of 5 items");
    let mut seen = page.items().len();
    let mut next = page.last_evaluated_key().cloned();
    while let Some(start) = next {
        let page = query().set_exclusive_start_key(Some(start)).send().await.unwrap();
        seen += page.items().len();
        next = page.last_evaluated_key().cloned();
    }
    assert_eq!(seen, 5, "a reader that follows LastEvaluatedKey sees them all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_signs_at_most_its_quota_a_second_and_throttles_the_rest() {
    let rate = 20.0;
    let (proxy, _, kms, _, _) = setup(only(|m| m.kms_per_second = Some(rate))).await;
    let key = adapter_aws::create_signing_key(&kms).await.unwrap();
    let started = Instant::now();
    let signs = (0..60).map(|i| {
        kms.sign()
            .key_id(&key)
            .message(aws_sdk_kms::primitives::Blob::new(vec![i as u8; 32]))
            .message_type(aws_sdk_kms::types::MessageType::Digest)
            .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
            .send()
    });
    let answers = futures::future::join_all(signs).await;
    let elapsed = started.elapsed().as_secs_f64();
    let signed = answers.iter().filter(|r| r.is_ok()).count();
    let throttled = answers
        .iter()
        .filter(|r| {
            r.as_ref().err().and_then(|e| e.as_service_error()).and_then(|e| e.code()) == Some("ThrottlingException")
        })
        .count();
    assert_eq!(signed + throttled, 60, "every refusal is a throttle");
    assert!(signed as f64 <= rate * (1.0 + elapsed) + 1.0, "{signed} signed in {elapsed:.2} s");
    assert_eq!(proxy.stats()["Sign"].throttled as usize, throttled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_waits_its_modelled_latency() {
    let latency = Latency { item: Span::ms(60.0, 80.0), ..Latency::ZERO };
    let (_proxy, dynamodb, _, _, table) = setup(only(|m| m.latency = latency)).await;
    let started = Instant::now();
    for s in 0..3 {
        dynamodb.put_item().table_name(&table).set_item(Some(item("a", s, 10))).send().await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(180), "3 writes of at least 60 ms: {:?}", started.elapsed());
}

/// moto behind the proxy (`tests/moto_server.py`) restores only the items a failed
/// transaction named: the items it wrote are gone again, an update is undone, and what was
/// committed before it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_transaction_on_moto_leaves_every_item_as_it_was() {
    let (_proxy, _, _, direct, table) = setup(Model::NONE).await;
    direct.put_item().table_name(&table).set_item(Some(item("kept", 1, 10))).send().await.unwrap();
    direct.put_item().table_name(&table).set_item(Some(item("old", 1, 10))).send().await.unwrap();
    let conditioned = Put::builder()
        .table_name(&table)
        .set_item(Some(item("kept", 1, 99)))
        .condition_expression("attribute_not_exists(p)")
        .build()
        .unwrap();
    let cancelled = direct
        .transact_write_items()
        .transact_items(put(&table, item("new", 1, 10)))
        .transact_items(put(&table, item("old", 1, 50)))
        .transact_items(TransactWriteItem::builder().put(conditioned).build())
        .send()
        .await;
    assert_eq!(code(&cancelled), "TransactionCanceledException");
    let get = |p: &str| {
        direct
            .get_item()
            .table_name(&table)
            .key("p", AttributeValue::S(p.into()))
            .key("s", AttributeValue::N("1".into()))
            .consistent_read(true)
            .send()
    };
    assert!(get("new").await.unwrap().item().is_none(), "the new item is gone");
    let padding = |p| async move { get(p).await.unwrap().item().unwrap()["x"].as_s().unwrap().len() };
    assert_eq!(padding("old").await, 10, "the overwrite is undone");
    assert_eq!(padding("kept").await, 10, "the committed item is as it was");
}

/// `tests/moto_server.py` answers DynamoDB's plain calls as JSON it writes itself, past moto's
/// Flask app and serializer; `tests/moto_server_check.py` sends each kind of call (every
/// attribute type, ReturnValues, capacity asked for, errors, a repeated token, 99 actions)
/// both ways and compares status, headers and bytes, and that each took the path it should.
#[test]
fn the_test_servers_shortcuts_answer_what_moto_itself_answers() {
    let out = std::process::Command::new(e2e::python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("moto_server_check.py"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
