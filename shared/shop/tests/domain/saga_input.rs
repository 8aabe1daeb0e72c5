//! Which events become saga inputs (`Saga::input`), for which instance, and which need
//! their stream's history.

use crate::TextId;
use eventfold::{EventEnvelope, Metadata, NewEvent, StreamId};
use eventfold_consumers::{InputError, Pending, Saga};
use serde_json::{Value, json};
use shop::fulfilment::{
    CANCEL_STEP, FulfilmentInput, INPUT_EVENT_TYPES, ObservedOrder, ObservedPayment, ObservedStock,
    OrderFulfilment, OrderObservation, PaymentObservation, StockObservation,
};
use shop::{Inventory, Order, Payment, RegisteredAggregate};

fn envelope(stream: &str, version: u64, event_type: &str, data: Value) -> EventEnvelope {
    envelope_by(stream, version, event_type, data, "cmd-1")
}

fn envelope_by(
    stream: &str,
    version: u64,
    event_type: &str,
    data: Value,
    command_id: &str,
) -> EventEnvelope {
    let stream = StreamId::parse(stream).expect("valid");
    NewEvent {
        event_type: event_type.into(),
        schema_version: 1,
        data,
    }
    .into_envelope(
        &stream,
        version,
        "2024-03-01T09:30:00Z".parse().expect("a time"),
        Metadata::root(stream.tenant(), "someone", command_id),
    )
}

/// A sample of every event type of `A`, with data that decodes.
fn samples(category: &str) -> Vec<(&'static str, Value)> {
    match category {
        "Order" => vec![
            ("OrderCreated", json!({"customer_id": "alice"})),
            (
                "ItemAdded",
                json!({"sku": "apple", "quantity": 1, "unit_price": 5}),
            ),
            ("ItemRemoved", json!({"sku": "apple"})),
            ("OrderPlaced", json!({"total": 5, "payment_method": "card"})),
            ("OrderConfirmed", json!({})),
            ("OrderShipped", json!({"tracking_id": "T-1"})),
            ("OrderCancelled", json!({"reason": "why"})),
        ],
        "Inventory" => vec![
            ("StockReceived", json!({"quantity": 3})),
            ("StockReserved", json!({"order_id": "o-1", "quantity": 2})),
            ("StockReleased", json!({"order_id": "o-1", "quantity": 2})),
        ],
        _ => {
            let paid = json!({"order_id": "o-1", "amount": 5});
            let tried = json!({"order_id": "o-1", "amount": 5, "method": "card"});
            vec![
                ("PaymentAuthorized", tried.clone()),
                (
                    "PaymentDeclined",
                    json!({"order_id": "o-1", "amount": 5, "method": "card", "reason": "r"}),
                ),
                ("PaymentRefunded", paid.clone()),
                ("PaymentPending", tried),
                ("PaymentReceived", paid.clone()),
                ("PaymentVoided", paid),
            ]
        }
    }
}

fn listed<A: RegisteredAggregate>() -> Vec<(&'static str, &'static str)> {
    A::EVENT_TYPES.iter().map(|t| (A::CATEGORY, *t)).collect()
}

#[test]
fn exactly_the_listed_event_types_become_inputs() {
    let mut all = listed::<Order>();
    all.extend(listed::<Inventory>());
    all.extend(listed::<Payment>());
    for listed_type in INPUT_EVENT_TYPES {
        assert!(
            all.iter().any(|(_, t)| t == listed_type),
            "{listed_type} is no shop event"
        );
    }
    let mut reacting = Vec::new();
    for category in ["Order", "Inventory", "Payment"] {
        let sample = samples(category);
        let types: Vec<&str> = sample.iter().map(|(t, _)| *t).collect();
        let expected: Vec<&str> = all
            .iter()
            .filter(|(c, _)| *c == category)
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(types, expected, "one sample per {category} event");
        let id = if category == "Inventory" {
            "apple"
        } else {
            "o-1"
        };
        let stream = format!("acme/{category}-{id}");
        // `OrderPlaced` reads its stream: give it one.
        let history = vec![
            envelope(&stream, 1, "OrderCreated", json!({"customer_id": "alice"})),
            envelope(
                &stream,
                2,
                "ItemAdded",
                json!({"sku": "apple", "quantity": 1, "unit_price": 5}),
            ),
            envelope(
                &stream,
                3,
                "OrderPlaced",
                json!({"total": 5, "payment_method": "card"}),
            ),
        ];
        for (event_type, data) in sample {
            let version = if event_type == "OrderPlaced" { 3 } else { 9 };
            let event = envelope(&stream, version, event_type, data);
            let history = if OrderFulfilment::needs_history(&event) {
                history.as_slice()
            } else {
                &[]
            };
            let input = OrderFulfilment::input(&event, history).expect("decodes");
            if let Some((instance, _)) = &input {
                assert_eq!(instance, "o-1", "{event_type}");
                reacting.push(event_type);
            }
        }
    }
    let mut expected: Vec<&str> = INPUT_EVENT_TYPES.to_vec();
    expected.sort_unstable();
    reacting.sort_unstable();
    assert_eq!(reacting, expected);
}

