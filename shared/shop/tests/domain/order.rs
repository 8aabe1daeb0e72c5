//! Given/when/then for the `Order` aggregate.

use crate::{TextId, rejected_at_parse};
use eventfold_testkit::given;
use serde_json::json;
use shop::Money;
use shop::order::{self, Order, OrderCommand as C, OrderEvent as E, OrderLine, OrderStatus};

fn created() -> E {
    E::OrderCreated {
        customer_id: "alice".id(),
    }
}

fn added(sku: &str, quantity: i64, unit_price: i64) -> E {
    E::ItemAdded {
        sku: sku.id(),
        quantity,
        unit_price: unit_price.into(),
    }
}

fn add(sku: &str, quantity: i64, unit_price: i64) -> C {
    C::AddItem {
        sku: sku.id(),
        quantity,
        unit_price: unit_price.into(),
    }
}

fn ship(tracking_id: &str) -> C {
    C::ShipOrder {
        tracking_id: tracking_id.id(),
    }
}

fn cancel(reason: &str) -> C {
    C::CancelOrder {
        reason: reason.into(),
    }
}

fn place() -> C {
    C::PlaceOrder {
        payment_method: None,
    }
}

fn placed_event(total: i64) -> E {
    E::OrderPlaced {
        total: total.into(),
        payment_method: "card".into(),
    }
}

fn draft() -> Vec<E> {
    vec![created(), added("apple", 2, 150), added("pear", 1, 80)]
}

fn placed() -> Vec<E> {
    let mut events = draft();
    events.push(placed_event(380));
    events
}

fn confirmed() -> Vec<E> {
    let mut events = placed();
    events.push(E::OrderConfirmed {});
    events
}

fn shipped() -> Vec<E> {
    let mut events = confirmed();
    events.push(E::OrderShipped {
        tracking_id: "T-1".id(),
    });
    events
}

fn cancelled() -> Vec<E> {
    let mut events = placed();
    events.push(E::OrderCancelled {
        reason: "changed mind".into(),
    });
    events
}

/// Every history past `Draft`.
fn not_drafts() -> [Vec<E>; 4] {
    [placed(), confirmed(), shipped(), cancelled()]
}

// --- CreateOrder ---------------------------------------------------------------------------

#[test]
fn create_opens_a_draft() {
    let state = given::<Order>([])
        .when(C::CreateOrder {
            customer_id: "alice".id(),
        })
        .then([created()]);
    assert_eq!(state.status, Some(OrderStatus::Draft));
    assert_eq!(state.customer_id.as_deref(), Some("alice"));
    assert!(state.is_created());
    assert_eq!(state.total(), 0.into());
}

#[test]
fn create_again_for_the_same_customer_is_already_done() {
    given::<Order>([created()])
        .when(C::CreateOrder {
            customer_id: "alice".id(),
        })
        .then_nothing();
    given::<Order>(shipped())
        .when(C::CreateOrder {
            customer_id: "alice".id(),
        })
        .then_nothing();
}

#[test]
fn create_again_for_another_customer_is_rejected() {
    given::<Order>([created()])
        .when(C::CreateOrder {
            customer_id: "bob".id(),
        })
        .then_rejected("order-already-exists");
}

#[test]
fn create_needs_a_customer() {
    rejected_at_parse(
        order::parse_command("CreateOrder", json!({"customer_id": " "})),
        "customer-id-required",
    );
}

#[test]
fn commands_on_an_order_not_created_are_rejected() {
    for command in [
        add("apple", 1, 100),
        C::RemoveItem { sku: "apple".id() },
        place(),
        C::ConfirmOrder {},
        ship("T-1"),
        cancel("no"),
    ] {
        given::<Order>([])
            .when(command)
            .then_rejected("order-not-created");
    }
}

// --- AddItem -------------------------------------------------------------------------------

