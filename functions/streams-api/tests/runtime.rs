//! The function's binary run as Lambda runs it: its sample events (`events/*.json`) go in
//! through the Lambda runtime API (emulated, `eventfold_local::runtime_api`) against the
//! template's resources on moto; the answers, the records' trace and the EMF metrics it
//! prints are checked.

use eventfold::EventStore;
use eventfold_aws::DynamoEventStore;
use eventfold_local::emf;
use eventfold_local::runtime_api::{
    FunctionProcess, provisioned_stack, request_trace, sample_event, start_without,
};
use eventfold_streaming::{partition_for, partition_stream};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const BINARY: &str = env!("CARGO_BIN_EXE_streams-api");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(name: &str) -> Value {
    sample_event(Path::new(env!("CARGO_MANIFEST_DIR")), name).expect("a sample")
}

/// The trace header API Gateway put on the sample's request.
fn trace_of(event: &Value) -> String {
    request_trace(event)
        .expect("the samples carry a trace header")
        .to_owned()
}

/// Invokes with `name`'s sample (its trace as the invocation's): status and JSON body.
async fn call(f: &mut FunctionProcess, name: &str) -> (u64, Value) {
    f.call_http(&sample(name))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_events_run_through_the_lambda_runtime_api() {
    let stack = provisioned_stack(&root()).await.expect("stack");
    let mut f = FunctionProcess::start(Path::new(BINARY), &stack, "streams-api")
        .await
        .expect("starts");
    // Every sample keys its records by the order: one partition, contiguous offsets.
    let partition = partition_for("o-1001", 2);
    let commit = sample("commit");
    let committed_body: Value =
        serde_json::from_str(commit["body"].as_str().expect("a body")).expect("JSON");
    assert_eq!(
        committed_body["offsets"],
        json!({partition.to_string(): 3}),
        "the commit sample names the partition the key hashes to"
    );

    let (status, topic) = call(&mut f, "create-topic").await;
    assert_eq!(status, 201, "{topic}");
    assert_eq!(topic["name"], "payments");
    assert_eq!(topic["partitions"], 2);
    let (status, listed) = call(&mut f, "list-topics").await;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed["topics"]
        .as_array()
        .expect("a topic list")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"payments"), "{listed}");
    assert!(
        names.contains(&"user-events"),
        "default topics too: {listed}"
    );

    let (status, single) = call(&mut f, "publish-single").await;
    assert_eq!(status, 201, "{single}");
    assert_eq!(
        (&single["partition"], &single["offset"]),
        (&Value::from(partition), &Value::from(1))
    );
    let (status, batch) = call(&mut f, "publish-batch").await;
    assert_eq!(status, 201, "{batch}");
    let offsets: Vec<u64> = batch["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["offset"].as_u64())
        .collect();
    assert_eq!(offsets, [2, 3, 4]);

    let (status, consumed) = call(&mut f, "consume").await;
    assert_eq!(status, 200, "{consumed}");
    let types: Vec<&str> = consumed["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["event_type"].as_str())
        .collect();
    assert_eq!(
        types,
        [
            "PaymentAuthorized",
            "PaymentCaptured",
            "ReceiptIssued",
            "PaymentRefunded"
        ]
    );
    assert_eq!(consumed["records"][0]["headers"]["source"], "checkout");
    assert_eq!(consumed["records"][0]["producer"], "user-42");
    let (status, committed) = call(&mut f, "commit").await;
    assert_eq!(status, 200, "{committed}");
    assert_eq!(committed["committed"][partition.to_string()], 3);
    let (status, lag) = call(&mut f, "lag").await;
    assert_eq!(status, 200, "{lag}");
    assert_eq!(
        lag["total"], 1,
        "one record after the committed offset: {lag}"
    );
    let (status, history) = call(&mut f, "history").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["records"].as_array().map(Vec::len), Some(2));
    assert_eq!(history["records"][0]["event_type"], "PaymentAuthorized");
    assert!(history["next"].is_string(), "two more are left: {history}");

    // Each record keeps the trace of the publish that wrote it.
    let table = stack.resource_name("EventsTable");
    let stream = partition_stream("acme", "payments", partition).expect("a partition stream");
    let records = DynamoEventStore::from_sdk(&stack.sdk, table)
        .load_range(&stream.to_string(), 1, None, None)
        .await
        .expect("loads");
    let traces: Vec<Option<&str>> = records
        .iter()
        .map(|e| e.metadata.trace.as_deref())
        .collect();
    let single_trace = trace_of(&sample("publish-single"));
    let batch_trace = trace_of(&sample("publish-batch"));
    assert_eq!(
        traces,
        [
            Some(single_trace.as_str()),
            Some(batch_trace.as_str()),
            Some(batch_trace.as_str()),
            Some(batch_trace.as_str())
        ]
    );

    // The metrics it printed are valid EMF, in one namespace, with the function as their only
    // dimension (topics and groups are caller input).
    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("dynamodb:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    assert!(data.iter().all(|d| d.namespace == "Eventfold"));
    for d in &data {
        let names: Vec<&str> = d.dimensions[0].iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["function"], "{}", d.name);
        assert_eq!(d.dimensions[0][0].1, "streams-api");
    }
    let sum = |name: &str| -> f64 {
        data.iter()
            .filter(|d| d.name == name)
            .flat_map(|d| d.values.iter())
            .sum()
    };
    assert_eq!(sum("cold_starts"), 1.0);
    assert_eq!(sum("records_published"), 4.0);
    assert_eq!(sum("consumes"), 1.0);
    assert_eq!(sum("records_consumed"), 4.0);
    assert_eq!(
        sum("conflicts"),
        0.0,
        "one process alone never races itself"
    );
    let durations: usize = data
        .iter()
        .filter(|d| d.name == "processing_duration")
        .inspect(|d| assert_eq!(d.unit.as_deref(), Some("Milliseconds")))
        .map(|d| d.values.len())
        .sum();
    assert_eq!(durations, 8, "one per invocation");
}

#[tokio::test]
async fn a_missing_setting_is_named_at_start() {
    let stderr = start_without(Path::new(BINARY), &root(), "streams-api", "TOPICS_TABLE")
        .await
        .expect("fails at start");
    assert!(
        stderr.contains("missing required setting TOPICS_TABLE"),
        "{stderr}"
    );
    assert!(stderr.contains("--print-env"), "{stderr}");
}
