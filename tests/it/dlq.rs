//! The recovery path on the emulator, through the template's real wiring: the projector's
//! poison message becomes a dead letter with its error while everything else is applied;
//! `eventfold dlq` and the dead-letters API; SNS down until the stream mapping gives up,
//! then every view converges with no operator action; a redrive after a fix unblocks a
//! stream in order.

use async_trait::async_trait;
use eventfold::deadletter::{DeadLetterStore, Filter, STREAM_CONSUMER, Status};
use eventfold::projection::{Notification, ReadModelStore};
use eventfold::{EventEnvelope, EventStore, Metadata, NewEvent, StreamId};
use eventfold_aws::sns::{NotificationSink, Outgoing, SnsPublisher};
use eventfold_aws::{DynamoDeadLetterStore, DynamoEventStore, DynamoReadModelStore};
use eventfold_local::LocalStack;
use eventfold_local::esm::EsmOptions;
use eventfold_local::httpc::Http;
use eventfold_local::typed_handler;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tests::{events_table, stack_with, table, token, unique_tenant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_dead_letter_store_passes_the_contract() {
    let stack = tests::quiet_stack().await;
    eventfold::deadletter::contract::run_all(&letters(&stack), &unique_tenant("dl")).await;
}

/// Fast pollers, a short visibility timeout (moto waits it out per receive), no printing.
fn fast() -> EsmOptions {
    EsmOptions {
        idle_poll: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        sqs_visibility_timeout: Some(Duration::from_secs(1)),
        report_every: None,
        ..EsmOptions::default()
    }
}

fn received(stream: &StreamId, version: u64, quantity: i64) -> EventEnvelope {
    NewEvent {
        event_type: "StockReceived".into(),
        schema_version: 1,
        data: json!({ "quantity": quantity }),
    }
    .into_envelope(
        stream,
        version,
        chrono::Utc::now(),
        Metadata {
            tenant: stream.tenant().into(),
            actor: "tester".into(),
            correlation_id: format!("c-{version}"),
            causation_id: format!("c-{version}"),
            command_id: format!("cmd-{}-{version}", stream.id()),
        },
    )
}

fn letters(stack: &LocalStack) -> DynamoDeadLetterStore {
    DynamoDeadLetterStore::from_sdk(&stack.sdk, table(stack, "DeadLettersTable"))
}

fn models(stack: &LocalStack) -> DynamoReadModelStore {
    DynamoReadModelStore::from_sdk(&stack.sdk, table(stack, "ReadModelsTable"))
}

async fn on_hand(models: &DynamoReadModelStore, tenant: &str, sku: &str) -> Option<i64> {
    models
        .get(tenant, shop::views::STOCK_LEVELS, sku)
        .await
        .expect("read model")
        .and_then(|d| d.data["on_hand"].as_i64())
}

async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Commits `per_stream` single-event commits of quantity `1..` to each of `streams` skus.
async fn write_stock(store: &DynamoEventStore, tenant: &str, streams: usize, per_stream: u64) {
    for s in 0..streams {
        let stream = StreamId::new(tenant, "Inventory", &format!("sku-{s}")).expect("valid");
        for v in 1..=per_stream {
            store
                .append(
                    &stream.to_string(),
                    eventfold::ExpectedVersion::assumed(v - 1),
                    vec![received(&stream, v, v as i64)],
                    None,
                )
                .await
                .expect("append");
        }
    }
}

/// What `per_stream` commits of quantities `1..=per_stream` add up to.
fn total(per_stream: u64) -> i64 {
    (1..=per_stream as i64).sum()
}

/// A notification of `stream`@1 carrying another version's event: the projector refuses it
/// (it cannot be the event it announces), every time.
fn poison(stream: &StreamId) -> String {
    let mut n = Notification::of(&received(stream, 1, 5)).expect("valid");
    if let Some(e) = n.event.as_mut() {
        e.version = 7;
    }
    serde_json::to_string(&n).expect("json")
}

/// Streams x commits of the poison test. The issue asks for 1,000; on the serialized
/// emulator, on two cores, 1,000 commits took 200 s end to end, so the test runs 200.
const POISON_STREAMS: usize = 20;
const POISON_COMMITS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_among_a_thousand_is_a_dead_letter_with_the_consumers_error() {
    let started = Instant::now();
    let stack = stack_with(fast()).await;
    let tenant = unique_tenant("dlq");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    let bad = StreamId::new(&tenant, "Inventory", "poisoned").expect("valid");
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    sqs.send_message()
        .queue_url(stack.queue_url("ProjectorQueue"))
        .message_body(poison(&bad))
        .message_group_id(bad.to_string())
        .message_deduplication_id("poison-1")
        .send()
        .await
        .expect("send");
    write_stock(&store, &tenant, POISON_STREAMS, POISON_COMMITS).await;
    println!(
        "poison test: commits written after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let letters = letters(&stack);
    let dead = {
        let start = Instant::now();
        loop {
            let open = letters
                .list(Some(&tenant), &Filter::default(), 10)
                .await
                .expect("list");
            if let Some(l) = open.into_iter().next() {
                break l;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no dead letter for the poison message within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    println!(
        "poison test: dead letter after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(dead.consumer, "projector");
    assert_eq!(dead.status, Status::Open);
    assert_eq!(dead.stream_id.as_deref(), Some(bad.to_string().as_str()));
    assert_eq!(dead.first_version, Some(1));
    assert!(dead.receive_count >= 5, "{dead:?}");
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.contains("does not match")),
        "the consumer's own error: {dead:?}"
    );

    let models = models(&stack);
    wait_for(
        Duration::from_secs(90),
        "every other commit applied",
        || {
            let models = &models;
            let tenant = &tenant;
            async move {
                for s in 0..POISON_STREAMS {
                    if on_hand(models, tenant, &format!("sku-{s}")).await
                        != Some(total(POISON_COMMITS))
                    {
                        return false;
                    }
                }
                true
            }
        },
    )
    .await;
    assert_eq!(on_hand(&models, &tenant, "poisoned").await, None);
    println!(
        "poison among {} commits: dead letter and every view in {:.1} s",
        POISON_STREAMS as u64 * POISON_COMMITS,
        started.elapsed().as_secs_f64()
    );

    // The operator's CLI sees it (every tenant), shows and discards it.
    let processor = cli::dlq::processor(&stack.sdk, &stack.template).expect("processor");
    let listed = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::List {
            consumer: Some("projector".into()),
            status: Some("open".into()),
        },
    )
    .await
    .expect("list");
    assert!(listed.iter().any(|l| l.contains(&dead.id)), "{listed:?}");
    let shown = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::Show {
            id: dead.id.clone(),
        },
    )
    .await
    .expect("show");
    let shown: Value = serde_json::from_str(&shown[0]).expect("json");
    assert_eq!(shown["last_error"], json!(dead.last_error));

    // The API: events:admin only, the caller's tenant only; a refused request changes nothing.
    let http = Http::new(&stack.api_url());
    let admin = token(&tenant, "events:admin");
    let path = format!("/api/v1/events/dead-letters/{}", dead.id);
    let r = http
        .get("/api/v1/events/dead-letters?status=open", Some(&admin))
        .await
        .expect("list");
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["items"][0]["id"], dead.id.as_str());
    let r = http
        .get(
            "/api/v1/events/dead-letters",
            Some(&token(&tenant, "events:read events:write")),
        )
        .await
        .expect("list");
    tests::assert_problem(&r, 403, "forbidden");
    let r = http
        .get(&path, Some(&token(&unique_tenant("other"), "events:admin")))
        .await
        .expect("show");
    tests::assert_problem(&r, 404, "not-found");
    let r = http
        .get("/api/v1/events/dead-letters?status=lost", Some(&admin))
        .await
        .expect("list");
    tests::assert_problem(&r, 400, "invalid-request");
    let before = letters.get(None, &dead.id).await.expect("get");
    for (body, slug, status) in [
        (json!({}), "invalid-request", 400),
        (json!({"reason": "x".repeat(501)}), "invalid-request", 400),
    ] {
        let r = http
            .post(&format!("{path}/discard"), Some(&admin), &body)
            .await
            .expect("discard");
        tests::assert_problem(&r, status, slug);
    }
    let r = http
        .post(
            &format!("{path}/discard"),
            Some(&token(&tenant, "events:read events:write")),
            &json!({"reason": "x"}),
        )
        .await
        .expect("discard");
    tests::assert_problem(&r, 403, "forbidden");
    assert_eq!(
        letters.get(None, &dead.id).await.expect("get"),
        before,
        "unchanged"
    );

    let discarded = cli::dlq::run(
        &processor,
        cli::dlq::DlqCommand::Discard {
            id: dead.id.clone(),
            reason: "a hand-made bad notification".into(),
        },
    )
    .await
    .expect("discard");
    assert!(discarded[0].starts_with("discarded"));
    let r = http.get(&path, Some(&admin)).await.expect("show");
    assert_eq!(r.json["status"], "discarded");
    let r = http
        .post(&format!("{path}/redrive"), Some(&admin), &json!({}))
        .await
        .expect("redrive");
    tests::assert_problem(&r, 409, "conflict");
}

/// SNS that fails the entries `drops` picks while `down` holds, as an outage (or a lost last
/// notification) would.
struct Flaky {
    inner: SnsPublisher,
    down: Arc<AtomicBool>,
    drops: fn(&Notification) -> bool,
}

#[async_trait]
impl NotificationSink for Flaky {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), String>> {
        if !self.down.load(Ordering::SeqCst) {
            return self.inner.publish(batch).await;
        }
        let mut results = vec![Ok(()); batch.len()];
        let through: Vec<Outgoing> = batch
            .iter()
            .filter(|m| !(self.drops)(&m.notification))
            .cloned()
            .collect();
        let mut sent = self.inner.publish(&through).await.into_iter();
        for (m, r) in batch.iter().zip(results.iter_mut()) {
            *r = if (self.drops)(&m.notification) {
                Err("InternalError: injected".to_owned())
            } else {
                sent.next().unwrap_or_else(|| Err("no result".to_owned()))
            };
        }
        results
    }
}

