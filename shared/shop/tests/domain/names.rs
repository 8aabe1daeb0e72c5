//! The registry's event type names are exactly the tags serde writes and reads, for every
//! variant of every aggregate (the command names are checked the same way in `parse`).

use crate::TextId;
use shop::inventory::InventoryEvent;
use shop::order::OrderEvent;
use shop::payment::PaymentEvent;
use shop::{DomainEvent, Inventory, Order, Payment, RegisteredAggregate};

/// Each sample encodes under a listed type and decodes back from it, and the samples cover
/// every listed type exactly once.
fn assert_names_are_serde_tags<A: RegisteredAggregate>(samples: &[A::Event]) {
    let mut seen = Vec::new();
    for event in samples {
        let written = serde_json::to_value(event).expect("events serialize");
        let encoded = event.encode().expect("events encode");
        assert_eq!(written["type"], encoded.event_type.as_str());
        assert!(
            A::EVENT_TYPES.contains(&encoded.event_type.as_str()),
            "{} is not listed for {}",
            encoded.event_type,
            A::CATEGORY
        );
        let read = A::Event::decode(&encoded.event_type, &encoded.data).expect("decodes");
        assert_eq!(&read, event);
        seen.push(encoded.event_type);
    }
    seen.sort();
    let mut listed: Vec<String> = A::EVENT_TYPES.iter().map(|t| (*t).to_owned()).collect();
    listed.sort();
    assert_eq!(seen, listed, "one sample per listed {} event", A::CATEGORY);
}

#[test]
fn order_event_names_are_serde_tags() {
    assert_names_are_serde_tags::<Order>(&[
        OrderEvent::OrderCreated {
            customer_id: "c".id(),
        },
        OrderEvent::ItemAdded {
            sku: "s".id(),
            quantity: 1,
            unit_price: 2.into(),
        },
        OrderEvent::ItemRemoved { sku: "s".id() },
        OrderEvent::OrderPlaced {
            total: 2.into(),
            payment_method: "card".into(),
        },
        OrderEvent::OrderConfirmed {},
        OrderEvent::OrderShipped {
            tracking_id: "t".id(),
        },
        OrderEvent::OrderCancelled { reason: "r".into() },
    ]);
}

#[test]
fn inventory_event_names_are_serde_tags() {
    assert_names_are_serde_tags::<Inventory>(&[
        InventoryEvent::StockReceived { quantity: 1 },
        InventoryEvent::StockReserved {
            order_id: "o".id(),
            quantity: 1,
            placed_at: None,
        },
        InventoryEvent::StockReleased {
            order_id: "o".id(),
            quantity: 1,
        },
    ]);
}

#[test]
fn payment_event_names_are_serde_tags() {
    assert_names_are_serde_tags::<Payment>(&[
        PaymentEvent::PaymentAuthorized {
            order_id: "o".id(),
            amount: 1.into(),
            method: "card".into(),
        },
        PaymentEvent::PaymentDeclined {
            order_id: "o".id(),
            amount: 1.into(),
            method: "card_declined".into(),
            reason: "card-declined".into(),
        },
        PaymentEvent::PaymentRefunded {
            order_id: "o".id(),
            amount: 1.into(),
        },
        PaymentEvent::PaymentPending {
            order_id: "o".id(),
            amount: 1.into(),
            method: "bank_transfer".into(),
        },
        PaymentEvent::PaymentReceived {
            order_id: "o".id(),
            amount: 1.into(),
        },
        PaymentEvent::PaymentVoided {
            order_id: "o".id(),
            amount: 0.into(),
        },
    ]);
}

#[test]
fn a_name_serde_does_not_know_is_not_listed() {
    assert!(!Order::EVENT_TYPES.contains(&"orderCreated"));
    assert!(OrderEvent::decode("orderCreated", &serde_json::json!({"customer_id": "c"})).is_err());
}

/// Typed values are stored as the bare strings and integers the events held before they had
/// types, so events written then read now, and events written now read the same.
#[test]
fn typed_values_keep_the_storage_format() {
    let added = OrderEvent::ItemAdded {
        sku: "apple".id(),
        quantity: 2,
        unit_price: 150.into(),
    };
    let stored = serde_json::json!({"sku": "apple", "quantity": 2, "unit_price": 150});
    assert_eq!(added.encode().expect("encodes").data, stored);
    assert_eq!(
        OrderEvent::decode("ItemAdded", &stored).expect("decodes"),
        added
    );
    let authorized = PaymentEvent::PaymentAuthorized {
        order_id: "o-1".id(),
        amount: 500.into(),
        method: "card".into(),
    };
    let stored = serde_json::json!({"order_id": "o-1", "amount": 500, "method": "card"});
    assert_eq!(authorized.encode().expect("encodes").data, stored);
    assert_eq!(
        PaymentEvent::decode("PaymentAuthorized", &stored).expect("decodes"),
        authorized
    );
    let state = <Order as shop::Aggregate>::fold(
        <Order as shop::Aggregate>::initial(),
        [
            &OrderEvent::OrderCreated {
                customer_id: "c-1".id(),
            },
            &added,
        ],
    );
    let snapshot = serde_json::to_value(&state).expect("serializes");
    assert_eq!(snapshot["customer_id"], "c-1");
    assert_eq!(
        snapshot["lines"],
        serde_json::json!({"apple": {"quantity": 2, "unit_price": 150}})
    );
}
