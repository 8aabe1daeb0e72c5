//! One trace from the command to the consumers: a command sent through the local gateway with
//! an `X-Amzn-Trace-Id` keeps it in its commit (`metadata.trace`); the stream publisher, fed
//! by the real stream poller, puts it on the SNS message, and SNS raw delivery hands it to the
//! SQS record as the `trace` attribute that the consumers' message spans read.

use eventfold::EventStore;
use eventfold_aws::DynamoEventStore;
use eventfold_local::esm::EsmOptions;
use eventfold_local::httpc::Http;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tests::{events_table, rw_token, stack_with, unique_tenant};

const TRACE: &str = "Root=1-67a1b2c3-00000000000000000000abcd;Parent=53995c3f42cd8ad8;Sampled=1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_trace_reaches_the_consumers_queues() {
    // Only the stream is polled: the queues keep their records for the test to read.
    let stack = stack_with(EsmOptions {
        functions: Some(["StreamPublisherFunction".to_owned()].into()),
        idle_poll: Duration::from_millis(50),
        report_every: None,
        ..EsmOptions::default()
    })
    .await;
    let tenant = unique_tenant("trace");
    let http = Http::new(&stack.api_url());
    let token = rw_token(&tenant);
    let body = json!({"aggregate_type": "Order", "aggregate_id": "o-1", "type": "CreateOrder",
        "data": {"customer_id": "c-1"}});
    let reply = http
        .send_with(
            "POST",
            "/api/v1/events/commands",
            Some(&token),
            &[("x-amzn-trace-id", TRACE)],
            Some(serde_json::to_vec(&body).expect("json")),
        )
        .await
        .expect("sent");
    assert_eq!(reply.status, 201, "{}", reply.json);

    let stream = format!("{tenant}/Order-o-1");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let commit = store
        .load_range(&stream, 1, None, None)
        .await
        .expect("loads");
    assert_eq!(commit.len(), 1);
    assert_eq!(commit[0].metadata.trace.as_deref(), Some(TRACE));

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = stack.queue_url("ProjectorQueue");
    let until = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let out = sqs
            .receive_message()
            .queue_url(&queue)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receives");
        let found = out.messages.unwrap_or_default().into_iter().find(|m| {
            m.body.as_deref().is_some_and(|b| {
                serde_json::from_str::<Value>(b).is_ok_and(|v| v["stream_id"] == stream.as_str())
            })
        });
        if let Some(m) = found {
            break m;
        }
        assert!(
            Instant::now() < until,
            "the notification never reached the queue"
        );
    };
    let attribute = record
        .message_attributes
        .as_ref()
        .and_then(|a| a.get(eventfold_aws::sns::TRACE_ATTRIBUTE))
        .and_then(|a| a.string_value.as_deref());
    assert_eq!(attribute, Some(TRACE));

    // The consumers read it from the record as Lambda delivers it.
    let mut lambda_record = aws_lambda_events::event::sqs::SqsMessage::default();
    lambda_record.message_attributes.insert(
        eventfold_aws::sns::TRACE_ATTRIBUTE.to_owned(),
        serde_json::from_value(json!({"stringValue": TRACE, "dataType": "String"}))
            .expect("an attribute"),
    );
    assert_eq!(
        eventfold_aws::sqs::record_trace(&lambda_record),
        Some(TRACE)
    );
    stack.stop().await;
}
