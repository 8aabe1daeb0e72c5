//! Recovery without an operator: SNS down (or final notifications lost) until the stream
//! mapping gives up, then converged views; a projector killed mid-batch.

use super::*;
use eventfold_aws::SdkConfig;
use eventfold_aws::sns::PublishError;
use std::sync::{Mutex, OnceLock};

/// The DLQ processor's invocations: how long each took and what it answered.
type Invocations = Arc<Mutex<Vec<(Duration, Value)>>>;

/// SNS that fails the entries `drops` picks while `down` holds, as an outage (or a lost last
/// notification) would.
struct Flaky {
    inner: SnsPublisher,
    down: Arc<AtomicBool>,
    drops: fn(&Notification) -> bool,
}

#[async_trait]
impl NotificationSink for Flaky {
    async fn publish(&self, batch: &[Outgoing]) -> Vec<Result<(), PublishError>> {
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
                Err(PublishError::Failed {
                    code: "InternalError".into(),
                    message: "injected".into(),
                })
            } else {
                sent.next().unwrap_or(Err(PublishError::NoResult))
            };
        }
        results
    }
}

/// A stack whose stream publisher and DLQ processor publish through [`Flaky`] (their real
/// code and configuration, another sink), and the processor itself for its figures. Both
/// are built from their function's own SDK configuration, so IAM checks them as in AWS. The
/// processor republishes with `backoff` and runs through its Lambda handler with the
/// deadline of its template timeout, as Lambda runs it; its invocations are logged.
async fn stack_with_flaky_sns(
    drops: fn(&Notification) -> bool,
    down: Arc<AtomicBool>,
    backoff: dlq_processor::Backoff,
) -> (LocalStack, Arc<dlq_processor::DlqProcessor>, Invocations) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{}-{}", tests::STACK, &id[id.len() - 10..]);
    let template = eventfold_local::Template::load(
        &tests::root().join(eventfold_local::stack::TEMPLATE_PATH),
        &name,
        "us-east-1",
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
    let flaky = move |sdk: &SdkConfig| Flaky {
        inner: SnsPublisher::from_sdk(sdk, &topic),
        down: down.clone(),
        drops,
    };
    let function = env("dlq-processor");
    let timeout = function.timeout;
    let invocations = Invocations::default();
    let log = invocations.clone();
    let config = dlq_processor::DlqConfig::from_lookup(|k| function.env(k)).expect("config");
    let built: Arc<OnceLock<Arc<dlq_processor::DlqProcessor>>> = Arc::default();
    let mut options = fast();
    let publisher_sink = flaky.clone();
    options.handler_factories.insert(
        "StreamPublisherFunction".into(),
        Arc::new(move |sdk: &SdkConfig| {
            let publisher = Arc::new(stream_publisher::StreamPublisher::new(publisher_sink(sdk)));
            typed_handler(move |event: aws_lambda_events::event::dynamodb::Event| {
                let publisher = publisher.clone();
                async move { publisher.handle(event).await }
            })
        }),
    );
    let slot = built.clone();
    options.handler_factories.insert(
        "DlqProcessorFunction".into(),
        Arc::new(move |sdk: &SdkConfig| {
            let processor = Arc::new(
                dlq_processor::DlqProcessor::new(
                    Arc::new(DynamoDeadLetterStore::from_sdk(
                        sdk,
                        &config.dead_letters_table,
                    )),
                    Arc::new(DynamoEventStore::from_sdk(sdk, &config.events_table)),
                    Arc::new(flaky(sdk)),
                    Arc::new(dlq_processor::redrive::SqsSender::from_sdk(sdk)),
                    Arc::new(dlq_processor::redrive::ShardReader::from_sdk(sdk)),
                    config.sources.clone(),
                )
                .with_backoff(backoff)
                .with_stream_retry_receives(30),
            );
            let _ = slot.set(processor.clone());
            let log = log.clone();
            eventfold_local::esm::event_handler(move |payload: Value| {
                let (p, log) = (processor.clone(), log.clone());
                async move {
                    let started = Instant::now();
                    let context = cli::local::deadline_context(timeout);
                    let answer = p
                        .handle(payload, context)
                        .await
                        .map_err(|e| e.to_string())?;
                    log.lock()
                        .expect("log")
                        .push((started.elapsed(), answer.clone()));
                    Ok::<_, String>(answer)
                }
            })
        }),
    );
    let stack = tests::stack_named(&name, options).await;
    let processor = built
        .get()
        .expect("the stack built the DLQ processor")
        .clone();
    (stack, processor, invocations)
}

