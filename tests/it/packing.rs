//! The stream publisher packs the events of many commits into `PublishBatch` calls, on real
//! stream records: commits are written to a fresh events table first, then the local runtime
//! reads the table's DynamoDB stream and invokes the real publisher (on an SNS client that
//! counts its requests) as Lambda's event-source mapping would, partial failures and retries
//! included.

use async_trait::async_trait;
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::DynamoDbEventResponse;
use eventfold::{CommandExecutor, EventStore, ExecutorConfig, StreamId};
use eventfold_aws::read_models::DynamoReadModelStore;
use eventfold_aws::sns::{NotificationSink, Outgoing, PublishError, SnsPublisher};
use eventfold_aws::streams::{Decoded, decode_record};
use eventfold_aws::{DynamoEventStore, RequestCounter};
use eventfold_consumers::Notification;
use eventfold_local::esm::EsmOptions;
use eventfold_local::{LocalStack, typed_handler};
use eventfold_testkit::event_store::sample_events;
use shop::inventory::InventoryCommand;
use shop::order::OrderCommand;
use shop::registry::ShopCaches;
use shop::{Inventory, Order};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stream_publisher::StreamPublisher;
use tests::{ctx, events_table, stack_named, table, unique_tenant};
use uuid::Uuid;

const PUBLISHER: &str = "StreamPublisherFunction";
const PROJECTOR: &str = "ProjectorFunction";

fn unique_name() -> String {
    let id = Uuid::now_v7().simple().to_string();
    format!("{}-{}", tests::STACK, &id[id.len() - 10..])
}

fn options(functions: &[&str]) -> EsmOptions {
    EsmOptions {
        functions: Some(functions.iter().map(|f| (*f).to_owned()).collect()),
        idle_poll: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        sqs_visibility_timeout: Some(Duration::from_secs(2)),
        report_every: None,
        ..EsmOptions::default()
    }
}

/// A stack with fresh tables and no pollers, to write commits before anything reads them.
async fn quiet(name: &str) -> LocalStack {
    stack_named(
        name,
        EsmOptions {
            enabled: false,
            ..EsmOptions::default()
        },
    )
    .await
}

async fn wait_until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An SNS client on the stack's endpoint that counts its requests.
fn counted_sns(stack: &LocalStack) -> (aws_sdk_sns::Client, RequestCounter) {
    let counter = RequestCounter::new();
    let config = aws_sdk_sns::config::Builder::from(&stack.sdk)
        .interceptor(counter.clone())
        .build();
    (aws_sdk_sns::Client::from_conf(config), counter)
}

/// Receives and deletes every message of `queue` (waits until it stays empty).
async fn drain(stack: &LocalStack, queue: &str) -> Vec<(String, Notification)> {
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let url = stack.queue_url(queue);
    let mut out = Vec::new();
    let mut empty_polls = 0;
    while empty_polls < 3 {
        let got = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
            )
            .send()
            .await
            .expect("receive");
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            empty_polls += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        empty_polls = 0;
        for m in messages {
            let group = m
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                })
                .cloned()
                .unwrap_or_default();
            let n: Notification =
                serde_json::from_str(m.body().expect("body")).expect("a notification");
            out.push((group, n));
            sqs.delete_message()
                .queue_url(&url)
                .receipt_handle(m.receipt_handle().expect("handle"))
                .send()
                .await
                .expect("delete");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_five_single_event_commits_take_four_publish_batch_calls() {
    let name = unique_name();
    let setup = quiet(&name).await;
    let store = DynamoEventStore::from_sdk(&setup.sdk, events_table(&setup));
    let tenant = unique_tenant("pack");
    let streams: Vec<StreamId> = (0..7)
        .map(|s| StreamId::new(&tenant, "Order", &format!("s{s}")).expect("valid"))
        .collect();
    for i in 0..35u64 {
        let stream = &streams[(i % 7) as usize];
        let version = i / 7;
        store
            .append(
                &stream.to_string(),
                eventfold::ExpectedVersion::assumed(version),
                sample_events(stream, version, 1),
                None,
            )
            .await
            .expect("append");
    }
    drop(setup);

    // The same resources again, now with the real publisher on a counting SNS client.
    let holder: Arc<Mutex<Option<RequestCounter>>> = Arc::default();
    let stack = {
        let probe = quiet(&name).await;
        let topic = probe.template.arn("EventsTopic").expect("the events topic");
        let (sns, counter) = counted_sns(&probe);
        *holder.lock().expect("lock") = Some(counter);
        let publisher = Arc::new(StreamPublisher::new(SnsPublisher::new(sns, topic)));
        let mut esm = options(&[PUBLISHER]);
        esm.handler_overrides.insert(
            PUBLISHER.to_owned(),
            typed_handler(move |event: Event| {
                let publisher = publisher.clone();
                async move { publisher.handle(event).await }
            }),
        );
        drop(probe);
        stack_named(&name, esm).await
    };
    wait_until(
        Duration::from_secs(30),
        "35 records published",
        async || stack.esm_stats()[PUBLISHER].ok == 35,
    )
    .await;
    let stats = stack.esm_stats()[PUBLISHER];
    assert_eq!(
        (stats.invocations, stats.failed),
        (1, 0),
        "one invocation: {stats}"
    );
    let requests = holder
        .lock()
        .expect("lock")
        .as_ref()
        .expect("counter")
        .get();
    assert_eq!(requests, 4, "35 events in 4 PublishBatch calls");

    let received = drain(&stack, "ProjectorQueue").await;
    let ids: HashSet<Uuid> = received.iter().map(|(_, n)| n.event_id).collect();
    assert_eq!(
        (received.len(), ids.len()),
        (35, 35),
        "every event exactly once"
    );
    let mut by_group: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (group, n) in &received {
        assert_eq!(group, &n.stream_id);
        by_group.entry(group.clone()).or_default().push(n.version);
    }
    assert_eq!(by_group.len(), 7);
    for (group, versions) in &by_group {
        assert_eq!(versions, &[1, 2, 3, 4, 5], "{group} in version order");
    }
}

