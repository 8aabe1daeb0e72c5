//! The `Order` aggregate: a customer's order, its lines and its life cycle.
//!
//! Stream: `{tenant}/Order-{order_id}`. Life cycle:
//! `Draft` (created, items may change) → `Placed` → `Confirmed` → `Shipped`, and
//! `Cancelled` from `Draft`, `Placed` or `Confirmed`.
//!
//! Rules (the `rule` of each [`Rejection`]):
//!
//! | rule | when |
//! |---|---|
//! | `order-not-created` | any command but `CreateOrder` on an order that does not exist |
//! | `order-already-exists` | `CreateOrder` for another customer than the one it was created for |
//! | `customer-id-required` | `CreateOrder` with an empty customer id |
//! | `sku-required` | `AddItem` / `RemoveItem` with an empty sku |
//! | `quantity-must-be-positive` | `AddItem` with quantity ≤ 0 |
//! | `unit-price-must-not-be-negative` | `AddItem` with unit price < 0 |
//! | `unit-price-mismatch` | `AddItem` of a sku already in the order at another unit price |
//! | `quantity-overflow` | `AddItem` would make a line's quantity overflow |
//! | `amount-overflow` | `AddItem` would make a line amount or the order total overflow |
//! | `order-not-editable` | `AddItem` / `RemoveItem` once the order is no longer a draft |
//! | `item-not-in-order` | `RemoveItem` of a sku the order does not contain |
//! | `order-not-empty` | `PlaceOrder` of an order without lines |
//! | `order-not-placed` | `ConfirmOrder` of a draft |
//! | `order-not-confirmed` | `ShipOrder` of a draft or a placed (unconfirmed) order |
//! | `tracking-id-required` | `ShipOrder` with an empty tracking id |
//! | `order-already-shipped` | `CancelOrder` of a shipped order; `ShipOrder` with another tracking id |
//! | `order-already-cancelled` | `CancelOrder` of an order cancelled for another reason |
//! | `order-cancelled` | `PlaceOrder` / `ConfirmOrder` / `ShipOrder` of a cancelled order |
//! | `reason-required` | `CancelOrder` with an empty reason |
//! | `payment-method-required` | `PlaceOrder` with an empty payment method |
//! | `customer-id-invalid`, `sku-invalid`, `tracking-id-invalid`, `payment-method-invalid` | the field breaks the id rule ([`crate::values`]) |
//! | `too-many-lines` | `AddItem` of a new sku to an order that has [`MAX_ORDER_LINES`] lines |
//! | `reason-too-long` | `CancelOrder` with a reason over 500 characters ([`crate::MAX_TEXT_LEN`]) |
//!
//! Customer ids, skus and tracking ids are typed ([`crate::values`]): an empty or invalid one
//! never makes a command, so its `-required` / `-invalid` rejection comes from
//! [`parse_command`] ([`CommandParseError::Rejected`]), before any state is read.
//!
//! Already done (no events): `CreateOrder` again for the same customer; `PlaceOrder` of an
//! order that is placed or further along; `ConfirmOrder` of a confirmed or shipped order;
//! `ShipOrder` of an order shipped with the same tracking id; `CancelOrder` of an order
//! cancelled for the same reason (a repeat; another reason is `order-already-cancelled`).
//!
//! `PlaceOrder` names how the order will be paid (`payment_method`, [`DEFAULT_PAYMENT_METHOD`]
//! when absent) and `OrderPlaced` carries it to the order-fulfilment saga. That made
//! `OrderPlaced` schema 2; events written as schema 1 (no method) read through
//! [`upcast_order_placed_v1`], which adds the default, so every reader sees one shape.
//!
//! Adding a sku that is already in the order adds to its quantity. The unit price of a line
//! is fixed by its first `AddItem`: adding the same sku at another price is rejected
//! (`unit-price-mismatch`) rather than silently re-pricing the units already in the order;
//! remove the line and add it again to change the price.

use crate::command::{CommandParseError, RegisteredAggregate};
use crate::values::{CustomerId, Money, Sku, TrackingId, require_key, require_short, require_text};
use eventfold::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use strum::VariantNames;

/// The order aggregate (stream category `Order`, one stream per order id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Order;

