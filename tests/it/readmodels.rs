//! The DynamoDB read-model store (the shared contract) and the projector function end to end on
//! the emulator: SQS FIFO batches with duplicates, a gap and a poison message, and with a
//! write fault injected into the read-model store.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use eventfold::{CommandExecutor, EventEnvelope, ExecutorConfig, StreamId};
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{
    DynamoDeadLetterStore, DynamoEventStore, DynamoReadModelStore, RequestCounter,
};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::DeadLetterStore;
use eventfold_consumers::projection::{
    Doc, Found, ListQuery, ModelKey, Page, ReadModelError, ReadModelStore,
};
use projector::ProjectorFunction;
use serde_json::json;
use shop::inventory::InventoryCommand;
use shop::order::OrderCommand;
use shop::registry::ShopCaches;
use shop::views::{DAILY_SALES, ORDER_SUMMARY, STOCK_LEVELS};
use shop::{Inventory, Order};
use std::collections::HashMap;
use std::sync::Arc;
use tests::{ctx, events_table, quiet_stack, unique_tenant};

fn read_models_table(stack: &eventfold_local::LocalStack) -> String {
    tests::table(stack, "ReadModelsTable")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_read_model_store_passes_the_contract() {
    let stack = quiet_stack().await;
    let store = DynamoReadModelStore::from_sdk(&stack.sdk, read_models_table(&stack));
    eventfold_testkit::read_models::run_all(&store, &unique_tenant("rm")).await;
}

/// An SQS record as Lambda hands it over from the projector's FIFO queue (SNS raw delivery).
fn record(id: &str, group: &str, body: String) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.to_owned());
    m.body = Some(body);
    m.attributes = HashMap::from([
        ("MessageGroupId".to_owned(), group.to_owned()),
        ("ApproximateReceiveCount".to_owned(), "1".to_owned()),
    ]);
    m.event_source = Some("aws:sqs".to_owned());
    m
}

fn note(e: &EventEnvelope) -> String {
    serde_json::to_string(&Notification::of(e).expect("valid stream")).expect("json")
}