/// A stack whose stream publisher and DLQ processor publish through [`Flaky`] (their real
/// code and configuration, another sink), and the processor itself for its figures.
async fn stack_with_flaky_sns(
    drops: fn(&Notification) -> bool,
    down: Arc<AtomicBool>,
) -> (LocalStack, Arc<dlq_processor::DlqProcessor>) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{}-{}", tests::STACK, &id[id.len() - 10..]);
    let sdk = eventfold_local::emulator::local_sdk_config(&tests::endpoint()).await;
    let region = sdk
        .region()
        .map_or("us-east-1".to_owned(), ToString::to_string);
    let template = eventfold_local::Template::load(
        &tests::root().join(eventfold_local::stack::TEMPLATE_PATH),
        &name,
        &region,
    )
    .expect("template");
    let env = |binary: &str| {
        template
            .functions()
            .into_iter()
            .find(|f| f.binary == binary)
            .expect("function")
    };
    let topic = env("stream-publisher")
        .env("EVENTS_TOPIC_ARN")
        .expect("topic");
    let flaky = || Flaky {
        inner: SnsPublisher::from_sdk(&sdk, &topic),
        down: down.clone(),
        drops,
    };
    let publisher = Arc::new(stream_publisher::StreamPublisher::new(flaky()));
    let function = env("dlq-processor");
    let config = dlq_processor::DlqConfig::from_lookup(|k| function.env(k)).expect("config");
    let processor = Arc::new(
        dlq_processor::DlqProcessor::new(
            Arc::new(DynamoDeadLetterStore::from_sdk(
                &sdk,
                &config.dead_letters_table,
            )),
            Arc::new(DynamoEventStore::from_sdk(&sdk, &config.events_table)),
            Arc::new(flaky()),
            Arc::new(eventfold_aws::redrive::SqsSender::from_sdk(&sdk)),
            Arc::new(eventfold_aws::redrive::ShardReader::from_sdk(&sdk)),
            config.sources.clone(),
        )
        .with_backoff(dlq_processor::Backoff {
            attempts: 2,
            first: Duration::from_millis(50),
        })
        .with_stream_retry_receives(30),
    );
    let mut options = fast();
    options.handler_overrides.insert(
        "StreamPublisherFunction".into(),
        typed_handler(move |event: aws_lambda_events::event::dynamodb::Event| {
            let publisher = publisher.clone();
            async move { publisher.handle(event).await }
        }),
    );
    let p = processor.clone();
    options.handler_overrides.insert(
        "DlqProcessorFunction".into(),
        typed_handler(move |event: aws_lambda_events::event::sqs::SqsEvent| {
            let p = p.clone();
            async move { p.handle(event).await }
        }),
    );
    (tests::stack_named(&name, options).await, processor)
}