/// What callers ask of an order. Adjacently tagged: `{"type": "AddItem", "data": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum OrderCommand {
    /// Opens a draft order for a customer.
    CreateOrder {
        /// The customer the order belongs to.
        customer_id: CustomerId,
    },
    /// Adds units of a sku to a draft (increasing the quantity if the sku is already there).
    AddItem {
        /// The stock keeping unit.
        sku: Sku,
        /// How many units to add; must be > 0.
        quantity: i64,
        /// Price of one unit; must be ≥ 0.
        unit_price: Money,
    },
    /// Removes a sku's whole line from a draft.
    RemoveItem {
        /// The stock keeping unit to remove.
        sku: Sku,
    },
    /// Submits a non-empty draft.
    PlaceOrder {
        /// How the order will be paid, e.g. `card` or `bank_transfer`; absent means
        /// [`DEFAULT_PAYMENT_METHOD`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payment_method: Option<String>,
    },
    /// Accepts a placed order.
    ConfirmOrder {},
    /// Hands a confirmed order to the carrier.
    ShipOrder {
        /// The carrier's tracking id.
        tracking_id: TrackingId,
    },
    /// Cancels an order that has not shipped yet.
    CancelOrder {
        /// Why the order is cancelled.
        reason: String,
    },
}

/// Lines an order holds at most: what keeps its state (and the saga's, which has a line per
/// sku of the order) bounded whatever its history ([`STATE_BOUND_BYTES`]).
pub const MAX_ORDER_LINES: usize = 100;

/// The bound, in bytes of serialized JSON, of an order's state: [`MAX_ORDER_LINES`] lines
/// with skus of the maximum length (~170 bytes each) and the longest ids, reason and
/// tracking id. Checked by the state-size tests.
pub const STATE_BOUND_BYTES: usize = 24 * 1024;

/// The payment method of an order placed without one.
pub const DEFAULT_PAYMENT_METHOD: &str = "card";

/// The schema version `OrderPlaced` is written in: 2 added `payment_method`.
pub const ORDER_PLACED_SCHEMA: u32 = 2;

/// Lifts `OrderPlaced` data of schema 1 (`{"total"}`) to schema 2 by adding the method every
/// order was paid with before orders could choose: [`DEFAULT_PAYMENT_METHOD`].
pub fn upcast_order_placed_v1(mut data: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(fields) = &mut data {
        fields
            .entry("payment_method")
            .or_insert_with(|| serde_json::Value::String(DEFAULT_PAYMENT_METHOD.to_owned()));
    }
    data
}

impl RegisteredAggregate for Order {}

/// Builds an order command from its type name and JSON data. Commands without fields
/// accept `null` (absent) or `{}` as data; unknown fields are refused.
pub fn parse_command(
    command_type: &str,
    data: serde_json::Value,
) -> Result<OrderCommand, CommandParseError> {
    <Order as RegisteredAggregate>::parse_command(command_type, data)
}

/// What happened to an order; the storage format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    /// A draft order was opened for a customer.
    OrderCreated {
        /// The customer the order belongs to.
        customer_id: CustomerId,
    },
    /// Units of a sku were added to the order.
    ItemAdded {
        /// The stock keeping unit.
        sku: Sku,
        /// Units added (on top of any already in the order).
        quantity: i64,
        /// Price of one unit.
        unit_price: Money,
    },
    /// A sku's line was removed from the order.
    ItemRemoved {
        /// The stock keeping unit.
        sku: Sku,
    },
    /// The order was submitted (schema [`ORDER_PLACED_SCHEMA`]).
    OrderPlaced {
        /// The order total at the time it was placed.
        total: Money,
        /// How the order will be paid (added in schema 2; schema 1 reads as
        /// [`DEFAULT_PAYMENT_METHOD`]).
        payment_method: String,
    },
    /// The order was accepted.
    OrderConfirmed {},
    /// The order was handed to the carrier.
    OrderShipped {
        /// The carrier's tracking id.
        tracking_id: TrackingId,
    },
    /// The order was cancelled.
    OrderCancelled {
        /// Why the order was cancelled.
        reason: String,
    },
}

impl DomainEvent for OrderEvent {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "OrderPlaced" {
            ORDER_PLACED_SCHEMA
        } else {
            1
        }
    }
}

