//! What the saga sends (its commands, with their targets) and what it is told (its inputs).

use crate::inventory::{Inventory, InventoryCommand};
use crate::order::{Order, OrderCommand};
use crate::payment::{Payment, PaymentCommand};
use crate::values::{CustomerId, Money, OrderId, Sku};
use chrono::{DateTime, Utc};
use eventfold_consumers::{SagaCommand, SagaCommandVisitor};
use serde::{Deserialize, Serialize};
use strum::VariantNames;

/// A command the saga sends, with its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "aggregate_type", deny_unknown_fields)]
pub enum FulfilmentCommand {
    /// To the inventory of `sku`.
    Inventory {
        /// The SKU (the target's id).
        sku: Sku,
        /// The command.
        command: InventoryCommand,
    },
    /// To the payment of `order_id`.
    Payment {
        /// The order (the target's id).
        order_id: OrderId,
        /// The command.
        command: PaymentCommand,
    },
    /// To the order `order_id`.
    Order {
        /// The order (the target's id).
        order_id: OrderId,
        /// The command.
        command: OrderCommand,
    },
}

impl SagaCommand for FulfilmentCommand {
    fn visit<V: SagaCommandVisitor>(&self, visitor: V) -> V::Output {
        match self {
            Self::Inventory { sku, command } => visitor.visit::<Inventory>(sku, command.clone()),
            Self::Payment { order_id, command } => {
                visitor.visit::<Payment>(order_id, command.clone())
            }
            Self::Order { order_id, command } => visitor.visit::<Order>(order_id, command.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// inputs
// ---------------------------------------------------------------------------------------------

/// One line of the order: what to reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FulfilmentLine {
    /// The stock keeping unit.
    pub sku: Sku,
    /// Units to reserve.
    pub quantity: i64,
}

/// What the saga saw of the order's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum ObservedOrder {
    /// `OrderConfirmed`.
    Confirmed,
    /// `OrderCancelled`.
    Cancelled {
        /// Why.
        reason: String,
        /// Whether the saga's own `CancelOrder` did it (else a customer or an operator).
        by_saga: bool,
    },
}

/// What the saga saw of a line's inventory stream (events about this order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum ObservedStock {
    /// `StockReserved` for the order.
    Reserved {
        /// Units reserved.
        quantity: i64,
        /// When.
        at: DateTime<Utc>,
    },
    /// `StockReleased` for the order.
    Released,
}

/// What the saga saw of the payment's stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status")]
pub enum ObservedPayment {
    /// `PaymentPending`: waiting for the money.
    Pending {
        /// Amount due.
        amount: Money,
    },
    /// `PaymentAuthorized`.
    Authorized {
        /// Amount authorised.
        amount: Money,
    },
    /// `PaymentReceived`.
    Received {
        /// Amount received.
        amount: Money,
    },
    /// `PaymentDeclined`.
    Declined {
        /// The provider's reason, e.g. `card-declined`.
        reason: String,
    },
    /// `PaymentVoided`.
    Voided,
    /// `PaymentRefunded`.
    Refunded,
}

impl ObservedPayment {
    /// Whether the order is paid (authorised or received).
    pub(super) fn is_paid(&self) -> bool {
        matches!(self, Self::Authorized { .. } | Self::Received { .. })
    }
}

/// What the saga is told: an event of another stream, a refusal, a deadline. Adjacently
/// tagged like every command; only the system sends them (never `POST /commands`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum FulfilmentInput {
    /// The order was placed.
    OrderPlaced {
        /// The order.
        order_id: OrderId,
        /// Its customer.
        customer_id: CustomerId,
        /// Its lines, in sku order.
        lines: Vec<FulfilmentLine>,
        /// The total to pay.
        total: Money,
        /// How it is paid.
        payment_method: String,
        /// When it was placed.
        placed_at: DateTime<Utc>,
    },
    /// An event of the order's stream at `version`.
    OrderObserved {
        /// The event's version in `Order-{id}`.
        version: u64,
        /// What it says.
        order: ObservedOrder,
    },
    /// An event about this order in `Inventory-{sku}` at `version`.
    StockObserved {
        /// The SKU (the stream's id).
        sku: Sku,
        /// The event's version in `Inventory-{sku}`.
        version: u64,
        /// What it says.
        stock: ObservedStock,
    },
    /// An event of the payment's stream at `version`.
    PaymentObserved {
        /// The event's version in `Payment-{id}`.
        version: u64,
        /// What it says.
        payment: ObservedPayment,
    },
    /// A command the saga sent was rejected.
    Refused {
        /// The command.
        command: FulfilmentCommand,
        /// The rule it broke.
        rule: String,
        /// The target's explanation.
        message: String,
    },
    /// The instance's deadline passed.
    TimedOut {
        /// When the runner saw it pass.
        at: DateTime<Utc>,
    },
}
