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
