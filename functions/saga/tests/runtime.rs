//! The function's binary run as Lambda runs it: its sample SQS batch (`events/sqs.json`: the
//! order `o-1001` placed at version 3, as the command API's samples leave it) and the
//! schedule's event (`events/schedule.json`) go in through the emulated Lambda runtime API
//! against the template's resources on moto. The answers, the saga's log (in the input's
//! trace) and the EMF metrics it prints are checked.

use eventfold::{EventStore, Metadata, NewEvent, StreamId};
use eventfold_aws::DynamoEventStore;
use eventfold_consumers::Notification;
use eventfold_local::emf;
use eventfold_local::runtime_api::{FunctionProcess, provisioned_stack};
use serde_json::{Value, json};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_events_run_through_the_lambda_runtime_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stack = provisioned_stack(&root).await.expect("stack");
    let sample: Value = serde_json::from_str(include_str!("../events/sqs.json")).expect("json");
    let n: Notification =
        serde_json::from_str(sample["Records"][0]["body"].as_str().expect("body")).expect("json");
    let placed = n.event.clone().expect("the sample carries its event");
    let trace = placed
        .metadata
        .trace
        .clone()
        .expect("the sample carries a trace");

    // The table holds the order up to the sample's event, as the command API wrote it.
    let store = DynamoEventStore::from_sdk(&stack.sdk, stack.resource_name("EventsTable"));
    let stream = StreamId::parse(&n.stream_id).expect("valid");
    let before = [
        ("OrderCreated", json!({"customer_id": "c-17"})),
        (
            "ItemAdded",
            json!({"sku": "sku-a", "quantity": 2, "unit_price": 1250}),
        ),
    ];
    for (i, (event_type, data)) in before.into_iter().enumerate() {
        let v = i as u64 + 1;
        let e = NewEvent {
            event_type: event_type.into(),
            schema_version: 1,
            data,
        }
        .into_envelope(
            &stream,
            v,
            placed.occurred_at,
            Metadata::root("acme", "user-42", format!("cmd-{v}")),
        );
        store
            .append(
                &n.stream_id,
                eventfold::ExpectedVersion::assumed(v - 1),
                vec![e],
                None,
            )
            .await
            .expect("append");
    }
    store
        .append(
            &n.stream_id,
            eventfold::ExpectedVersion::assumed(2),
            vec![placed],
            None,
        )
        .await
        .expect("append");

    let binary = Path::new(env!("CARGO_BIN_EXE_saga"));
    let mut f = FunctionProcess::start(binary, &stack, "saga")
        .await
        .expect("starts");
    let answer = f.invoke(&sample, None).await.expect("answered");
    assert_eq!(
        answer.response().expect("a response"),
        json!({"batchItemFailures": []})
    );
    // The saga's log is in the input's trace, and so is what it did to the order.
    let log = store
        .load_range("acme/OrderFulfilment-o-1001", 1, None, None)
        .await
        .expect("loads");
    assert!(!log.is_empty(), "the saga recorded its steps");
    assert!(
        log.iter()
            .all(|e| e.metadata.trace.as_deref() == Some(trace.as_str())),
        "{log:?}"
    );
    let order = store
        .load_range(&n.stream_id, 4, None, None)
        .await
        .expect("loads");
    assert!(!order.is_empty(), "the saga commanded the order");
    assert!(
        order
            .iter()
            .all(|e| e.metadata.trace.as_deref() == Some(trace.as_str()))
    );

    let tick: Value = serde_json::from_str(include_str!("../events/schedule.json")).expect("json");
    let answer = f.invoke(&tick, None).await.expect("answered");
    assert_eq!(
        answer.response().expect("a response"),
        json!({"due": 0, "timed_out": 0, "stale": 0, "commands_sent": 0})
    );

    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("dynamodb:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    let consumer = ("consumer".to_owned(), "saga".to_owned());
    let consumed: f64 = data
        .iter()
        .filter(|d| d.name == "events_consumed" && d.dimensions[0].contains(&consumer))
        .flat_map(|d| d.values.iter())
        .sum();
    assert_eq!(consumed, 1.0);
    let behind: f64 = data
        .iter()
        .filter(|d| d.name == "versions_behind")
        .flat_map(|d| d.values.iter())
        .sum();
    assert_eq!(behind, 2.0, "v3 first: v1 and v2 were read from the table");
}
