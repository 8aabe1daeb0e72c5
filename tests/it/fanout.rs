//! The event-source-mapping emulator on the emulator: real DynamoDB stream records and real
//! SQS FIFO messages from the template's resources, delivered to (fake and real) handlers as
//! Lambda would: filter criteria, batch item failures, retries, bisection, on-failure
//! destination, visibility timeout and dead-letter queue.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use eventfold::{EventStore, StreamId};
use eventfold_aws::DynamoEventStore;
use eventfold_consumers::Notification;
use eventfold_local::LocalStack;
use eventfold_local::esm::{EsmOptions, EventHandler, event_handler};
use eventfold_testkit::event_store::sample_events;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{events_table, stack_named, stack_with, unique_tenant};

const PUBLISHER: &str = "StreamPublisherFunction";
const PROJECTOR: &str = "ProjectorFunction";

/// Only `function`'s event sources, fast retries, no stats printing.
fn only(function: &str) -> EsmOptions {
    EsmOptions {
        functions: Some([function.to_owned()].into()),
        idle_poll: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        report_every: None,
        ..EsmOptions::default()
    }
}

fn with_handler(function: &str, handler: EventHandler) -> EsmOptions {
    let mut o = only(function);
    o.handler_overrides.insert(function.to_owned(), handler);
    o
}

fn unique_name() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{}-{}", tests::STACK, &id[id.len() - 10..])
}

