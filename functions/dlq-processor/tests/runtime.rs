//! The function's binary run as Lambda runs it: its sample SQS batch (`events/sqs.json`: a
//! message the projector's DLQ holds and a batch description on the stream's on-failure
//! queue, their source ARNs this stack's) and its sample HTTP API request (`events/http.json`,
//! payload 2.0 with JWT claims) go in through the emulated Lambda runtime API against the
//! template's resources on moto. The answers, the dead letter in the dead-letters table (with
//! the projector's failure note) and the EMF metrics it prints are checked.

use chrono::Utc;
use eventfold_aws::DynamoDeadLetterStore;
use eventfold_consumers::deadletter::{
    DeadLetterStore, FailureNote, STREAM_CONSUMER, Status, letter_id,
};
use eventfold_local::emf;
use eventfold_local::runtime_api::{
    FunctionProcess, provisioned_stack, sample_event, start_without,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const BINARY: &str = env!("CARGO_BIN_EXE_dlq-processor");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sample(name: &str) -> Value {
    sample_event(Path::new(env!("CARGO_MANIFEST_DIR")), name).expect("a sample")
}

/// The sample batch as this stack's queues deliver it: each record's source ARN is the
/// stack's queue of the same name (the sample names the `eventfold-dev` stack's).
fn delivered_by(stack: &eventfold_local::LocalStack, mut batch: Value) -> Value {
    let queues = [
        "ProjectorDeadLetterQueue",
        "SagaDeadLetterQueue",
        "StreamFailureQueue",
    ];
    for record in batch["Records"].as_array_mut().expect("records") {
        let arn = record["eventSourceARN"].as_str().expect("a source ARN");
        let name = arn.rsplit(':').next().expect("a queue name");
        let suffix = name
            .strip_prefix("eventfold-dev-")
            .expect("the sample's stack");
        let ours = queues
            .iter()
            .filter_map(|q| stack.template.arn(q))
            .find(|a| a.ends_with(&format!(":eventfold-local-{suffix}")))
            .unwrap_or_else(|| panic!("no queue of the stack for {arn}"));
        record["eventSourceARN"] = json!(ours);
    }
    batch
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_events_run_through_the_lambda_runtime_api() {
    let stack = provisioned_stack(&root()).await.expect("stack");
    let letters =
        DynamoDeadLetterStore::from_sdk(&stack.sdk, stack.resource_name("DeadLettersTable"));
    let batch = delivered_by(&stack, sample("sqs"));
    let dead = &batch["Records"][0];
    let message_id = dead["messageId"].as_str().expect("messageId");
    // The projector noted its last failure on the message before its queue gave up on it.
    let error = "read model store unavailable: throttled";
    letters
        .note(&FailureNote {
            consumer: "projector".into(),
            message_id: message_id.into(),
            tenant: Some("acme".into()),
            stream_id: Some("acme/Order-o-1001".into()),
            version: Some(2),
            error: error.into(),
            at: Utc::now(),
        })
        .await
        .expect("notes");

    let mut f = FunctionProcess::start(Path::new(BINARY), &stack, "dlq-processor")
        .await
        .expect("starts");
    let answer = f.invoke(&batch, None).await.expect("answered");
    assert_eq!(
        answer.response().expect("a response"),
        json!({"batchItemFailures": []}),
        "{}",
        f.stderr().join("\n")
    );

    // The DLQ message is an open letter of its tenant, joined with the projector's note.
    let id = letter_id(&[&stack.resource_name("ProjectorDeadLetterQueue"), message_id]);
    let letter = letters
        .get(Some("acme"), &id)
        .await
        .expect("reads")
        .expect("the message is a dead letter");
    assert_eq!(letter.status, Status::Open);
    assert_eq!(letter.consumer, "projector");
    assert_eq!(letter.stream_id.as_deref(), Some("acme/Order-o-1001"));
    assert_eq!(
        (letter.first_version, letter.last_version),
        (Some(2), Some(2))
    );
    assert_eq!(letter.event_type.as_deref(), Some("ItemAdded"));
    assert_eq!(letter.receive_count, 6);
    assert_eq!(letter.last_error.as_deref(), Some(error));
    assert_eq!(letter.body, dead["body"].as_str().expect("body"));
    // The batch description names a stream this stack has not: its commits are unknown, an
    // operator's letter (no tenant's) says so.
    let stream: Vec<_> = letters
        .list(None, &Default::default(), 10)
        .await
        .expect("lists")
        .into_iter()
        .filter(|l| l.consumer == STREAM_CONSUMER)
        .collect();
    assert_eq!(stream.len(), 1, "{stream:?}");
    assert!(
        stream[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("no longer readable")),
        "{stream:?}"
    );

    // The dead-letters API lists the tenant's open projector letters: this one.
    let request = sample("http");
    let answer = f
        .invoke(&request, None)
        .await
        .expect("answered")
        .response()
        .expect("an HTTP response");
    let status = answer["statusCode"].as_u64().expect("statusCode");
    let body: Value =
        serde_json::from_str(answer["body"].as_str().expect("a text body")).expect("JSON");
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["id"], json!(id));
    assert_eq!(items[0]["status"], "open");
    assert_eq!(items[0]["last_error"], error);

    // The metrics it printed are valid EMF, in one namespace, of this function.
    // Its init warmed the one endpoint its requests use, and the call succeeded.
    let warmed = eventfold_local::runtime_api::warm_ups(&f.stdout());
    assert!(
        matches!(warmed.as_slice(), [(endpoint, None)] if endpoint.starts_with("dynamodb:")),
        "{warmed:?}"
    );
    let data = emf::metrics_in(&f.stdout_settled().await).expect("valid EMF");
    assert!(data.iter().all(|d| d.namespace == "Eventfold"));
    assert!(data.iter().all(|d| {
        d.dimensions[0].contains(&("function".to_owned(), "dlq-processor".to_owned()))
    }));
    let sum = |name: &str, consumer: Option<&str>| -> f64 {
        data.iter()
            .filter(|d| d.name == name)
            .filter(|d| {
                consumer.is_none_or(|c| {
                    d.dimensions[0].contains(&("consumer".to_owned(), c.to_owned()))
                })
            })
            .flat_map(|d| d.values.iter())
            .sum()
    };
    assert_eq!(sum("cold_starts", None), 1.0);
    assert_eq!(sum("dead_letters", Some("projector")), 1.0);
    assert_eq!(sum("dead_letters", Some(STREAM_CONSUMER)), 1.0);
    let durations: usize = data
        .iter()
        .filter(|d| d.name == "processing_duration")
        .inspect(|d| assert_eq!(d.unit.as_deref(), Some("Milliseconds")))
        .map(|d| d.values.len())
        .sum();
    assert_eq!(durations, 2, "one per invocation");
}

#[tokio::test]
async fn a_missing_setting_is_named_at_start() {
    let stderr = start_without(
        Path::new(BINARY),
        &root(),
        "dlq-processor",
        "DEAD_LETTERS_TABLE",
    )
    .await
    .expect("fails at start");
    assert!(
        stderr.contains("missing required setting DEAD_LETTERS_TABLE"),
        "{stderr}"
    );
    assert!(stderr.contains("--print-env"), "{stderr}");
}
