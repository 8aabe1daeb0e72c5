//! The recovery path on the emulator, through the template's real wiring: dead letters with
//! the consumers' errors, `eventfold dlq` and the dead-letters API ([`poison`]); SNS down
//! until the stream mapping gives up, lost final notifications and a consumer killed
//! mid-batch, each converging with no operator action ([`recovery`]); the saga's own dead
//! letters and their redrive ([`saga`]).

mod poison;
mod recovery;
mod saga;

use async_trait::async_trait;
use eventfold::{EventEnvelope, EventStore, Metadata, NewEvent, StreamId};
use eventfold_aws::sns::{NotificationSink, Outgoing, SnsPublisher};
use eventfold_aws::{DynamoDeadLetterStore, DynamoEventStore, DynamoReadModelStore};
use eventfold_consumers::Notification;
use eventfold_consumers::deadletter::{DeadLetterStore, Filter, STREAM_CONSUMER, Status};
use eventfold_consumers::projection::ReadModelStore;
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
    eventfold_testkit::dead_letters::run_all(&letters(&stack), &unique_tenant("dl")).await;
}

/// Fast pollers, a short visibility timeout (moto waits it out per receive), no printing.
pub(crate) fn fast() -> EsmOptions {
    EsmOptions {
        idle_poll: Duration::from_millis(50),
        retry_backoff: Duration::from_millis(20),
        sqs_visibility_timeout: Some(Duration::from_secs(1)),
        report_every: None,
        ..EsmOptions::default()
    }
}

pub(crate) fn received(stream: &StreamId, version: u64, quantity: i64) -> EventEnvelope {
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
            trace: None,
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

/// The first dead letter of `tenant`, waiting up to `limit` for one (what it is waited for
/// names the failure).
async fn first_letter(
    letters: &DynamoDeadLetterStore,
    tenant: &str,
    limit: Duration,
    what: &str,
) -> eventfold_consumers::deadletter::DeadLetter {
    first_letter_of(letters, tenant, &Filter::default(), limit, what).await
}

/// [`first_letter`] among the letters `filter` selects.
async fn first_letter_of(
    letters: &DynamoDeadLetterStore,
    tenant: &str,
    filter: &Filter,
    limit: Duration,
    what: &str,
) -> eventfold_consumers::deadletter::DeadLetter {
    let start = Instant::now();
    loop {
        let open = letters.list(Some(tenant), filter, 10).await.expect("list");
        if let Some(l) = open.into_iter().next() {
            return l;
        }
        assert!(
            start.elapsed() < limit,
            "no dead letter for {what} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Commits `per_stream` single-event commits of quantity `1..` to each of `streams` skus.
async fn write_stock(store: &DynamoEventStore, tenant: &str, streams: usize, per_stream: u64) {
    for s in 0..streams {
        let stream = StreamId::new(tenant, "Inventory", &format!("sku-{s}")).expect("valid");
        // Each append after the version the last one reported: vouched, one PutItem each.
        let mut at = eventfold::ExpectedVersion::NEW;
        for v in 1..=per_stream {
            at = store
                .append(
                    &stream.to_string(),
                    at,
                    vec![received(&stream, v, v as i64)],
                    None,
                )
                .await
                .expect("append")
                .expected();
        }
    }
}

/// What `per_stream` commits of quantities `1..=per_stream` add up to.
fn total(per_stream: u64) -> i64 {
    (1..=per_stream as i64).sum()
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
