//! The stream publisher on the emulator: stream records of real commits -> SNS FIFO topic ->
//! SQS FIFO queue (raw delivery); order, FIFO attributes, thin notifications, and partial
//! failures retried the way Lambda retries a stream batch.

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::{Event, EventRecord, StreamRecord, StreamViewType};
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use eventfold::{EventEnvelope, EventStore, StreamId};
use eventfold_aws::DynamoEventStore;
use eventfold_aws::sns::{NotificationSink, Outgoing, PublishError, SnsPublisher};
use eventfold_aws::streams::from_sdk_item;
use eventfold_consumers::Notification;
use eventfold_testkit::event_store::sample_events;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use stream_publisher::StreamPublisher;
use tests::{events_table, quiet_stack, unique_tenant};
use uuid::Uuid;

/// A FIFO topic with a FIFO queue subscribed to it (raw delivery), as in the template.
struct Fanout {
    sqs: aws_sdk_sqs::Client,
    topic_arn: String,
    queue_url: String,
}

/// A message as it reached the queue.
#[derive(Debug)]
struct Received {
    notification: Notification,
    group: String,
    dedup: String,
    attributes: BTreeMap<String, String>,
}

impl Fanout {
    async fn new(sdk: &eventfold_aws::SdkConfig) -> Self {
        let sns = aws_sdk_sns::Client::new(sdk);
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let id = Uuid::now_v7().simple().to_string();
        let topic_arn = sns
            .create_topic()
            .name(format!("it-{id}-events.fifo"))
            .attributes("FifoTopic", "true")
            .attributes("ContentBasedDeduplication", "false")
            .send()
            .await
            .expect("create topic")
            .topic_arn
            .expect("topic arn");
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("it-{id}-projector.fifo"))
            .attributes(QueueAttributeName::FifoQueue, "true")
            .attributes(QueueAttributeName::ContentBasedDeduplication, "false")
            .send()
            .await
            .expect("create queue")
            .queue_url
            .expect("queue url");
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("queue arn");
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .expect("subscribe");
        Self {
            sqs,
            topic_arn,
            queue_url,
        }
    }

    /// Messages in the queue, without consuming them.
    async fn queued(&self) -> usize {
        self.sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .expect("queue attributes")
            .attributes
            .and_then(|a| {
                a.get(&QueueAttributeName::ApproximateNumberOfMessages)
                    .cloned()
            })
            .and_then(|n| n.parse().ok())
            .expect("message count")
    }

    /// Receives and deletes every message, in queue order.
    async fn drain(&self) -> Vec<Received> {
        let mut out = Vec::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .message_attribute_names("All")
                .send()
                .await
                .expect("receive");
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let system = m.attributes.clone().unwrap_or_default();
                let attributes = m
                    .message_attributes
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                    .collect();
                out.push(Received {
                    notification: serde_json::from_str(m.body().expect("body"))
                        .expect("a notification"),
                    group: system
                        .get(&MessageSystemAttributeName::MessageGroupId)
                        .cloned()
                        .expect("group id"),
                    dedup: system
                        .get(&MessageSystemAttributeName::MessageDeduplicationId)
                        .cloned()
                        .expect("dedup id"),
                    attributes,
                });
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().expect("receipt handle"))
                    .send()
                    .await
                    .expect("delete");
            }
        }
    }
}

/// Appends `events` as one commit, reads the item back from the table and returns the stream
/// record DynamoDB would emit for it.
async fn commit(
    store: &DynamoEventStore,
    dynamo: &aws_sdk_dynamodb::Client,
    events: Vec<EventEnvelope>,
    sequence_number: &str,
) -> EventRecord {
    let stream_id = events[0].stream_id.clone();
    let first = events[0].version;
    store
        .append(
            &stream_id,
            eventfold::ExpectedVersion::assumed(first - 1),
            events,
            None,
        )
        .await
        .expect("append");
    let item = dynamo
        .get_item()
        .table_name(store.table())
        .key("stream_id", AttributeValue::S(stream_id.clone()))
        .key("version", AttributeValue::N(first.to_string()))
        .consistent_read(true)
        .send()
        .await
        .expect("get item")
        .item
        .expect("the commit item");
    let mut change = StreamRecord::default();
    change.keys = from_sdk_item(&HashMap::from([
        ("stream_id".to_owned(), AttributeValue::S(stream_id.clone())),
        ("version".to_owned(), AttributeValue::N(first.to_string())),
    ]));
    change.new_image = from_sdk_item(&item);
    change.sequence_number = Some(sequence_number.to_owned());
    change.size_bytes = 1024;
    change.stream_view_type = Some(StreamViewType::NewImage);
    change.approximate_creation_date_time = chrono::Utc::now();
    let mut record = EventRecord::default();
    record.aws_region = "us-east-1".into();
    record.event_id = Uuid::now_v7().simple().to_string();
    record.event_name = "INSERT".into();
    record.event_source = Some("aws:dynamodb".into());
    record.event_version = Some("1.1".into());
    record.change = change;
    record
}

