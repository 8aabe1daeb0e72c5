//! DynamoDB idempotency store: the shared contract, requests per outcome, the table's TTL
//! backstop and item layout, and the item-size limit.

use aws_sdk_dynamodb::types::TimeToLiveStatus;
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{DynamoIdempotencyStore, RequestCounter};
use eventfold_idempotency::{
    Begin, Finished, Idempotency, IdempotencyConfig, IdempotencyStore, NotStored, Scope,
    StoredResponse, payload_hash, validate_key,
};
use eventfold_testkit::idempotency::{self as contract, Attempt, Task};
use std::sync::Arc;
use tests::{quiet_stack, table, unique_tenant};

fn tokio_spawn(task: Task) -> Task {
    let handle = tokio::spawn(task);
    Box::pin(async move {
        handle
            .await
            .unwrap_or_else(|e| Attempt::Other(format!("task failed: {e}")))
    })
}

fn idempotency_table(stack: &eventfold_local::LocalStack) -> String {
    table(stack, "IdempotencyTable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_store_passes_the_idempotency_contract() {
    let stack = quiet_stack().await;
    let store = Arc::new(DynamoIdempotencyStore::from_sdk(
        &stack.sdk,
        idempotency_table(&stack),
    ));
    contract::run_all(store, &unique_tenant("idem"), tokio_spawn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_costs_two_writes_and_a_duplicate_one_refused_write() {
    let stack = quiet_stack().await;
    let counter = RequestCounter::new();
    let store = DynamoIdempotencyStore::new(
        counted_dynamo_client(&stack.sdk, &counter),
        idempotency_table(&stack),
    );
    let engine = Idempotency::new(store, IdempotencyConfig::default());
    let scope = Scope::new(unique_tenant("cost"), "alice");
    let key = validate_key("order-1").expect("valid");
    let body = br#"{"aggregate_type":"Order","aggregate_id":"o-1","type":"CreateOrder","data":{}}"#;
    let payload = payload_hash("POST", "/api/v1/events/commands", body);

    let before = counter.get();
    let Begin::Run(lock) = engine
        .begin(&scope, &key, &payload, None)
        .await
        .expect("begin")
    else {
        panic!("the first request runs");
    };
    assert_eq!(
        counter.get() - before,
        1,
        "the lock is one conditional PutItem"
    );
    // While it runs, a duplicate costs the one refused put.
    let before = counter.get();
    let waiting = engine
        .begin(&scope, &key, &payload, None)
        .await
        .expect("begin");
    assert!(matches!(waiting, Begin::InProgress { .. }), "{waiting:?}");
    assert_eq!(
        counter.get() - before,
        1,
        "an in-progress duplicate is one refused put"
    );
    let before = counter.get();
    let answer = StoredResponse::new(201, r#"{"version":1}"#)
        .with_header("content-type", "application/json");
    assert_eq!(
        lock.finish(answer.clone()).await.expect("finish"),
        Finished::Stored
    );
    assert_eq!(
        counter.get() - before,
        1,
        "completing is one conditional PutItem"
    );

    let before = counter.get();
    match engine
        .begin(&scope, &key, &payload, None)
        .await
        .expect("begin")
    {
        Begin::Replay(r) => assert_eq!(r, answer),
        other => panic!("a completed duplicate replays, got {other:?}"),
    }
    assert_eq!(
        counter.get() - before,
        1,
        "a completed duplicate is the one refused put that returns the old item"
    );
    let before = counter.get();
    let other = payload_hash("POST", "/api/v1/events/commands", b"{}");
    let reused = engine
        .begin(&scope, &key, &other, None)
        .await
        .expect("begin");
    assert!(matches!(reused, Begin::KeyReused), "{reused:?}");
    assert_eq!(counter.get() - before, 1);

    // A failed handler: one put to lock, one delete to release.
    let key = validate_key("order-2").expect("valid");
    let before = counter.get();
    let Begin::Run(lock) = engine
        .begin(&scope, &key, &payload, None)
        .await
        .expect("begin")
    else {
        panic!("a new key runs");
    };
    let failed = lock
        .finish(StoredResponse::new(500, "{}"))
        .await
        .expect("finish");
    assert_eq!(
        failed,
        Finished::Released(NotStored::ServerError { status: 500 })
    );
    assert_eq!(counter.get() - before, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_carry_an_epoch_seconds_ttl_and_no_actor() {
    let stack = quiet_stack().await;
    let name = idempotency_table(&stack);
    let client = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let ttl = client
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .expect("describe TTL")
        .time_to_live_description
        .expect("a TTL description");
    assert_eq!(ttl.attribute_name(), Some("expires_at_epoch"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));

    let store = DynamoIdempotencyStore::from_sdk(&stack.sdk, &name);
    let engine = Idempotency::new(store, IdempotencyConfig::default());
    let actor = "alice@example.com";
    let scope = Scope::new(unique_tenant("layout"), actor);
    let key = validate_key("layout-1").expect("valid");
    let payload = payload_hash("POST", "/x", b"{}");
    let deadline = chrono::Utc::now() + chrono::Duration::milliseconds(9_500);
    let Begin::Run(lock) = engine
        .begin(&scope, &key, &payload, Some(deadline))
        .await
        .expect("begin")
    else {
        panic!("runs");
    };
    let item = client
        .get_item()
        .table_name(&name)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(scope.record_key(&key)),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
        .expect("the lock is stored");
    let number = |k: &str| -> i64 {
        item[k]
            .as_n()
            .expect("a number")
            .parse()
            .expect("an integer")
    };
    assert_eq!(item["status"].as_s().map(String::as_str), Ok("INPROGRESS"));
    assert_eq!(
        item["idempotency_key"].as_s().map(String::as_str),
        Ok("layout-1")
    );
    assert_eq!(number("expires_at"), deadline.timestamp_millis());
    assert_eq!(
        number("expires_at_epoch"),
        (deadline.timestamp_millis() + 999).div_euclid(1000),
        "TTL in epoch seconds, rounded up"
    );
    let text = format!("{item:?}");
    assert!(!text.contains(actor), "the actor is not stored: {text}");
    assert_eq!(
        lock.release().await.expect("release"),
        Finished::Released(NotStored::Released)
    );
    assert_eq!(
        engine
            .store()
            .get(&scope.record_key(&key))
            .await
            .expect("read"),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_too_large_for_an_item_goes_out_unstored_without_a_write() {
    let stack = quiet_stack().await;
    let counter = RequestCounter::new();
    let store = DynamoIdempotencyStore::new(
        counted_dynamo_client(&stack.sdk, &counter),
        idempotency_table(&stack),
    );
    // The engine's own limit lifted, so the store's 400 KB item limit is what refuses.
    let engine = Idempotency::new(
        store,
        IdempotencyConfig {
            max_response_bytes: 1024 * 1024,
            ..IdempotencyConfig::default()
        },
    );
    let scope = Scope::new(unique_tenant("big"), "alice");
    let key = validate_key("big-1").expect("valid");
    let payload = payload_hash("POST", "/x", b"{}");
    let Begin::Run(lock) = engine
        .begin(&scope, &key, &payload, None)
        .await
        .expect("begin")
    else {
        panic!("runs");
    };
    let before = counter.get();
    let finished = lock
        .finish(StoredResponse::new(200, "y".repeat(410 * 1024)))
        .await
        .expect("finish");
    assert!(
        matches!(
            finished,
            Finished::Released(NotStored::TooLarge { limit, .. }) if limit == 400 * 1024
        ),
        "{finished:?}"
    );
    assert_eq!(
        counter.get() - before,
        1,
        "only the delete is sent: the oversized put is refused before any request"
    );
    assert_eq!(
        engine
            .store()
            .get(&scope.record_key(&key))
            .await
            .expect("read"),
        None
    );
}

/// A store the service refuses for good (here: its table does not exist) is `Refused`, not
/// `Unavailable`: the caller is not told to retry what can never work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_store_is_refused_not_unavailable() {
    let stack = quiet_stack().await;
    let store = DynamoIdempotencyStore::from_sdk(
        &stack.sdk,
        format!("{}-missing", idempotency_table(&stack)),
    );
    let engine = Idempotency::new(store, IdempotencyConfig::default());
    let scope = Scope::new(unique_tenant("refused"), "alice");
    let key = validate_key("k-1").expect("valid key");
    let payload = payload_hash("POST", "/api/v1/events/commands", b"{}");
    let begun = engine.begin(&scope, &key, &payload, None).await.map(|_| ());
    assert!(
        matches!(
            begun,
            Err(eventfold_idempotency::IdempotencyError::Refused(_))
        ),
        "{begun:?}"
    );
}
