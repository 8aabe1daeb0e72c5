//! The function's binary run as Lambda runs it: its sample stream batch (`events/insert.json`)
//! goes in through the emulated Lambda runtime API against the template's resources on moto.
//! The answer, the SQS records SNS raw delivery makes of its messages (the commit's trace
//! among their attributes) and the EMF metrics it prints are checked.

use eventfold_local::emf;
use eventfold_local::runtime_api::{FunctionProcess, provisioned_stack};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_batch_runs_through_the_lambda_runtime_api() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stack = provisioned_stack(&root).await.expect("stack");
    let binary = Path::new(env!("CARGO_BIN_EXE_stream-publisher"));
    let mut f = FunctionProcess::start(binary, &stack, "stream-publisher")
        .await
        .expect("starts");
    let sample: Value = serde_json::from_str(include_str!("../events/insert.json")).expect("json");
    let image = &sample["Records"][0]["dynamodb"]["NewImage"];
    let trace = image["metadata"]["M"]["trace"]["S"]
        .as_str()
        .expect("the sample commit carries a trace");

    let answer = f.invoke(&sample, None).await.expect("answered");
    assert_eq!(
        answer.response().expect("a response"),
        json!({"batchItemFailures": []})
    );

    // Both events of the commit reach the projector's queue, in order, with the trace.
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = stack.queue_url("ProjectorQueue");
    let mut received = Vec::new();
    let until = Instant::now() + Duration::from_secs(20);
    while received.len() < 2 && Instant::now() < until {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receives");
        received.extend(out.messages.unwrap_or_default());
    }
    assert_eq!(received.len(), 2, "{received:?}");
    let mut versions = Vec::new();
    for m in &received {
        let attrs = m.message_attributes.as_ref().expect("attributes");
        let value = |k: &str| attrs.get(k).and_then(|a| a.string_value.as_deref());
        assert_eq!(value("trace"), Some(trace));
        assert_eq!(value("tenant"), Some("acme"));
        let body: Value = serde_json::from_str(m.body.as_deref().expect("body")).expect("json");
        assert_eq!(body["event"]["metadata"]["trace"], trace);
        versions.push(body["version"].as_u64().expect("version"));
    }
    assert_eq!(versions, [1, 2]);

    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("sns:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    let published: f64 = data
        .iter()
        .filter(|d| d.name == "events_published")
        .flat_map(|d| d.values.iter())
        .sum();
    assert_eq!(published, 2.0);
    assert!(data.iter().any(|d| d.name == "cold_starts"));
    assert!(data.iter().all(|d| {
        d.dimensions[0].contains(&("function".to_owned(), "stream-publisher".to_owned()))
    }));
}
