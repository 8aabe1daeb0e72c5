//! Given/when/then for the `Inventory` aggregate.

use crate::{TextId, rejected_at_parse};
use eventfold_testkit::given;
use serde_json::json;
use shop::inventory::{self, Inventory, InventoryCommand as C, InventoryEvent as E};

fn received(quantity: i64) -> E {
    E::StockReceived { quantity }
}

fn reserved(order_id: &str, quantity: i64) -> E {
    E::StockReserved {
        order_id: order_id.id(),
        quantity,
        placed_at: None,
    }
}

fn reserve(order_id: &str, quantity: i64) -> C {
    C::ReserveStock {
        order_id: order_id.id(),
        quantity,
        placed_at: None,
    }
}

fn release(order_id: &str) -> C {
    C::ReleaseStock {
        order_id: order_id.id(),
    }
}

// --- ReceiveStock --------------------------------------------------------------------------

#[test]
fn receive_stock() {
    let state = given::<Inventory>([received(3)])
        .when(C::ReceiveStock { quantity: 7 })
        .then([received(7)]);
    assert_eq!(state.on_hand, 10);
    assert_eq!(state.available(), 10);
}

#[test]
fn receive_needs_a_positive_quantity() {
    for quantity in [0, -5] {
        given::<Inventory>([])
            .when(C::ReceiveStock { quantity })
            .then_rejected("quantity-must-be-positive");
    }
}

#[test]
fn receive_rejects_stock_that_overflows() {
    given::<Inventory>([received(i64::MAX)])
        .when(C::ReceiveStock { quantity: 1 })
        .then_rejected("quantity-overflow");
}

// --- ReserveStock --------------------------------------------------------------------------

#[test]
fn reserve_available_stock() {
    let state = given::<Inventory>([received(10)])
        .when(reserve("o-1", 4))
        .then([reserved("o-1", 4)]);
    assert_eq!(state.on_hand, 10);
    assert_eq!(state.reserved(), 4);
    assert_eq!(state.available(), 6);
    assert_eq!(state.reservations.get("o-1").map(|r| r.quantity), Some(4));
}

#[test]
fn reserve_everything_that_is_available() {
    let state = given::<Inventory>([received(10), reserved("o-1", 4)])
        .when(reserve("o-2", 6))
        .then([reserved("o-2", 6)]);
    assert_eq!(state.available(), 0);
}

#[test]
fn reserving_more_than_available_is_rejected() {
    given::<Inventory>([received(10), reserved("o-1", 4)])
        .when(reserve("o-2", 7))
        .then_rejected("insufficient-stock");
    given::<Inventory>([])
        .when(reserve("o-1", 1))
        .then_rejected("insufficient-stock");
}

#[test]
fn reserving_again_for_the_same_order_and_quantity_is_already_done() {
    given::<Inventory>([received(10), reserved("o-1", 4)])
        .when(reserve("o-1", 4))
        .then_nothing();
    // Even when the stock left would not cover it a second time.
    given::<Inventory>([received(4), reserved("o-1", 4)])
        .when(reserve("o-1", 4))
        .then_nothing();
}

#[test]
fn reserving_again_for_the_same_order_with_another_quantity_is_rejected() {
    given::<Inventory>([received(10), reserved("o-1", 4)])
        .when(reserve("o-1", 5))
        .then_rejected("reservation-quantity-mismatch");
}

#[test]
fn reserve_needs_a_positive_quantity() {
    for quantity in [0, -1] {
        given::<Inventory>([received(10)])
            .when(reserve("o-1", quantity))
            .then_rejected("quantity-must-be-positive");
    }
}

#[test]
fn reserve_needs_an_order_id() {
    rejected_at_parse(
        inventory::parse_command("ReserveStock", json!({"order_id": "", "quantity": 1})),
        "order-id-required",
    );
}

// --- ReleaseStock --------------------------------------------------------------------------

#[test]
fn release_a_reservation() {
    let state = given::<Inventory>([received(10), reserved("o-1", 4), reserved("o-2", 1)])
        .when(release("o-1"))
        .then([E::StockReleased {
            order_id: "o-1".id(),
            quantity: 4,
        }]);
    assert_eq!(state.available(), 9);
    assert_eq!(state.reserved(), 1);
    assert!(!state.reservations.contains_key("o-1"));
}

#[test]
fn releasing_an_order_without_reservation_is_already_done() {
    given::<Inventory>([received(10)])
        .when(release("o-1"))
        .then_nothing();
    given::<Inventory>([
        received(10),
        reserved("o-1", 4),
        E::StockReleased {
            order_id: "o-1".id(),
            quantity: 4,
        },
    ])
    .when(release("o-1"))
    .then_nothing();
}

#[test]
fn release_needs_an_order_id() {
    rejected_at_parse(
        inventory::parse_command("ReleaseStock", json!({"order_id": " "})),
        "order-id-required",
    );
}

/// A reservation that arrives after the order's reservation was released is a stale one
/// (the saga gave the order up): holding stock for it would hold it for nobody.
#[test]
fn an_order_cannot_reserve_again_after_releasing() {
    let history = [
        received(10),
        reserved("o-1", 4),
        E::StockReleased {
            order_id: "o-1".id(),
            quantity: 4,
        },
    ];
    for quantity in [4, 10] {
        given::<Inventory>(history.clone())
            .when(reserve("o-1", quantity))
            .then_nothing();
    }
    let state = given::<Inventory>(history.clone())
        .when(reserve("o-2", 10))
        .then([reserved("o-2", 10)]);
    assert_eq!(state.available(), 0);
    assert!(state.released.contains_key("o-1") && !state.released.contains_key("o-2"));
    // Nothing else about a released order is refused: releasing again is still done.
    given::<Inventory>(history)
        .when(release("o-1"))
        .then_nothing();
}

#[test]
fn order_ids_are_bounded_ids() {
    let long = "o".repeat(shop::MAX_KEY_LEN + 1);
    for bad in [long.as_str(), "o 1", "o/1"] {
        rejected_at_parse(
            inventory::parse_command("ReserveStock", json!({"order_id": bad, "quantity": 1})),
            "order-id-invalid",
        );
        rejected_at_parse(
            inventory::parse_command("ReleaseStock", json!({"order_id": bad})),
            "order-id-invalid",
        );
    }
}
