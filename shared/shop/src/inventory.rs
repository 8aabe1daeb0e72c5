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
//! | `insufficient-stock` | `ReserveStock` of more than is available |
//! | `reservation-quantity-mismatch` | `ReserveStock` for an order that already holds a reservation of another quantity |
//! | `reservation-expired` | `ReserveStock` whose `placed_at` is at or before the [release horizon](InventoryState::horizon) |
//!
//! Order ids are typed ([`OrderId`]): the two `order-id-` rejections come from
//! [`parse_command`] ([`CommandParseError::Rejected`]), before any state is read.
//!
//! Already done (no events): `ReserveStock` for an order that already holds a reservation of
//! the same quantity; `ReserveStock` for an order whose reservation here was released and is
//! still [remembered](InventoryState::released); `ReleaseStock` for an order that holds no
//! reservation.
//!
//! ## A released reservation stays released, in bounded state
//!
//! The order-fulfilment saga releases an order's stock when it gives the order up, and a
//! `ReserveStock` it sent earlier may still arrive afterwards (two saga invocations for one
//! order run concurrently when inputs come from different streams). Reserving again would
//! hold that stock for an order nobody fulfils. Remembering every released order (what
//! state schema 2 did) made the state grow by one order id per cancelled order, for ever:
//! a hot SKU's snapshot outgrows DynamoDB's 400 KB item after ~10,000 cancellations.
//!
//! Instead the saga's `ReserveStock` carries the time its order was placed (`placed_at`,
//! which the reservation keeps), and the inventory keeps:
//!
//! - [`InventoryState::released`]: the released orders, at most [`MAX_REMEMBERED_RELEASES`];
//!   past that, the one placed earliest (ties: the smaller order id) is forgotten;
//! - [`InventoryState::horizon`]: the `(placed_at, order_id)` of the latest forgotten order.
//!
//! and refuses (`reservation-expired`) a `ReserveStock` whose `(placed_at, order_id)` is at
//! or before the horizon, unless the order holds a reservation here.
//!
//! **Why a late reservation is never taken (safety).** Take a released order `o` placed at
//! `p`. Either it is remembered, and its `ReserveStock` is already done; or it was forgotten,
//! and forgetting it raised the horizon to at least `(p, o)` (the horizon only rises), so
//! its `ReserveStock`, which carries `p`, is refused. Either way no stock is held. This needs
//! no clock and no bound on how late the command arrives (a redrive days later included).
//!
//! **Why an order that never reserved is not refused (liveness).** Its `(p, o)` is at or
//! before the horizon only if an order placed no earlier was forgotten, which happens only
//! when [`MAX_REMEMBERED_RELEASES`] orders placed no earlier than that one were all
//! reserved *and released* here while this order's first `ReserveStock` was still on its
//! way. The saga sends it as soon as the order is placed; a backlog that deep means the
//! reservation deadline has long passed and the saga cancels the order anyway. The refusal
//! is an answer, so the saga compensates as for any refused reservation; to the saga of an
//! order already released it is a refusal of a line no longer in flight, which it ignores.
//!
//! **Size.** The state is the live reservations (at most one per order holding stock, at
//! least one unit each: bounded by the stock on hand, not by history) plus at most
//! [`MAX_REMEMBERED_RELEASES`] released orders and one horizon: with ids of up to
//! [`crate::MAX_KEY_LEN`] characters the released memory stays under ~45 KB whatever the
//! number of past orders ([`STATE_BOUND_BYTES`] is the bound the tests hold it to).
//!
//! `ReserveStock` without `placed_at` (a client other than the saga; a command sent before
//! this rule) is checked against the remembered orders only. Orders released before this
//! rule (schema-2 events: no `placed_at`) are remembered without a time and forgotten first;
//! once forgotten they no longer raise the horizon, so a stale reservation for one of them
//! is recognised only while it is remembered (a window of [`MAX_REMEMBERED_RELEASES`]
//! releases of the SKU; only commands sent before the upgrade lack `placed_at`).
//! Schema-2 snapshots are not read: the stream is replayed once from its events, and the
//! next snapshot is schema 3.

use crate::command::{CommandParseError, RegisteredAggregate};
use crate::values::OrderId;
use chrono::{DateTime, Utc};
use eventfold::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use strum::VariantNames;

/// Released orders an inventory remembers at most (see the module docs: the memory that
/// recognises a late `ReserveStock`; older ones are covered by the horizon).
pub const MAX_REMEMBERED_RELEASES: usize = 256;

/// The bound, in bytes of serialized JSON, that an inventory's snapshot stays under when the
/// stream's history is receive/reserve/release cycles of distinct orders (ids of the maximum
/// length): [`MAX_REMEMBERED_RELEASES`] entries of ~170 bytes, plus the live reservations of
/// the cycles in progress. Checked by the state-size tests; far below DynamoDB's 400 KB item.
pub const STATE_BOUND_BYTES: usize = 64 * 1024;

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
        /// When the order was placed (the saga always sends it): what lets the inventory
        /// recognise a reservation that arrives after its release (module docs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placed_at: Option<DateTime<Utc>>,
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
        /// When the order was placed, when the command said (absent in events written
        /// before it was carried, which read as `None`: no schema change).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placed_at: Option<DateTime<Utc>>,
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

