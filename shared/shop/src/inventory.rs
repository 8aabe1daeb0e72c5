//! The `Inventory` aggregate: the stock of one SKU and the reservations orders hold on it.
//!
//! Stream: `{tenant}/Inventory-{sku}` (the aggregate id is the SKU). Stock is never
//! negative: `available = on_hand − reserved` and a reservation must fit in `available`.
//! Each order holds at most one reservation per SKU.
//!
//! Rules (the `rule` of each [`Rejection`]):
//!
//! | rule | when |
//! |---|---|
//! | `quantity-must-be-positive` | `ReceiveStock` / `ReserveStock` with quantity ≤ 0 |
//! | `quantity-overflow` | `ReceiveStock` would make the stock on hand overflow |
//! | `order-id-required` | `ReserveStock` / `ReleaseStock` with an empty order id |
//! | `order-id-invalid` | the order id breaks the id rule ([`crate::values`]) |
//!
//! Order ids are typed ([`OrderId`]): the two `order-id-` rejections come from
//! [`parse_command`] ([`CommandParseError::Rejected`]), before any state is read.
//! | `insufficient-stock` | `ReserveStock` of more than is available |
//! | `reservation-quantity-mismatch` | `ReserveStock` for an order that already holds a reservation of another quantity |
//!
//! Already done (no events): `ReserveStock` for an order that already holds a reservation of
//! the same quantity; `ReserveStock` for an order whose reservation here was released;
//! `ReleaseStock` for an order that holds no reservation.
//!
//! A released reservation stays released: the order-fulfilment saga releases an order's
//! stock when it gives the order up, and a `ReserveStock` it sent earlier may still arrive
//! afterwards (two saga invocations for one order run concurrently when inputs come from
//! different streams). Reserving again would hold that stock for an order nobody fulfils, so
//! the inventory remembers every order it released ([`InventoryState::released`]) and treats
//! a later reservation for it as already done. The price is state that only grows: one order
//! id per released reservation of the SKU, kept in every snapshot of the stream.

use crate::command::{CommandParseError, RegisteredAggregate};
use crate::values::OrderId;
use eventfold::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use strum::VariantNames;

/// The inventory aggregate (stream category `Inventory`, one stream per SKU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inventory;

/// What callers ask of a SKU's inventory. Adjacently tagged:
/// `{"type": "ReserveStock", "data": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum InventoryCommand {
    /// Adds units to the stock on hand.
    ReceiveStock {
        /// Units received; must be > 0.
        quantity: i64,
    },
    /// Sets units aside for an order.
    ReserveStock {
        /// The order the units are for.
        order_id: OrderId,
        /// Units to reserve; must be > 0 and fit in the available stock.
        quantity: i64,
    },
    /// Gives an order's reservation back to the available stock.
    ReleaseStock {
        /// The order whose reservation is released.
        order_id: OrderId,
    },
}

impl RegisteredAggregate for Inventory {}

/// Builds an inventory command from its type name and JSON data; unknown fields are refused.
pub fn parse_command(
    command_type: &str,
    data: serde_json::Value,
) -> Result<InventoryCommand, CommandParseError> {
    <Inventory as RegisteredAggregate>::parse_command(command_type, data)
}

/// What happened to a SKU's stock; the storage format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data")]
pub enum InventoryEvent {
    /// Units were added to the stock on hand.
    StockReceived {
        /// Units received.
        quantity: i64,
    },
    /// Units were set aside for an order.
    StockReserved {
        /// The order the units are for.
        order_id: OrderId,
        /// Units reserved.
        quantity: i64,
    },
    /// An order's reservation went back to the available stock.
    StockReleased {
        /// The order whose reservation was released.
        order_id: OrderId,
        /// Units the reservation held.
        quantity: i64,
    },
}

impl DomainEvent for InventoryEvent {}

