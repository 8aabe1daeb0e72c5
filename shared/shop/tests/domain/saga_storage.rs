//! The saga's log events and inputs as JSON: the stored data of each event that carries an
//! observation or the placed order (pinned as literal text), the same fields for the input
//! it mirrors, and how strict each is about fields it does not know (stored events: lenient,
//! as they always were; inputs: refused).

use crate::TextId;
use crate::fulfilment::at;
use serde_json::{Value, json};
use shop::DomainEvent;
use shop::fulfilment::{
    FulfilmentEvent as E, FulfilmentInput as I, FulfilmentLine, ObservedOrder, ObservedPayment,
    ObservedStock, OrderObservation, PaymentObservation, PlacedOrder, StockObservation,
};

fn lines() -> Vec<FulfilmentLine> {
    vec![FulfilmentLine {
        sku: "apple".id(),
        quantity: 2,
    }]
}

/// Each event next to the input it mirrors (the same payload), and their data as stored.
fn samples() -> Vec<(E, I, Value)> {
    let placed = PlacedOrder {
        order_id: "o-1".id(),
        customer_id: "alice".id(),
        lines: lines(),
        total: 380.into(),
        payment_method: "card".into(),
        placed_at: at(0),
    };
    let order = OrderObservation {
        version: 7,
        order: ObservedOrder::Cancelled {
            reason: "changed my mind".into(),
            by_saga: false,
        },
    };
    let stock = StockObservation {
        sku: "apple".id(),
        version: 3,
        stock: ObservedStock::Reserved {
            quantity: 2,
            at: at(1),
        },
    };
    let payment = PaymentObservation {
        version: 2,
        payment: ObservedPayment::Authorized { amount: 380.into() },
    };
    vec![
        (
            E::FulfilmentStarted(placed.clone()),
            I::OrderPlaced(placed),
            json!({
                "order_id": "o-1",
                "customer_id": "alice",
                "lines": [{"sku": "apple", "quantity": 2}],
                "total": 380,
                "payment_method": "card",
                "placed_at": "2024-03-01T09:00:00Z"
            }),
        ),
        (
            E::OrderObserved(order.clone()),
            I::OrderObserved(order),
            json!({
                "version": 7,
                "order": {"status": "Cancelled", "reason": "changed my mind", "by_saga": false}
            }),
        ),
        (
            E::StockObserved(stock.clone()),
            I::StockObserved(stock),
            json!({
                "sku": "apple",
                "version": 3,
                "stock": {"status": "Reserved", "quantity": 2, "at": "2024-03-01T09:01:00Z"}
            }),
        ),
        (
            E::PaymentObserved(payment.clone()),
            I::PaymentObserved(payment),
            json!({
                "version": 2,
                "payment": {"status": "Authorized", "amount": 380}
            }),
        ),
    ]
}

const EVENT_TYPES: [&str; 4] = [
    "FulfilmentStarted",
    "OrderObserved",
    "StockObserved",
    "PaymentObserved",
];
const INPUT_TYPES: [&str; 4] = [
    "OrderPlaced",
    "OrderObserved",
    "StockObserved",
    "PaymentObserved",
];

fn with_extra_field(data: &Value) -> Value {
    let mut data = data.clone();
    data.as_object_mut()
        .expect("an object")
        .insert("zz-not-a-field".into(), json!(0));
    data
}

#[test]
fn saga_events_keep_the_storage_format() {
    for ((event, _, stored), event_type) in samples().into_iter().zip(EVENT_TYPES) {
        let encoded = event.encode().expect("encodes");
        assert_eq!(encoded.event_type, event_type);
        assert_eq!(encoded.data, stored, "{event_type}");
        assert_eq!(
            serde_json::to_value(&event).expect("serializes"),
            json!({"type": event_type, "data": stored})
        );
        assert_eq!(E::decode(event_type, &stored).expect("decodes"), event);
    }
}

#[test]
fn stored_saga_events_with_unknown_fields_still_read() {
    for ((event, _, stored), event_type) in samples().into_iter().zip(EVENT_TYPES) {
        let extra = with_extra_field(&stored);
        assert_eq!(
            E::decode(event_type, &extra).expect("unknown fields are ignored"),
            event,
            "{event_type}"
        );
    }
}

#[test]
fn saga_inputs_keep_their_json() {
    for ((_, input, data), input_type) in samples().into_iter().zip(INPUT_TYPES) {
        let json = json!({"type": input_type, "data": data});
        assert_eq!(serde_json::to_value(&input).expect("serializes"), json);
        assert_eq!(
            serde_json::from_value::<I>(json).expect("deserializes"),
            input
        );
        assert_eq!(
            shop::fulfilment::parse_input(input_type, data).expect("parses"),
            input
        );
    }
}

/// What serde says of `zz-not-a-field` in each input's data (the input's fields, in order).
const UNKNOWN_FIELD: [&str; 4] = [
    "unknown field `zz-not-a-field`, expected one of `order_id`, `customer_id`, `lines`, `total`, `payment_method`, `placed_at`",
    "unknown field `zz-not-a-field`, expected `version` or `order`",
    "unknown field `zz-not-a-field`, expected one of `sku`, `version`, `stock`",
    "unknown field `zz-not-a-field`, expected `version` or `payment`",
];

#[test]
fn saga_inputs_with_unknown_fields_are_refused() {
    let expected = INPUT_TYPES.into_iter().zip(UNKNOWN_FIELD);
    for ((_, _, data), (input_type, unknown)) in samples().into_iter().zip(expected) {
        let extra = with_extra_field(&data);
        let refused = serde_json::from_value::<I>(json!({"type": input_type, "data": extra}))
            .expect_err("an unknown field in the data is refused");
        assert_eq!(refused.to_string(), unknown, "{input_type}");
        assert_eq!(
            shop::fulfilment::parse_input(input_type, extra),
            Err(shop::CommandParseError::InvalidData(format!(
                "{input_type}: {unknown}"
            )))
        );
        let beside = json!({"type": input_type, "data": data, "zz-not-a-key": 0});
        assert!(serde_json::from_value::<I>(beside).is_err(), "{input_type}");
    }
}
