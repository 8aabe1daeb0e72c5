//! The inventory's bounded memory of released orders (module docs of `shop::inventory`): a
//! late `ReserveStock` of a released order is never taken, whether the order is remembered
//! (already done) or forgotten (refused by the horizon); the memory never holds more than
//! `MAX_REMEMBERED_RELEASES`; events and snapshots written before the rule still load; the
//! saga ignores the refusal of a line it already released.

use crate::TextId;
use crate::fulfilment::at;
use chrono::{DateTime, Duration, Utc};
use eventfold::{
    CommandExecutor, EventStore, ExecutorConfig, ExpectedVersion, MemoryEventStore, Metadata,
    NewEvent, Snapshot, StreamId,
};
use eventfold_consumers::Saga;
use eventfold_testkit::given;
use proptest::prelude::*;
use serde_json::json;
use shop::fulfilment::{
    FulfilmentCommand, FulfilmentInput, FulfilmentLine, ObservedStock, OrderFulfilment,
    PlacedOrder, StockObservation,
};
use shop::inventory::{
    Horizon, Inventory, InventoryCommand as C, InventoryEvent as E, InventoryState,
    MAX_REMEMBERED_RELEASES,
};
use shop::registry::ShopCaches;
use shop::{Aggregate, DomainEvent, Rejection};
use std::sync::Arc;

fn minute(m: i64) -> DateTime<Utc> {
    "2026-01-01T00:00:00Z"
        .parse::<DateTime<Utc>>()
        .expect("a time")
        + Duration::minutes(m)
}

fn reserve(order_id: &str, placed_at: Option<DateTime<Utc>>) -> C {
    C::ReserveStock {
        order_id: order_id.id(),
        quantity: 1,
        placed_at,
    }
}

fn reserved(order_id: &str, placed_at: Option<DateTime<Utc>>) -> E {
    E::StockReserved {
        order_id: order_id.id(),
        quantity: 1,
        placed_at,
    }
}

fn released(order_id: &str) -> E {
    E::StockReleased {
        order_id: order_id.id(),
        quantity: 1,
    }
}

/// Stock, then `n` orders `o-0`.. (placed a minute apart) each reserved and released.
fn cycles(n: i64) -> Vec<E> {
    let mut history = vec![E::StockReceived { quantity: 10 }];
    for i in 0..n {
        let id = format!("o-{i}");
        history.push(reserved(&id, Some(minute(i))));
        history.push(released(&id));
    }
    history
}

/// The race the memory is for: the saga released the order's stock, then a `ReserveStock`
/// it sent earlier arrives. It is already done: no stock is held for the order again.
#[test]
fn a_late_reservation_of_a_remembered_release_is_already_done() {
    let history = cycles(3);
    given::<Inventory>(history.clone())
        .when(reserve("o-1", Some(minute(1))))
        .then_nothing();
    // A command without the time (another client) is recognised by the memory too.
    given::<Inventory>(history)
        .when(reserve("o-1", None))
        .then_nothing();
}

/// Past the bound, the earliest placed release is forgotten and becomes the horizon: its
/// late reservation is refused (an answer the saga can act on), and an order placed later
/// still reserves.
#[test]
fn a_late_reservation_of_a_forgotten_release_is_refused() {
    let n = MAX_REMEMBERED_RELEASES as i64 + 1;
    let history = cycles(n);
    let state = Inventory::fold(Inventory::initial(), history.iter());
    assert_eq!(state.released.len(), MAX_REMEMBERED_RELEASES);
    assert!(!state.released.contains_key("o-0") && state.released.contains_key("o-1"));
    assert_eq!(
        state.horizon,
        Some(Horizon {
            placed_at: minute(0),
            order_id: "o-0".id()
        })
    );
    let refusal = given::<Inventory>(history.clone())
        .when(reserve("o-0", Some(minute(0))))
        .then_rejected("reservation-expired");
    assert!(refusal.message.contains("o-0"), "{refusal}");
    given::<Inventory>(history.clone())
        .when(reserve("new", Some(minute(n))))
        .then([reserved("new", Some(minute(n)))]);
    // Placed at the horizon's instant: the order id breaks the tie.
    given::<Inventory>(history.clone())
        .when(reserve("o-00", Some(minute(0))))
        .then([reserved("o-00", Some(minute(0)))]);
    // The price (module docs): an order placed before the horizon that never reserved.
    given::<Inventory>(history)
        .when(reserve("slow", Some(minute(-1))))
        .then_rejected("reservation-expired");
}

