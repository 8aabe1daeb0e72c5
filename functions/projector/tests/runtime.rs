//! The function's binary run as Lambda runs it: its sample SQS batch (`events/sqs.json`, as
//! SNS raw delivery hands notifications to the queue) goes in through the emulated Lambda
//! runtime API against the template's resources on moto; the answer, the views it wrote and
//! the EMF metrics it prints are checked, and a poison record comes back as a batch failure.

use eventfold_aws::DynamoReadModelStore;
use eventfold_consumers::projection::ReadModelStore;
use eventfold_local::emf;
use eventfold_local::runtime_api::{FunctionProcess, provisioned_stack};
use serde_json::{Value, json};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_batch_runs_through_the_lambda_runtime_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stack = provisioned_stack(&root).await.expect("stack");
    let binary = Path::new(env!("CARGO_BIN_EXE_projector"));
    let mut f = FunctionProcess::start(binary, &stack, "projector")
        .await
        .expect("starts");
    let sample: Value = serde_json::from_str(include_str!("../events/sqs.json")).expect("json");

    let answer = f.invoke(&sample, None).await.expect("answered");
    assert_eq!(
        answer.response().expect("a response"),
        json!({"batchItemFailures": []})
    );
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, stack.resource_name("ReadModelsTable"));
    let summary = models
        .get("acme", shop::views::ORDER_SUMMARY, "o-1001")
        .await
        .expect("reads")
        .expect("the order's summary exists");
    assert_eq!(summary.checkpoint, 2);
    assert_eq!(summary.data["customer_id"], "c-17");

    // Redelivered: duplicates, acknowledged; a body that is no notification fails alone.
    let mut again = sample.clone();
    let mut poison = sample["Records"][0].clone();
    poison["messageId"] = json!("poison-1");
    poison["body"] = json!("{}");
    poison["attributes"]["MessageGroupId"] = json!("acme/Order-o-other");
    again["Records"]
        .as_array_mut()
        .expect("records")
        .push(poison);
    let answer = f.invoke(&again, None).await.expect("answered");
    assert_eq!(
        answer.response().expect("a response"),
        json!({"batchItemFailures": [{"itemIdentifier": "poison-1"}]})
    );

    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("dynamodb:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    let consumer = ("consumer".to_owned(), "projector".to_owned());
    let consumed: f64 = data
        .iter()
        .filter(|d| d.name == "events_consumed" && d.dimensions[0].contains(&consumer))
        .flat_map(|d| d.values.iter())
        .sum();
    assert_eq!(
        consumed, 2.0,
        "the redelivered duplicates are not consumption"
    );
    let lags: Vec<&emf::Datum> = data.iter().filter(|d| d.name == "consumer_lag").collect();
    assert_eq!(lags.iter().map(|d| d.values.len()).sum::<usize>(), 2);
    assert!(lags.iter().all(|d| d.unit.as_deref() == Some("Milliseconds")
        && d.values.iter().all(|v| *v > 0.0)));
}
