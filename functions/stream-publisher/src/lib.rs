//! The stream publisher: DynamoDB stream of the events table -> one SNS FIFO message per event.
//!
//! Owns the mapping of stream records to notifications and the partial-failure rule of a
//! stream batch. The events of every `INSERT` commit of one invocation, in stream order, are
//! packed into `PublishBatch` calls of up to 10 entries and 256 KiB ([`publish_packed`]), mixing
//! streams, so single-event commits cost about 0.1 request per event. SNS FIFO keeps the
//! entries' order within a message group (one group per stream), across entries and across
//! calls made one after the other.
//!
//! Partial failures stay exact: the record of the first event that was not published (an
//! entry the call reports `Failed`, every entry of a call that failed as a whole, or a record
//! that cannot be decoded) is reported with its sequence number (`batchItemFailures`), and no
//! further call is made. Lambda retries the batch from that record, so every later record,
//! of any stream, comes again: publishing other streams' later events now would only publish
//! them twice. Entries after a failed one in the same call may already be published (SNS
//! answers per entry); they are published again on the retry and dropped by the topic's
//! deduplication (dedup id = event id), and consumers checkpoint per stream, so a later
//! version that arrives before an earlier one is a gap they fill from the table. Decoding
//! lives in `eventfold_aws::streams`, publishing behind [`NotificationSink`]. [`build`] is the
//! function's one constructor; `main.rs` and the local stack both run what it builds.
#![forbid(unsafe_code)]

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use eventfold_aws::config::ConfigError;
use eventfold_aws::sns::{
    AfterFailure, NotificationSink, Outgoing, PublishError, SnsPublisher, publish_packed,
};
use eventfold_aws::streams::{Decoded, decode_record};
use eventfold_aws::warmup::Warmed;
use eventfold_aws::{SdkConfig, SnsTopic};

/// Why a record of a stream batch is reported failed (Lambda retries the batch from it).
#[derive(Debug, thiserror::Error)]
enum RecordFailure {
    /// The record is not a commit this table writes.
    #[error("undecodable record: {0}")]
    Undecodable(#[source] eventfold::StoreError),
    /// An event of it was not published.
    #[error(transparent)]
    Publish(PublishError),
}

/// Publishes the events of stream records to a [`NotificationSink`].
#[derive(Debug)]
pub struct StreamPublisher<S: NotificationSink> {
    sink: S,
}

/// The function as its `main.rs` and the local stack run it: the publisher to the events
/// topic, and the endpoint it warms at init. Built by [`build`].
#[derive(Debug)]
pub struct Function {
    publisher: StreamPublisher<SnsPublisher>,
}

/// The function's one constructor: reads its setting through `env` once
/// (`EVENTS_TOPIC_ARN`: the process environment in Lambda, the template's resolved environment
/// locally) and builds its SNS client from `sdk`.
pub fn build(
    sdk: &SdkConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Function, ConfigError> {
    let topic = env("EVENTS_TOPIC_ARN")
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::Missing("EVENTS_TOPIC_ARN"))?;
    if !topic.starts_with("arn:") {
        return Err(ConfigError::Invalid {
            name: "EVENTS_TOPIC_ARN",
            value: topic,
            reason: "not an ARN".into(),
        });
    }
    Ok(Function {
        publisher: StreamPublisher::new(SnsPublisher::from_sdk(sdk, topic)),
    })
}

impl Function {
    /// Publishes the events of a stream batch (see [`StreamPublisher::handle`]).
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        self.publisher.handle(event).await
    }

    /// The publisher.
    pub fn publisher(&self) -> &StreamPublisher<SnsPublisher> {
        &self.publisher
    }

    /// Warms the endpoint the batches use (the events topic) at init.
    pub async fn warm_up(&self, sdk: &SdkConfig) -> Vec<Warmed> {
        let arn = self.publisher.sink().topic_arn();
        eventfold_aws::warm_up(sdk, &[&SnsTopic { arn }]).await
    }
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

