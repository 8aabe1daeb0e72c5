//! `eventfold-bench commands`: figures for the command path, printed, never asserted.

use anyhow::{Context, Result};
use bench::args::CommandsOptions;
use eventfold::{
    CommandContext, CommandExecutor, EventStore, ExecutorConfig, LoadOptions, MemoryEventStore,
    StreamId,
};
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{DynamoEventStore, RequestCounter};
use eventfold_local::httpc::Http;
use eventfold_local::{LocalOptions, LocalStack};
use shop::Inventory;
use shop::inventory::InventoryCommand;
use shop::order::OrderCommand;
use shop::registry::ShopCaches;
use std::time::Instant;

fn ctx(n: u64) -> CommandContext {
    CommandContext::root("bench", "bench", format!("c-{n}"))
}

fn receive() -> InventoryCommand {
    InventoryCommand::ReceiveStock { quantity: 1 }
}

fn stream(tag: &str, i: u64) -> Result<StreamId> {
    Ok(StreamId::new("bench", "Inventory", &format!("{tag}-{i}"))?)
}

async fn run_commands<S: EventStore>(
    exec: &CommandExecutor<S, ShopCaches>,
    tag: &str,
    streams: u64,
    n: u64,
) -> Result<f64> {
    let start = Instant::now();
    for i in 0..n {
        exec.execute::<Inventory>(&stream(tag, i % streams)?, None, &receive(), &ctx(i))
            .await?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs the benchmark and prints its figures.
pub async fn run(local: LocalOptions, options: CommandsOptions) -> Result<()> {
    println!("eventfold bench");
    println!("---------------");
    // 1. In process, memory store.
    for (label, cache) in [("warm cache", 1024), ("no cache", 0)] {
        let exec = CommandExecutor::new(
            MemoryEventStore::new(),
            ExecutorConfig {
                cache_capacity: cache,
                ..ExecutorConfig::default()
            },
        )
        .caching::<ShopCaches>();
        let rate = run_commands(&exec, "mem", 100, options.memory_commands).await?;
        println!(
            "memory store, {label:<10}: {rate:>10.0} commands/s ({} commands over 100 streams)",
            options.memory_commands
        );
    }

    projector_in_process(options.memory_commands / 4).await?;

    // 2. DynamoDB on the emulator (or AWS_ENDPOINT_URL).
    let stack = cli::local::start(local).await?;
    let table = stack
        .template
        .tables()
        .into_iter()
        .find(|t| t.logical_id == "EventsTable")
        .context("template has no EventsTable")?
        .name;
    let counter = RequestCounter::new();
    let client = counted_dynamo_client(&stack.sdk, &counter);
    let store = || DynamoEventStore::new(client.clone(), table.clone());
    let tag = format!("r{}", chrono::Utc::now().timestamp_millis());
    let n = options.dynamo_commands;

    // Seed streams with some history so "cold" means a real load.
    let seed = CommandExecutor::new(store(), ExecutorConfig::default()).caching::<ShopCaches>();
    run_commands(&seed, &tag, n, n * 3).await?;

    let before = counter.get();
    let start = Instant::now();
    for i in 0..n {
        // A new executor per command: the cold start of a Lambda instance.
        let cold = CommandExecutor::new(store(), ExecutorConfig::default()).caching::<ShopCaches>();
        cold.execute::<Inventory>(&stream(&tag, i)?, None, &receive(), &ctx(i))
            .await?;
    }
    let cold_secs = start.elapsed().as_secs_f64();
    let cold_requests = (counter.get() - before) as f64 / n as f64;

    let warm = CommandExecutor::new(store(), ExecutorConfig::default()).caching::<ShopCaches>();
    for i in 0..n {
        warm.load::<Inventory>(&stream(&tag, i)?).await?;
    }
    let before = counter.get();
    let start = Instant::now();
    for i in 0..n {
        warm.execute::<Inventory>(&stream(&tag, i)?, None, &receive(), &ctx(i))
            .await?;
    }
    let warm_secs = start.elapsed().as_secs_f64();
    let warm_requests = (counter.get() - before) as f64 / n as f64;
    println!(
        "dynamodb (moto), cold   : {cold_requests:>6.2} requests/command, {:>7.1} ms/command",
        cold_secs * 1000.0 / n as f64
    );
    println!(
        "dynamodb (moto), warm   : {warm_requests:>6.2} requests/command, {:>7.1} ms/command",
        warm_secs * 1000.0 / n as f64
    );

    // Fresh aggregates on a warm executor: CreateOrder + AddItem each. `CreateOrder` is
    // assumed to start its stream (one append, no read), `AddItem` finds the state cached.
    let fresh = CommandExecutor::new(store(), ExecutorConfig::default()).caching::<ShopCaches>();
    let before = counter.get();
    let start = Instant::now();
    let orders = 50u64;
    for i in 0..orders {
        let order = StreamId::new("bench", "Order", &format!("{tag}-fresh-{i}"))?;
        let commands = [
            OrderCommand::CreateOrder {
                customer_id: shop::CustomerId::new(format!("c-{i}"))?,
            },
            OrderCommand::AddItem {
                sku: shop::Sku::new("book")?,
                quantity: 1,
                unit_price: shop::Money::from_minor(1250),
            },
        ];
        for command in &commands {
            fresh
                .execute::<shop::Order>(&order, None, command, &ctx(i))
                .await?;
        }
    }
    let fresh_secs = start.elapsed().as_secs_f64();
    println!(
        "dynamodb (moto), fresh  : {:>6.2} requests/command, {:>7.1} ms/command ({orders} new orders x CreateOrder + AddItem, warm)",
        (counter.get() - before) as f64 / (orders * 2) as f64,
        fresh_secs * 1000.0 / (orders * 2) as f64
    );

    hot_stream(&store, &tag, 16, 50).await?;

    // 3. A long stream with snapshots.
    let long = stream(&format!("{tag}-long"), 0)?;
    let writer = CommandExecutor::new(store(), ExecutorConfig::default()).caching::<ShopCaches>();
    for i in 0..options.long_stream {
        writer
            .execute::<Inventory>(&long, None, &receive(), &ctx(i))
            .await?;
    }
    let loaded = store()
        .load(
            &long.to_string(),
            LoadOptions {
                state_schema: Some(<Inventory as eventfold::Aggregate>::STATE_SCHEMA),
                snapshot_every: 100,
            },
        )
        .await?;
    let full = store()
        .load(&long.to_string(), LoadOptions::default())
        .await?;
    println!(
        "long stream of {} events : {} events folded in {} request(s) with snapshots; {} events in {} request(s) without",
        loaded.version,
        loaded.events.len(),
        loaded.requests,
        full.events.len(),
        full.requests
    );
    sns_requests_per_event(&stack, &tag).await?;
    e2e_latency(&stack, 30).await?;
    saga_latency(&stack, 30).await?;
    stack.stop().await;
    Ok(())
}

/// `writers` executors (each its own "Lambda instance") sending `commands` each to one
/// stream at once, as the command API runs them (retry budget, no expected version): how
/// many went through at the first call, and the commit rate the stream reached.
async fn hot_stream(
    store: &(impl Fn() -> DynamoEventStore + Sync),
    tag: &str,
    writers: u64,
    commands: u64,
) -> Result<()> {
    let hot = stream(&format!("{tag}-hot"), 0)?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let exec = CommandExecutor::new(
            store(),
            ExecutorConfig {
                backoff: Some(eventfold_aws::tokio_backoff()),
                retry_budget: Some(command_api::RETRY_BUDGET),
                ..ExecutorConfig::default()
            },
        )
        .caching::<ShopCaches>();
        let hot = hot.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for i in 0..commands {
                if exec
                    .execute::<Inventory>(&hot, None, &receive(), &ctx(w * 1000 + i))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "hot stream (moto)       : {ok}/{} commands committed at the first call, {:>6.1} commits/s on one stream ({writers} writers)",
        writers * commands,
        ok as f64 / secs
    );
    Ok(())
}

/// Stream records of `commits` commits of `per_commit` events each, over 7 streams.
fn stream_records(
    tag: &str,
    commits: u64,
    per_commit: u64,
) -> Result<aws_lambda_events::event::dynamodb::Event> {
    use eventfold::NewEvent;
    let mut records = Vec::new();
    for c in 0..commits {
        let stream = StreamId::new("bench", "BenchNote", &format!("{tag}-sns-{}", c % 7))?;
        let after = (c / 7) * per_commit;
        let events: Vec<_> = (1..=per_commit)
            .map(|v| {
                NewEvent {
                    event_type: "ItemAdded".into(),
                    schema_version: 1,
                    data: serde_json::json!({"sku": "s", "quantity": v}),
                }
                .into_envelope(&stream, after + v, chrono::Utc::now(), ctx(c))
            })
            .collect();
        let record = eventfold_aws::streams::insert_record(&events, &format!("{:021}", c + 1))?;
        records.push(serde_json::to_value(record)?);
    }
    Ok(serde_json::from_value(
        serde_json::json!({ "Records": records }),
    )?)
}

/// SNS requests the stream publisher needs per event, for commits of 1 and of 3 events, and
/// its in-process throughput (a sink that only counts).
async fn sns_requests_per_event(stack: &LocalStack, tag: &str) -> Result<()> {
    let topic = stack
        .template
        .arn("EventsTopic")
        .context("template has no EventsTopic")?;
    for (commits, per_commit) in [(90u64, 1u64), (30, 3)] {
        let counter = RequestCounter::new();
        let config = aws_sdk_sns::config::Builder::from(&stack.sdk)
            .interceptor(counter.clone())
            .build();
        let sink = eventfold_aws::sns::SnsPublisher::new(
            aws_sdk_sns::Client::from_conf(config),
            topic.clone(),
        );
        let publisher = stream_publisher::StreamPublisher::new(sink);
        let event = stream_records(&format!("{tag}-{per_commit}"), commits, per_commit)?;
        let response = publisher.handle(event).await;
        anyhow::ensure!(
            response.batch_item_failures.is_empty(),
            "publishing failed: {:?}",
            response.batch_item_failures
        );
        println!(
            "stream publisher         : {:>6.2} SNS requests/event ({} events in commits of {per_commit}, one invocation)",
            counter.get() as f64 / (commits * per_commit) as f64,
            commits * per_commit
        );
    }
    let publisher = stream_publisher::StreamPublisher::new(CountingSink::default());
    let batches = 200u64;
    let events: Vec<_> = (0..batches)
        .map(|b| stream_records(&format!("{tag}-mem-{b}"), 100, 1))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    for event in events {
        let response = publisher.handle(event).await;
        anyhow::ensure!(
            response.batch_item_failures.is_empty(),
            "in-process publish failed"
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = publisher
        .sink()
        .sent
        .load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "stream publisher, in process: {:>8.0} events/s ({sent} single-event commits, batches of 100, counting sink)",
        sent as f64 / elapsed
    );
    Ok(())
}

/// A sink that accepts everything and counts it: the publisher's own cost, without SNS.
#[derive(Debug, Default)]
struct CountingSink {
    sent: std::sync::atomic::AtomicU64,
}

#[async_trait::async_trait]
impl eventfold_aws::sns::NotificationSink for CountingSink {
    async fn publish(
        &self,
        batch: &[eventfold_aws::sns::Outgoing],
    ) -> Vec<Result<(), eventfold_aws::sns::PublishError>> {
        self.sent
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
        vec![Ok(()); batch.len()]
    }
}

/// `PlaceOrder` -> order confirmed by the saga, through HTTP, the stream, SNS, the saga's
/// queue and function, and the commands it sends (reserve, authorize, confirm).
async fn saga_latency(stack: &LocalStack, samples: usize) -> Result<()> {
    let http = Http::new(&stack.api_url());
    let tenant = format!("saga{}", chrono::Utc::now().timestamp_millis());
    let token = stack
        .gateway
        .auth()
        .issue(&tenant, "bench", "events:read events:write", 600);
    let post = |body: serde_json::Value| {
        let (http, token) = (&http, &token);
        async move {
            let r = http
                .post("/api/v1/events/commands", Some(token), &body)
                .await?;
            anyhow::ensure!(r.status < 300, "command failed: {}", r.json);
            Ok(())
        }
    };
    post(serde_json::json!({"aggregate_type": "Inventory", "aggregate_id": "book", "type": "ReceiveStock", "data": {"quantity": 1000}})).await?;
    let mut latencies = Vec::new();
    for i in 0..samples {
        let id = format!("o-{i}");
        let order = |kind: &str, data: serde_json::Value| serde_json::json!({"aggregate_type": "Order", "aggregate_id": id, "type": kind, "data": data});
        post(order(
            "CreateOrder",
            serde_json::json!({"customer_id": "c"}),
        ))
        .await?;
        post(order(
            "AddItem",
            serde_json::json!({"sku": "book", "quantity": 1, "unit_price": 1250}),
        ))
        .await?;
        let start = Instant::now();
        post(order("PlaceOrder", serde_json::json!({}))).await?;
        loop {
            let q = http
                .get(
                    &format!("/api/v1/events/aggregates/Order/{id}"),
                    Some(&token),
                )
                .await?;
            if q.json["state"]["status"] == "Confirmed" {
                break;
            }
            anyhow::ensure!(start.elapsed().as_secs() < 60, "order {id} not confirmed");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "local PlaceOrder->confirmed: p50 {:>7.0} ms, p95 {:>7.0} ms ({samples} orders through the saga)",
        pick(0.5),
        pick(0.95)
    );
    Ok(())
}

/// Command -> read model latency through HTTP, the stream, SNS, SQS and the projector.
async fn e2e_latency(stack: &LocalStack, samples: usize) -> Result<()> {
    let http = Http::new(&stack.api_url());
    let tenant = format!("bench{}", chrono::Utc::now().timestamp_millis());
    let token = stack
        .gateway
        .auth()
        .issue(&tenant, "bench", "events:read events:write", 600);
    let mut latencies = Vec::new();
    for i in 1..=samples {
        let body = serde_json::json!({"aggregate_type": "Inventory", "aggregate_id": "sku-lat", "type": "ReceiveStock", "data": {"quantity": 1}});
        let start = Instant::now();
        let r = http
            .post("/api/v1/events/commands", Some(&token), &body)
            .await?;
        anyhow::ensure!(r.status < 300, "command failed: {}", r.json);
        loop {
            let q = http
                .get(
                    "/api/v1/events/queries/stock-levels?sku=sku-lat",
                    Some(&token),
                )
                .await?;
            if q.json["item"]["version"].as_u64() == Some(i as u64) {
                break;
            }
            anyhow::ensure!(
                start.elapsed().as_secs() < 60,
                "read model did not catch up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        latencies.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "local e2e command->view : p50 {:>7.0} ms, p95 {:>7.0} ms ({samples} commands)",
        pick(0.5),
        pick(0.95)
    );
    Ok(())
}

/// Notifications per second through all shop views, memory stores, in process.
async fn projector_in_process(orders: u64) -> Result<()> {
    use eventfold_consumers::Notification;
    use eventfold_consumers::projection::MemoryReadModelStore;
    use shop::order::OrderCommand;
    let events = std::sync::Arc::new(MemoryEventStore::new());
    let exec =
        CommandExecutor::new(events.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    let mut notifications = Vec::new();
    for i in 0..orders {
        let order = StreamId::new("bench", "Order", &format!("p-{i}"))?;
        for cmd in [
            OrderCommand::CreateOrder {
                customer_id: shop::CustomerId::new(format!("c-{}", i % 50))?,
            },
            OrderCommand::AddItem {
                sku: shop::Sku::new(format!("s-{}", i % 20))?,
                quantity: 2,
                unit_price: shop::Money::from_minor(150),
            },
            OrderCommand::PlaceOrder {
                payment_method: None,
            },
        ] {
            let out = exec
                .execute::<shop::Order>(&order, None, &cmd, &ctx(i))
                .await?;
            for e in &out.events {
                notifications.push(Notification::of(e)?);
            }
        }
    }
    let projector = shop::views::projector(events, MemoryReadModelStore::new());
    let start = Instant::now();
    for n in &notifications {
        projector.handle(n).await?;
    }
    let rate = notifications.len() as f64 / start.elapsed().as_secs_f64();
    println!(
        "projector, memory stores : {rate:>10.0} notifications/s ({} notifications, 3 views each order event)",
        notifications.len()
    );
    Ok(())
}