#[test]
fn only_order_placed_needs_its_history() {
    let placed = envelope(
        "acme/Order-o-1",
        3,
        "OrderPlaced",
        json!({"total": 5, "payment_method": "card"}),
    );
    assert!(OrderFulfilment::needs_history(&placed));
    let err = OrderFulfilment::input(&placed, &[]).expect_err("needs the lines");
    assert!(matches!(err, InputError::Incomplete(_)), "{err:?}");
    assert!(err.to_string().contains("history"), "{err}");
    for (stream, event_type) in [
        ("acme/Order-o-1", "OrderConfirmed"),
        ("acme/Inventory-apple", "StockReserved"),
        ("acme/OrderFulfilment-o-1", "OrderPlaced"),
    ] {
        let event = envelope(stream, 1, event_type, json!({}));
        assert!(
            !OrderFulfilment::needs_history(&event),
            "{stream} {event_type}"
        );
    }
}

#[test]
fn a_reservation_concerns_the_order_it_is_for() {
    let event = envelope(
        "acme/Inventory-apple",
        12,
        "StockReserved",
        json!({"order_id": "o-7", "quantity": 2}),
    );
    assert_eq!(
        OrderFulfilment::input(&event, &[]).expect("an input"),
        Some((
            "o-7".into(),
            FulfilmentInput::StockObserved(StockObservation {
                sku: "apple".id(),
                version: 12,
                stock: ObservedStock::Reserved {
                    quantity: 2,
                    at: event.occurred_at,
                },
            })
        ))
    );
    let released = envelope(
        "acme/Inventory-apple",
        13,
        "StockReleased",
        json!({"order_id": "o-7", "quantity": 2}),
    );
    assert_eq!(
        OrderFulfilment::input(&released, &[]).expect("an input"),
        Some((
            "o-7".into(),
            FulfilmentInput::StockObserved(StockObservation {
                sku: "apple".id(),
                version: 13,
                stock: ObservedStock::Released,
            })
        ))
    );
}

#[test]
fn payment_events_are_observations_of_the_orders_payment() {
    let event = envelope(
        "acme/Payment-o-7",
        2,
        "PaymentDeclined",
        json!({"order_id": "o-7", "amount": 5, "method": "card_declined", "reason": "card-declined"}),
    );
    assert_eq!(
        OrderFulfilment::input(&event, &[]).expect("an input"),
        Some((
            "o-7".into(),
            FulfilmentInput::PaymentObserved(PaymentObservation {
                version: 2,
                payment: ObservedPayment::Declined {
                    reason: "card-declined".into()
                },
            })
        ))
    );
}

/// The saga tells its own cancellation from the customer's by the command id the runner
/// gave its `cancel-order` step.
#[test]
fn a_cancellation_says_whether_the_saga_did_it() {
    let own = Pending {
        step: CANCEL_STEP.to_owned(),
        command: (),
    }
    .command_id("acme/OrderFulfilment-o-1");
    for (command_id, by_saga) in [(own.as_str(), true), ("a-client-request", false)] {
        let event = envelope_by(
            "acme/Order-o-1",
            6,
            "OrderCancelled",
            json!({"reason": "why"}),
            command_id,
        );
        assert_eq!(
            OrderFulfilment::input(&event, &[]).expect("an input"),
            Some((
                "o-1".into(),
                FulfilmentInput::OrderObserved(OrderObservation {
                    version: 6,
                    order: ObservedOrder::Cancelled {
                        reason: "why".into(),
                        by_saga,
                    },
                })
            ))
        );
    }
}

#[test]
fn other_streams_and_bad_data() {
    // The saga's own log and unknown categories are not inputs, whatever the type says.
    for stream in ["acme/OrderFulfilment-o-1", "acme/Shipment-o-1"] {
        let event = envelope(stream, 1, "OrderCancelled", json!({"reason": "x"}));
        assert_eq!(
            OrderFulfilment::input(&event, &[]).expect("no input"),
            None,
            "{stream}"
        );
    }
    // A listed type in a category that has no such event is not one of the saga's.
    let odd = envelope(
        "acme/Order-o-1",
        1,
        "StockReserved",
        json!({"order_id": "o-1", "quantity": 1}),
    );
    assert_eq!(OrderFulfilment::input(&odd, &[]).expect("no input"), None);
    // A listed event whose data does not decode is an error (not acknowledged).
    let bad = envelope(
        "acme/Inventory-apple",
        1,
        "StockReserved",
        json!({"order_id": 7}),
    );
    assert!(OrderFulfilment::input(&bad, &[]).is_err());
}