/// Fails the chosen events once each, and one whole call once; publishes the rest for real.
struct Flaky {
    inner: SnsPublisher,
    fail_once: Mutex<HashSet<Uuid>>,
    fail_call: Mutex<Option<usize>>,
    calls: Mutex<usize>,
    /// Per call: the event ids it failed.
    failed: Mutex<Vec<Vec<Uuid>>>,
}

#[async_trait]
impl NotificationSink for Flaky {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            *calls += 1;
            *calls
        };
        let whole = {
            let mut fail_call = self.fail_call.lock().expect("lock");
            if *fail_call == Some(call) {
                *fail_call = None;
                true
            } else {
                false
            }
        };
        let failing: Vec<bool> = {
            let mut once = self.fail_once.lock().expect("lock");
            batch
                .iter()
                .map(|m| whole || once.remove(&m.notification.event_id))
                .collect()
        };
        let passed: Vec<Outgoing> = batch
            .iter()
            .zip(&failing)
            .filter(|(_, f)| !**f)
            .map(|(m, _)| m.clone())
            .collect();
        let mut results = self.inner.publish(&passed).await.into_iter();
        let mut failed_now = Vec::new();
        let out = batch
            .iter()
            .zip(&failing)
            .map(|(m, f)| {
                if *f {
                    failed_now.push(m.notification.event_id);
                    Err(PublishError::Failed {
                        code: "Injected".into(),
                        message: "injected failure".into(),
                    })
                } else {
                    results.next().unwrap_or(Err(PublishError::NoResult))
                }
            })
            .collect();
        self.failed.lock().expect("lock").push(failed_now);
        out
    }
}