    /// Publishes the events of every `INSERT` commit record of `event`, packed into as few
    /// calls as SNS allows; reports the first record with an unpublished event and makes no
    /// call after the one that failed.
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let records = &event.records;
        let mut messages: Vec<Outgoing> = Vec::new();
        // The record each message comes from.
        let mut owners: Vec<usize> = Vec::new();
        let mut skipped = 0usize;
        // The first record that cannot be published at all; only the ones before it are sent.
        let mut broken: Option<(usize, RecordFailure)> = None;
        for (index, record) in records.iter().enumerate() {
            let outgoing = match decode_record(record) {
                Ok(Decoded::Skipped(why)) => {
                    skipped += 1;
                    tracing::debug!(event_id = %record.event_id, reason = why, "record skipped");
                    continue;
                }
                Ok(Decoded::Commit(events)) => events
                    .iter()
                    .map(Outgoing::of)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(RecordFailure::Publish),
                Err(e) => Err(RecordFailure::Undecodable(e)),
            };
            match outgoing {
                Ok(batch) => {
                    owners.extend(std::iter::repeat_n(index, batch.len()));
                    messages.extend(batch);
                }
                Err(error) => {
                    broken = Some((index, error));
                    break;
                }
            }
        }
        let sent = publish_packed(&self.sink, &messages, AfterFailure::Stop).await;
        let (mut published, calls) = (0usize, sent.calls);
        let mut failed: Option<(usize, RecordFailure)> = None;
        for (position, result) in sent.results.into_iter().enumerate() {
            match result {
                Some(Ok(())) => published += 1,
                Some(Err(why)) => {
                    let n = &messages[position].notification;
                    tracing::warn!(stream_id = %n.stream_id, version = n.version, event_id = %n.event_id, error = %why, "event not published");
                    if failed.as_ref().is_none_or(|(r, _)| owners[position] < *r) {
                        failed = Some((owners[position], RecordFailure::Publish(why)));
                    }
                }
                // Not sent: a call before it failed.
                None => {}
            }
        }
        eventfold_aws::telemetry::events_published(published);
        let mut response = DynamoDbEventResponse::default();
        if let Some((index, error)) = failed.or(broken) {
            let record = &records[index];
            let seq = sequence_number(record);
            tracing::error!(sequence_number = %seq, event_id = %record.event_id, records = records.len(), published, calls, %error, "batch stopped at a failed record; Lambda retries from it");
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(seq);
            response.batch_item_failures.push(failure);
            return response;
        }
        tracing::info!(
            records = records.len(),
            published,
            skipped,
            calls,
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
    use eventfold_aws::streams::insert_record;
    use eventfold_consumers::Notification;
    use eventfold_testkit::event_store::sample_events;
    use std::sync::Mutex;

    /// Records every call; fails the entries whose `stream@version` is listed, and every
    /// entry of the calls (counted from 1) listed in `fail_calls`.
    #[derive(Default)]
    struct Fake {
        fail: Vec<String>,
        fail_calls: Vec<usize>,
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
        async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
            let labels: Vec<String> = batch.iter().map(|m| label(&m.notification)).collect();
            let mut calls = self.calls.lock().expect("lock");
            let whole = self.fail_calls.contains(&(calls.len() + 1));
            let results = labels
                .iter()
                .map(|l| {
                    if whole || self.fail.contains(l) {
                        Err(PublishError::Failed {
                            code: "Injected".into(),
                            message: "injected".into(),
                        })
                    } else {
                        Ok(())
                    }
                })
                .collect();
            calls.push(labels);
            results
        }
    }

    impl Fake {
        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().expect("lock").clone()
        }

        /// Labels of the entries that were published (not failed), in call order.
        fn published(&self) -> Vec<String> {
            let calls = self.calls();
            calls
                .iter()
                .enumerate()
                .filter(|(i, _)| !self.fail_calls.contains(&(i + 1)))
                .flat_map(|(_, c)| c.iter().filter(|l| !self.fail.contains(l)).cloned())
                .collect()
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

    /// 35 single-event commits over 7 streams, round robin: `s{i % 7}@{i / 7 + 1}`, with
    /// sequence numbers 1..=35.
    fn single_event_commits() -> Vec<EventRecord> {
        (0..35u64)
            .map(|i| record(&format!("s{}", i % 7), i / 7, 1, &(i + 1).to_string()))
            .collect()
    }

    fn failures(r: &DynamoDbEventResponse) -> Vec<String> {
        r.batch_item_failures
            .iter()
            .filter_map(|f| f.item_identifier.clone())
            .collect()
    }

    /// Versions per stream, in the order they were first published (the topic drops repeats).
    fn first_deliveries(published: &[String]) -> std::collections::BTreeMap<String, Vec<u64>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        for l in published {
            if seen.insert(l.clone()) {
                let (stream, version) = l.split_once('@').expect("label");
                out.entry(stream.to_owned())
                    .or_default()
                    .push(version.parse().expect("version"));
            }
        }
        out
    }