/// An order that holds a reservation is answered from it, whatever the horizon.
#[test]
fn a_held_reservation_is_not_refused_by_the_horizon() {
    let mut history = vec![E::StockReceived { quantity: 10 }];
    history.push(reserved("early", Some(minute(-10))));
    history.extend(
        cycles(MAX_REMEMBERED_RELEASES as i64 + 5)
            .into_iter()
            .skip(1),
    );
    given::<Inventory>(history.clone())
        .when(reserve("early", Some(minute(-10))))
        .then_nothing();
    given::<Inventory>(history)
        .when(C::ReleaseStock {
            order_id: "early".id(),
        })
        .then([released("early")]);
}

/// Releases written before the rule carry no time: they are remembered, forgotten first,
/// and do not move the horizon (a time they never had).
#[test]
fn releases_without_a_time_are_forgotten_first() {
    let mut history = vec![E::StockReceived { quantity: 10 }];
    history.push(reserved("legacy", None));
    history.push(released("legacy"));
    let state = Inventory::fold(Inventory::initial(), history.iter());
    assert_eq!(state.released.get("legacy"), Some(&None));
    history.extend(cycles(MAX_REMEMBERED_RELEASES as i64).into_iter().skip(1));
    let state = Inventory::fold(Inventory::initial(), history.iter());
    assert!(!state.released.contains_key("legacy"));
    assert_eq!(state.released.len(), MAX_REMEMBERED_RELEASES);
    assert_eq!(state.horizon, None);
}

/// Events stored before `placed_at` existed decode as they are (no schema change).
#[test]
fn a_stock_reserved_without_placed_at_decodes() {
    let event =
        E::decode("StockReserved", &json!({"order_id": "o-1", "quantity": 2})).expect("decodes");
    assert_eq!(
        event,
        E::StockReserved {
            order_id: "o-1".id(),
            quantity: 2,
            placed_at: None
        }
    );
    // And what is written without the time stays as it was written.
    let written = reserved("o-1", None).encode().expect("encodes");
    assert_eq!(written.data, json!({"order_id": "o-1", "quantity": 1}));
}

/// A stream written under state schema 2 (a snapshot holding every released order, events
/// without `placed_at`) loads: the old snapshot is skipped, the events replayed, and the
/// next command goes on from there, with the late reservation still recognised.
#[tokio::test]
async fn a_schema_2_stream_with_its_snapshot_still_loads() {
    let store = Arc::new(MemoryEventStore::new());
    let stream = StreamId::new("acme", "Inventory", "apple").expect("valid");
    let meta = Metadata::root("acme", "old", "cmd-1");
    let event = |version: u64, event_type: &str, data: serde_json::Value| {
        NewEvent {
            event_type: event_type.into(),
            schema_version: 1,
            data,
        }
        .into_envelope(&stream, version, at(0), meta.clone())
    };
    let old = vec![
        event(1, "StockReceived", json!({"quantity": 10})),
        event(
            2,
            "StockReserved",
            json!({"order_id": "o-1", "quantity": 4}),
        ),
        event(
            3,
            "StockReleased",
            json!({"order_id": "o-1", "quantity": 4}),
        ),
    ];
    let snapshot = Snapshot {
        version: 3,
        state_schema: 2,
        state: json!({"on_hand": 10, "reservations": {}, "released": ["o-1"]}),
    };
    store
        .append(
            &stream.to_string(),
            ExpectedVersion::assumed(0),
            old,
            Some(snapshot),
        )
        .await
        .expect("append");
    let executor =
        CommandExecutor::new(store.clone(), ExecutorConfig::default()).caching::<ShopCaches>();
    let (version, state) = executor.load::<Inventory>(&stream).await.expect("loads");
    assert_eq!(version, 3);
    assert_eq!(state.on_hand, 10);
    assert_eq!(state.released.get("o-1"), Some(&None));
    let late = executor
        .execute::<Inventory>(
            &stream,
            None,
            &reserve("o-1", Some(at(0))),
            &Metadata::root("acme", "saga", "cmd-2"),
        )
        .await
        .expect("already done");
    assert!(late.events.is_empty());
}