#[test]
fn add_item_to_a_draft() {
    let state = given::<Order>([created()])
        .when(add("apple", 2, 150))
        .then([added("apple", 2, 150)]);
    assert_eq!(
        state.lines.get("apple"),
        Some(&OrderLine {
            quantity: 2,
            unit_price: 150.into()
        })
    );
    assert_eq!(state.total(), 300.into());
}

#[test]
fn add_item_at_price_zero_is_accepted() {
    given::<Order>([created()])
        .when(add("sticker", 1, 0))
        .then([added("sticker", 1, 0)]);
}

#[test]
fn adding_a_sku_again_increases_its_quantity() {
    let state = given::<Order>(draft())
        .when(add("apple", 3, 150))
        .then([added("apple", 3, 150)]);
    assert_eq!(state.lines.len(), 2);
    assert_eq!(state.lines.get("apple").map(|l| l.quantity), Some(5));
    assert_eq!(state.total(), (5 * 150 + 80).into());
}

#[test]
fn adding_a_sku_again_at_another_price_is_rejected() {
    given::<Order>(draft())
        .when(add("apple", 1, 99))
        .then_rejected("unit-price-mismatch");
}

#[test]
fn add_item_needs_a_positive_quantity() {
    for quantity in [0, -1, i64::MIN] {
        given::<Order>([created()])
            .when(add("apple", quantity, 150))
            .then_rejected("quantity-must-be-positive");
    }
}

#[test]
fn add_item_refuses_a_negative_price() {
    given::<Order>([created()])
        .when(add("apple", 1, -1))
        .then_rejected("unit-price-must-not-be-negative");
}

#[test]
fn add_item_needs_a_sku() {
    rejected_at_parse(
        order::parse_command(
            "AddItem",
            json!({"sku": "", "quantity": 1, "unit_price": 1}),
        ),
        "sku-required",
    );
}

#[test]
fn items_cannot_be_added_once_placed() {
    for history in not_drafts() {
        given::<Order>(history)
            .when(add("plum", 1, 10))
            .then_rejected("order-not-editable");
    }
}

#[test]
fn add_item_rejects_a_line_amount_that_overflows() {
    given::<Order>([created()])
        .when(add("gold", 2, i64::MAX))
        .then_rejected("amount-overflow");
}

#[test]
fn add_item_rejects_a_total_that_overflows() {
    given::<Order>([created(), added("gold", 1, i64::MAX)])
        .when(add("silver", 1, 1))
        .then_rejected("amount-overflow");
}

#[test]
fn add_item_rejects_a_quantity_that_overflows() {
    given::<Order>([created(), added("free", i64::MAX, 0)])
        .when(add("free", 1, 0))
        .then_rejected("quantity-overflow");
}

// --- RemoveItem ----------------------------------------------------------------------------

#[test]
fn remove_item_from_a_draft() {
    let state = given::<Order>(draft())
        .when(C::RemoveItem { sku: "apple".id() })
        .then([E::ItemRemoved { sku: "apple".id() }]);
    assert!(!state.lines.contains_key("apple"));
    assert_eq!(state.total(), 80.into());
}

#[test]
fn removing_an_absent_sku_is_rejected() {
    given::<Order>(draft())
        .when(C::RemoveItem { sku: "plum".id() })
        .then_rejected("item-not-in-order");
    given::<Order>([
        created(),
        added("apple", 1, 1),
        E::ItemRemoved { sku: "apple".id() },
    ])
    .when(C::RemoveItem { sku: "apple".id() })
    .then_rejected("item-not-in-order");
}

#[test]
fn remove_item_needs_a_sku() {
    rejected_at_parse(
        order::parse_command("RemoveItem", json!({"sku": ""})),
        "sku-required",
    );
}

#[test]
fn items_cannot_be_removed_once_placed() {
    for history in not_drafts() {
        given::<Order>(history)
            .when(C::RemoveItem { sku: "apple".id() })
            .then_rejected("order-not-editable");
    }
}

// --- PlaceOrder ----------------------------------------------------------------------------