/// Where an order is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Created; items may still be added and removed.
    Draft,
    /// Submitted; items are fixed.
    Placed,
    /// Accepted.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Cancelled before shipping.
    Cancelled,
}

impl OrderStatus {
    /// The status's name, e.g. `Draft`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "Draft",
            Self::Placed => "Placed",
            Self::Confirmed => "Confirmed",
            Self::Shipped => "Shipped",
            Self::Cancelled => "Cancelled",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sku's line in an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// Units ordered.
    pub quantity: i64,
    /// Price of one unit.
    pub unit_price: Money,
}

impl OrderLine {
    /// `quantity × unit_price`, or `None` on overflow.
    pub fn checked_amount(&self) -> Option<Money> {
        self.unit_price.checked_times(self.quantity)
    }
}

/// What an order knows, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderState {
    /// `None` until the order is created.
    pub status: Option<OrderStatus>,
    /// The customer the order belongs to (`None` until created).
    pub customer_id: Option<CustomerId>,
    /// The order's lines by sku, in sku order.
    pub lines: BTreeMap<Sku, OrderLine>,
    /// The carrier's tracking id once shipped.
    pub tracking_id: Option<TrackingId>,
    /// Why the order was cancelled, once cancelled.
    pub cancel_reason: Option<String>,
    /// How the order will be paid, once placed.
    pub payment_method: Option<String>,
}

impl OrderState {
    /// Whether `CreateOrder` has happened.
    pub fn is_created(&self) -> bool {
        self.status.is_some()
    }

    /// Sum of the line amounts, or `None` on overflow (which `decide` never lets happen).
    pub fn checked_total(&self) -> Option<Money> {
        checked_total(self.lines.values())
    }

    /// Sum of the line amounts (saturating; see [`Self::checked_total`]).
    pub fn total(&self) -> Money {
        self.checked_total().unwrap_or(Money::from_minor(i64::MAX))
    }
}

/// `ItemAdded` folded onto `state`. An owned sku goes straight into the map (one search); a
/// borrowed one is copied only for a new line, since most items land on a line the order has.
fn add_item(state: &mut OrderState, sku: Cow<'_, Sku>, quantity: i64, unit_price: Money) {
    let new_line = OrderLine {
        quantity: 0,
        unit_price,
    };
    let line = match sku {
        Cow::Owned(sku) => state.lines.entry(sku).or_insert(new_line),
        Cow::Borrowed(sku) => match state.lines.get_mut(sku) {
            Some(line) => line,
            None => state.lines.entry(sku.clone()).or_insert(new_line),
        },
    };
    line.quantity = line.quantity.saturating_add(quantity);
    line.unit_price = unit_price;
}

fn checked_total<'a>(lines: impl IntoIterator<Item = &'a OrderLine>) -> Option<Money> {
    lines.into_iter().try_fold(Money::ZERO, |sum, line| {
        sum.checked_add(line.checked_amount()?)
    })
}

impl Aggregate for Order {
    const CATEGORY: &'static str = "Order";
    // 2: the state learnt the payment method; older snapshots lack it.
    const STATE_SCHEMA: u32 = 2;

    type Event = OrderEvent;
    type State = OrderState;
    type Command = OrderCommand;

    fn initial() -> OrderState {
        OrderState::default()
    }

    fn evolve(mut state: OrderState, event: &OrderEvent) -> OrderState {
        match event {
            OrderEvent::OrderCreated { customer_id } => {
                state.status = Some(OrderStatus::Draft);
                state.customer_id = Some(customer_id.clone());
            }
            OrderEvent::ItemAdded {
                sku,
                quantity,
                unit_price,
            } => add_item(&mut state, Cow::Borrowed(sku), *quantity, *unit_price),
            OrderEvent::ItemRemoved { sku } => {
                state.lines.remove(sku);
            }
            OrderEvent::OrderPlaced { payment_method, .. } => {
                state.status = Some(OrderStatus::Placed);
                state.payment_method = Some(payment_method.clone());
            }
            OrderEvent::OrderConfirmed {} => state.status = Some(OrderStatus::Confirmed),
            OrderEvent::OrderShipped { tracking_id } => {
                state.status = Some(OrderStatus::Shipped);
                state.tracking_id = Some(tracking_id.clone());
            }
            OrderEvent::OrderCancelled { reason } => {
                state.status = Some(OrderStatus::Cancelled);
                state.cancel_reason = Some(reason.clone());
            }
        }
        state
    }