/// Recovery through the stream failure path: `drops` picks the notifications lost while
/// `down`; returns the seconds from the topic's return to converged views.
async fn converges_after_the_mapping_gives_up(drops: fn(&Notification) -> bool, label: &str) {
    const STREAMS: usize = 6;
    const COMMITS: u64 = 3;
    let down = Arc::new(AtomicBool::new(true));
    let (stack, processor) = stack_with_flaky_sns(drops, down.clone()).await;
    let tenant = unique_tenant("sns");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    write_stock(&store, &tenant, STREAMS, COMMITS).await;

    // The stream mapping retries, gives up and describes the batch on StreamFailureQueue;
    // the processor cannot republish either and keeps letters open while it retries.
    let letters = letters(&stack);
    wait_for(
        Duration::from_secs(60),
        "the mapping gave up (open stream letters)",
        || {
            let letters = &letters;
            let tenant = &tenant;
            async move {
                let open = Filter {
                    consumer: Some(STREAM_CONSUMER.into()),
                    status: Some(Status::Open),
                    stream_id: None,
                };
                !letters
                    .list(Some(tenant), &open, 100)
                    .await
                    .expect("list")
                    .is_empty()
            }
        },
    )
    .await;
    // ...and is done with every record: each went out or was given up on.
    let done = Instant::now();
    let failures = loop {
        let stats = stack
            .esm()
            .source_stats("StreamPublisherFunction", "EventsStream")
            .expect("stream source");
        if stats.records_in == STREAMS as u64 * COMMITS
            && stats.ok + stats.failed == stats.records_in
        {
            break stats;
        }
        assert!(
            done.elapsed() < Duration::from_secs(60),
            "the mapping is not done: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failures.sent_to_on_failure >= 1, "{failures:?}");
    down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    let models = models(&stack);
    wait_for(Duration::from_secs(60), "every view converged", || {
        let models = &models;
        let tenant = &tenant;
        async move {
            for s in 0..STREAMS {
                if on_hand(models, tenant, &format!("sku-{s}")).await != Some(total(COMMITS)) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let converged = back.elapsed();
    // Nothing double-counted: exactly the rebuild's values, and they stay so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in 0..STREAMS {
        assert_eq!(
            on_hand(&models, &tenant, &format!("sku-{s}")).await,
            Some(total(COMMITS))
        );
    }
    // No operator action: every letter of the outage was closed by the processor.
    wait_for(
        Duration::from_secs(30),
        "the outage's letters closed",
        || {
            let letters = &letters;
            let tenant = &tenant;
            async move {
                let all = letters
                    .list(Some(tenant), &Filter::default(), 100)
                    .await
                    .expect("list");
                all.iter().all(|l| {
                    l.status == Status::Redriven && l.changed_by.as_deref() == Some("dlq-processor")
                })
            }
        },
    )
    .await;
    let stats = processor.stats();
    let recovered = stats.commits_recovered.load(Ordering::Relaxed).max(1);
    let requests = stats.publish_calls.load(Ordering::Relaxed)
        + stats.table_reads.load(Ordering::Relaxed)
        + stats.range_reads.load(Ordering::Relaxed);
    println!(
        "{label}: the mapping gave up on {} of {} records; views converged {:.2} s after SNS returned; {:.2} processor requests per recovered commit ({requests} requests for {recovered} commits, the outage's failed attempts included)",
        failures.failed,
        failures.records_in,
        converged.as_secs_f64(),
        requests as f64 / recovered as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sns_down_until_the_mapping_gives_up_then_every_view_converges_without_an_operator() {
    converges_after_the_mapping_gives_up(|_| true, "SNS down").await;
}

/// Today's chaos tests exclude the last notification of a stream (a later one would fill the
/// gap). Here the last notification of every other stream is lost until the mapping gives
/// up: the views converge through the stream failure path (the processor republishes the
/// commits from the events table), not through a redrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_notifications_lost_for_several_streams_converge_through_the_failure_path() {
    converges_after_the_mapping_gives_up(
        |n| {
            n.version == 3
                && n.stream_id
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse::<u32>().ok())
                    .is_some_and(|s| s % 2 == 0)
        },
        "final notifications dropped",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_batch_loses_nothing_and_applies_nothing_twice() {
    // The real projector; its first batch of more than one record is cut after half of it
    // and the invocation dies (a timeout or a crash): the whole batch comes again.
    let killed = Arc::new(AtomicBool::new(false));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{}-{}", tests::STACK, &id[id.len() - 10..]);
    let sdk = eventfold_local::emulator::local_sdk_config(&tests::endpoint()).await;
    let template = eventfold_local::Template::load(
        &tests::root().join(eventfold_local::stack::TEMPLATE_PATH),
        &name,
        "us-east-1",
    )
    .expect("template");
    let function = template
        .functions()
        .into_iter()
        .find(|f| f.binary == "projector")
        .expect("projector");
    let projector = Arc::new(projector::from_lookup(&sdk, |k| function.env(k)).expect("projector"));
    let mut options = fast();
    let k = killed.clone();
    options.handler_overrides.insert(
        "ProjectorFunction".into(),
        eventfold_local::esm::event_handler(move |payload: Value| {
            let projector = projector.clone();
            let killed = k.clone();
            async move {
                let mut event: aws_lambda_events::event::sqs::SqsEvent =
                    serde_json::from_value(payload).map_err(|e| e.to_string())?;
                if event.records.len() > 1 && !killed.swap(true, Ordering::SeqCst) {
                    event.records.truncate(event.records.len() / 2);
                    projector.handle(event).await;
                    return Err("killed mid-batch".to_owned());
                }
                serde_json::to_value(projector.handle(event).await).map_err(|e| e.to_string())
            }
        }),
    );
    let stack = tests::stack_named(&name, options).await;
    let tenant = unique_tenant("kill");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    write_stock(&store, &tenant, 4, 5).await;
    let models = models(&stack);
    wait_for(Duration::from_secs(60), "every view converged", || {
        let models = &models;
        let tenant = &tenant;
        async move {
            for s in 0..4 {
                if on_hand(models, tenant, &format!("sku-{s}")).await != Some(total(5)) {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(killed.load(Ordering::SeqCst), "a batch was cut");
    let stats = stack.esm_stats()["ProjectorFunction"];
    assert!(stats.function_errors >= 1, "{stats:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for s in 0..4 {
        assert_eq!(
            on_hand(&models, &tenant, &format!("sku-{s}")).await,
            Some(total(5))
        );
    }
}

/// A stack name, an SDK configuration and the template resolved for that name, before the
/// stack starts (so handler overrides can be built on its real resources).
async fn planned() -> (String, aws_config::SdkConfig, eventfold_local::Template) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{}-{}", tests::STACK, &id[id.len() - 10..]);
    let sdk = eventfold_local::emulator::local_sdk_config(&tests::endpoint()).await;
    let template = eventfold_local::Template::load(
        &tests::root().join(eventfold_local::stack::TEMPLATE_PATH),
        &name,
        "us-east-1",
    )
    .expect("template");
    (name, sdk, template)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_blocks_only_its_stream_and_one_redrive_after_the_fix_unblocks_it() {
    let (name, sdk, template) = planned().await;
    let function = template
        .functions()
        .into_iter()
        .find(|f| f.binary == "projector")
        .expect("projector");
    let config = projector::ProjectorConfig::from_lookup(|k| function.env(k)).expect("config");
    let notes: Arc<dyn DeadLetterStore> = Arc::new(DynamoDeadLetterStore::from_sdk(
        &sdk,
        config.dead_letters_table.clone().expect("notes table"),
    ));
    let build = |fixed: bool| {
        let events = DynamoEventStore::from_sdk(&sdk, &config.events_table);
        let models = DynamoReadModelStore::from_sdk(&sdk, &config.read_models_table);
        let mut p = shop::views::projector(events, models);
        if fixed {
            // The fix: a reader for the schema a bad deployment wrote.
            p = p.with_upcasters(shop::registry::upcasters().register(
                "StockReceived",
                7,
                |d| json!({ "quantity": d["qty"] }),
            ));
        }
        Arc::new(projector::ProjectorFunction::new(p).with_notes(notes.clone()))
    };
    let (broken, fixed) = (build(false), build(true));
    let deployed = Arc::new(AtomicBool::new(false));
    let mut options = fast();
    let d = deployed.clone();
    options.handler_overrides.insert(
        "ProjectorFunction".into(),
        typed_handler(move |event: aws_lambda_events::event::sqs::SqsEvent| {
            let f = if d.load(Ordering::SeqCst) {
                fixed.clone()
            } else {
                broken.clone()
            };
            async move { f.handle(event).await }
        }),
    );
    let stack = tests::stack_named(&name, options).await;
    let tenant = unique_tenant("block");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    write_stock(&store, &tenant, 3, 3).await;
    let blocked = StreamId::new(&tenant, "Inventory", "blocked").expect("valid");
    let mut poison = received(&blocked, 2, 0);
    poison.schema_version = 7;
    poison.data = json!({ "qty": 3 });
    for e in [
        received(&blocked, 1, 1),
        poison,
        received(&blocked, 3, 1),
        received(&blocked, 4, 1),
    ] {
        let after = eventfold::ExpectedVersion::assumed(e.version - 1);
        store
            .append(&blocked.to_string(), after, vec![e], None)
            .await
            .expect("append");
    }

    let letters = letters(&stack);
    let mut found = Vec::new();
    let start = Instant::now();
    while found.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "three letters: {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        found = letters
            .list(Some(&tenant), &Filter::default(), 10)
            .await
            .expect("list");
    }
    found.sort_by_key(|l| l.first_version);
    let versions: Vec<Option<u64>> = found.iter().map(|l| l.first_version).collect();
    assert_eq!(versions, [Some(2), Some(3), Some(4)]);
    let first = &found[0];
    assert!(
        first
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("StockReceived v2")),
        "{first:?}"
    );
    for later in &found[1..] {
        assert_eq!(
            later.blocked_behind.as_deref(),
            Some(first.id.as_str()),
            "{later:?}"
        );
    }
    // The other streams flowed; the blocked one stopped before its poison event.
    let models = models(&stack);
    for s in 0..3 {
        assert_eq!(
            on_hand(&models, &tenant, &format!("sku-{s}")).await,
            Some(total(3))
        );
    }
    assert_eq!(on_hand(&models, &tenant, "blocked").await, Some(1));

    // After the fix, one redrive (of the first letter, through the API) applies 2, 3 and 4
    // once each, in order.
    deployed.store(true, Ordering::SeqCst);
    let http = Http::new(&stack.api_url());
    let r = http
        .post(
            &format!("/api/v1/events/dead-letters/{}/redrive", first.id),
            Some(&token(&tenant, "events:admin")),
            &json!({}),
        )
        .await
        .expect("redrive");
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        r.json["sent"],
        found[2].id.as_str(),
        "the newest message goes back"
    );
    assert_eq!(r.json["redriven"].as_array().map(Vec::len), Some(3));
    wait_for(
        Duration::from_secs(30),
        "the blocked stream caught up",
        || {
            let models = &models;
            let tenant = &tenant;
            async move { on_hand(models, tenant, "blocked").await == Some(1 + 3 + 1 + 1) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        on_hand(&models, &tenant, "blocked").await,
        Some(6),
        "once each"
    );
    let open = Filter {
        status: Some(Status::Open),
        ..Filter::default()
    };
    assert!(
        letters
            .list(Some(&tenant), &open, 10)
            .await
            .expect("list")
            .is_empty()
    );
}
