//! AWS's limits, enforced by the local stack as AWS enforces them (docs/limits.md): the
//! emulator (moto, and the launcher's `Limits` middleware for what moto lets through) for
//! every client, admin or function; the local API Gateway and Lambda for the functions; and
//! what our own code answers at each limit a user can reach.

use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, WriteRequest};
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use eventfold_local::httpc::Http;
use eventfold_local::{EsmOptions, event_handler};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{
    assert_gateway, assert_problem, events_table, quiet_stack, rw_token, stack_with, unique_tenant,
};

const KIB: usize = 1024;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// The service error code of an SDK error (what an SDK reads from AWS's answer).
fn code<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> String {
    e.code().unwrap_or_default().to_owned()
}

/// The service error message of an SDK error.
fn message<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> String {
    e.message().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_refuses_oversized_keys_batches_and_transactions_for_every_client() {
    let stack = quiet_stack().await;
    let table = events_table(&stack);
    let admin = aws_sdk_dynamodb::Client::new(&stack.sdk);
    // The command API's own identity, through the IAM proxy: the same refusal.
    let function = aws_sdk_dynamodb::Client::new(&stack.function_sdk("CommandApiFunction"));
    for client in [&admin, &function] {
        let e = client
            .get_item()
            .table_name(&table)
            .key("stream_id", s("h".repeat(2049)))
            .key("version", AttributeValue::N("1".into()))
            .send()
            .await
            .expect_err("a hash key over 2048 bytes");
        let e = e.into_service_error();
        assert_eq!(code(&e), "ValidationException");
        assert!(message(&e).contains("Size of hashkey"), "{}", message(&e));
    }
    let tenant = unique_tenant("limits");
    let item = |v: usize, blob: &str| {
        [
            ("stream_id".to_owned(), s(format!("{tenant}/Blob/x"))),
            ("version".to_owned(), AttributeValue::N(v.to_string())),
            ("blob".to_owned(), s(blob)),
        ]
        .into_iter()
        .collect::<std::collections::HashMap<_, _>>()
    };
    let writes: Vec<WriteRequest> = (1..=26)
        .map(|v| {
            let put = PutRequest::builder()
                .set_item(Some(item(v, "b")))
                .build()
                .expect("put");
            WriteRequest::builder().put_request(put).build()
        })
        .collect();
    let e = admin
        .batch_write_item()
        .request_items(&table, writes)
        .send()
        .await
        .expect_err("26 writes");
    let e = e.into_service_error();
    assert_eq!(code(&e), "ValidationException");
    assert!(message(&e).contains("Too many items"), "{}", message(&e));
    // Eleven items of 390 KB: each under 400 KB, together over the 4 MB of a transaction.
    let blob = "t".repeat(390 * KIB);
    let puts: Vec<TransactWriteItem> = (1..=11)
        .map(|v| {
            let put = Put::builder()
                .table_name(&table)
                .set_item(Some(item(v, &blob)))
                .build()
                .expect("put");
            TransactWriteItem::builder().put(put).build()
        })
        .collect();
    let e = admin
        .transact_write_items()
        .set_transact_items(Some(puts.clone()))
        .send()
        .await
        .expect_err("over 4 MB");
    assert_eq!(code(&e.into_service_error()), "ValidationException");
    // Ten fit; the refused transaction wrote nothing.
    let stored = admin
        .query()
        .table_name(&table)
        .key_condition_expression("stream_id = :s")
        .expression_attribute_values(":s", s(format!("{tenant}/Blob/x")))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("count");
    assert_eq!(stored.count, 0, "a refused transaction writes nothing");
    admin
        .transact_write_items()
        .set_transact_items(Some(puts[..10].to_vec()))
        .send()
        .await
        .expect("3.9 MB fits");
}

/// moto cuts a Query at 1 MB and says where to go on; `store::a_history_spanning_several_
/// query_pages_loads_completely` shows our store follows the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_page_stops_at_1_mb_with_a_last_evaluated_key() {
    let stack = quiet_stack().await;
    let table = events_table(&stack);
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let stream = format!("{}/Blob/pages", unique_tenant("pages"));
    let blob = "p".repeat(300 * KIB);
    for v in 1..=5 {
        client
            .put_item()
            .table_name(&table)
            .item("stream_id", s(&stream))
            .item("version", AttributeValue::N(v.to_string()))
            .item("blob", s(&blob))
            .send()
            .await
            .expect("put");
    }
    let (mut seen, mut pages, mut start) = (0, 0, None);
    loop {
        let page = client
            .query()
            .table_name(&table)
            .key_condition_expression("stream_id = :s")
            .expression_attribute_values(":s", s(&stream))
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query");
        let bytes: usize = page.items().len() * blob.len();
        assert!(bytes <= 1024 * KIB, "a page of {bytes} bytes");
        (seen, pages) = (seen + page.items().len(), pages + 1);
        match page.last_evaluated_key {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    assert_eq!(seen, 5);
    assert!(pages >= 2, "1.5 MB in {pages} page(s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_and_sns_refuse_oversized_messages_and_batches_as_aws_does() {
    let stack = quiet_stack().await;
    // SQS: body and attributes together over 1 MiB, sent as the stream publisher (its
    // on-failure destination queue).
    let sqs = aws_sdk_sqs::Client::new(&stack.function_sdk("StreamPublisherFunction"));
    let failures = stack.queue_url("StreamFailureQueue");
    let attribute = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value("a".repeat(100))
        .build()
        .expect("attribute");
    let e = sqs
        .send_message()
        .queue_url(&failures)
        .message_body("m".repeat(1024 * KIB - 10))
        .message_attributes("why", attribute)
        .send()
        .await
        .expect_err("over 1 MiB with its attribute");
    let e = e.into_service_error();
    assert_eq!(code(&e), "InvalidParameterValue");
    assert!(
        message(&e).contains("shorter than 1048576"),
        "{}",
        message(&e)
    );
    // In UTF-8 bytes, not characters: 400 Ki three-byte characters are 1.2 MB.
    let e = sqs
        .send_message()
        .queue_url(&failures)
        .message_body("€".repeat(400 * KIB))
        .send()
        .await
        .expect_err("1.2 MB of UTF-8");
    assert_eq!(code(&e.into_service_error()), "InvalidParameterValue");
    let admin = aws_sdk_sqs::Client::new(&stack.sdk);
    let entries: Vec<_> = (0..11)
        .map(|i| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(format!("handle-{i}"))
                .build()
                .expect("entry")
        })
        .collect();
    let e = admin
        .delete_message_batch()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .set_entries(Some(entries))
        .send()
        .await
        .expect_err("11 entries");
    assert!(
        e.into_service_error()
            .is_too_many_entries_in_batch_request(),
        "the SDK reads AWS's own error"
    );

    // SNS: a message's attributes count; a batch's messages count together.
    let sns = aws_sdk_sns::Client::new(&stack.function_sdk("StreamPublisherFunction"));
    let topic = stack.template.arn("EventsTopic").expect("the events topic");
    let e = sns
        .publish()
        .topic_arn(&topic)
        .message("m".repeat(256 * KIB - 10))
        .message_group_id("g")
        .message_deduplication_id(uuid::Uuid::now_v7().to_string())
        .message_attributes(
            "event_type",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("x".repeat(100))
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect_err("over 256 KiB with its attribute");
    assert!(e.into_service_error().is_invalid_parameter_exception());
    let entries: Vec<_> = (0..2)
        .map(|i| {
            PublishBatchRequestEntry::builder()
                .id(i.to_string())
                .message("m".repeat(200 * KIB))
                .message_group_id("g")
                .message_deduplication_id(uuid::Uuid::now_v7().to_string())
                .build()
                .expect("entry")
        })
        .collect();
    let e = sns
        .publish_batch()
        .topic_arn(&topic)
        .set_publish_batch_request_entries(Some(entries))
        .send()
        .await
        .expect_err("400 KB in one batch");
    assert!(e.into_service_error().is_batch_request_too_long_exception());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_bodies_past_each_limit_get_the_answer_aws_gives_and_write_nothing() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("limits");
    let token = rw_token(&tenant);
    let command = |blob: String| {
        json!({"aggregate_type": "Order", "aggregate_id": "o-1", "type": "AddItem",
               "data": {"sku": blob, "quantity": 1, "unit_price": 1}})
    };
    // The event would pass DynamoDB's 400 KB item: the function refuses it up front.
    let big_event = http
        .post(COMMANDS, Some(&token), &command("a".repeat(300 * KIB)))
        .await
        .expect("post");
    assert_problem(&big_event, 413, "payload-too-large");
    // Over Lambda's 6 MB once in the event, under the HTTP API's 10 MB: Lambda refuses
    // the invocation, API Gateway answers 500 (the function never runs).
    let past_lambda = http
        .post(COMMANDS, Some(&token), &command("b".repeat(7 * 1024 * KIB)))
        .await
        .expect("post");
    assert_gateway(&past_lambda, 500, "Internal Server Error");
    // A body of 3.5 MB of quotes is 7 MB once escaped into the event's body string.
    let escaped = http
        .post(COMMANDS, Some(&token), &command("\"".repeat(3584 * KIB)))
        .await
        .expect("post");
    assert_gateway(&escaped, 500, "Internal Server Error");
    // Over the HTTP API's 10 MB: its own 413.
    let past_gateway = http
        .post(
            COMMANDS,
            Some(&token),
            &command("c".repeat(11 * 1024 * KIB)),
        )
        .await
        .expect("post");
    assert_gateway(&past_gateway, 413, "Request Entity Too Large");
    let history = http
        .get("/api/v1/events/aggregates/Order/o-1", Some(&token))
        .await
        .expect("get");
    assert_problem(&history, 404, "not-found");
}

const COMMANDS: &str = "/api/v1/events/commands";

/// A batch whose invocation runs past the function's `Timeout` (the template's 10 s) is
/// stopped there, as Lambda stops it, and comes back: the same message is delivered again
/// and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_times_out_is_stopped_and_retried() {
    const PROJECTOR: &str = "ProjectorFunction";
    let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
    let (calls, finished) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let handler = {
        let (bodies, calls, finished) = (bodies.clone(), calls.clone(), finished.clone());
        event_handler(move |event: Value| {
            let (bodies, calls, finished) = (bodies.clone(), calls.clone(), finished.clone());
            async move {
                bodies
                    .lock()
                    .expect("bodies")
                    .push(event["Records"][0]["body"].clone());
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    finished.store(true, Ordering::SeqCst);
                }
                Ok::<_, String>(json!({"batchItemFailures": []}))
            }
        })
    };
    let stack = stack_with(EsmOptions {
        functions: Some([PROJECTOR.to_owned()].into()),
        handler_overrides: [(PROJECTOR.to_owned(), handler)].into(),
        sqs_visibility_timeout: Some(Duration::from_secs(1)),
        idle_poll: Duration::from_millis(50),
        report_every: None,
        ..EsmOptions::default()
    })
    .await;
    let timeout = stack
        .template
        .functions()
        .into_iter()
        .find(|f| f.logical_id == PROJECTOR)
        .expect("the projector")
        .timeout;
    aws_sdk_sqs::Client::new(&stack.sdk)
        .send_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .message_body(r#"{"probe":"timeout"}"#)
        .message_group_id("g")
        .message_deduplication_id(uuid::Uuid::now_v7().to_string())
        .send()
        .await
        .expect("send");
    let started = Instant::now();
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(timeout + 20),
            "no retry within {}s",
            timeout + 20
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(timeout),
        "retried only after the {timeout}s timeout"
    );
    let bodies = bodies.lock().expect("bodies").clone();
    assert_eq!(bodies[0], bodies[1], "the same message, again");
    let stats = stack.esm_stats();
    let projector = &stats[PROJECTOR];
    assert!(projector.function_errors >= 1, "{projector:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !finished.load(Ordering::SeqCst),
        "the timed-out invocation was stopped, not left running"
    );
}

/// The size of a function's answer to API Gateway, less its small envelope: the body as the
/// Lambda runtime writes it, a JSON string (escapes included).
fn answered_bytes(reply: &eventfold_local::httpc::Reply) -> usize {
    let body = String::from_utf8_lossy(&reply.body);
    serde_json::to_string(&body).expect("json").len()
}

/// Pages through `first` (a list URL with `limit=1000`) by its `next` cursor: every page is
/// 200, under Lambda's response limit and not empty; returns each page's items of `field`.
async fn pages_of(http: &Http, token: &str, first: &str, field: &str) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut url = first.to_owned();
    loop {
        let page = http.get(&url, Some(token)).await.expect("get");
        assert_eq!(page.status, 200, "{url}: {}", page.json);
        let size = answered_bytes(&page);
        assert!(
            size < eventfold_aws::http::LAMBDA_RESPONSE_LIMIT,
            "{size} bytes"
        );
        let items = page.json[field].as_array().expect("items").clone();
        assert!(!items.is_empty(), "a page carries an item");
        pages.push(items);
        match page.json["next"].as_str() {
            Some(next) => url = format!("{first}&cursor={next}"),
            None => return pages,
        }
    }
}