/// A reservation an order holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// Units reserved.
    pub quantity: i64,
    /// When the order was placed, if the reservation said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placed_at: Option<DateTime<Utc>>,
}

/// The `(placed_at, order_id)` of a forgotten released order: every `ReserveStock` at or
/// before it is refused (`reservation-expired`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Horizon {
    /// When the forgotten order was placed.
    pub placed_at: DateTime<Utc>,
    /// The forgotten order (breaks ties between orders placed at the same instant).
    pub order_id: OrderId,
}

/// What a SKU's inventory knows, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InventoryState {
    /// Units in stock, reserved or not.
    pub on_hand: i64,
    /// Reservations held, by order id (in order id order).
    pub reservations: BTreeMap<OrderId, Reservation>,
    /// Released orders still remembered (at most [`MAX_REMEMBERED_RELEASES`]), with when
    /// they were placed (`None`: released before `placed_at` was carried).
    pub released: BTreeMap<OrderId, Option<DateTime<Utc>>>,
    /// The latest forgotten released order, if any was forgotten.
    pub horizon: Option<Horizon>,
}

impl InventoryState {
    /// Units reserved across all orders (saturating).
    pub fn reserved(&self) -> i64 {
        self.reservations
            .values()
            .fold(0i64, |sum, r| sum.saturating_add(r.quantity))
    }

    /// Units that can still be reserved: `on_hand − reserved` (saturating).
    pub fn available(&self) -> i64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    /// Whether a `ReserveStock` for `order_id` placed at `placed_at` is at or before the
    /// horizon: a release of it may have been forgotten.
    pub fn is_behind_horizon(&self, order_id: &OrderId, placed_at: DateTime<Utc>) -> bool {
        self.horizon
            .as_ref()
            .is_some_and(|h| (placed_at, order_id) <= (h.placed_at, &h.order_id))
    }

    /// Remembers `order_id` as released, forgetting the earliest placed one past the bound.
    fn remember_release(&mut self, order_id: OrderId, placed_at: Option<DateTime<Utc>>) {
        self.released.insert(order_id, placed_at);
        while self.released.len() > MAX_REMEMBERED_RELEASES {
            // `None` (a time never known) sorts first: those go first. The scan is over at
            // most MAX_REMEMBERED_RELEASES + 1 entries, once per release.
            let Some((oldest, at)) = self
                .released
                .iter()
                .min_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)))
                .map(|(id, at)| (id.clone(), *at))
            else {
                break;
            };
            self.released.remove(&oldest);
            if let Some(placed_at) = at {
                let forgotten = Horizon {
                    placed_at,
                    order_id: oldest,
                };
                if self.horizon.as_ref().is_none_or(|h| *h < forgotten) {
                    self.horizon = Some(forgotten);
                }
            }
        }
    }
}

impl Aggregate for Inventory {
    const CATEGORY: &'static str = "Inventory";
    // 3: a bounded memory of released orders and a horizon (2: every released order; 1:
    // none). Older snapshots are skipped and the stream replayed from its events.
    const STATE_SCHEMA: u32 = 3;

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
            InventoryEvent::StockReserved {
                order_id,
                quantity,
                placed_at,
            } => {
                state.reservations.insert(
                    order_id.clone(),
                    Reservation {
                        quantity: *quantity,
                        placed_at: *placed_at,
                    },
                );
            }
            InventoryEvent::StockReleased { order_id, .. } => {
                let placed_at = state
                    .reservations
                    .remove(order_id)
                    .and_then(|r| r.placed_at);
                state.remember_release(order_id.clone(), placed_at);
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
            InventoryCommand::ReserveStock {
                order_id,
                quantity,
                placed_at,
            } => decide_reserve(state, order_id, *quantity, *placed_at),
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
    placed_at: Option<DateTime<Utc>>,
) -> Result<Vec<InventoryEvent>, Rejection> {
    require_positive(quantity)?;
    match state.reservations.get(order_id) {
        Some(held) if held.quantity == quantity => Ok(vec![]),
        Some(held) => Err(Rejection::new(
            "reservation-quantity-mismatch",
            format!(
                "order '{order_id}' already holds a reservation of {}, not {quantity}",
                held.quantity
            ),
        )),
        None if state.released.contains_key(order_id) => Ok(vec![]),
        None if placed_at.is_some_and(|at| state.is_behind_horizon(order_id, at)) => {
            Err(Rejection::new(
                "reservation-expired",
                format!(
                    "order '{order_id}' was placed before the release horizon of this sku: its reservation may have been released already"
                ),
            ))
        }
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
                placed_at,
            }])
        }
    }
}

fn decide_release(
    state: &InventoryState,
    order_id: &OrderId,
) -> Result<Vec<InventoryEvent>, Rejection> {
    Ok(match state.reservations.get(order_id) {
        Some(held) => vec![InventoryEvent::StockReleased {
            order_id: order_id.clone(),
            quantity: held.quantity,
        }],
        None => vec![],
    })
}
