//! What the saga sends (its commands, with their targets) and what it is told (its inputs).

use super::OrderFulfilment;
use crate::inventory::{Inventory, InventoryCommand};
use crate::order::{Order, OrderCommand};
use crate::payment::{Payment, PaymentCommand};
use crate::values::{CustomerId, Money, OrderId, Sku};
use chrono::{DateTime, Utc};
use eventfold::aggregate::Aggregate;
use eventfold_consumers::saga::TargetVisitor;
use eventfold_consumers::{SagaCommand, SagaCommandVisitor};
use serde::de::{self, Deserializer, Error as _, IgnoredAny, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
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

eventfold::state_caches! {
    /// The warm states of the saga runner's executor: the aggregates the saga sends
    /// commands to, and the saga's own instances.
    pub struct FulfilmentCaches {
        order: Order,
        inventory: Inventory,
        payment: Payment,
        fulfilment: OrderFulfilment,
    }
}

impl SagaCommand for FulfilmentCommand {
    type Targets = FulfilmentCaches;

    fn visit<V: SagaCommandVisitor<FulfilmentCaches>>(&self, visitor: V) -> V::Output {
        match self {
            Self::Inventory { sku, command } => visitor.visit::<Inventory>(sku, command.clone()),
            Self::Payment { order_id, command } => {
                visitor.visit::<Payment>(order_id, command.clone())
            }
            Self::Order { order_id, command } => visitor.visit::<Order>(order_id, command.clone()),
        }
    }

    fn visit_target<V: TargetVisitor<FulfilmentCaches>>(
        category: &str,
        visitor: V,
    ) -> Option<V::Output> {
        if category == Inventory::CATEGORY {
            Some(visitor.visit::<Inventory>())
        } else if category == Payment::CATEGORY {
            Some(visitor.visit::<Payment>())
        } else if category == Order::CATEGORY {
            Some(visitor.visit::<Order>())
        } else {
            None
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

/// The order as placed: what starts an instance ([`FulfilmentInput::OrderPlaced`]) and what
/// its log records of it ([`FulfilmentEvent::FulfilmentStarted`](super::FulfilmentEvent::FulfilmentStarted)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    /// The order.
    pub order_id: OrderId,
    /// Its customer.
    pub customer_id: CustomerId,
    /// Its lines, in sku order.
    pub lines: Vec<FulfilmentLine>,
    /// The total to pay.
    pub total: Money,
    /// How it is paid.
    pub payment_method: String,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
}

/// An event of the order's stream, as the saga is told it ([`FulfilmentInput::OrderObserved`])
/// and records it ([`FulfilmentEvent::OrderObserved`](super::FulfilmentEvent::OrderObserved)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderObservation {
    /// The event's version in `Order-{id}`.
    pub version: u64,
    /// What it says.
    pub order: ObservedOrder,
}

/// An event about this order in a line's inventory stream, as the saga is told it
/// ([`FulfilmentInput::StockObserved`]) and records it
/// ([`FulfilmentEvent::StockObserved`](super::FulfilmentEvent::StockObserved)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockObservation {
    /// The line (the stream's id).
    pub sku: Sku,
    /// The event's version in `Inventory-{sku}`.
    pub version: u64,
    /// What it says.
    pub stock: ObservedStock,
}

/// An event of the payment's stream, as the saga is told it
/// ([`FulfilmentInput::PaymentObserved`]) and records it
/// ([`FulfilmentEvent::PaymentObserved`](super::FulfilmentEvent::PaymentObserved)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentObservation {
    /// The event's version in `Payment-{id}`.
    pub version: u64,
    /// What it says.
    pub payment: ObservedPayment,
}

/// What the saga is told: an event of another stream, a refusal, a deadline. Adjacently
/// tagged like every command; only the system sends them (never `POST /commands`).
///
/// Unknown fields are refused, in the data too: the payloads it shares with the saga log
/// ([`PlacedOrder`], the observations) are read strictly here (`strict`), since their own
/// `Deserialize` ignores unknown fields (a stored event must read as it always did).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum FulfilmentInput {
    /// The order was placed.
    OrderPlaced(#[serde(deserialize_with = "strict")] PlacedOrder),
    /// An event of the order's stream at its version.
    OrderObserved(#[serde(deserialize_with = "strict")] OrderObservation),
    /// An event about this order in `Inventory-{sku}` at its version.
    StockObserved(#[serde(deserialize_with = "strict")] StockObservation),
    /// An event of the payment's stream at its version.
    PaymentObserved(#[serde(deserialize_with = "strict")] PaymentObservation),
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

/// Reads a struct `T` as its derived `Deserialize` does, but refuses a field `T` does not
/// know with the error `#[serde(deny_unknown_fields)]` gives. One struct serves the input and
/// the event: the input must stay strict, the stored event as lenient as it always was, and
/// serde's attribute is per type, so the strictness is the input's, here.
fn strict<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    /// `T`'s fields, and the rest of the map (what `T` does not know).
    #[derive(Deserialize)]
    struct Checked<T> {
        #[serde(flatten)]
        known: T,
        #[serde(flatten)]
        unknown: BTreeMap<String, IgnoredAny>,
    }
    let Checked { known, unknown } = Checked::<T>::deserialize(deserializer)?;
    match unknown.keys().next() {
        None => Ok(known),
        Some(field) => Err(D::Error::unknown_field(field, fields_of::<T>())),
    }
}

/// The fields a struct's derived `Deserialize` names to `deserialize_struct` (none for other
/// types): what its "unknown field" error lists.
fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    /// A deserializer that only answers "these are my fields" (as its error).
    struct Probe;
    #[derive(Debug)]
    struct Fields(&'static [&'static str]);
    impl fmt::Display for Fields {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "fields {:?}", self.0)
        }
    }
    impl std::error::Error for Fields {}
    impl de::Error for Fields {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Self(&[])
        }
    }
    impl<'de> Deserializer<'de> for Probe {
        type Error = Fields;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Fields> {
            Err(Fields(&[]))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Fields> {
            Err(Fields(fields))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    T::deserialize(Probe).map_or_else(|Fields(fields)| fields, |_| &[])
}