/// What `items` would take in one answer: past Lambda's limit, so one page of them at
/// `limit=1000` (before the byte budget) was a 500.
fn past_one_answer(items: &[Value]) -> bool {
    let bytes: usize = items.iter().map(|i| eventfold::wire_len(i) + 1).sum();
    bytes > eventfold_aws::http::LAMBDA_RESPONSE_LIMIT
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_past_6_mb_at_the_largest_limit_pages_by_bytes_and_loses_nothing() {
    use eventfold::EventStore as _;
    let stack = quiet_stack().await;
    let store = eventfold_aws::DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let tenant = unique_tenant("pages");
    let stream = eventfold::StreamId::new(&tenant, "Order", "big").expect("valid");
    // 9 events of 200 KB of quotes: 1.8 MB stored, 3.6 MB of JSON in the body, 7.2 MB
    // once the body is escaped into the answer.
    let quotes = "\"".repeat(200 * KIB);
    for v in 0..9u64 {
        let mut events = eventfold_testkit::event_store::sample_events(&stream, v, 1);
        events[0].data = json!({"n": v + 1, "quotes": quotes});
        store
            .append(
                &stream.to_string(),
                eventfold::ExpectedVersion::assumed(v),
                events,
                None,
            )
            .await
            .expect("append");
    }
    let http = Http::new(&stack.api_url());
    let first = "/api/v1/events/aggregates/Order/big/events?limit=1000";
    let pages = pages_of(&http, &rw_token(&tenant), first, "events").await;
    let events: Vec<Value> = pages.concat();
    assert!(past_one_answer(&events));
    let versions: Vec<u64> = events
        .iter()
        .filter_map(|e| e["version"].as_u64())
        .collect();
    assert_eq!(
        versions,
        (1..=9).collect::<Vec<_>>(),
        "each event once, in order"
    );
    assert!(
        events
            .iter()
            .all(|e| e["data"]["quotes"] == quotes.as_str())
    );
    assert_eq!(pages.len(), 2, "6 events of 800 KB fill a 5 MiB page");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_and_history_past_6_mb_at_the_largest_max_page_by_bytes_and_lose_nothing() {
    let stack = quiet_stack().await;
    let http = Http::new(&stack.api_url());
    let tenant = unique_tenant("pages");
    let token = tests::token(&tenant, "events:read events:write events:admin");
    let created = http
        .post(
            "/api/v1/events/topics",
            Some(&token),
            &json!({"name": "big", "partitions": 2}),
        )
        .await
        .expect("post");
    assert_eq!(created.status, 201, "{}", created.json);
    // 52 records whose data is 32,000 quotes: 64 KB serialized (the largest `data`), 128 KB
    // on the wire each, 6.7 MB together. 13 a publish keep each body under 1 MiB.
    let quotes = "\"".repeat(32_000);
    for batch in 0..4u64 {
        let records: Vec<Value> = (0..13u64)
            .map(|i| {
                let n = batch * 13 + i;
                json!({"event_type": "blob", "key": format!("k{n}"), "data": {"n": n, "q": quotes}})
            })
            .collect();
        let published = http
            .post(
                "/api/v1/events/publish",
                Some(&token),
                &json!({"topic": "big", "records": records}),
            )
            .await
            .expect("post");
        assert_eq!(published.status, 201, "{}", published.json);
    }
    let numbers = |records: &[Value]| {
        let mut n: Vec<u64> = records
            .iter()
            .filter_map(|r| r["data"]["n"].as_u64())
            .collect();
        n.sort_unstable();
        n
    };
    let history = pages_of(
        &http,
        &token,
        "/api/v1/events/history?topic=big&limit=1000",
        "records",
    )
    .await;
    let records = history.concat();
    assert!(past_one_answer(&records));
    assert_eq!(
        numbers(&records),
        (0..52).collect::<Vec<_>>(),
        "each record once"
    );
    assert_eq!(history.len(), 2);
    // A consumer group with auto-commit: each answer under the limit, then nothing left.
    let consume = "/api/v1/events/consume?topic=big&group_id=g&max=1000&auto_commit=true";
    let mut delivered = Vec::new();
    let mut answers = 0;
    loop {
        let got = http.get(consume, Some(&token)).await.expect("get");
        assert_eq!(got.status, 200, "{}", got.json);
        assert!(answered_bytes(&got) < eventfold_aws::http::LAMBDA_RESPONSE_LIMIT);
        let records = got.json["records"].as_array().expect("records").clone();
        if records.is_empty() {
            break;
        }
        answers += 1;
        delivered.extend(records);
    }
    assert_eq!(
        numbers(&delivered),
        (0..52).collect::<Vec<_>>(),
        "each record once"
    );
    assert_eq!(answers, 2);
}

/// The rows of `docs/limits.md` that moto enforces alone, each shown over its limit as an
/// SDK reads it: a sort key over 1024 bytes, `BatchGetItem` over 100 keys, `SendMessageBatch`
/// over 10 entries, `ReceiveMessage` over 10 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_batch_counts_past_their_limits_are_refused() {
    let stack = quiet_stack().await;
    let models = tests::table(&stack, "ReadModelsTable");
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let e = dynamo
        .get_item()
        .table_name(&models)
        .key("pk", s("p"))
        .key("sk", s("k".repeat(1025)))
        .send()
        .await
        .expect_err("a sort key over 1024 bytes");
    let e = e.into_service_error();
    assert_eq!(code(&e), "ValidationException");
    assert!(message(&e).contains("range keys"), "{}", message(&e));
    let keys: Vec<std::collections::HashMap<String, AttributeValue>> = (0..101)
        .map(|i| {
            [
                ("pk".to_owned(), s("p")),
                ("sk".to_owned(), s(format!("k{i}"))),
            ]
            .into()
        })
        .collect();
    let wanted = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .set_keys(Some(keys.clone()))
        .build()
        .expect("keys");
    let e = dynamo
        .batch_get_item()
        .request_items(&models, wanted)
        .send()
        .await
        .expect_err("101 keys");
    assert_eq!(code(&e.into_service_error()), "ValidationException");
    let hundred = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
        .set_keys(Some(keys[..100].to_vec()))
        .build()
        .expect("keys");
    let fits = dynamo
        .batch_get_item()
        .request_items(&models, hundred)
        .send()
        .await;
    assert!(fits.is_ok(), "100 keys fit: {fits:?}");

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = stack.queue_url("StreamFailureQueue");
    let entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry> = (0..11)
        .map(|i| {
            aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(format!("e{i}"))
                .message_body("m")
                .build()
                .expect("entry")
        })
        .collect();
    let e = sqs
        .send_message_batch()
        .queue_url(&queue)
        .set_entries(Some(entries))
        .send()
        .await
        .expect_err("11 entries");
    let e = e.into_service_error();
    assert!(e.is_too_many_entries_in_batch_request(), "{e:?}");
    let e = sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(11)
        .send()
        .await
        .expect_err("11 messages");
    assert_eq!(code(&e.into_service_error()), "InvalidParameterValue");
    stack.stop().await;
}