/// The saga of an order whose line it already released ignores the refusal of a late
/// reservation of it; an instance whose reservation is still in flight compensates.
#[test]
fn the_saga_ignores_an_expired_refusal_of_a_released_line() {
    let placed = PlacedOrder {
        order_id: "o-1".id(),
        customer_id: "alice".id(),
        lines: vec![FulfilmentLine {
            sku: "apple".id(),
            quantity: 1,
        }],
        total: 0.into(),
        payment_method: "card".into(),
        placed_at: at(0),
    };
    let stock = |version, stock| {
        FulfilmentInput::StockObserved(StockObservation {
            sku: "apple".id(),
            version,
            stock,
        })
    };
    let mut state = OrderFulfilment::initial();
    let refusal = OrderFulfilment::refused(
        &eventfold_consumers::Pending {
            step: "reserve:apple".into(),
            command: FulfilmentCommand::Inventory {
                sku: "apple".id(),
                command: reserve("o-1", Some(at(0))),
            },
        },
        &Rejection::new("reservation-expired", "expired"),
    );
    for input in [
        FulfilmentInput::OrderPlaced(placed),
        stock(
            2,
            ObservedStock::Reserved {
                quantity: 1,
                at: at(1),
            },
        ),
        stock(3, ObservedStock::Released),
    ] {
        let events = OrderFulfilment::decide(&state, &input).expect("accepted");
        state = OrderFulfilment::fold(state, events.iter());
    }
    assert_eq!(
        OrderFulfilment::decide(&state, &refusal).expect("accepted"),
        vec![]
    );
}

/// Orders with random placing times (ties included), reserved and released in random
/// order, with late reservations of released orders mixed in: none is ever taken, and the
/// memory stays within its bound.
fn schedule() -> impl Strategy<Value = (Vec<i64>, Vec<usize>, Vec<(usize, usize)>)> {
    (MAX_REMEMBERED_RELEASES + 20..MAX_REMEMBERED_RELEASES + 80).prop_flat_map(|n| {
        (
            prop::collection::vec(0i64..200, n),
            Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
            prop::collection::vec((0..n, 0..n), 0..200),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn a_released_order_never_reserves_again((placed, order, late) in schedule()) {
        let id = |i: usize| format!("o-{i}");
        let mut state = InventoryState { on_hand: 1_000, ..InventoryState::default() };
        let mut done = vec![false; placed.len()];
        let mut late = late.into_iter().peekable();
        for (step, &i) in order.iter().enumerate() {
            let key = |k: usize| (placed[k], id(k));
            match Inventory::decide(&state, &reserve(&id(i), Some(minute(placed[i])))) {
                Ok(events) => {
                    prop_assert_eq!(events.len(), 1);
                    state = Inventory::fold(state, events.iter());
                    let events = Inventory::decide(&state, &C::ReleaseStock { order_id: id(i).id() })
                        .expect("releases");
                    state = Inventory::fold(state, events.iter());
                }
                // The liveness price (module docs): refused only once more than the bound of
                // orders placed no earlier were reserved and released first.
                Err(r) => {
                    prop_assert_eq!(r.rule, "reservation-expired");
                    let later = (0..placed.len()).filter(|&k| done[k] && key(k) >= key(i)).count();
                    prop_assert!(later > MAX_REMEMBERED_RELEASES, "o-{} refused after {} later releases", i, later);
                }
            }
            done[i] = true;
            // Late reservations of orders released so far (`at` picks which, at this step).
            while let Some(&(at_step, j)) = late.peek() {
                if at_step % order.len() > step { break; }
                late.next();
                let j = order[j % (step + 1)];
                prop_assert!(done[j]);
                match Inventory::decide(&state, &reserve(&id(j), Some(minute(placed[j])))) {
                    Ok(events) => prop_assert!(events.is_empty(), "o-{} reserved again: {:?}", j, events),
                    Err(r) => prop_assert_eq!(r.rule, "reservation-expired"),
                }
            }
            prop_assert!(state.released.len() <= MAX_REMEMBERED_RELEASES);
        }
        prop_assert!(state.reservations.is_empty());
        prop_assert!(state.released.len() <= MAX_REMEMBERED_RELEASES);
    }
}
