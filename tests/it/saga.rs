//! The saga runtime on the emulator: the template's filter policy in front of `saga.fifo`, the
//! schedule that fires the tick, parameter overrides in the function's environment, the
//! DynamoDB deadline index, redelivery chaos on DynamoDB with the toy saga, and the DynamoDB
//! requests each saga step costs.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::{TimeDelta, Utc};
use eventfold::{CommandExecutor, EventEnvelope, EventStore, ExecutorConfig, Metadata, StreamId};
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::sns::{NotificationSink, Outgoing, SnsPublisher};
use eventfold_aws::{DynamoEventStore, DynamoReadModelStore, RequestCounter};
use eventfold_consumers::Notification;
use eventfold_consumers::saga::{RunnerConfig, SagaRunner};
use eventfold_local::{EsmOptions, Functions, JwtConfig, LocalOptions, LocalStack, event_handler};
use eventfold_testkit::event_store::sample_events;
use eventfold_testkit::toy::{self, Account, AccountCommand, Phase, Transfer, TransferCaches};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tests::{events_table, quiet_stack, table, unique_tenant};

const SAGA: &str = "SagaFunction";

/// The event types the template lets through to `saga.fifo`: the ones the saga reacts to.
const INPUTS: &[&str] = shop::fulfilment::INPUT_EVENT_TYPES;

type DynamoRunner = SagaRunner<Transfer, DynamoEventStore, DynamoReadModelStore>;

fn runner_on(stack: &LocalStack, counter: &RequestCounter, timeout: Duration) -> DynamoRunner {
    let client = counted_dynamo_client(&stack.sdk, counter);
    SagaRunner::new(
        CommandExecutor::new(
            DynamoEventStore::new(client.clone(), events_table(stack)),
            ExecutorConfig::default(),
        )
        .caching(),
        DynamoReadModelStore::new(client, table(stack, "ReadModelsTable")),
        RunnerConfig {
            timeout,
            ..RunnerConfig::default()
        },
    )
}