fn batch(records: &[EventRecord]) -> Event {
    // Through JSON, as Lambda delivers it.
    let json = serde_json::to_value(json!({ "Records": records })).expect("json");
    serde_json::from_value(json).expect("a DynamoDB stream event")
}

fn failures(r: &DynamoDbEventResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .filter_map(|f| f.item_identifier.clone())
        .collect()
}

fn versions_by_group(received: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in received {
        groups
            .entry(r.group.clone())
            .or_default()
            .push(r.notification.version);
    }
    groups
}

struct Setup {
    stack: eventfold_local::LocalStack,
    store: DynamoEventStore,
    dynamo: aws_sdk_dynamodb::Client,
    fanout: Fanout,
    tenant: String,
}

async fn setup(prefix: &str) -> Setup {
    // The stack's own fan-out stays off: these tests drive the publisher themselves.
    let stack = quiet_stack().await;
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let fanout = Fanout::new(&stack.sdk).await;
    Setup {
        store,
        dynamo,
        fanout,
        tenant: unique_tenant(prefix),
        stack,
    }
}

impl Setup {
    fn stream(&self, id: &str) -> StreamId {
        StreamId::new(&self.tenant, "Contract", id).expect("valid")
    }

    fn publisher(&self) -> SnsPublisher {
        SnsPublisher::from_sdk(&self.stack.sdk, &self.fanout.topic_arn)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_publisher_sends_one_fifo_message_per_event_in_order() {
    let s = setup("pub").await;
    let (x, y) = (s.stream("x"), s.stream("y"));
    let (x1, y1, x2) = (
        sample_events(&x, 0, 3),
        sample_events(&y, 0, 2),
        sample_events(&x, 3, 1),
    );
    let mut records = vec![
        commit(&s.store, &s.dynamo, x1.clone(), "100").await,
        commit(&s.store, &s.dynamo, y1.clone(), "200").await,
        commit(&s.store, &s.dynamo, x2.clone(), "300").await,
    ];
    let mut modify = records[1].clone();
    modify.event_name = "MODIFY".into();
    modify.change.sequence_number = Some("250".into());
    records.insert(2, modify);

    let publisher = StreamPublisher::new(s.publisher());
    let response = publisher.handle(batch(&records)).await;
    assert!(failures(&response).is_empty(), "{response:?}");

    let received = s.fanout.drain().await;
    assert_eq!(
        received.len(),
        6,
        "one message per event; the MODIFY publishes nothing"
    );
    let groups = versions_by_group(&received);
    assert_eq!(groups[&x.to_string()], [1, 2, 3, 4]);
    assert_eq!(groups[&y.to_string()], [1, 2]);
    let sent: HashMap<Uuid, &EventEnvelope> = x1
        .iter()
        .chain(&y1)
        .chain(&x2)
        .map(|e| (e.event_id, e))
        .collect();
    for r in &received {
        let event = sent[&r.notification.event_id];
        assert_eq!(
            r.notification,
            Notification::of(event).expect("valid"),
            "full notification"
        );
        assert_eq!(r.group, event.stream_id);
        assert_eq!(r.dedup, event.event_id.to_string());
        let expected: BTreeMap<String, String> = [
            ("event_type", event.event_type.clone()),
            ("category", "Contract".to_owned()),
            ("tenant", s.tenant.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(r.attributes, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_for_sns_arrives_thin() {
    let s = setup("thin").await;
    let z = s.stream("z");
    let mut events = sample_events(&z, 0, 2);
    events[0].data = json!({ "blob": "x".repeat(300 * 1024) });
    let record = commit(&s.store, &s.dynamo, events.clone(), "100").await;
    let response = StreamPublisher::new(s.publisher())
        .handle(batch(&[record]))
        .await;
    assert!(failures(&response).is_empty(), "{response:?}");

    let received = s.fanout.drain().await;
    assert_eq!(received.len(), 2);
    assert_eq!(
        received[0].notification,
        Notification::of(&events[0]).expect("valid").thin()
    );
    assert!(received[0].notification.event.is_none());
    assert_eq!(
        received[0].attributes.get("event_type"),
        Some(&events[0].event_type)
    );
    assert_eq!(received[0].dedup, events[0].event_id.to_string());
    assert_eq!(
        received[1].notification,
        Notification::of(&events[1]).expect("valid"),
        "small events stay full"
    );
}

/// Fails the chosen events, publishes the rest through the real publisher.
struct Flaky {
    inner: SnsPublisher,
    fail: Mutex<HashSet<Uuid>>,
    published: Mutex<Vec<Uuid>>,
}

#[async_trait]
impl NotificationSink for Flaky {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let fail = self.fail.lock().expect("lock").clone();
        let passed: Vec<Outgoing> = batch
            .iter()
            .filter(|m| !fail.contains(&m.notification.event_id))
            .cloned()
            .collect();
        let mut inner = self.inner.publish(&passed).await.into_iter();
        let mut results = Vec::new();
        for n in batch.iter().map(|m| &m.notification) {
            if fail.contains(&n.event_id) {
                results.push(Err(PublishError::Failed {
                    code: "Injected".into(),
                    message: "injected failure".into(),
                }));
            } else {
                let r = inner.next().unwrap_or(Err(PublishError::NoResult));
                if r.is_ok() {
                    self.published.lock().expect("lock").push(n.event_id);
                }
                results.push(r);
            }
        }
        results
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_entry_reports_its_record_and_the_retry_delivers_everything_once() {
    let s = setup("retry").await;
    let (a, b, c) = (s.stream("a"), s.stream("b"), s.stream("c"));
    let commits = [
        (sample_events(&a, 0, 2), "100"),
        (sample_events(&b, 0, 1), "200"),
        (sample_events(&a, 2, 3), "300"),
        (sample_events(&c, 0, 1), "400"),
        (sample_events(&b, 1, 1), "500"),
    ];
    let mut records = Vec::new();
    for (events, seq) in &commits {
        records.push(commit(&s.store, &s.dynamo, events.clone(), seq).await);
    }
    let all: Vec<&EventEnvelope> = commits.iter().flat_map(|(e, _)| e).collect();
    // The last event of the third record fails, and the fourth record's.
    let failing = [commits[2].0[2].event_id, commits[3].0[0].event_id];
    let flaky = Flaky {
        inner: s.publisher(),
        fail: Mutex::new(HashSet::from(failing)),
        published: Mutex::new(Vec::new()),
    };
    let publisher = StreamPublisher::new(flaky);

    let response = publisher.handle(batch(&records)).await;
    assert_eq!(
        failures(&response),
        ["300"],
        "the first failed record's sequence number"
    );
    let published: HashSet<Uuid> = publisher
        .sink()
        .published
        .lock()
        .expect("lock")
        .iter()
        .copied()
        .collect();
    // All 8 events fit in one call: SNS answered for each of them.
    let others: HashSet<Uuid> = all
        .iter()
        .map(|e| e.event_id)
        .filter(|id| !failing.contains(id))
        .collect();
    assert_eq!(published, others);
    assert_eq!(s.fanout.queued().await, others.len());

    // Lambda retries the batch from the failed record on.
    publisher.sink().fail.lock().expect("lock").clear();
    let retry = publisher.handle(batch(&records[2..])).await;
    assert!(failures(&retry).is_empty(), "{retry:?}");

    let received = s.fanout.drain().await;
    let ids: Vec<Uuid> = received.iter().map(|r| r.notification.event_id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "every event exactly once (FIFO dedup)"
    );
    assert_eq!(
        unique,
        all.iter().map(|e| e.event_id).collect::<HashSet<_>>()
    );
    let groups = versions_by_group(&received);
    assert_eq!(groups[&a.to_string()], [1, 2, 3, 4, 5]);
    assert_eq!(groups[&b.to_string()], [1, 2]);
    assert_eq!(groups[&c.to_string()], [1]);
}