/// Recovery through the stream failure path: `drops` picks the notifications lost while
/// `down`; returns the seconds from the topic's return to converged views.
async fn converges_after_the_mapping_gives_up(drops: fn(&Notification) -> bool, label: &str) {
    const STREAMS: usize = 6;
    const COMMITS: u64 = 3;
    let down = Arc::new(AtomicBool::new(true));
    let backoff = dlq_processor::Backoff {
        attempts: 2,
        first: Duration::from_millis(50),
    };
    let (stack, processor, _) = stack_with_flaky_sns(drops, down.clone(), backoff).await;
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

/// SNS stays down; the processor's backoff would take minutes per failed batch. It stops
/// before its Lambda timeout every time, answers the batches it could not republish as
/// item failures (they come again), and its letters say the deadline cut them short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_sns_outage_the_processor_stops_before_its_timeout_and_reports_what_failed() {
    let down = Arc::new(AtomicBool::new(true));
    let backoff = dlq_processor::Backoff {
        attempts: 60,
        first: Duration::from_millis(500),
    };
    let (stack, _, invocations) = stack_with_flaky_sns(|_| true, down, backoff).await;
    let timeout = stack
        .template
        .functions()
        .into_iter()
        .find(|f| f.binary == "dlq-processor")
        .map(|f| Duration::from_secs(f.timeout))
        .expect("function");
    let tenant = unique_tenant("late");
    let store = DynamoEventStore::from_sdk(&stack.sdk, events_table(&stack));
    write_stock(&store, &tenant, 3, 2).await;
    let started = Instant::now();
    let cut_short = loop {
        let done: Vec<(Duration, Value)> = invocations.lock().expect("log").clone();
        let failing: Vec<(Duration, Value)> = done
            .into_iter()
            .filter(|(_, a)| {
                a["batchItemFailures"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty())
            })
            .collect();
        if failing.len() >= 2 {
            break failing;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no batch came back with item failures"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let limit = timeout - dlq_processor::DEADLINE_MARGIN + Duration::from_millis(500);
    for (took, answer) in &cut_short {
        assert!(
            took < &limit,
            "an invocation took {took:?} (timeout {timeout:?}): {answer}"
        );
    }
    let stats = stack.esm_stats()["DlqProcessorFunction"];
    assert_eq!(
        stats.function_errors, 0,
        "no timeout, no failed invocation: {stats:?}"
    );
    let open = Filter {
        consumer: Some(STREAM_CONSUMER.into()),
        status: Some(Status::Open),
        stream_id: None,
    };
    let letters = letters(&stack)
        .list(Some(&tenant), &open, 100)
        .await
        .expect("list");
    assert!(!letters.is_empty());
    for l in &letters {
        let error = l.last_error.as_deref().unwrap_or("");
        assert!(
            error.contains("before the invocation's deadline"),
            "{error}"
        );
    }
    println!(
        "SNS outage, backoff of {} attempts from {:?}: the processor answered in {} (timeout {:?}), {} batch item failures, {} open letters",
        backoff.attempts,
        backoff.first,
        cut_short
            .iter()
            .map(|(d, _)| format!("{:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        timeout,
        cut_short
            .iter()
            .map(|(_, a)| a["batchItemFailures"].as_array().map_or(0, Vec::len))
            .sum::<usize>(),
        letters.len()
    );
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
    let projector = Arc::new(projector::build(&sdk, |k| function.env(k)).expect("projector"));
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