/// What one invocation of the publisher was given and answered.
struct Invocation {
    /// (sequence number, event ids) of each commit record, in order.
    records: Vec<(String, Vec<Uuid>)>,
    reported: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_entries_and_a_failed_call_are_retried_until_the_views_equal_a_rebuild() {
    let name = unique_name();
    let setup = quiet(&name).await;
    let events = DynamoEventStore::from_sdk(&setup.sdk, events_table(&setup));
    let tenant = unique_tenant("packfail");
    let exec =
        CommandExecutor::new(events.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    let mut written: Vec<Uuid> = Vec::new();
    for s in 0..2 {
        let sku = StreamId::new(&tenant, "Inventory", &format!("sku-{s}")).expect("valid");
        let out = exec
            .execute::<Inventory>(
                &sku,
                None,
                &InventoryCommand::ReceiveStock { quantity: 40 },
                &ctx(&tenant, &format!("r{s}")),
            )
            .await
            .expect("stock");
        written.extend(out.events.iter().map(|e| e.event_id));
    }
    for o in 0..7 {
        let order = StreamId::new(&tenant, "Order", &format!("o-{o}")).expect("valid");
        let commands = [
            OrderCommand::CreateOrder {
                customer_id: format!("c-{}", o % 3).parse().expect("an id"),
            },
            OrderCommand::AddItem {
                sku: format!("sku-{}", o % 2).parse().expect("a sku"),
                quantity: 1 + o % 3,
                unit_price: 250.into(),
            },
            OrderCommand::PlaceOrder {
                payment_method: None,
            },
        ];
        for (i, c) in commands.iter().enumerate() {
            let out = exec
                .execute::<Order>(&order, None, c, &ctx(&tenant, &format!("o{o}-{i}")))
                .await
                .expect("order command");
            written.extend(out.events.iter().map(|e| e.event_id));
        }
    }
    assert_eq!(written.len(), 23);
    drop(setup);

    // Fail entries at three positions (first, middle of a call, last) once each, and the
    // second call of the first invocation as a whole.
    let probe = quiet(&name).await;
    let topic = probe.template.arn("EventsTopic").expect("the events topic");
    let flaky = Arc::new(Flaky {
        inner: SnsPublisher::from_sdk(&probe.sdk, topic),
        fail_once: Mutex::new(HashSet::from([written[0], written[14], written[22]])),
        fail_call: Mutex::new(Some(2)),
        calls: Mutex::new(0),
        failed: Mutex::default(),
    });
    drop(probe);
    let invocations: Arc<Mutex<Vec<Invocation>>> = Arc::default();
    let publisher = Arc::new(StreamPublisher::new(FlakyRef(flaky.clone())));
    let log = invocations.clone();
    let mut esm = options(&[PUBLISHER, PROJECTOR]);
    esm.handler_overrides.insert(
        PUBLISHER.to_owned(),
        typed_handler(move |event: Event| {
            let (publisher, log) = (publisher.clone(), log.clone());
            async move {
                let records = event
                    .records
                    .iter()
                    .filter_map(|r| match decode_record(r) {
                        Ok(Decoded::Commit(events)) => Some((
                            r.change.sequence_number.clone().unwrap_or_default(),
                            events.iter().map(|e| e.event_id).collect(),
                        )),
                        _ => None,
                    })
                    .collect();
                let response: DynamoDbEventResponse = publisher.handle(event).await;
                let reported = response
                    .batch_item_failures
                    .iter()
                    .filter_map(|f| f.item_identifier.clone())
                    .collect();
                log.lock()
                    .expect("lock")
                    .push(Invocation { records, reported });
                response
            }
        }),
    );
    let stack = stack_named(&name, esm).await;

    let heads_table = events_table(&stack);
    let models_table = table(&stack, "ReadModelsTable");
    let dynamo = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let models = DynamoReadModelStore::from_sdk(&stack.sdk, &models_table);
    let tenants: BTreeSet<String> = [tenant.clone()].into();
    let views = [
        shop::views::ORDER_SUMMARY,
        shop::views::STOCK_LEVELS,
        shop::views::DAILY_SALES,
    ];
    // Rebuild each view once from the table (the truth), then wait for the live views to
    // reach the same documents through the flaky publisher and the real projector.
    let heads = cli::rebuild::stream_heads(&dynamo, &heads_table)
        .await
        .expect("scan");
    for view in views {
        let shadow = format!("{view}{}", cli::rebuild::SHADOW_SUFFIX);
        let category = cli::rebuild::category_of(view).expect("known view");
        let p = cli::rebuild::projector_for(
            events.clone(),
            DynamoReadModelStore::from_sdk(&stack.sdk, &models_table),
            view,
            &shadow,
        );
        cli::rebuild::rebuild(&p, &category, &heads, |_, _| {})
            .await
            .expect("rebuild");
    }
    wait_until(
        Duration::from_secs(60),
        "live views equal their rebuild",
        async || {
            for view in views {
                let shadow = format!("{view}{}", cli::rebuild::SHADOW_SUFFIX);
                let diffs = cli::rebuild::differences(&models, &tenants, view, &shadow)
                    .await
                    .expect("compare");
                if !diffs.is_empty() {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // Every failure was reported at the record of the first event that did not go out.
    let failed = flaky.failed.lock().expect("lock").clone();
    let injected: usize = failed.iter().map(Vec::len).sum();
    assert!(injected >= 3, "failures were injected: {failed:?}");
    let invocations: Vec<Invocation> = std::mem::take(&mut *invocations.lock().expect("lock"));
    let mut calls = failed.iter();
    let mut reported_any = 0;
    for inv in invocations.iter() {
        // The calls this invocation made: as many as it took to reach its first failure.
        let mut first_failed: Option<Uuid> = None;
        let expected_calls = inv.records.iter().map(|(_, ids)| ids.len()).sum::<usize>();
        let mut seen = 0;
        while seen < expected_calls && first_failed.is_none() {
            let Some(call) = calls.next() else { break };
            seen += 10;
            first_failed = call.first().copied();
        }
        let expected: Vec<String> = first_failed
            .and_then(|id| inv.records.iter().find(|(_, ids)| ids.contains(&id)))
            .map(|(seq, _)| vec![seq.clone()])
            .unwrap_or_default();
        assert_eq!(
            inv.reported, expected,
            "the first failed record is reported"
        );
        reported_any += usize::from(!inv.reported.is_empty());
    }
    assert!(
        reported_any >= 3,
        "several invocations failed and were retried"
    );
    let stats = stack.esm_stats()[PUBLISHER];
    assert!(stats.retried > 0, "{stats}");
    assert_eq!(stats.sent_to_on_failure, 0, "nothing given up: {stats}");
    let summaries = cli::rebuild::all_docs(&models, &tenant, shop::views::ORDER_SUMMARY)
        .await
        .expect("docs");
    assert_eq!(summaries.len(), 7, "every order reached its view");
}

/// Shares one [`Flaky`] between the publisher and the test.
struct FlakyRef(Arc<Flaky>);

#[async_trait]
impl NotificationSink for FlakyRef {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
        self.0.publish(batch).await
    }
}