    #[tokio::test]
    async fn packs_events_of_many_commits_into_calls_of_ten_in_stream_order() {
        let publisher = StreamPublisher::new(Fake::default());
        let response = publisher.handle(batch()).await;
        assert!(failures(&response).is_empty());
        let calls = publisher.sink().calls();
        let all: Vec<String> = calls.iter().flatten().cloned().collect();
        let mut expected = vec!["a@1", "a@2", "b@1", "a@3"];
        let b: Vec<String> = (2..=13).map(|v| format!("b@{v}")).collect();
        expected.extend(b.iter().map(String::as_str));
        assert_eq!(all, expected);
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 6], "calls mix records, 10 entries at most");

        let publisher = StreamPublisher::new(Fake::default());
        let response = publisher.handle(event(single_event_commits())).await;
        assert!(failures(&response).is_empty());
        let sizes: Vec<usize> = publisher.sink().calls().iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 10, 5], "35 events in 4 PublishBatch calls");
        let delivered = first_deliveries(&publisher.sink().published());
        assert_eq!(delivered.len(), 7);
        for versions in delivered.values() {
            assert_eq!(
                versions,
                &[1, 2, 3, 4, 5],
                "each event once, in stream order"
            );
        }
    }

    #[tokio::test]
    async fn reports_the_record_of_the_first_failed_entry_and_stops_calling() {
        let publisher = StreamPublisher::new(Fake {
            fail: vec!["b@1".into()],
            ..Fake::default()
        });
        let response = publisher.handle(batch()).await;
        assert_eq!(failures(&response), ["20"]);
        assert_eq!(
            publisher.sink().calls().len(),
            1,
            "no call after the failed one"
        );

        let publisher = StreamPublisher::new(Fake {
            fail: vec!["b@12".into()],
            ..Fake::default()
        });
        assert_eq!(failures(&publisher.handle(batch()).await), ["40"]);
    }

    #[tokio::test]
    async fn a_failed_entry_anywhere_is_retried_to_every_event_delivered_once_in_order() {
        for position in 0..35u64 {
            let failed = format!("s{}@{}", position % 7, position / 7 + 1);
            let publisher = StreamPublisher::new(Fake {
                fail: vec![failed.clone()],
                ..Fake::default()
            });
            let records = single_event_commits();
            let response = publisher.handle(event(records.clone())).await;
            let reported = (position + 1).to_string();
            assert_eq!(failures(&response), [reported.as_str()], "entry {failed}");
            let calls = publisher.sink().calls();
            assert_eq!(
                calls.len() as u64,
                position / 10 + 1,
                "stops after the failed call"
            );
            let mut published = publisher.sink().published();

            // Lambda retries from the reported record; this time nothing fails.
            let retry = StreamPublisher::new(Fake::default());
            let again = retry
                .handle(event(records[position as usize..].to_vec()))
                .await;
            assert!(failures(&again).is_empty());
            published.extend(retry.sink().published());
            let delivered = first_deliveries(&published);
            let all: usize = delivered.values().map(Vec::len).sum();
            assert_eq!(all, 35, "every event delivered after the retry ({failed})");
            // Only the failed entry's own stream may see a later version first (published in
            // the same call); every other stream keeps its order.
            let failed_stream = failed.split_once('@').expect("label").0;
            for (stream, versions) in &delivered {
                let mut sorted = versions.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, [1, 2, 3, 4, 5], "{stream} complete ({failed})");
                if stream != failed_stream {
                    assert_eq!(versions, &sorted, "{stream} in order ({failed})");
                }
            }
        }
    }

    #[tokio::test]
    async fn a_call_failing_as_a_whole_reports_its_first_record() {
        let publisher = StreamPublisher::new(Fake {
            fail_calls: vec![2],
            ..Fake::default()
        });
        let response = publisher.handle(event(single_event_commits())).await;
        assert_eq!(
            failures(&response),
            ["11"],
            "the first record of the failed call"
        );
        assert_eq!(publisher.sink().calls().len(), 2);
        assert_eq!(publisher.sink().published().len(), 10);
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
        assert_eq!(publisher.sink().calls(), [vec!["a@1", "a@2", "b@1"]]);
    }

    #[tokio::test]
    async fn configuration_needs_a_topic_arn() {
        let sdk = SdkConfig::builder().build();
        assert!(matches!(
            build(&sdk, |_| None),
            Err(ConfigError::Missing("EVENTS_TOPIC_ARN"))
        ));
        assert!(matches!(
            build(&sdk, |_| Some("events.fifo".into())),
            Err(ConfigError::Invalid { .. })
        ));
        let arn = "arn:aws:sns:us-east-1:123456789012:dev-events.fifo";
        let function = build(&sdk, |_| Some(arn.into())).expect("configured");
        assert_eq!(function.publisher().sink().topic_arn(), arn);
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
