//! SQS event source: receives up to `BatchSize` messages (short polls, all system and
//! message attributes), turns them into the Lambda SQS event, invokes the function, and
//! deletes only the messages that succeeded. Failed messages (named in `batchItemFailures`,
//! or all of them on a whole-function error) are left to reappear after the visibility
//! timeout; the queue's redrive policy moves them to its dead-letter queue after
//! `maxReceiveCount` receives. Messages the filter criteria drop are deleted, as Lambda does.

use super::{Counters, Outcome, Target, Throttle, filter, outcome};
use crate::template::SqsSourceSpec;
use aws_config::SdkConfig;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, SdkError};
use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// Most messages one ReceiveMessage returns.
const RECEIVE_MAX: usize = 10;

/// One SQS event source of a function.
pub struct SqsSource {
    /// Queue URL.
    pub queue_url: String,
    /// Queue ARN (`eventSourceARN`).
    pub queue_arn: String,
    /// A FIFO queue.
    pub fifo: bool,
    /// The template's settings.
    pub spec: SqsSourceSpec,
    /// `ReportBatchItemFailures` is on.
    pub report_failures: bool,
    /// Region (`awsRegion`).
    pub region: String,
    /// The function, its counters and pauses.
    pub target: Target,
}

/// A received message as the record of the Lambda SQS event
/// (`aws_lambda_events::event::sqs::SqsMessage`).
pub fn message_json(m: &Message, queue_arn: &str, region: &str) -> Value {
    let attributes: Map<String, Value> = m
        .attributes
        .iter()
        .flatten()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v)))
        .collect();
    let message_attributes: Map<String, Value> = m
        .message_attributes
        .iter()
        .flatten()
        .map(|(k, v)| {
            let b64 = |b: &aws_sdk_sqs::primitives::Blob| STANDARD.encode(b.as_ref());
            (
                k.clone(),
                json!({
                    "stringValue": v.string_value,
                    "binaryValue": v.binary_value.as_ref().map(b64),
                    "stringListValues": v.string_list_values.clone().unwrap_or_default(),
                    "binaryListValues": v.binary_list_values.iter().flatten().map(b64).collect::<Vec<_>>(),
                    "dataType": v.data_type,
                }),
            )
        })
        .collect();
    let mut out = json!({
        "messageId": m.message_id.clone().unwrap_or_default(),
        "receiptHandle": m.receipt_handle.clone().unwrap_or_default(),
        "body": m.body.clone().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body.clone().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    });
    if let Some(md5) = &m.md5_of_message_attributes {
        out["md5OfMessageAttributes"] = json!(md5);
    }
    out
}

/// The record as filter criteria see it: a JSON body is matched as JSON.
fn filterable(record: &Value) -> Value {
    let mut r = record.clone();
    if let Some(parsed) = record["body"]
        .as_str()
        .and_then(|b| serde_json::from_str::<Value>(b).ok())
    {
        r["body"] = parsed;
    }
    r
}

/// Pollers one source runs at most at once locally, whatever its `MaximumConcurrency`: the
/// emulator serves one request at a time, so more pollers only wait on it.
pub const LOCAL_MAX_POLLERS: usize = 8;

/// Pollers of `spec`: its `MaximumConcurrency` (AWS's floor is 2), else Lambda's
/// starting five, capped at [`LOCAL_MAX_POLLERS`].
pub fn pollers(spec: &SqsSourceSpec) -> usize {
    spec.maximum_concurrency
        .map_or(5, |m| m as usize)
        .clamp(1, LOCAL_MAX_POLLERS)
}

/// Polls the queue until the task is aborted, with as many pollers at once as the backlog
/// asks for, up to [`pollers`], as Lambda scales a queue's pollers: one always polls; a
/// poller that gets a full batch wakes another, and an extra poller that finds the queue
/// empty goes back to sleep (so an idle queue costs one poller's short polls). On a FIFO
/// queue the queue itself keeps a message group to one batch in flight (SQS hands out no
/// message of a group while another of it is in flight), so pollers at once are batches of
/// different groups, and each group stays in order.
pub async fn run(sdk: SdkConfig, source: SqsSource) {
    let client = Client::new(&sdk);
    attach(&client, &source).await;
    let source = std::sync::Arc::new(source);
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    // Dropped with this task, the set aborts the extra pollers too.
    let mut extra = tokio::task::JoinSet::new();
    for _ in 1..pollers(&source.spec) {
        let (client, source, wake) = (client.clone(), source.clone(), wake.clone());
        extra.spawn(async move {
            loop {
                wake.notified().await;
                poll(&client, &source, &wake, false).await;
            }
        });
    }
    poll(&client, &source, &wake, true).await;
}

