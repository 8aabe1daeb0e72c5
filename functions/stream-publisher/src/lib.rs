//! The stream publisher: DynamoDB stream of the events table -> one SNS FIFO message per event.
//!
//! Owns the mapping of stream records to notifications and the partial-failure rule of a
//! stream batch: records are published one after the other, each record's events in order in
//! `PublishBatch` calls of at most 10 (a call never mixes records); the first record with any
//! unpublished event
//! is reported (`batchItemFailures` with its sequence number) and nothing after it is
//! published, because Lambda retries the batch from that record. Events published before the
//! failure are published again on the retry and dropped by the topic's deduplication (dedup id
//! = event id). Decoding lives in `eventfold_aws::streams`, publishing behind
//! [`NotificationSink`]; `main.rs` only wires config and clients.
#![forbid(unsafe_code)]

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use eventfold::projection::Notification;
use eventfold_aws::SdkConfig;
use eventfold_aws::config::ConfigError;
use eventfold_aws::sns::{MAX_BATCH_ENTRIES, NotificationSink, SnsPublisher};
use eventfold_aws::streams::{Decoded, decode_record};

/// Publishes the events of stream records to a [`NotificationSink`].
#[derive(Debug)]
pub struct StreamPublisher<S: NotificationSink> {
    sink: S,
}

/// Reads `EVENTS_TOPIC_ARN` through `lookup` and builds a publisher to that SNS topic.
pub async fn from_lookup(
    sdk: &SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<StreamPublisher<SnsPublisher>, ConfigError> {
    let topic = lookup("EVENTS_TOPIC_ARN")
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing("EVENTS_TOPIC_ARN"))?;
    if !topic.starts_with("arn:") {
        return Err(ConfigError::Invalid {
            name: "EVENTS_TOPIC_ARN",
            value: topic,
            reason: "not an ARN".into(),
        });
    }
    Ok(StreamPublisher::new(SnsPublisher::from_sdk(sdk, topic)))
}

fn sequence_number(record: &EventRecord) -> String {
    record
        .change
        .sequence_number
        .clone()
        .unwrap_or_else(|| record.event_id.clone())
}

impl<S: NotificationSink> StreamPublisher<S> {
    /// A publisher to `sink`.
    pub fn new(sink: S) -> Self {
        Self { sink }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Publishes the events of one record in calls of at most [`MAX_BATCH_ENTRIES`]; stops at
    /// the first call with a failure. Returns how many were published, or why not all.
    async fn publish_record(&self, notifications: &[Notification]) -> Result<usize, String> {
        let mut published = 0;
        for chunk in notifications.chunks(MAX_BATCH_ENTRIES) {
            let results = self.sink.publish(chunk).await;
            let mut first_error = None;
            for (i, n) in chunk.iter().enumerate() {
                // A sink answering fewer results than entries failed the rest.
                let result = results
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| Err("no result".into()));
                if let Err(why) = result {
                    tracing::warn!(stream_id = %n.stream_id, version = n.version, event_id = %n.event_id, error = %why, "event not published");
                    first_error.get_or_insert(why);
                } else {
                    published += 1;
                }
            }
            if let Some(why) = first_error {
                return Err(why);
            }
        }
        Ok(published)
    }

