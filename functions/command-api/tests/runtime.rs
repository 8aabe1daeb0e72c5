//! The function's binary run as Lambda runs it: its sample events (`events/*.json`) go in
//! through the Lambda runtime API (emulated, `eventfold_local::runtime_api`) against the
//! template's resources on moto; the answers, the commit's trace and the EMF metrics it
//! prints are checked.

use eventfold::EventStore;
use eventfold_aws::DynamoEventStore;
use eventfold_local::emf;
use eventfold_local::runtime_api::{
    FunctionProcess, provisioned_stack, request_trace, sample_event, start_without,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

const BINARY: &str = env!("CARGO_BIN_EXE_command-api");

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
    let mut f = FunctionProcess::start(Path::new(BINARY), &stack, "command-api")
        .await
        .expect("starts");

    let (status, created) = call(&mut f, "create-order").await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["stream_id"], "acme/Order-o-1001");
    assert_eq!(created["version"], 1);
    let (status, added) = call(&mut f, "add-item").await;
    assert_eq!(
        (status, &added["version"]),
        (200, &Value::from(2)),
        "{added}"
    );
    let (status, placed) = call(&mut f, "place-order").await;
    assert_eq!(status, 200, "{placed}");
    assert_eq!(placed["version"], 3);
    assert_eq!(placed["events"][0]["type"], "OrderPlaced");
    let (status, order) = call(&mut f, "get-order").await;
    assert_eq!(
        (status, &order["version"]),
        (200, &Value::from(3)),
        "{order}"
    );
    let (status, first) = call(&mut f, "get-order-at-version").await;
    assert_eq!(
        (status, &first["version"]),
        (200, &Value::from(1)),
        "{first}"
    );
    let (status, history) = call(&mut f, "order-events").await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["events"].as_array().map(Vec::len), Some(2));
    assert!(
        history["next"].is_string(),
        "a third event is left: {history}"
    );

    // Each commit keeps the trace of the invocation that wrote it.
    let table = stack.resource_name("EventsTable");
    let events = DynamoEventStore::from_sdk(&stack.sdk, table)
        .load_range("acme/Order-o-1001", 1, None, None)
        .await
        .expect("loads");
    let traces: Vec<Option<&str>> = events.iter().map(|e| e.metadata.trace.as_deref()).collect();
    let expected: Vec<String> = ["create-order", "add-item", "place-order"]
        .iter()
        .map(|s| trace_of(&sample(s)))
        .collect();
    assert_eq!(
        traces,
        expected
            .iter()
            .map(|t| Some(t.as_str()))
            .collect::<Vec<_>>()
    );

    // Its JSON logs name the correlation, the causation and the trace of each command.
    let create = sample("create-order");
    let accepted: Value = f
        .stdout()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "command accepted")
        .expect("a log line per accepted command");
    let spans = accepted["spans"].as_array().expect("the span list");
    let field = |name: &str| spans.iter().find_map(|s| s.get(name).cloned());
    assert_eq!(
        field("correlation_id"),
        Some(create["requestContext"]["requestId"].clone())
    );
    assert!(field("causation_id").is_some_and(|c| c.is_string()));
    assert_eq!(field("trace"), Some(Value::from(trace_of(&create))));

    // The metrics it printed are valid EMF, in one namespace, per function.
    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("dynamodb:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    assert!(data.iter().all(|d| d.namespace == "Eventfold"));
    let dimension = |d: &emf::Datum, name: &str| {
        d.dimensions[0]
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    assert!(
        data.iter()
            .all(|d| dimension(d, "function").as_deref() == Some("command-api"))
    );
    let sum = |name: &str, filter: &dyn Fn(&emf::Datum) -> bool| -> f64 {
        data.iter()
            .filter(|d| d.name == name && filter(d))
            .flat_map(|d| d.values.iter())
            .sum()
    };
    assert_eq!(sum("cold_starts", &|_| true), 1.0);
    let accepted = |t: &'static str| {
        move |d: &emf::Datum| {
            dimension(d, "command_type").as_deref() == Some(t)
                && dimension(d, "outcome").as_deref() == Some("accepted")
        }
    };
    assert_eq!(sum("commands", &accepted("CreateOrder")), 1.0);
    assert_eq!(sum("commands", &accepted("PlaceOrder")), 1.0);
    let durations: usize = data
        .iter()
        .filter(|d| d.name == "processing_duration")
        .inspect(|d| assert_eq!(d.unit.as_deref(), Some("Milliseconds")))
        .map(|d| d.values.len())
        .sum();
    assert_eq!(durations, 6, "one per invocation");
}

#[tokio::test]
async fn a_missing_setting_is_named_at_start() {
    let stderr = start_without(Path::new(BINARY), &root(), "command-api", "EVENTS_TABLE")
        .await
        .expect("fails at start");
    assert!(
        stderr.contains("missing required setting EVENTS_TABLE"),
        "{stderr}"
    );
    assert!(stderr.contains("--print-env"), "{stderr}");
}