fn failed(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_function_applies_other_groups_and_stops_a_group_at_its_poison_message() {
    // The stack's own fan-out stays off: this test is the only consumer of its notifications.
    let stack = quiet_stack().await;
    let tenant = unique_tenant("proj");
    let events = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, read_models_table(&stack));
    let exec =
        CommandExecutor::new(events.clone(), ExecutorConfig::default()).caching::<ShopCaches>();

    // The table is the truth: real commits through the command path.
    let sku_a = StreamId::new(&tenant, "Inventory", "sku-a").expect("valid");
    let sku_b = StreamId::new(&tenant, "Inventory", "sku-b").expect("valid");
    let order = StreamId::new(&tenant, "Order", "o-1").expect("valid");
    let mut a = Vec::new();
    for (i, quantity) in [5, 7, 11].into_iter().enumerate() {
        let out = exec
            .execute::<Inventory>(
                &sku_a,
                None,
                &InventoryCommand::ReceiveStock { quantity },
                &ctx(&tenant, &format!("a{i}")),
            )
            .await
            .expect("receive a");
        a.extend(out.events);
    }
    let mut b = Vec::new();
    for (i, quantity) in [2, 3].into_iter().enumerate() {
        let out = exec
            .execute::<Inventory>(
                &sku_b,
                None,
                &InventoryCommand::ReceiveStock { quantity },
                &ctx(&tenant, &format!("b{i}")),
            )
            .await
            .expect("receive b");
        b.extend(out.events);
    }
    let mut o = Vec::new();
    for (i, cmd) in [
        OrderCommand::CreateOrder {
            customer_id: "c-1".parse().expect("an id"),
        },
        OrderCommand::AddItem {
            sku: "sku-a".parse().expect("a sku"),
            quantity: 2,
            unit_price: 250.into(),
        },
        OrderCommand::PlaceOrder {
            payment_method: None,
        },
    ]
    .iter()
    .enumerate()
    {
        let out = exec
            .execute::<Order>(&order, None, cmd, &ctx(&tenant, &format!("o{i}")))
            .await
            .expect("order command");
        o.extend(out.events);
    }
    assert_eq!((a.len(), b.len(), o.len()), (3, 2, 3));

    let function = ProjectorFunction::new(shop::views::projector(events.clone(), models.clone()));
    let (ga, gb, go) = (sku_a.to_string(), sku_b.to_string(), order.to_string());
    let mut event = SqsEvent::default();
    event.records = vec![
        record("a1", &ga, note(&a[0])),
        record("o1", &go, note(&o[0])),
        record("a1-again", &ga, note(&a[0])), // duplicate
        record("b2", &gb, note(&b[1])),       // gap: b1 never announced
        record("a2", &ga, note(&a[1])),
        record("o3", &go, note(&o[2])), // gap: o2 read from the table
        record("poison", &ga, "{\"stream_id\": 42".to_owned()),
        record("b2-again", &gb, note(&b[1])), // duplicate after the gap fill
        record("a3", &ga, note(&a[2])),       // later in the poisoned group
        record(
            "o3-thin",
            &go,
            serde_json::to_string(&Notification::of(&o[2]).expect("valid").thin()).expect("json"),
        ),
    ];
    let response = function.handle(event).await;
    assert_eq!(failed(&response), ["poison", "a3"]);

    let a_doc = models
        .get(&tenant, STOCK_LEVELS, "sku-a")
        .await
        .expect("get")
        .expect("sku-a");
    assert_eq!(
        (a_doc.data["on_hand"].clone(), a_doc.checkpoint),
        (json!(12), 2),
        "a1 once, a2, not a3"
    );
    let b_doc = models
        .get(&tenant, STOCK_LEVELS, "sku-b")
        .await
        .expect("get")
        .expect("sku-b");
    assert_eq!(
        (b_doc.data["on_hand"].clone(), b_doc.checkpoint),
        (json!(5), 2),
        "gap filled, duplicate ignored"
    );
    let summary = models
        .get(&tenant, ORDER_SUMMARY, "o-1")
        .await
        .expect("get")
        .expect("o-1");
    assert_eq!(summary.checkpoint, 3);
    assert_eq!(summary.data["status"], "Placed");
    assert_eq!(summary.data["total"], 500);
    let by_customer = models
        .list(
            &tenant,
            ORDER_SUMMARY,
            ListQuery {
                index: Some("c-1".into()),
                cursor: None,
                limit: 10,
            },
        )
        .await
        .expect("list by customer");
    assert_eq!(
        by_customer
            .docs
            .iter()
            .map(|d| d.key.as_str())
            .collect::<Vec<_>>(),
        ["o-1"]
    );
    let sales = models
        .list(
            &tenant,
            DAILY_SALES,
            ListQuery {
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .expect("list sales");
    assert_eq!(sales.docs.len(), 1);
    assert_eq!(
        sales.docs[0].data,
        json!({"orders": 1, "revenue": 500}),
        "the placed order counted once"
    );
    assert_eq!(
        models
            .checkpoint(DAILY_SALES, &go)
            .await
            .expect("checkpoint"),
        3
    );

    // The queue redelivers the failed group; the poison has gone to the DLQ meanwhile.
    let mut retry = SqsEvent::default();
    retry.records = vec![
        record("a3", &ga, note(&a[2])),
        record("a2", &ga, note(&a[1])),
    ];
    assert!(failed(&function.handle(retry).await).is_empty());
    let a_doc = models
        .get(&tenant, STOCK_LEVELS, "sku-a")
        .await
        .expect("get")
        .expect("sku-a");
    assert_eq!(
        (a_doc.data["on_hand"].clone(), a_doc.checkpoint),
        (json!(23), 3)
    );
}

/// The DynamoDB read-model store with a fault: `put`s of the document named in `failing`
/// fail as an outage would; everything else (the batched read included) goes through.
struct FailingPuts {
    inner: DynamoReadModelStore,
    failing: std::sync::Mutex<Option<(String, String)>>,
}

#[async_trait::async_trait]
impl ReadModelStore for FailingPuts {
    async fn get(&self, t: &str, v: &str, k: &str) -> Result<Option<Doc>, ReadModelError> {
        self.inner.get(t, v, k).await
    }
    async fn put(&self, t: &str, v: &str, doc: Doc, e: u64) -> Result<(), ReadModelError> {
        let failing = self.failing.lock().expect("lock").clone();
        if failing == Some((v.to_owned(), doc.key.clone())) {
            return Err(ReadModelError::Unavailable("injected outage".into()));
        }
        self.inner.put(t, v, doc, e).await
    }
    async fn checkpoint(&self, v: &str, s: &str) -> Result<u64, ReadModelError> {
        self.inner.checkpoint(v, s).await
    }
    async fn get_many(&self, keys: &[ModelKey]) -> Result<Vec<Found>, ReadModelError> {
        self.inner.get_many(keys).await
    }
    async fn add(
        &self,
        t: &str,
        v: &str,
        s: &str,
        e: u64,
        n: u64,
        d: Vec<(String, std::collections::BTreeMap<String, i64>)>,
    ) -> Result<(), ReadModelError> {
        self.inner.add(t, v, s, e, n, d).await
    }
    async fn list(&self, t: &str, v: &str, q: ListQuery) -> Result<Page, ReadModelError> {
        self.inner.list(t, v, q).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_fails_its_group_from_the_first_record_it_carried_and_redelivery_lands_once()
{
    let stack = quiet_stack().await;
    let tenant = unique_tenant("projf");
    let events = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let counter = RequestCounter::new();
    let models = DynamoReadModelStore::new(
        counted_dynamo_client(&stack.sdk, &counter),
        read_models_table(&stack),
    );
    let letters = Arc::new(DynamoDeadLetterStore::from_sdk(
        &stack.sdk,
        tests::table(&stack, "DeadLettersTable"),
    ));
    let exec =
        CommandExecutor::new(events.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    let mut orders = Vec::new();
    for id in ["o-1", "o-2"] {
        let stream = StreamId::new(&tenant, "Order", id).expect("valid");
        let mut got = Vec::new();
        for (i, cmd) in [
            OrderCommand::CreateOrder {
                customer_id: "c-1".parse().expect("an id"),
            },
            OrderCommand::AddItem {
                sku: "sku-a".parse().expect("a sku"),
                quantity: 1,
                unit_price: 300.into(),
            },
            OrderCommand::PlaceOrder {
                payment_method: None,
            },
        ]
        .iter()
        .enumerate()
        {
            let out = exec
                .execute::<Order>(&stream, None, cmd, &ctx(&tenant, &format!("{id}-{i}")))
                .await
                .expect("order command");
            got.extend(out.events);
        }
        orders.push((stream.to_string(), got));
    }
    let store = FailingPuts {
        inner: models.clone(),
        failing: std::sync::Mutex::new(Some((ORDER_SUMMARY.to_owned(), "o-1".to_owned()))),
    };
    let function = ProjectorFunction::new(shop::views::projector(events.clone(), store))
        .with_notes(letters.clone());
    let batch = || {
        let mut event = SqsEvent::default();
        for v in 0..3 {
            for (i, (group, evs)) in orders.iter().enumerate() {
                event
                    .records
                    .push(record(&format!("m{i}-{v}"), group, note(&evs[v])));
            }
        }
        event
    };
    let before = counter.get();
    let response = function.handle(batch()).await;
    // o-1's summary write failed: all three of its records, the first with a note.
    assert_eq!(failed(&response), ["m0-0", "m0-1", "m0-2"]);
    assert_eq!(
        counter.get() - before,
        4,
        "one batched read; o-1: daily-sales (its summary put never sent); o-2: summary and sales"
    );
    let first = letters
        .note_of(projector::CONSUMER, "m0-0")
        .await
        .expect("note")
        .expect("written");
    assert_eq!(
        (first.stream_id.as_deref(), first.version),
        (Some(orders[0].0.as_str()), Some(1))
    );
    assert!(first.error.contains("injected outage"), "{}", first.error);
    for held in ["m0-1", "m0-2", "m1-0"] {
        assert_eq!(
            letters
                .note_of(projector::CONSUMER, held)
                .await
                .expect("note"),
            None,
            "{held}"
        );
    }
    let o2 = models
        .get(&tenant, ORDER_SUMMARY, "o-2")
        .await
        .expect("get")
        .expect("o-2");
    assert_eq!(
        (o2.checkpoint, o2.data["status"].clone()),
        (3, json!("Placed"))
    );
    assert!(
        models
            .get(&tenant, ORDER_SUMMARY, "o-1")
            .await
            .expect("get")
            .is_none()
    );

    // The outage ends; the whole batch comes again (o-2's records too, as after a timeout).
    *function.projector().models().failing.lock().expect("lock") = None;
    assert!(failed(&function.handle(batch()).await).is_empty());
    let o1 = models
        .get(&tenant, ORDER_SUMMARY, "o-1")
        .await
        .expect("get")
        .expect("o-1");
    assert_eq!((o1.checkpoint, o1.data["total"].clone()), (3, json!(300)));
    let sales = models
        .list(
            &tenant,
            DAILY_SALES,
            ListQuery {
                limit: 10,
                ..ListQuery::default()
            },
        )
        .await
        .expect("list sales");
    assert_eq!(
        sales
            .docs
            .iter()
            .map(|d| d.data.clone())
            .collect::<Vec<_>>(),
        [json!({"orders": 2, "revenue": 600})],
        "each placed order counted exactly once across the failure and the redelivery"
    );
}
