//! `OrderPlaced` written under schema 1 (no `payment_method`) still loads, projects and
//! starts the saga, through `shop::registry::upcasters()`.

use crate::TextId;
use chrono::{DateTime, Utc};
use eventfold::{
    CommandExecutor, EventEnvelope, EventStore, ExecutorConfig, MemoryEventStore, Metadata,
    NewEvent, StreamId,
};
use eventfold_consumers::Notification;
use eventfold_consumers::Saga;
use eventfold_consumers::projection::MemoryReadModelStore;
use serde_json::{Value, json};
use shop::fulfilment::{FulfilmentInput, FulfilmentLine, OrderFulfilment, PlacedOrder};
use shop::order::{Order, OrderCommand, OrderEvent, OrderStatus};
use shop::registry::{self, ShopCaches};
use shop::{Aggregate, DomainEvent};
use std::sync::Arc;

fn placed_at() -> DateTime<Utc> {
    "2023-11-05T10:00:00Z".parse().expect("a time")
}

fn envelope(
    stream: &StreamId,
    version: u64,
    event_type: &str,
    schema: u32,
    data: Value,
) -> EventEnvelope {
    NewEvent {
        event_type: event_type.into(),
        schema_version: schema,
        data,
    }
    .into_envelope(
        stream,
        version,
        placed_at(),
        Metadata::root(stream.tenant(), "old-client", "cmd-1"),
    )
}

/// An order placed before orders named a payment method, as it was stored then.
fn old_order(stream: &StreamId) -> Vec<EventEnvelope> {
    vec![
        envelope(
            stream,
            1,
            "OrderCreated",
            1,
            json!({"customer_id": "alice"}),
        ),
        envelope(
            stream,
            2,
            "ItemAdded",
            1,
            json!({"sku": "apple", "quantity": 2, "unit_price": 150}),
        ),
        envelope(stream, 3, "OrderPlaced", 1, json!({"total": 300})),
    ]
}

fn config() -> ExecutorConfig {
    ExecutorConfig {
        snapshot_every: 0,
        ..ExecutorConfig::default()
    }
}

#[test]
fn the_upcaster_adds_the_default_method_to_schema_1_only() {
    let up = registry::upcasters();
    let (data, version) = up.upcast("OrderPlaced", 1, json!({"total": 300}));
    assert_eq!(version, 2);
    assert_eq!(data, json!({"total": 300, "payment_method": "card"}));
    let current = json!({"total": 300, "payment_method": "bank_transfer"});
    assert_eq!(
        up.upcast("OrderPlaced", 2, current.clone()),
        (current.clone(), 2)
    );
    assert!(up.is_current("OrderPlaced", 2) && up.is_current("OrderCreated", 1));
    // What is written today is schema 2 and reads back without a step.
    let written = OrderEvent::OrderPlaced {
        total: 300.into(),
        payment_method: "bank_transfer".into(),
    }
    .encode()
    .expect("encodes");
    assert_eq!((written.schema_version, written.data), (2, current));
    // Without the upcaster a schema 1 event is not an `OrderPlaced` of today.
    assert!(OrderEvent::decode("OrderPlaced", &json!({"total": 300})).is_err());
}

#[tokio::test]
async fn the_executor_loads_a_schema_1_order_and_goes_on_from_it() {
    let store = Arc::new(MemoryEventStore::new());
    let stream = StreamId::new("acme", "Order", "o-1").expect("valid");
    store
        .append(
            &stream.to_string(),
            eventfold::ExpectedVersion::assumed(0),
            old_order(&stream),
            None,
        )
        .await
        .expect("append");
    let plain = CommandExecutor::new(store.clone(), config()).caching::<ShopCaches>();
    assert!(
        plain.load::<Order>(&stream).await.is_err(),
        "schema 1 does not decode as schema 2"
    );
    let executor = CommandExecutor::new(store.clone(), config())
        .caching::<ShopCaches>()
        .with_upcasters(registry::upcasters());
    let (version, state) = executor.load::<Order>(&stream).await.expect("loads");
    assert_eq!(version, 3);
    assert_eq!(state.status, Some(OrderStatus::Placed));
    assert_eq!(state.payment_method.as_deref(), Some("card"));
    let out = executor
        .execute::<Order>(
            &stream,
            None,
            &OrderCommand::ConfirmOrder {},
            &Metadata::root("acme", "tester", "cmd-4"),
        )
        .await
        .expect("confirms");
    assert_eq!(out.version, 4);
    assert_eq!(out.events[0].event_type, "OrderConfirmed");
}

#[tokio::test]
async fn the_projector_projects_a_schema_1_order() {
    let store = Arc::new(MemoryEventStore::new());
    let stream = StreamId::new("acme", "Order", "o-1").expect("valid");
    let events = old_order(&stream);
    store
        .append(
            &stream.to_string(),
            eventfold::ExpectedVersion::assumed(0),
            events.clone(),
            None,
        )
        .await
        .expect("append");
    let projector = shop::views::projector(store.clone(), MemoryReadModelStore::new());
    for event in &events {
        projector
            .handle(&Notification::of(event).expect("valid"))
            .await
            .expect("projects");
    }
    let summary = projector
        .models()
        .snapshot("acme", shop::views::ORDER_SUMMARY);
    assert_eq!(summary["o-1"]["status"], "Placed");
    assert_eq!(summary["o-1"]["total"], 300);
    let sales = projector
        .models()
        .snapshot("acme", shop::views::DAILY_SALES);
    assert_eq!(sales["2023-11-05"]["orders"], 1, "{sales:?}");
}

#[test]
fn the_saga_starts_from_a_schema_1_order_and_a_schema_2_one_alike() {
    let stream = StreamId::new("acme", "Order", "o-1").expect("valid");
    let old = old_order(&stream);
    let mut new = old.clone();
    new[2] = envelope(
        &stream,
        3,
        "OrderPlaced",
        2,
        json!({"total": 300, "payment_method": "bank_transfer"}),
    );
    for (history, method) in [(old, "card"), (new, "bank_transfer")] {
        let placed = &history[2];
        assert!(OrderFulfilment::needs_history(placed));
        let (id, input) = OrderFulfilment::input(placed, &history)
            .expect("decodes")
            .expect("an input");
        assert_eq!(id, "o-1");
        assert_eq!(
            input,
            FulfilmentInput::OrderPlaced(PlacedOrder {
                order_id: "o-1".id(),
                customer_id: "alice".id(),
                lines: vec![FulfilmentLine {
                    sku: "apple".id(),
                    quantity: 2
                }],
                total: 300.into(),
                payment_method: method.into(),
                placed_at: placed_at(),
            })
        );
        let started = OrderFulfilment::decide(&OrderFulfilment::initial(), &input).expect("starts");
        assert_eq!(started.len(), 1);
    }
}