/// What a SKU's inventory knows, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InventoryState {
    /// Units in stock, reserved or not.
    pub on_hand: i64,
    /// Units reserved, by order id (in order id order).
    pub reservations: BTreeMap<OrderId, i64>,
    /// Orders whose reservation was released: they cannot reserve here again.
    pub released: BTreeSet<OrderId>,
}

impl InventoryState {
    /// Units reserved across all orders (saturating).
    pub fn reserved(&self) -> i64 {
        self.reservations
            .values()
            .fold(0i64, |sum, quantity| sum.saturating_add(*quantity))
    }

    /// Units that can still be reserved: `on_hand − reserved` (saturating).
    pub fn available(&self) -> i64 {
        self.on_hand.saturating_sub(self.reserved())
    }
}

impl Aggregate for Inventory {
    const CATEGORY: &'static str = "Inventory";
    // 2: the state remembers released orders; older snapshots do not.
    const STATE_SCHEMA: u32 = 2;

    type Event = InventoryEvent;
    type State = InventoryState;
    type Command = InventoryCommand;

    fn initial() -> InventoryState {
        InventoryState::default()
    }

    fn evolve(mut state: InventoryState, event: &InventoryEvent) -> InventoryState {
        match event {
            InventoryEvent::StockReceived { quantity } => {
                state.on_hand = state.on_hand.saturating_add(*quantity);
            }
            InventoryEvent::StockReserved { order_id, quantity } => {
                state.reservations.insert(order_id.clone(), *quantity);
            }
            InventoryEvent::StockReleased { order_id, .. } => {
                state.reservations.remove(order_id);
                state.released.insert(order_id.clone());
            }
        }
        state
    }

    fn decide(
        state: &InventoryState,
        command: &InventoryCommand,
    ) -> Result<Vec<InventoryEvent>, Rejection> {
        match command {
            InventoryCommand::ReceiveStock { quantity } => decide_receive(state, *quantity),
            InventoryCommand::ReserveStock { order_id, quantity } => {
                decide_reserve(state, order_id, *quantity)
            }
            InventoryCommand::ReleaseStock { order_id } => decide_release(state, order_id),
        }
    }
}

fn require_positive(quantity: i64) -> Result<(), Rejection> {
    if quantity > 0 {
        Ok(())
    } else {
        Err(Rejection::new(
            "quantity-must-be-positive",
            format!("quantity must be greater than zero, got {quantity}"),
        ))
    }
}

fn decide_receive(state: &InventoryState, quantity: i64) -> Result<Vec<InventoryEvent>, Rejection> {
    require_positive(quantity)?;
    state
        .on_hand
        .checked_add(quantity)
        .ok_or_else(|| Rejection::new("quantity-overflow", "the stock on hand would overflow"))?;
    Ok(vec![InventoryEvent::StockReceived { quantity }])
}

fn decide_reserve(
    state: &InventoryState,
    order_id: &OrderId,
    quantity: i64,
) -> Result<Vec<InventoryEvent>, Rejection> {
    require_positive(quantity)?;
    if state.released.contains(order_id) {
        return Ok(vec![]);
    }
    match state.reservations.get(order_id) {
        Some(held) if *held == quantity => Ok(vec![]),
        Some(held) => Err(Rejection::new(
            "reservation-quantity-mismatch",
            format!("order '{order_id}' already holds a reservation of {held}, not {quantity}"),
        )),
        None => {
            let available = state.available();
            if quantity > available {
                return Err(Rejection::new(
                    "insufficient-stock",
                    format!("cannot reserve {quantity}: only {available} available"),
                ));
            }
            Ok(vec![InventoryEvent::StockReserved {
                order_id: order_id.clone(),
                quantity,
            }])
        }
    }
}

fn decide_release(
    state: &InventoryState,
    order_id: &OrderId,
) -> Result<Vec<InventoryEvent>, Rejection> {
    Ok(match state.reservations.get(order_id) {
        Some(quantity) => vec![InventoryEvent::StockReleased {
            order_id: order_id.clone(),
            quantity: *quantity,
        }],
        None => vec![],
    })
}