/// Receives and delivers until the task is aborted (`always`) or the queue has nothing.
async fn poll(client: &Client, source: &SqsSource, wake: &tokio::sync::Notify, always: bool) {
    let mut warn = Throttle::new();
    let want = source.spec.batch_size.max(1) as usize;
    loop {
        match receive(client, source).await {
            Err(e) => {
                if warn.ready() {
                    tracing::warn!(function = %source.target.function, queue = %source.queue_url, error = %DisplayErrorContext(&e), "ReceiveMessage failed; retrying");
                }
                tokio::time::sleep(source.target.tuning.idle_poll * 5).await;
            }
            Ok(messages) if messages.is_empty() => {
                if !always {
                    return;
                }
                tokio::time::sleep(source.target.tuning.idle_poll).await;
            }
            Ok(messages) => {
                if messages.len() >= want.min(RECEIVE_MAX) {
                    // A full batch: more is likely waiting.
                    wake.notify_one();
                }
                deliver(client, source, messages).await;
            }
        }
    }
}

/// Lambda reads the queue's attributes with the function's role before its poller starts
/// (why the Lambda guide lists `sqs:GetQueueAttributes` among a consumer's permissions), so a
/// role without it gets a mapping that never polls. Retried, loudly, until it is allowed.
async fn attach(client: &Client, source: &SqsSource) {
    let mut warn = Throttle::new();
    loop {
        match client
            .get_queue_attributes()
            .queue_url(&source.queue_url)
            .attribute_names(QueueAttributeName::VisibilityTimeout)
            .send()
            .await
        {
            Ok(_) => return,
            Err(e) => {
                if warn.ready() {
                    tracing::error!(function = %source.target.function, queue = %source.queue_url, error = %DisplayErrorContext(&e), "the event source mapping cannot read its queue's attributes; it does not poll");
                }
                tokio::time::sleep(source.target.tuning.idle_poll * 5).await;
            }
        }
    }
}

async fn receive(
    client: &Client,
    source: &SqsSource,
) -> Result<Vec<Message>, SdkError<ReceiveMessageError>> {
    let want = source.spec.batch_size.max(1) as usize;
    let mut out: Vec<Message> = Vec::new();
    while out.len() < want {
        let ask = (want - out.len()).min(RECEIVE_MAX);
        let got = client
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(ask as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            // Short polls: a long poll would hold the (serialized) emulator.
            .wait_time_seconds(0)
            .set_visibility_timeout(
                source
                    .target
                    .tuning
                    .sqs_visibility_timeout
                    .map(|d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX)),
            )
            .send()
            .await?
            .messages
            .unwrap_or_default();
        let full = got.len() == ask;
        out.extend(got);
        if !full {
            break;
        }
    }
    Ok(out)
}

async fn delete(client: &Client, source: &SqsSource, receipts: &[(String, String)]) {
    for chunk in receipts.chunks(RECEIVE_MAX) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .ok()
            })
            .collect();
        match client
            .delete_message_batch()
            .queue_url(&source.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                for f in out.failed {
                    tracing::warn!(function = %source.target.function, id = %f.id, code = %f.code, "deleting a processed message failed; it will be redelivered");
                }
            }
            Err(e) => {
                tracing::warn!(function = %source.target.function, error = %DisplayErrorContext(e), "deleting processed messages failed; they will be redelivered");
            }
        }
    }
}