    /// A replay's `ItemAdded` gives its sku to a new line instead of copying it.
    fn evolve_owned(mut state: OrderState, event: OrderEvent) -> OrderState {
        match event {
            OrderEvent::ItemAdded {
                sku,
                quantity,
                unit_price,
            } => {
                add_item(&mut state, Cow::Owned(sku), quantity, unit_price);
                state
            }
            other => Self::evolve(state, &other),
        }
    }

    /// `CreateOrder` starts an order's stream: decided without reading it first.
    fn assume_new(command: &OrderCommand) -> bool {
        matches!(command, OrderCommand::CreateOrder { .. })
    }

    fn decide(state: &OrderState, command: &OrderCommand) -> Result<Vec<OrderEvent>, Rejection> {
        match command {
            OrderCommand::CreateOrder { customer_id } => decide_create(state, customer_id),
            OrderCommand::AddItem {
                sku,
                quantity,
                unit_price,
            } => decide_add_item(state, sku, *quantity, *unit_price),
            OrderCommand::RemoveItem { sku } => decide_remove_item(state, sku),
            OrderCommand::PlaceOrder { payment_method } => decide_place(
                state,
                payment_method.as_deref().unwrap_or(DEFAULT_PAYMENT_METHOD),
            ),
            OrderCommand::ConfirmOrder {} => decide_confirm(state),
            OrderCommand::ShipOrder { tracking_id } => decide_ship(state, tracking_id),
            OrderCommand::CancelOrder { reason } => decide_cancel(state, reason),
        }
    }
}

/// The order's status, or `order-not-created`.
fn created(state: &OrderState) -> Result<OrderStatus, Rejection> {
    state
        .status
        .ok_or_else(|| Rejection::new("order-not-created", "the order has not been created"))
}

fn cancelled() -> Rejection {
    Rejection::new("order-cancelled", "the order is cancelled")
}

fn decide_create(
    state: &OrderState,
    customer_id: &CustomerId,
) -> Result<Vec<OrderEvent>, Rejection> {
    match &state.customer_id {
        Some(existing) if existing == customer_id => Ok(vec![]),
        Some(existing) => Err(Rejection::new(
            "order-already-exists",
            format!("the order already exists for customer '{existing}'"),
        )),
        None => Ok(vec![OrderEvent::OrderCreated {
            customer_id: customer_id.clone(),
        }]),
    }
}

fn require_draft(status: OrderStatus) -> Result<(), Rejection> {
    if status == OrderStatus::Draft {
        Ok(())
    } else {
        Err(Rejection::new(
            "order-not-editable",
            format!("items can only change while the order is a draft; it is {status}"),
        ))
    }
}

fn decide_add_item(
    state: &OrderState,
    sku: &Sku,
    quantity: i64,
    unit_price: Money,
) -> Result<Vec<OrderEvent>, Rejection> {
    let status = created(state)?;
    if quantity <= 0 {
        return Err(Rejection::new(
            "quantity-must-be-positive",
            format!("quantity must be greater than zero, got {quantity}"),
        ));
    }
    if unit_price.is_negative() {
        return Err(Rejection::new(
            "unit-price-must-not-be-negative",
            format!("unit price must not be negative, got {unit_price}"),
        ));
    }
    require_draft(status)?;
    let line = match state.lines.get(sku) {
        Some(line) if line.unit_price != unit_price => {
            return Err(Rejection::new(
                "unit-price-mismatch",
                format!(
                    "'{sku}' is already in the order at unit price {}, not {unit_price}",
                    line.unit_price
                ),
            ));
        }
        Some(line) => OrderLine {
            quantity: line.quantity.checked_add(quantity).ok_or_else(|| {
                Rejection::new(
                    "quantity-overflow",
                    format!("quantity of '{sku}' overflows"),
                )
            })?,
            unit_price,
        },
        None if state.lines.len() >= MAX_ORDER_LINES => {
            return Err(Rejection::new(
                "too-many-lines",
                format!("an order holds at most {MAX_ORDER_LINES} lines"),
            ));
        }
        None => OrderLine {
            quantity,
            unit_price,
        },
    };
    let others = state
        .lines
        .iter()
        .filter(|(other, _)| *other != sku)
        .map(|(_, line)| line);
    checked_total(others.chain([&line]))
        .ok_or_else(|| Rejection::new("amount-overflow", "the order total would overflow"))?;
    Ok(vec![OrderEvent::ItemAdded {
        sku: sku.clone(),
        quantity,
        unit_price,
    }])
}