#[test]
fn place_a_draft_with_items() {
    let state = given::<Order>(draft())
        .when(place())
        .then([placed_event(380)]);
    assert_eq!(state.status, Some(OrderStatus::Placed));
}

#[test]
fn an_empty_order_cannot_be_placed() {
    given::<Order>([created()])
        .when(place())
        .then_rejected("order-not-empty");
    given::<Order>([
        created(),
        added("apple", 1, 1),
        E::ItemRemoved { sku: "apple".id() },
    ])
    .when(place())
    .then_rejected("order-not-empty");
}

#[test]
fn placing_a_placed_order_again_is_already_done() {
    for history in [placed(), confirmed(), shipped()] {
        given::<Order>(history).when(place()).then_nothing();
    }
}

#[test]
fn a_cancelled_order_cannot_be_placed() {
    given::<Order>(cancelled())
        .when(place())
        .then_rejected("order-cancelled");
}

// --- ConfirmOrder --------------------------------------------------------------------------

#[test]
fn confirm_a_placed_order() {
    let state = given::<Order>(placed())
        .when(C::ConfirmOrder {})
        .then([E::OrderConfirmed {}]);
    assert_eq!(state.status, Some(OrderStatus::Confirmed));
}

#[test]
fn a_draft_cannot_be_confirmed() {
    given::<Order>(draft())
        .when(C::ConfirmOrder {})
        .then_rejected("order-not-placed");
}

#[test]
fn confirming_again_is_already_done() {
    given::<Order>(confirmed())
        .when(C::ConfirmOrder {})
        .then_nothing();
    given::<Order>(shipped())
        .when(C::ConfirmOrder {})
        .then_nothing();
}

#[test]
fn a_cancelled_order_cannot_be_confirmed() {
    given::<Order>(cancelled())
        .when(C::ConfirmOrder {})
        .then_rejected("order-cancelled");
}

// --- ShipOrder -----------------------------------------------------------------------------

#[test]
fn ship_a_confirmed_order() {
    let state = given::<Order>(confirmed())
        .when(ship("T-1"))
        .then([E::OrderShipped {
            tracking_id: "T-1".id(),
        }]);
    assert_eq!(state.status, Some(OrderStatus::Shipped));
    assert_eq!(state.tracking_id.as_deref(), Some("T-1"));
}

#[test]
fn an_unconfirmed_order_cannot_ship() {
    for history in [draft(), placed()] {
        given::<Order>(history)
            .when(ship("T-1"))
            .then_rejected("order-not-confirmed");
    }
}

#[test]
fn shipping_again_with_the_same_tracking_id_is_already_done() {
    given::<Order>(shipped()).when(ship("T-1")).then_nothing();
}

#[test]
fn shipping_again_with_another_tracking_id_is_rejected() {
    given::<Order>(shipped())
        .when(ship("T-2"))
        .then_rejected("order-already-shipped");
}

#[test]
fn a_cancelled_order_cannot_ship() {
    given::<Order>(cancelled())
        .when(ship("T-1"))
        .then_rejected("order-cancelled");
}

#[test]
fn ship_needs_a_tracking_id() {
    rejected_at_parse(
        order::parse_command("ShipOrder", json!({"tracking_id": ""})),
        "tracking-id-required",
    );
}

// --- CancelOrder ---------------------------------------------------------------------------

#[test]
fn cancel_an_order_that_has_not_shipped() {
    for history in [vec![created()], draft(), placed(), confirmed()] {
        let state =
            given::<Order>(history)
                .when(cancel("out of stock"))
                .then([E::OrderCancelled {
                    reason: "out of stock".into(),
                }]);
        assert_eq!(state.status, Some(OrderStatus::Cancelled));
        assert_eq!(state.cancel_reason.as_deref(), Some("out of stock"));
    }
}

#[test]
fn a_shipped_order_cannot_be_cancelled() {
    given::<Order>(shipped())
        .when(cancel("too late"))
        .then_rejected("order-already-shipped");
}

#[test]
fn a_cancelled_order_cannot_be_cancelled_again() {
    given::<Order>(cancelled())
        .when(cancel("out of stock"))
        .then_rejected("order-already-cancelled");
}