async fn deliver(client: &Client, source: &SqsSource, messages: Vec<Message>) {
    Counters::add(&source.target.counters.records_in, messages.len());
    let mut records = Vec::with_capacity(messages.len());
    let mut dropped = Vec::new();
    for m in &messages {
        let record = message_json(m, &source.queue_arn, &source.region);
        let id = (
            m.message_id.clone().unwrap_or_default(),
            m.receipt_handle.clone().unwrap_or_default(),
        );
        if filter::passes(&source.spec.filters, &filterable(&record)) {
            records.push((id, record));
        } else {
            dropped.push(id);
        }
    }
    if !dropped.is_empty() {
        Counters::add(&source.target.counters.filtered, dropped.len());
        delete(client, source, &dropped).await;
    }
    if records.is_empty() {
        return;
    }
    let event = json!({ "Records": records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>() });
    let result = source.target.invoke(event).await;
    let ids: Vec<&str> = records.iter().map(|((id, _), _)| id.as_str()).collect();
    let failed: Vec<usize> = match outcome(result, &ids, source.report_failures) {
        Outcome::Success => Vec::new(),
        Outcome::Partial(failed) => failed,
        Outcome::Error(e) => {
            Counters::add(&source.target.counters.function_errors, 1);
            tracing::warn!(function = %source.target.function, messages = records.len(), error = %e, "function error on an SQS batch; messages return after the visibility timeout");
            (0..records.len()).collect()
        }
    };
    let done: Vec<(String, String)> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, (id, _))| id.clone())
        .collect();
    Counters::add(&source.target.counters.failed, failed.len());
    if !done.is_empty() {
        delete(client, source, &done).await;
        Counters::add(&source.target.counters.ok, done.len());
    }
    if source.fifo && !failed.is_empty() {
        tracing::debug!(function = %source.target.function, failed = failed.len(), "FIFO messages failed; their groups wait for the visibility timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pollers_follow_maximum_concurrency_within_the_local_cap() {
        let spec = |m: Option<u32>| SqsSourceSpec {
            name: "Queue".into(),
            queue: "Q".into(),
            batch_size: 10,
            filters: Vec::new(),
            function_response_types: Vec::new(),
            maximum_concurrency: m,
            maximum_batching_window_seconds: 0,
            enabled: true,
        };
        assert_eq!(pollers(&spec(None)), 5, "Lambda's starting five");
        assert_eq!(pollers(&spec(Some(2))), 2);
        assert_eq!(pollers(&spec(Some(100))), LOCAL_MAX_POLLERS);
    }
    use aws_sdk_sqs::types::MessageAttributeValue;

    #[test]
    fn messages_deserialize_into_the_lambda_sqs_event() {
        let m = Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body(r#"{"stream_id":"t/Order-1","version":2}"#)
            .md5_of_body("abc")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::MessageGroupId, "t/Order-1")
            .attributes(MessageSystemAttributeName::MessageDeduplicationId, "ev-1")
            .attributes(MessageSystemAttributeName::SequenceNumber, "1800")
            .message_attributes(
                "event_type",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("OrderPlaced")
                    .build()
                    .expect("valid"),
            )
            .message_attributes(
                "blob",
                MessageAttributeValue::builder()
                    .data_type("Binary")
                    .binary_value(aws_sdk_sqs::primitives::Blob::new(b"hi".to_vec()))
                    .build()
                    .expect("valid"),
            )
            .build();
        let arn = "arn:aws:sqs:us-east-1:123456789012:q.fifo";
        let record = message_json(&m, arn, "us-east-1");
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(json!({ "Records": [record.clone()] })).expect("an SQS event");
        let r = &event.records[0];
        assert_eq!(r.message_id.as_deref(), Some("m-1"));
        assert_eq!(r.receipt_handle.as_deref(), Some("rh-1"));
        assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(r.event_source_arn.as_deref(), Some(arn));
        assert_eq!(r.aws_region.as_deref(), Some("us-east-1"));
        assert_eq!(r.attributes["ApproximateReceiveCount"], "2");
        assert_eq!(r.attributes["MessageGroupId"], "t/Order-1");
        assert_eq!(r.attributes["MessageDeduplicationId"], "ev-1");
        assert_eq!(r.attributes["SequenceNumber"], "1800");
        let attr = &r.message_attributes["event_type"];
        assert_eq!(attr.string_value.as_deref(), Some("OrderPlaced"));
        assert_eq!(attr.data_type.as_deref(), Some("String"));
        let blob = r.message_attributes["blob"]
            .binary_value
            .as_ref()
            .expect("binary");
        assert_eq!(blob.0, b"hi".to_vec());
        assert_eq!(r.md5_of_body.as_deref(), Some("abc"));
        // Filters see a JSON body as JSON.
        assert!(filter::passes(
            &[json!({"body": {"version": [2]}})],
            &filterable(&record)
        ));
        assert!(!filter::passes(
            &[json!({"body": {"version": [3]}})],
            &filterable(&record)
        ));
    }
}