fn decide_remove_item(state: &OrderState, sku: &Sku) -> Result<Vec<OrderEvent>, Rejection> {
    let status = created(state)?;
    require_draft(status)?;
    if !state.lines.contains_key(sku) {
        return Err(Rejection::new(
            "item-not-in-order",
            format!("'{sku}' is not in the order"),
        ));
    }
    Ok(vec![OrderEvent::ItemRemoved { sku: sku.clone() }])
}

fn decide_place(state: &OrderState, payment_method: &str) -> Result<Vec<OrderEvent>, Rejection> {
    match created(state)? {
        OrderStatus::Draft => {
            require_text(payment_method, "payment-method-required", "payment method")?;
            require_key(payment_method, "payment-method-invalid", "payment method")?;
            if state.lines.is_empty() {
                return Err(Rejection::new(
                    "order-not-empty",
                    "an order without items cannot be placed",
                ));
            }
            let total = state
                .checked_total()
                .ok_or_else(|| Rejection::new("amount-overflow", "the order total overflows"))?;
            Ok(vec![OrderEvent::OrderPlaced {
                total,
                payment_method: payment_method.to_owned(),
            }])
        }
        OrderStatus::Placed | OrderStatus::Confirmed | OrderStatus::Shipped => Ok(vec![]),
        OrderStatus::Cancelled => Err(cancelled()),
    }
}

fn decide_confirm(state: &OrderState) -> Result<Vec<OrderEvent>, Rejection> {
    match created(state)? {
        OrderStatus::Draft => Err(Rejection::new(
            "order-not-placed",
            "only a placed order can be confirmed",
        )),
        OrderStatus::Placed => Ok(vec![OrderEvent::OrderConfirmed {}]),
        OrderStatus::Confirmed | OrderStatus::Shipped => Ok(vec![]),
        OrderStatus::Cancelled => Err(cancelled()),
    }
}

fn decide_ship(state: &OrderState, tracking_id: &TrackingId) -> Result<Vec<OrderEvent>, Rejection> {
    let status = created(state)?;
    match status {
        OrderStatus::Draft | OrderStatus::Placed => Err(Rejection::new(
            "order-not-confirmed",
            format!("only a confirmed order can be shipped; it is {status}"),
        )),
        OrderStatus::Confirmed => Ok(vec![OrderEvent::OrderShipped {
            tracking_id: tracking_id.clone(),
        }]),
        OrderStatus::Shipped if state.tracking_id.as_ref() == Some(tracking_id) => Ok(vec![]),
        OrderStatus::Shipped => Err(Rejection::new(
            "order-already-shipped",
            format!(
                "the order already shipped with tracking id '{}'",
                state.tracking_id.as_deref().unwrap_or_default()
            ),
        )),
        OrderStatus::Cancelled => Err(cancelled()),
    }
}

fn decide_cancel(state: &OrderState, reason: &str) -> Result<Vec<OrderEvent>, Rejection> {
    match created(state)? {
        OrderStatus::Shipped => Err(Rejection::new(
            "order-already-shipped",
            "a shipped order cannot be cancelled",
        )),
        // A repeat (the same reason) is already done, so a sender that retries (the saga)
        // does not see an error; another reason is another cancellation, which is refused.
        OrderStatus::Cancelled if state.cancel_reason.as_deref() == Some(reason) => Ok(vec![]),
        OrderStatus::Cancelled => Err(Rejection::new(
            "order-already-cancelled",
            format!(
                "the order is already cancelled ({})",
                state.cancel_reason.as_deref().unwrap_or_default()
            ),
        )),
        OrderStatus::Draft | OrderStatus::Placed | OrderStatus::Confirmed => {
            require_text(reason, "reason-required", "cancel reason")?;
            require_short(reason, "reason-too-long", "cancel reason")?;
            Ok(vec![OrderEvent::OrderCancelled {
                reason: reason.to_owned(),
            }])
        }
    }
}