/// Receives and deletes messages from `url` until `want` arrived and then nothing more for a
/// while; their notifications.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str, want: usize) -> Vec<Notification> {
    let mut types = Vec::new();
    let start = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive")
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            if types.len() >= want {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    return types;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{url}: {} of {want} within 30 s",
                types.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        quiet_since = None;
        for m in got {
            let n: Notification =
                serde_json::from_str(m.body().expect("body")).expect("a notification");
            types.push(n);
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().expect("receipt"))
                .send()
                .await
                .expect("delete");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_policy_lets_only_the_saga_inputs_into_its_queue() {
    // No pollers: the queues keep what the topic delivers.
    let stack = quiet_stack().await;
    let tenant = unique_tenant("filter");
    let topic = stack
        .template
        .resolve(&json!({"Ref": "EventsTopic"}))
        .expect("topic ARN");
    let others = [
        "OrderCreated",
        "ItemAdded",
        "OrderShipped",
        "StockReceived",
        "Placed",
        "orderplaced",
    ];
    // Every type in a category some view reads, then one event of each category none reads
    // (a saga input type among them: the categories filter, not the types).
    let mut batch = Vec::new();
    let typed = INPUTS.iter().chain(others.iter()).map(|t| ("Order", *t));
    let unviewed = ["OrderFulfilment", "Payment", "Topic", "Mixed"]
        .into_iter()
        .map(|c| (c, "ItemAdded"));
    let viewed = [("Inventory", "StockReceived"), ("Customer", "ItemAdded")];
    for (i, (category, event_type)) in typed.chain(unviewed).chain(viewed).enumerate() {
        let stream = StreamId::new(&tenant, category, &format!("s{i}")).expect("valid");
        let mut e = sample_events(&stream, 0, 1).remove(0);
        e.event_type = event_type.to_owned();
        batch.push(Outgoing::new(Notification::of(&e).expect("valid")).expect("fits"));
    }
    let publisher = SnsPublisher::from_sdk(&stack.sdk, topic);
    let results = publisher.publish(&batch).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let saga: BTreeSet<String> = drain(&sqs, &stack.queue_url("SagaQueue"), INPUTS.len())
        .await
        .into_iter()
        .map(|n| n.event_type)
        .collect();
    let want: BTreeSet<String> = INPUTS.iter().map(|t| (*t).to_owned()).collect();
    assert_eq!(saga, want, "exactly the saga's inputs, each once");
    let viewed_count = INPUTS.len() + others.len() + 2;
    let projected = drain(&sqs, &stack.queue_url("ProjectorQueue"), viewed_count).await;
    let categories: BTreeSet<String> = projected
        .iter()
        .map(|n| n.checked_stream().expect("stream").category().to_owned())
        .collect();
    assert_eq!(
        (projected.len(), categories),
        (
            viewed_count,
            ["Customer", "Inventory", "Order"].map(str::to_owned).into()
        ),
        "every event of a viewed category reaches the projector, and nothing else"
    );
}

/// What the saga function saw of its environment and invocations.
#[derive(Default)]
struct Seen {
    timeout_env: Option<String>,
    function: Option<Arc<saga::SagaFunction<Transfer, DynamoEventStore, DynamoReadModelStore>>>,
    ticks: Vec<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_ticks_the_function_whose_environment_has_the_overridden_timeout() {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let log = seen.clone();
    // The saga binary, running the toy saga, as the local runtime builds it from the
    // template's (overridden) environment; it records what reaches it.
    let functions = Functions::new().events("saga", move |sdk, function| {
        let log = log.clone();
        async move {
            let config = saga::SagaConfig::from_lookup(|k| function.env(k))?;
            let f = Arc::new(saga::SagaFunction::<Transfer, _, _>::on_dynamo(
                &sdk,
                &config,
                eventfold::Upcasters::new(),
            ));
            {
                let mut seen = log.lock().expect("seen");
                seen.timeout_env = function.env("SAGA_TIMEOUT_SECONDS");
                seen.function = Some(f.clone());
            }
            Ok(event_handler(move |payload: Value| {
                let (f, log) = (f.clone(), log.clone());
                async move {
                    let invocation =
                        saga::Invocation::from_json(payload.clone()).map_err(|e| e.to_string())?;
                    if matches!(invocation, saga::Invocation::Tick(_)) {
                        log.lock().expect("seen").ticks.push(payload.clone());
                    }
                    f.handle(payload, None).await.map_err(|e| e.to_string())
                }
            }))
        }
    });
    let id = uuid::Uuid::now_v7().simple().to_string();
    let stack = LocalStack::start(
        LocalOptions {
            root: tests::root(),
            api_addr: "127.0.0.1:0".parse().expect("valid address"),
            emulator_port: 0,
            endpoint: Some(tests::endpoint()),
            stack: format!("{}-{}", tests::STACK, &id[id.len() - 10..]),
            auth: JwtConfig::dev(),
            parameter_overrides: vec![("PaymentTimeoutSeconds".into(), "1".into())],
            iam: true,
            iam_port: 0,
        },
        &functions,
        EsmOptions {
            functions: Some([SAGA.to_owned()].into()),
            idle_poll: Duration::from_millis(50),
            report_every: None,
            schedule_period: Some(Duration::from_millis(300)),
            ..EsmOptions::default()
        },
    )
    .await
    .expect("local stack starts");

    let function = {
        let seen = seen.lock().expect("seen");
        assert_eq!(
            seen.timeout_env.as_deref(),
            Some("1"),
            "the override reached the function"
        );
        seen.function.clone().expect("built")
    };
    assert_eq!(function.runner().config().timeout, Duration::from_secs(1));

    // A transfer that waits for an approval that never comes, set up through the function's
    // own runner (the saga queue stays empty: no publisher runs).
    let tenant = unique_tenant("tick");
    let runner = function.runner();
    open_accounts(runner.executor(), &tenant).await;
    let request = toy::request(&tenant, "t1", "a", "b", 25, false);
    write(runner.executor().store(), &request).await;
    runner
        .handle(&Notification::of(&request[2]).expect("valid"))
        .await
        .expect("submitted");
    let debited = runner
        .executor()
        .store()
        .load_range(&format!("{tenant}/Account-a"), 2, Some(2), None)
        .await
        .expect("read")
        .remove(0);
    runner
        .handle(&Notification::of(&debited).expect("valid"))
        .await
        .expect("debit seen");

    let saga_stream = StreamId::new(&tenant, "Transfer", "t1").expect("valid");
    let start = Instant::now();
    loop {
        let (_, state) = runner
            .executor()
            .load::<Transfer>(&saga_stream)
            .await
            .expect("load");
        if state.phase == Phase::Refunding {
            assert_eq!(state.reason.as_deref(), Some("timeout"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the scheduled tick timed the transfer out: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The saga records the step before it sends the refund, so the refund may land a tick
    // later than the phase: wait for it within the same deadline.
    loop {
        let account = runner
            .executor()
            .store()
            .load_range(&format!("{tenant}/Account-a"), 1, None, None)
            .await
            .expect("read");
        let types: Vec<&str> = account.iter().map(|e| e.event_type.as_str()).collect();
        if types.len() >= 3 {
            assert_eq!(types, ["Opened", "Debited", "Refunded"]);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the timed-out transfer was refunded: {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let ticks = seen.lock().expect("seen").ticks.clone();
    assert!(
        ticks.len() >= 2,
        "ticks at the schedule's period: {}",
        ticks.len()
    );
    let rule = format!(
        "arn:aws:events:{}:123456789012:rule/{}-SagaFunctionDeadlines",
        stack.template.region, stack.template.stack
    );
    for tick in &ticks {
        let event: CloudWatchEvent =
            serde_json::from_value(tick.clone()).expect("a scheduled event");
        assert_eq!(event.detail_type.as_deref(), Some("Scheduled Event"));
        assert_eq!(event.source.as_deref(), Some("aws.events"));
        assert_eq!(event.resources, std::slice::from_ref(&rule));
    }
    let stats = stack
        .esm()
        .source_stats(SAGA, "Deadlines")
        .expect("the schedule runs");
    assert!(stats.ok >= 2 && stats.function_errors == 0, "{stats:?}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_reach_the_shop_stack_and_bad_ones_stop_it() {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let options = |overrides: Vec<(String, String)>| LocalOptions {
        root: tests::root(),
        api_addr: "127.0.0.1:0".parse().expect("valid address"),
        emulator_port: 0,
        endpoint: Some(tests::endpoint()),
        stack: format!("{}-{}", tests::STACK, &id[id.len() - 10..]),
        auth: JwtConfig::dev(),
        parameter_overrides: overrides,
        iam: true,
        iam_port: 0,
    };
    let quiet = || EsmOptions {
        enabled: false,
        ..EsmOptions::default()
    };
    let parsed = eventfold_local::template::parse_parameter_overrides(&[
        "PaymentTimeoutSeconds=5 LogLevel=debug".to_owned(),
    ])
    .expect("SAM's form");
    let stack = cli::local::start_with(options(parsed), quiet())
        .await
        .expect("starts");
    let saga_fn = stack
        .template
        .functions()
        .into_iter()
        .find(|f| f.logical_id == SAGA)
        .expect("SagaFunction");
    assert_eq!(saga_fn.env("SAGA_TIMEOUT_SECONDS").as_deref(), Some("5"));
    assert_eq!(saga_fn.env("RUST_LOG").as_deref(), Some("debug"));
    let config = saga::SagaConfig::from_lookup(|k| saga_fn.env(k)).expect("configures");
    assert_eq!(config.timeout, Duration::from_secs(5));
    stack.stop().await;

    for bad in [("PaymentTimeoutSeconds", "0"), ("NoSuchParameter", "1")] {
        let err =
            cli::local::start_with(options(vec![(bad.0.to_owned(), bad.1.to_owned())]), quiet())
                .await
                .expect_err("refused");
        assert!(format!("{err:#}").contains(bad.0), "{err:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamo_read_model_store_passes_the_deadline_index_contract() {
    let stack = quiet_stack().await;
    let store = DynamoReadModelStore::from_sdk(&stack.sdk, table(&stack, "ReadModelsTable"));
    eventfold_testkit::deadline_index::run_all(&store, &unique_tenant("dl")).await;
    // The saga batches' one TransactWriteItems, each item under its own condition.
    eventfold_testkit::deadline_index::writes_together_all_or_nothing(&store, &unique_tenant("dl"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_on_dynamodb_leaves_exactly_one_effect_per_step() {
    let stack = quiet_stack().await;
    let counter = RequestCounter::new();
    let runner = runner_on(&stack, &counter, Duration::from_secs(60));
    let report = toy::redelivery_chaos(&runner, &unique_tenant("chaos"), 7).await;
    assert!(report.duplicates > 0 && report.dropped > 0, "{report:?}");
    println!(
        "saga chaos on DynamoDB: {} notifications ({} duplicates, {} copies dropped, {} events read), {} requests",
        report.delivered,
        report.duplicates,
        report.dropped,
        report.events_read,
        counter.get()
    );
}

async fn open_accounts<E: EventStore>(executor: &CommandExecutor<E, TransferCaches>, tenant: &str) {
    for (account, balance) in [("a", 100), ("b", 0)] {
        executor
            .execute::<Account>(
                &StreamId::new(tenant, "Account", account).expect("valid"),
                None,
                &AccountCommand::Open { balance },
                &Metadata::root(tenant, "tester", format!("open-{account}")),
            )
            .await
            .expect("open");
    }
}

async fn write<E: EventStore>(store: &E, events: &[EventEnvelope]) {
    for e in events {
        store
            .append(
                &e.stream_id,
                eventfold::ExpectedVersion::assumed(e.version - 1),
                vec![e.clone()],
                None,
            )
            .await
            .expect("append");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_saga_step_costs_a_known_number_of_dynamodb_requests() {
    let stack = quiet_stack().await;
    let tenant = unique_tenant("cost");
    // Accounts opened by another executor: the measured runner starts with a cold cache.
    let setup = runner_on(&stack, &RequestCounter::new(), Duration::from_secs(60));
    open_accounts(setup.executor(), &tenant).await;
    let request = toy::request(&tenant, "t1", "a", "b", 25, false);
    write(setup.executor().store(), &request).await;

    let counter = RequestCounter::new();
    let runner = runner_on(&stack, &counter, Duration::from_secs(60));
    let mut costs = Vec::new();
    let mut measure = |what: &'static str, before: u64, counter: &RequestCounter| {
        costs.push((what, counter.get() - before));
    };

    let before = counter.get();
    let n = Notification::of(&request[2]).expect("valid");
    runner.handle(&n).await.expect("submitted");
    measure(
        "input after a gap (checkpoint 0, v3), cold saga, command to a cold target",
        before,
        &counter,
    );

    let before = counter.get();
    runner.handle(&n).await.expect("again");
    measure("duplicate", before, &counter);

    let debited = runner
        .executor()
        .store()
        .load_range(&format!("{tenant}/Account-a"), 2, Some(2), None)
        .await
        .expect("read")
        .remove(0);
    let before = counter.get();
    runner
        .handle(&Notification::of(&debited).expect("valid"))
        .await
        .expect("debit seen");
    measure(
        "target's answer after a gap (v2), warm saga, starts a wait (index put)",
        before,
        &counter,
    );

    let before = counter.get();
    let ticked = runner.tick(Utc::now()).await.expect("tick");
    assert_eq!(ticked.due, 0);
    measure("tick with nothing due", before, &counter);

    let before = counter.get();
    let ticked = runner
        .tick(Utc::now() + TimeDelta::seconds(61))
        .await
        .expect("tick");
    assert_eq!(ticked.timed_out, 1);
    measure(
        "tick with one instance due: load, timeout, index cleared, refund to a warm target",
        before,
        &counter,
    );

    let approval = toy::approval(&tenant, "t1", 4);
    write(runner.executor().store(), std::slice::from_ref(&approval)).await;
    let before = counter.get();
    runner
        .handle(&Notification::of(&approval).expect("valid"))
        .await
        .expect("late approval");
    measure(
        "input in order (v4 after v3), warm saga, resends the pending refund (done already)",
        before,
        &counter,
    );

    let refunded = runner
        .executor()
        .store()
        .load_range(&format!("{tenant}/Account-a"), 3, Some(3), None)
        .await
        .expect("read")
        .remove(0);
    let before = counter.get();
    runner
        .handle(&Notification::of(&refunded).expect("valid"))
        .await
        .expect("refund seen");
    measure(
        "target's answer in order (v3 after v2), warm saga, nothing left to send",
        before,
        &counter,
    );
    let (_, state) = runner
        .executor()
        .load::<Transfer>(&StreamId::new(&tenant, "Transfer", "t1").expect("valid"))
        .await
        .expect("load");
    assert_eq!(state.phase, Phase::Compensated);

    for (what, n) in &costs {
        println!("saga step: {n:>2} DynamoDB requests: {what}");
    }
    let got: Vec<u64> = costs.iter().map(|c| c.1).collect();
    // 1 GetItem checkpoint + 1 Query gap + 1 Query saga + 1 PutItem saga + 1 Query target +
    // 1 PutItem target + 1 TransactWriteItems (the index entry, no deadline, with the
    // checkpoint move) = 7; duplicate: the checkpoint GetItem; the answer: GetItem + Query
    // gap + PutItem saga + TransactWriteItems (index and checkpoint) = 4; an idle tick: one
    // Query of the index; a due instance: Query index + Query load + PutItem saga + PutItem
    // index (no deadline; a tick writes at once) + PutItem target = 5; an input in order:
    // GetItem + PutItem saga + TransactWriteItems = 3, plus one catch-up Query when a
    // pending command is resent and found done at its target.
    assert_eq!(got, [7, 1, 4, 1, 5, 4, 3], "{costs:?}");
}