/// The same cancellation again (a sender retrying, the saga redelivering) is already done.
#[test]
fn repeating_the_cancellation_is_already_done() {
    given::<Order>(cancelled())
        .when(cancel("changed mind"))
        .then_nothing();
}

#[test]
fn cancel_needs_a_reason() {
    given::<Order>(placed())
        .when(cancel("  "))
        .then_rejected("reason-required");
}

// --- the whole life cycle ------------------------------------------------------------------

#[test]
fn happy_path_from_creation_to_shipping() {
    let state = given::<Order>(draft()).state().clone();
    assert_eq!(
        state
            .lines
            .keys()
            .map(|sku| sku.as_str())
            .collect::<Vec<_>>(),
        ["apple", "pear"]
    );
    assert_eq!(state.total(), 380.into());
    assert_eq!(state.checked_total(), Some(Money::from(380)));
    let state = given::<Order>(shipped()).state().clone();
    assert_eq!(state.status, Some(OrderStatus::Shipped));
    assert_eq!(state.customer_id.as_deref(), Some("alice"));
    assert_eq!(state.cancel_reason, None);
}

#[test]
fn fields_that_become_keys_downstream_are_bounded_ids() {
    let long = "x".repeat(shop::MAX_KEY_LEN + 1);
    for bad in [long.as_str(), "a b", "a/b", "a#b", "ünï"] {
        rejected_at_parse(
            order::parse_command("CreateOrder", json!({"customer_id": bad})),
            "customer-id-invalid",
        );
        rejected_at_parse(
            order::parse_command(
                "AddItem",
                json!({"sku": bad, "quantity": 1, "unit_price": 100}),
            ),
            "sku-invalid",
        );
        given::<Order>([created(), added("apple", 1, 100)])
            .when(C::PlaceOrder {
                payment_method: Some(bad.into()),
            })
            .then_rejected("payment-method-invalid");
        rejected_at_parse(
            order::parse_command("ShipOrder", json!({"tracking_id": bad})),
            "tracking-id-invalid",
        );
    }
    let edge = "c".repeat(shop::MAX_KEY_LEN);
    given::<Order>([])
        .when(C::CreateOrder {
            customer_id: edge.id(),
        })
        .then([E::OrderCreated {
            customer_id: edge.id(),
        }]);
    given::<Order>([])
        .when(C::CreateOrder {
            customer_id: "c-1.a:b_C".id(),
        })
        .then([E::OrderCreated {
            customer_id: "c-1.a:b_C".id(),
        }]);
}

#[test]
fn a_cancel_reason_is_free_text_of_bounded_length() {
    let at_limit = "é".repeat(shop::MAX_TEXT_LEN);
    given::<Order>([created()])
        .when(cancel(&at_limit))
        .then([E::OrderCancelled {
            reason: at_limit.clone(),
        }]);
    given::<Order>([created()])
        .when(cancel(&format!("{at_limit}!")))
        .then_rejected("reason-too-long");
}

/// An order holds at most `MAX_ORDER_LINES` lines (what bounds its state and the saga's):
/// a new sku past them is refused, more of a sku already there is not, and a removal makes
/// room again.
#[test]
fn an_order_holds_a_bounded_number_of_lines() {
    let mut history = vec![created()];
    history.extend((0..order::MAX_ORDER_LINES).map(|i| added(&format!("sku-{i}"), 1, 10)));
    let refusal = given::<Order>(history.clone())
        .when(add("one-more", 1, 10))
        .then_rejected("too-many-lines");
    assert!(refusal.message.contains("100"), "{refusal}");
    given::<Order>(history.clone())
        .when(add("sku-0", 2, 10))
        .then([added("sku-0", 2, 10)]);
    history.push(E::ItemRemoved { sku: "sku-0".id() });
    given::<Order>(history)
        .when(add("one-more", 1, 10))
        .then([added("one-more", 1, 10)]);
}
