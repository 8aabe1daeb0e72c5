//! The function's binary run as Lambda runs it: its sample requests (`events/*.json`, API
//! Gateway HTTP API v2 with JWT claims) go in through the emulated Lambda runtime API against
//! the template's resources on moto, with the views the projector's sample batch builds.

use eventfold_aws::{DynamoEventStore, DynamoReadModelStore};
use eventfold_consumers::Notification;
use eventfold_local::emf;
use eventfold_local::runtime_api::{FunctionProcess, provisioned_stack};
use serde_json::Value;
use std::path::Path;

async fn call(f: &mut FunctionProcess, sample: &str) -> (u64, Value) {
    let event: Value = serde_json::from_str(sample).expect("json");
    f.call_http(&event).await.expect("answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_requests_run_through_the_lambda_runtime_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stack = provisioned_stack(&root).await.expect("stack");
    let projector = shop::views::projector(
        DynamoEventStore::from_sdk(&stack.sdk, stack.resource_name("EventsTable")),
        DynamoReadModelStore::from_sdk(&stack.sdk, stack.resource_name("ReadModelsTable")),
    );
    let batch: Value =
        serde_json::from_str(include_str!("../../projector/events/sqs.json")).expect("json");
    for record in batch["Records"].as_array().expect("records") {
        let n: Notification =
            serde_json::from_str(record["body"].as_str().expect("body")).expect("notification");
        projector.handle(&n).await.expect("applies");
    }
    let binary = Path::new(env!("CARGO_BIN_EXE_query-api"));
    let mut f = FunctionProcess::start(binary, &stack, "query-api")
        .await
        .expect("starts");

    let (status, summary) = call(&mut f, include_str!("../events/order-summary.json")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["view"], "order-summary");
    assert_eq!(summary["item"]["order_id"], "o-1001");
    assert_eq!(summary["item"]["customer_id"], "c-17");
    let (status, levels) = call(&mut f, include_str!("../events/stock-levels.json")).await;
    assert_eq!(status, 200, "{levels}");
    assert!(
        levels["items"].as_array().is_some_and(Vec::is_empty),
        "{levels}"
    );

    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("dynamodb:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    let durations: usize = data
        .iter()
        .filter(|d| d.name == "processing_duration")
        .map(|d| d.values.len())
        .sum();
    assert_eq!(durations, 2);
}