async fn wait_until(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes a bare commit item (the fake handlers only look at keys).
async fn put(dynamo: &aws_sdk_dynamodb::Client, table: &str, stream: &str, version: u64) {
    dynamo
        .put_item()
        .table_name(table)
        .item("stream_id", AttributeValue::S(stream.into()))
        .item("version", AttributeValue::N(version.to_string()))
        .item("count", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("put");
}

/// Receives one message from `url` within `limit` (and deletes it).
async fn receive_one(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    limit: Duration,
) -> aws_sdk_sqs::types::Message {
    let start = Instant::now();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(1)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        if let Some(m) = got.messages.unwrap_or_default().into_iter().next() {
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().expect("receipt"))
                .send()
                .await
                .expect("delete");
            return m;
        }
        assert!(
            start.elapsed() < limit,
            "nothing arrived on {url} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A stream record as the fake handler saw it: (stream id, sequence number, event name).
type Seen = (String, String, String);

#[derive(Default)]
struct StreamLog {
    invocations: Vec<Vec<Seen>>,
    /// Records before the first failure of each invocation, in delivery order.
    acked: Vec<Seen>,
    failed_once: HashSet<String>,
}

/// A stream function that fails `poison` always, `fail-once` on its first delivery, and the
/// whole invocation when the batch holds `boom`; it reports the failures as Lambda expects.
fn scripted_stream_handler(log: Arc<Mutex<StreamLog>>) -> EventHandler {
    event_handler(move |event: Value| {
        let log = log.clone();
        async move {
            // The payload is a real Lambda DynamoDB event.
            let typed: aws_lambda_events::event::dynamodb::Event =
                serde_json::from_value(event.clone()).map_err(|e| e.to_string())?;
            let seen: Vec<Seen> = event["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    (
                        r["dynamodb"]["Keys"]["stream_id"]["S"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        r["dynamodb"]["SequenceNumber"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        r["eventName"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            assert_eq!(typed.records.len(), seen.len());
            let mut log = log.lock().expect("log");
            log.invocations.push(seen.clone());
            if seen.iter().any(|s| s.0 == "boom") {
                return Err("boom".to_owned());
            }
            let mut failures = Vec::new();
            for s in &seen {
                let fails =
                    s.0 == "poison" || (s.0 == "fail-once" && log.failed_once.insert(s.1.clone()));
                if fails {
                    failures.push(json!({"itemIdentifier": s.1}));
                } else if failures.is_empty() {
                    log.acked.push(s.clone());
                }
            }
            Ok(json!({ "batchItemFailures": failures }))
        }
    })
}

/// Provisions a stack without pollers, writes `records` ((stream, version); a version of 0
/// updates the stream's version 1 instead), then starts the publisher's stream source on the
/// same resources with the scripted handler.
async fn stream_stack(records: &[(&str, u64)]) -> (LocalStack, Arc<Mutex<StreamLog>>) {
    let name = unique_name();
    let setup = stack_named(
        &name,
        EsmOptions {
            enabled: false,
            ..only(PUBLISHER)
        },
    )
    .await;
    let table = events_table(&setup);
    let dynamo = aws_sdk_dynamodb::Client::new(&setup.sdk);
    for (stream, version) in records {
        if *version == 0 {
            dynamo
                .update_item()
                .table_name(&table)
                .key("stream_id", AttributeValue::S((*stream).into()))
                .key("version", AttributeValue::N("1".into()))
                .update_expression("SET touched = :t")
                .expression_attribute_values(":t", AttributeValue::Bool(true))
                .send()
                .await
                .expect("update");
        } else {
            put(&dynamo, &table, stream, *version).await;
        }
    }
    drop(setup);
    let log = Arc::new(Mutex::new(StreamLog::default()));
    // A second start on the same emulator finds every resource in place.
    let stack = stack_named(
        &name,
        with_handler(PUBLISHER, scripted_stream_handler(log.clone())),
    )
    .await;
    (stack, log)
}

fn stream_arn(stack: &LocalStack) -> String {
    stack
        .template
        .resolve(&json!({"Fn::GetAtt": ["EventsTable", "StreamArn"]}))
        .expect("the stream ARN is known once provisioned")
}

fn seq_of(log: &StreamLog, stream: &str) -> String {
    log.invocations
        .iter()
        .flatten()
        .find(|s| s.0 == stream)
        .map(|s| s.1.clone())
        .unwrap_or_else(|| panic!("{stream} was delivered"))
}

/// Sequence numbers are decimal strings longer than u64: compare by length, then text.
fn ascending(seqs: &[String]) -> bool {
    seqs.windows(2)
        .all(|w| (w[0].len(), &w[0]) < (w[1].len(), &w[1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_records_arrive_in_order_filtered_retried_and_finally_given_up() {
    let (stack, log) = stream_stack(&[
        ("s", 1),
        ("s", 2),
        ("s", 3),
        ("s", 4),
        ("s", 5),
        ("s", 0), // MODIFY of s/1: filtered out (INSERT only)
        ("fail-once", 1),
        ("s", 6),
        ("s", 7),
        ("poison", 1),
    ])
    .await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let failure = receive_one(
        &sqs,
        &stack.queue_url("StreamFailureQueue"),
        Duration::from_secs(30),
    )
    .await;

    // The shard moves on after giving up.
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    put(&dynamo, &events_table(&stack), "s", 8).await;
    wait_until(Duration::from_secs(20), "s/8 acknowledged", || {
        log.lock().expect("log").acked.len() == 9
    })
    .await;

    let log = log.lock().expect("log");
    let names: Vec<&str> = log.acked.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        ["s", "s", "s", "s", "s", "fail-once", "s", "s", "s"],
        "{:?}",
        log.invocations
    );
    let acked: Vec<String> = log.acked.iter().map(|s| s.1.clone()).collect();
    assert!(ascending(&acked), "in stream order: {acked:?}");
    assert!(
        log.invocations.iter().flatten().all(|s| s.2 == "INSERT"),
        "the MODIFY record is filtered out"
    );
    // The first batch held every INSERT written before the poller started; the retry started
    // exactly at the reported failure.
    assert_eq!(log.invocations[0].len(), 9, "{:?}", log.invocations);
    assert_eq!(log.invocations[1], log.invocations[0][5..].to_vec());
    assert_eq!(log.invocations[1][0].1, seq_of(&log, "fail-once"));
    // Then poison alone, MaximumRetryAttempts (5) times, then the on-failure queue.
    let poison = seq_of(&log, "poison");
    let alone = log
        .invocations
        .iter()
        .filter(|i| i.len() == 1 && i[0].1 == poison)
        .count();
    assert_eq!(alone, 5, "{:?}", log.invocations);

    let body: Value = serde_json::from_str(failure.body().expect("body")).expect("json");
    assert_eq!(
        body["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert!(
        body["requestContext"]["functionArn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:lambda:") && a.ends_with(PUBLISHER)),
        "{body}"
    );
    assert_eq!(body["responseContext"]["statusCode"], 200);
    let info = &body["DDBStreamBatchInfo"];
    assert_eq!(info["startSequenceNumber"], poison);
    assert_eq!(info["endSequenceNumber"], poison);
    assert_eq!(info["batchSize"], 1);
    assert_eq!(info["streamArn"], stream_arn(&stack));
    assert!(info["shardId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(
        info["approximateArrivalOfFirstRecord"].is_string(),
        "{body}"
    );

    let stats = stack
        .esm()
        .source_stats(PUBLISHER, "EventsStream")
        .expect("the source runs");
    assert_eq!(stats.records_in, 10);
    assert_eq!(stats.ok, 9);
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.filtered, 1);
    assert_eq!(stats.sent_to_on_failure, 1);
    assert_eq!(stats.function_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_bisects_the_batch_down_to_the_bad_record() {
    let (stack, log) = stream_stack(&[
        ("a", 1),
        ("a", 2),
        ("a", 3),
        ("a", 4),
        ("boom", 1),
        ("a", 5),
        ("a", 6),
        ("a", 7),
    ])
    .await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let failure = receive_one(
        &sqs,
        &stack.queue_url("StreamFailureQueue"),
        Duration::from_secs(30),
    )
    .await;
    wait_until(Duration::from_secs(10), "the rest acknowledged", || {
        log.lock().expect("log").acked.len() == 7
    })
    .await;

    let log = log.lock().expect("log");
    let acked: Vec<String> = log.acked.iter().map(|s| s.1.clone()).collect();
    assert!(ascending(&acked), "in stream order: {:?}", log.invocations);
    assert!(log.acked.iter().all(|s| s.0 == "a"));
    let boom = seq_of(&log, "boom");
    let sizes: Vec<usize> = log.invocations.iter().map(Vec::len).collect();
    // 8 -> 4 ok + 4 -> 2 -> boom alone (1 + 5 retries), then the other halves.
    assert_eq!(&sizes[..4], [8, 4, 4, 2], "{:?}", log.invocations);
    let alone = log
        .invocations
        .iter()
        .filter(|i| i.len() == 1 && i[0].1 == boom)
        .count();
    assert_eq!(alone, 6, "{:?}", log.invocations);

    let body: Value = serde_json::from_str(failure.body().expect("body")).expect("json");
    assert_eq!(
        body["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(body["responseContext"]["functionError"], "Unhandled");
    assert_eq!(body["DDBStreamBatchInfo"]["startSequenceNumber"], boom);
    assert_eq!(body["DDBStreamBatchInfo"]["endSequenceNumber"], boom);
    let stats = stack.esm_stats()[PUBLISHER];
    assert_eq!(stats.ok, 7);
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.function_errors, 9);
}

/// An SQS delivery as the fake projector saw it.
#[derive(Debug, Clone)]
struct Delivery {
    body: String,
    group: String,
    receive_count: u32,
    event_type: Option<String>,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_reaches_the_dlq_while_other_groups_flow() {
    let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let handler = {
        let log = log.clone();
        event_handler(move |event: Value| {
            let log = log.clone();
            async move {
                let typed: aws_lambda_events::event::sqs::SqsEvent =
                    serde_json::from_value(event).map_err(|e| e.to_string())?;
                let mut failed_groups = HashSet::new();
                let mut failures = Vec::new();
                for r in typed.records {
                    let group = r.attributes["MessageGroupId"].clone();
                    let body = r.body.clone().unwrap_or_default();
                    log.lock().expect("log").push(Delivery {
                        body: body.clone(),
                        group: group.clone(),
                        receive_count: r.attributes["ApproximateReceiveCount"]
                            .parse()
                            .expect("a count"),
                        event_type: r
                            .message_attributes
                            .get("event_type")
                            .and_then(|a| a.string_value.clone()),
                        at: Instant::now(),
                    });
                    // FIFO: a failure fails the rest of its group in this batch.
                    if body == "poison" || failed_groups.contains(&group) {
                        failed_groups.insert(group);
                        failures.push(json!({"itemIdentifier": r.message_id}));
                    }
                }
                Ok::<_, String>(json!({ "batchItemFailures": failures }))
            }
        })
    };
    let mut options = with_handler(PROJECTOR, handler);
    options.sqs_visibility_timeout = Some(Duration::from_secs(1));
    let stack = stack_with(options).await;

    // Through the topic and the template's subscription (raw delivery).
    let sns = aws_sdk_sns::Client::new(&stack.sdk);
    let topic = stack
        .template
        .resolve(&json!({"Ref": "EventsTopic"}))
        .expect("topic ARN");
    let publish = |body: String, group: &str| {
        sns.publish()
            .topic_arn(&topic)
            .message(body)
            .message_group_id(group)
            .message_deduplication_id(uuid::Uuid::now_v7().to_string())
            .message_attributes(
                "event_type",
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("Thing")
                    .build()
                    .expect("valid"),
            )
            // A category a view reads: the subscription's filter lets it through.
            .message_attributes(
                "category",
                aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("Order")
                    .build()
                    .expect("valid"),
            )
            .send()
    };
    publish("poison".into(), "p").await.expect("publish");
    for i in 0..4 {
        for g in ["g1", "g2", "g3"] {
            publish(format!("{g}-{i}"), g).await.expect("publish");
        }
    }

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let dead = receive_one(
        &sqs,
        &stack.queue_url("ProjectorDeadLetterQueue"),
        Duration::from_secs(40),
    )
    .await;
    assert_eq!(dead.body(), Some("poison"));
    let dead_group = dead
        .attributes
        .as_ref()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        .cloned();
    assert_eq!(dead_group.as_deref(), Some("p"));

    let log = log.lock().expect("log").clone();
    let poison: Vec<&Delivery> = log.iter().filter(|d| d.body == "poison").collect();
    let counts: Vec<u32> = poison.iter().map(|d| d.receive_count).collect();
    assert_eq!(
        counts,
        [1, 2, 3, 4, 5],
        "maxReceiveCount receives, then the DLQ"
    );
    let good: Vec<&Delivery> = log.iter().filter(|d| d.body != "poison").collect();
    assert_eq!(good.len(), 12, "each other message exactly once: {good:?}");
    assert!(good.iter().all(|d| d.receive_count == 1));
    assert!(log.iter().all(|d| d.event_type.as_deref() == Some("Thing")));
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in &good {
        by_group.entry(&d.group).or_default().push(&d.body);
    }
    for g in ["g1", "g2", "g3"] {
        let want: Vec<String> = (0..4).map(|i| format!("{g}-{i}")).collect();
        assert_eq!(by_group[g], want, "group {g} in order");
    }
    // The other groups did not wait for the poison message.
    let last_good = good.iter().map(|d| d.at).max().expect("some");
    assert!(
        last_good < poison[poison.len() - 1].at,
        "other groups finished before the poison message's last receive"
    );
    let stats = stack.esm_stats()[PROJECTOR];
    assert_eq!(stats.ok, 12);
    assert_eq!(stats.failed, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_stream_publisher_fans_commits_out_to_the_projector_queue() {
    // The real stream-publisher; no projector, so the notifications stay in its queue.
    let stack = stack_with(only(PUBLISHER)).await;
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let tenant = unique_tenant("fanout");
    let a = StreamId::new(&tenant, "Order", "a").expect("valid");
    let b = StreamId::new(&tenant, "Order", "b").expect("valid");
    let first = sample_events(&a, 0, 3);
    let mut big = sample_events(&b, 0, 1);
    big[0].data = json!({ "blob": "x".repeat(300 * 1024) });
    let second = sample_events(&a, 3, 2);
    for (stream, after, events) in [(&a, 0, &first), (&b, 0, &big), (&a, 3, &second)] {
        store
            .append(
                &stream.to_string(),
                eventfold::ExpectedVersion::assumed(after),
                events.clone(),
                None,
            )
            .await
            .expect("append");
    }

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = stack.queue_url("ProjectorQueue");
    let mut received = Vec::new();
    let start = Instant::now();
    while received.len() < 6 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "6 notifications within 30 s; got {}",
            received.len()
        );
        let m = receive_one(&sqs, &queue, Duration::from_secs(30)).await;
        let system = m.attributes.clone().unwrap_or_default();
        let notification: Notification =
            serde_json::from_str(m.body().expect("body")).expect("a notification");
        received.push((
            notification,
            system[&MessageSystemAttributeName::MessageGroupId].clone(),
            system[&MessageSystemAttributeName::MessageDeduplicationId].clone(),
        ));
    }

    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (n, group, dedup) in &received {
        assert_eq!(group, &n.stream_id, "grouped by stream");
        assert_eq!(dedup, &n.event_id.to_string(), "deduplicated by event id");
        versions.entry(group.clone()).or_default().push(n.version);
    }
    assert_eq!(versions[&a.to_string()], [1, 2, 3, 4, 5]);
    assert_eq!(versions[&b.to_string()], [1]);
    for (n, _, _) in &received {
        if n.stream_id == b.to_string() {
            assert!(n.event.is_none(), "the oversize event travels thin");
        } else {
            assert!(n.event.is_some(), "small events travel full");
        }
    }
    let stats = stack.esm_stats()[PUBLISHER];
    assert_eq!((stats.records_in, stats.ok, stats.failed), (3, 3, 0));
}

/// Lambda scales a queue's pollers with its backlog, and a FIFO queue keeps each message
/// group to one batch in flight: a backlog of many groups is handled by invocations at once
/// (as many as the local cap allows), and every group still arrives in order, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_many_groups_is_handled_by_invocations_at_once_each_group_in_order() {
    #[derive(Default)]
    struct Seen {
        running: usize,
        most: usize,
        by_group: BTreeMap<String, Vec<String>>,
    }
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        event_handler(move |event: Value| {
            let seen = seen.clone();
            async move {
                let typed: aws_lambda_events::event::sqs::SqsEvent =
                    serde_json::from_value(event).map_err(|e| e.to_string())?;
                {
                    let mut s = seen.lock().expect("seen");
                    s.running += 1;
                    s.most = s.most.max(s.running);
                    for r in &typed.records {
                        let group = r.attributes["MessageGroupId"].clone();
                        let body = r.body.clone().unwrap_or_default();
                        s.by_group.entry(group).or_default().push(body);
                    }
                }
                // Long enough for other pollers to receive while this batch is in flight.
                tokio::time::sleep(Duration::from_millis(400)).await;
                seen.lock().expect("seen").running -= 1;
                Ok::<_, String>(json!({ "batchItemFailures": [] }))
            }
        })
    };
    let stack = stack_with(with_handler(PROJECTOR, handler)).await;
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let queue = stack.queue_url("ProjectorQueue");
    let groups: Vec<String> = (0..12).map(|g| format!("g{g:02}")).collect();
    for i in 0..5 {
        let entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry> = groups
            .iter()
            .enumerate()
            .map(|(n, g)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(n.to_string())
                    .message_body(format!("{g}-{i}"))
                    .message_group_id(g)
                    .message_deduplication_id(uuid::Uuid::now_v7().to_string())
                    .build()
                    .expect("valid")
            })
            .collect();
        for chunk in entries.chunks(10) {
            let out = sqs
                .send_message_batch()
                .queue_url(&queue)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
                .expect("send");
            assert!(out.failed.is_empty(), "{:?}", out.failed);
        }
    }
    // Handled: received, invoked and deleted (the handler sees a batch before it ends).
    wait_until(Duration::from_secs(60), "all 60 handled", || {
        stack.esm_stats()[PROJECTOR].ok >= 60
    })
    .await;
    let s = seen.lock().expect("seen");
    for g in &groups {
        let want: Vec<String> = (0..5).map(|i| format!("{g}-{i}")).collect();
        assert_eq!(s.by_group[g], want, "group {g} in order, each once");
    }
    let cap = eventfold_local::esm::sqs::LOCAL_MAX_POLLERS;
    assert!(
        s.most >= 2 && s.most <= cap,
        "invocations at once: {} (cap {cap})",
        s.most
    );
    assert_eq!(stack.esm_stats()[PROJECTOR].ok, 60);
}