    /// Publishes the events of every `INSERT` commit record of `event`, record by record in
    /// order; reports the first record with a failure and publishes nothing after it.
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let records = &event.records;
        let (mut published, mut skipped) = (0usize, 0usize);
        let mut response = DynamoDbEventResponse::default();
        for record in records {
            let notifications = match decode_record(record) {
                Ok(Decoded::Skipped(why)) => {
                    skipped += 1;
                    tracing::debug!(event_id = %record.event_id, reason = why, "record skipped");
                    continue;
                }
                Ok(Decoded::Commit(events)) => events
                    .iter()
                    .map(|e| Notification::of(e).map_err(|err| err.to_string()))
                    .collect::<Result<Vec<_>, _>>(),
                Err(e) => Err(e.to_string()),
            };
            let outcome = match notifications {
                Ok(n) => self.publish_record(&n).await,
                Err(error) => Err(format!("undecodable record: {error}")),
            };
            match outcome {
                Ok(count) => published += count,
                Err(error) => {
                    let seq = sequence_number(record);
                    tracing::error!(sequence_number = %seq, event_id = %record.event_id, records = records.len(), published, %error, "batch stopped at a failed record; Lambda retries from it");
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(seq);
                    response.batch_item_failures.push(failure);
                    return response;
                }
            }
        }
        tracing::info!(
            records = records.len(),
            published,
            skipped,
            "stream batch published"
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use eventfold::StreamId;
    use eventfold::contract::sample_events;
    use eventfold_aws::streams::insert_record;
    use std::sync::Mutex;

    /// Records every call; fails the entries whose `stream@version` is listed.
    #[derive(Default)]
    struct Fake {
        fail: Vec<String>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    fn label(n: &Notification) -> String {
        format!(
            "{}@{}",
            n.stream_id.rsplit('-').next().unwrap_or(""),
            n.version
        )
    }

    #[async_trait]
    impl NotificationSink for Fake {
        async fn publish(&self, batch: &[Notification]) -> Vec<Result<(), String>> {
            let labels: Vec<String> = batch.iter().map(label).collect();
            let results = labels
                .iter()
                .map(|l| {
                    if self.fail.contains(l) {
                        Err("injected".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .collect();
            self.calls.lock().expect("lock").push(labels);
            results
        }
    }

    fn record(stream: &str, after: u64, count: u64, seq: &str) -> EventRecord {
        let s = StreamId::new("acme", "Order", stream).expect("valid");
        insert_record(&sample_events(&s, after, count), seq).expect("record")
    }

    fn event(records: Vec<EventRecord>) -> Event {
        let mut e = Event::default();
        e.records = records;
        e
    }

    fn batch() -> Event {
        let mut modify = record("b", 1, 1, "35");
        modify.event_name = "MODIFY".into();
        event(vec![
            record("a", 0, 2, "10"),
            record("b", 0, 1, "20"),
            record("a", 2, 1, "30"),
            modify,
            record("b", 1, 12, "40"),
        ])
    }

    fn failures(r: &DynamoDbEventResponse) -> Vec<String> {
        r.batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.clone())
            .collect()
    }

    #[tokio::test]
    async fn publishes_every_event_in_order_one_record_per_call() {
        let publisher = StreamPublisher::new(Fake::default());
        let response = publisher.handle(batch()).await;
        assert!(failures(&response).is_empty());
        let calls = publisher.sink().calls.lock().expect("lock").clone();
        let all: Vec<String> = calls.iter().flatten().cloned().collect();
        let mut expected = vec!["a@1", "a@2", "b@1", "a@3"];
        let b: Vec<String> = (2..=13).map(|v| format!("b@{v}")).collect();
        expected.extend(b.iter().map(String::as_str));
        assert_eq!(all, expected);
        assert!(calls.iter().all(|c| c.len() <= MAX_BATCH_ENTRIES));
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(
            sizes,
            [2, 1, 1, 10, 2],
            "one record per call, at most 10 entries each"
        );
    }

    #[tokio::test]
    async fn stops_at_the_first_record_with_a_failure() {
        let publisher = StreamPublisher::new(Fake {
            fail: vec!["b@1".into()],
            ..Fake::default()
        });
        let response = publisher.handle(batch()).await;
        assert_eq!(failures(&response), ["20"]);
        let calls = publisher.sink().calls.lock().expect("lock").clone();
        assert_eq!(
            calls,
            [vec!["a@1", "a@2"], vec!["b@1"]],
            "nothing after the failed record is published"
        );

        let publisher = StreamPublisher::new(Fake {
            fail: vec!["b@12".into()],
            ..Fake::default()
        });
        assert_eq!(failures(&publisher.handle(batch()).await), ["40"]);
    }

    #[tokio::test]
    async fn an_undecodable_record_fails_after_the_earlier_ones_are_published() {
        let mut broken = record("c", 0, 1, "25");
        broken.change.new_image.remove("metadata");
        broken.change.new_image.insert(
            "metadata".into(),
            serde_dynamo::AttributeValue::S("?".into()),
        );
        let mut e = batch();
        e.records.insert(2, broken);
        let publisher = StreamPublisher::new(Fake::default());
        assert_eq!(failures(&publisher.handle(e).await), ["25"]);
        let calls = publisher.sink().calls.lock().expect("lock").clone();
        assert_eq!(calls, [vec!["a@1", "a@2"], vec!["b@1"]]);
    }

    #[tokio::test]
    async fn configuration_needs_a_topic_arn() {
        let sdk = SdkConfig::builder().build();
        assert!(matches!(
            from_lookup(&sdk, |_| None).await,
            Err(ConfigError::Missing("EVENTS_TOPIC_ARN"))
        ));
        assert!(matches!(
            from_lookup(&sdk, |_| Some("events.fifo".into())).await,
            Err(ConfigError::Invalid { .. })
        ));
        let arn = "arn:aws:sns:us-east-1:123456789012:dev-events.fifo";
        let publisher = from_lookup(&sdk, |_| Some(arn.into()))
            .await
            .expect("configured");
        assert_eq!(publisher.sink().topic_arn(), arn);
    }

    #[test]
    fn the_sample_event_is_one_commit_of_two_events() {
        let raw = include_str!("../events/insert.json");
        let e: Event = serde_json::from_str(raw).expect("sample is a DynamoDB stream event");
        assert_eq!(e.records.len(), 1);
        match decode_record(&e.records[0]).expect("decodes") {
            Decoded::Commit(events) => assert_eq!(events.len(), 2),
            other => panic!("sample is not a commit: {other:?}"),
        }
    }
}
