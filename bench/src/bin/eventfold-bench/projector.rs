//! `eventfold-bench projector`: DynamoDB requests the projector spends per notification and
//! per view, for SQS batches of 10, on the local stack (or `AWS_ENDPOINT_URL`). Printed, never
//! asserted.
//!
//! The projector function runs in process on SQS events built here, over the real read-models
//! table through a counting client; the notifications carry their events (as the bus does), so
//! the event store is never read and an in-memory one stands in for it. Each workload and view
//! selection writes under its own tenant, so nothing else moves its checkpoints.

use ::projector::ProjectorFunction;
use anyhow::{Context, Result, bail};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use eventfold::{CommandContext, CommandExecutor, ExecutorConfig, MemoryEventStore, StreamId};
use eventfold_aws::metrics::counted_dynamo_client;
use eventfold_aws::{DynamoReadModelStore, RequestCounter};
use eventfold_consumers::Notification;
use eventfold_local::LocalOptions;
use shop::order::OrderCommand;
use shop::registry::ShopCaches;
use shop::views::{DAILY_SALES, ORDER_SUMMARY};
use std::collections::HashMap;
use std::sync::Arc;

/// Notifications per SQS batch (the template's batch size for the projector queue).
pub const BATCH: usize = 10;

/// How the notifications of a batch are spread over streams.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// One order receiving a burst: 10 events of one stream per batch (one FIFO group).
    Burst,
    /// Ten new orders with one event each per batch (ten FIFO groups).
    Spread,
}

impl Workload {
    fn label(self) -> &'static str {
        match self {
            Self::Burst => "burst (1 stream x 10 events)",
            Self::Spread => "spread (10 streams x 1 event)",
        }
    }
}

fn ctx(n: u64) -> CommandContext {
    CommandContext::root("bench", "bench", format!("p-{n}"))
}

/// The commands of one burst: an order created, filled and placed (10 events, the last one
/// the only one `daily-sales` counts).
fn burst_commands() -> Result<Vec<OrderCommand>> {
    let mut commands = vec![OrderCommand::CreateOrder {
        customer_id: shop::CustomerId::new("c-1")?,
    }];
    for i in 0..8 {
        commands.push(OrderCommand::AddItem {
            sku: shop::Sku::new(format!("s-{i}"))?,
            quantity: 1,
            unit_price: shop::Money::from_minor(100),
        });
    }
    commands.push(OrderCommand::PlaceOrder {
        payment_method: None,
    });
    Ok(commands)
}

/// `batches` SQS batches of [`BATCH`] notifications of `workload` under `tenant`.
async fn batches_of(workload: Workload, tenant: &str, batches: u64) -> Result<Vec<SqsEvent>> {
    let exec = CommandExecutor::new(MemoryEventStore::new(), ExecutorConfig::default())
        .caching::<ShopCaches>();
    let mut out = Vec::new();
    for b in 0..batches {
        let mut notifications = Vec::new();
        match workload {
            Workload::Burst => {
                let order = StreamId::new(tenant, "Order", &format!("burst-{b}"))?;
                for (i, command) in burst_commands()?.iter().enumerate() {
                    let done = exec
                        .execute::<shop::Order>(&order, None, command, &ctx(i as u64))
                        .await?;
                    for e in &done.events {
                        notifications.push(Notification::of(e)?);
                    }
                }
            }
            Workload::Spread => {
                for i in 0..BATCH {
                    let order = StreamId::new(tenant, "Order", &format!("spread-{b}-{i}"))?;
                    let create = OrderCommand::CreateOrder {
                        customer_id: shop::CustomerId::new(format!("c-{i}"))?,
                    };
                    let done = exec
                        .execute::<shop::Order>(&order, None, &create, &ctx(i as u64))
                        .await?;
                    for e in &done.events {
                        notifications.push(Notification::of(e)?);
                    }
                }
            }
        }
        if notifications.len() != BATCH {
            bail!(
                "a {} batch holds {} notifications, not {BATCH}",
                workload.label(),
                notifications.len()
            );
        }
        out.push(sqs_event(&notifications, b)?);
    }
    Ok(out)
}

/// The SQS event a FIFO queue would deliver: one record per notification, grouped by stream.
fn sqs_event(notifications: &[Notification], batch: u64) -> Result<SqsEvent> {
    let mut event = SqsEvent::default();
    for (i, n) in notifications.iter().enumerate() {
        let mut m = SqsMessage::default();
        m.message_id = Some(format!("b{batch}-m{i}"));
        m.body = Some(serde_json::to_string(n)?);
        m.attributes = HashMap::from([(
            eventfold_aws::sqs::GROUP_ATTRIBUTE.to_owned(),
            n.stream_id.clone(),
        )]);
        event.records.push(m);
    }
    Ok(event)
}

/// Runs every batch through a projector of `views`; requests per notification per view.
async fn requests_per_notification_view(
    models: &DynamoReadModelStore,
    counter: &RequestCounter,
    views: &[&str],
    batches: &[SqsEvent],
) -> Result<f64> {
    let function = ProjectorFunction::new(
        shop::views::projector(Arc::new(MemoryEventStore::new()), models.clone()).only(views),
    );
    let before = counter.get();
    let mut notifications = 0usize;
    for batch in batches {
        let response = function.handle(batch.clone()).await;
        if !response.batch_item_failures.is_empty() {
            bail!(
                "{} of {} notifications failed",
                response.batch_item_failures.len(),
                batch.records.len()
            );
        }
        notifications += batch.records.len();
    }
    let requests = counter.get() - before;
    Ok(requests as f64 / (notifications * views.len()) as f64)
}

/// Runs the benchmark and prints its table.
pub async fn run(local: LocalOptions, batches: u64) -> Result<()> {
    let stack = cli::local::start(local).await?;
    let table = stack
        .template
        .tables()
        .into_iter()
        .find(|t| t.logical_id == "ReadModelsTable")
        .context("template has no ReadModelsTable")?
        .name;
    let counter = RequestCounter::new();
    let models = DynamoReadModelStore::new(counted_dynamo_client(&stack.sdk, &counter), table);
    let run_tag = chrono::Utc::now().timestamp_millis();
    println!("eventfold bench projector");
    println!("-------------------------");
    println!(
        "DynamoDB requests per notification per view, SQS batches of {BATCH}, {batches} batches per row"
    );
    println!(
        "{:<31} {:<27} {:>9} {:>11}",
        "workload", "views", "first", "redelivered"
    );
    let selections: [&[&str]; 3] = [
        &[ORDER_SUMMARY, DAILY_SALES],
        &[ORDER_SUMMARY],
        &[DAILY_SALES],
    ];
    for (w, workload) in [Workload::Burst, Workload::Spread].into_iter().enumerate() {
        for (s, views) in selections.iter().enumerate() {
            let tenant = format!("pb{run_tag}w{w}s{s}");
            let sqs = batches_of(workload, &tenant, batches).await?;
            let first = requests_per_notification_view(&models, &counter, views, &sqs).await?;
            // The same batches again: every notification is a duplicate for every view.
            let again = requests_per_notification_view(&models, &counter, views, &sqs).await?;
            println!(
                "{:<31} {:<27} {first:>9.3} {again:>11.3}",
                workload.label(),
                views.join(" + ")
            );
        }
    }
    stack.stop().await;
    Ok(())
}
