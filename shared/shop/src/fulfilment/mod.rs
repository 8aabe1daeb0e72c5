//! The `OrderFulfilment` saga: takes a placed order through stock, payment and confirmation,
//! and undoes what it did when a step fails.
//!
//! Stream: `{tenant}/OrderFulfilment-{order_id}`, one instance per order; its events are the
//! saga log (served read-only by the aggregates API: its inputs are not client commands).
//!
//! ## Flow
//!
//! 1. `OrderPlaced` starts the instance ([`FulfilmentEvent::FulfilmentStarted`]) and reserves
//!    every line: `ReserveStock` on `Inventory-{sku}` (step `reserve:{sku}`).
//! 2. When every line is reserved: `AuthorizePayment` of the order total with the order's
//!    method on `Payment-{order_id}` (step `authorize-payment`). A free order (total 0)
//!    skips the payment.
//! 3. When the payment is authorised (card) or received (`bank_transfer`: pending until a
//!    client sends `ReceivePayment`): `ConfirmOrder` (step `confirm-order`); `OrderConfirmed`
//!    completes the instance ([`FulfilmentOutcome::Confirmed`]).
//!
//! ## Compensation
//!
//! A failure ([`Failure`]: a reservation refused, the payment declined or refused, a
//! deadline passed, the confirmation refused, the order cancelled by someone else) undoes
//! what was done, in reverse order, each stage once the one before is answered:
//!
//! 1. the payment: `VoidPayment` (step `void-payment`) while no money was received (none yet,
//!    pending, authorised), `RefundPayment` (step `refund-payment`) once it was;
//! 2. the stock: reservations still in flight are first answered (their `ReserveStock` is
//!    sent again; a release must never overtake the reservation it undoes), then every
//!    reserved line is released, in reverse order (`ReleaseStock`, step `release:{sku}`);
//! 3. the order: `CancelOrder` with the reason (step `cancel-order`), unless it is cancelled
//!    already. The instance completes as [`FulfilmentOutcome::Cancelled`] (or
//!    [`FulfilmentOutcome::Compensated`] when the order refused to be cancelled).
//!
//! A confirmed order is undone the same way when it is cancelled later; other failures after
//! the confirmation change nothing.
//!
//! ## Exactly once
//!
//! The saga records each step (an event) before the runner sends its command, and
//! [`OrderFulfilment::pending`] derives the commands from the recorded steps, so a crash
//! between the two loses nothing and a redelivery sends the same commands under the same
//! step names (the runner derives the command id from the saga stream and the step), which
//! their targets treat as already done. Every input is a fact (an observation of another
//! stream at a version, a refusal, a deadline): one already known produces no events, and
//! an observation older than the one recorded is ignored, so duplicates and redeliveries
//! change nothing. A `ReserveStock` that arrives after the reservation was released (two
//! invocations for one order run concurrently from different source streams) is already
//! done at the inventory, which never reserves again for an order it released.
//!
//! ## Inputs
//!
//! The saga reacts to the event types [`INPUT_EVENT_TYPES`] (the SNS filter policy of its
//! queue must list exactly these):
//!
//! | event | stream | input |
//! |---|---|---|
//! | `OrderPlaced` | `Order-{id}` | start (needs the order's history: its lines) |
//! | `OrderConfirmed`, `OrderCancelled` | `Order-{id}` | [`FulfilmentInput::OrderObserved`] |
//! | `StockReserved`, `StockReleased` | `Inventory-{sku}` | [`FulfilmentInput::StockObserved`] (instance: the event's `order_id`) |
//! | `PaymentAuthorized`, `PaymentDeclined`, `PaymentPending`, `PaymentReceived`, `PaymentVoided`, `PaymentRefunded` | `Payment-{id}` | [`FulfilmentInput::PaymentObserved`] |
//!
//! besides [`FulfilmentInput::Refused`] (a command it sent was rejected) and
//! [`FulfilmentInput::TimedOut`] (its deadline passed).
//!
//! ## Deadlines
//!
//! An instance waits ([`OrderFulfilment::waiting_since`]) while its reservations are
//! unanswered (since the order was placed) and while its payment is neither authorised nor
//! received (since the payment was asked for; for `bank_transfer` that is the time the
//! customer has to pay). The runner owns the timeout; when it passes, the
//! [`FulfilmentInput::TimedOut`] input compensates: the payment is voided, the stock released
//! and the order cancelled with the reason [`PAYMENT_TIMED_OUT`] (or
//! [`RESERVATION_TIMED_OUT`]). Money that arrives after the void is refused by the payment
//! (`payment-voided`).
//!
//! Pure like the aggregates: times come from the events and the runner, never a clock.

use crate::inventory::{Inventory, InventoryCommand, InventoryEvent};
use crate::order::{Order, OrderCommand, OrderEvent};
use crate::payment::{Payment, PaymentCommand, PaymentEvent};
use crate::registry::{self, RegisteredAggregate};
use chrono::{DateTime, Utc};
use eventfold::{
    Aggregate, DomainEvent, EventEnvelope, Pending, Rejection, Saga, SagaCommand,
    SagaCommandVisitor, StreamId,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use strum::VariantNames;

/// The event types the saga reacts to: what the SNS filter policy of its queue lists.
pub const INPUT_EVENT_TYPES: &[&str] = &[
    "OrderPlaced",
    "OrderConfirmed",
    "OrderCancelled",
    "StockReserved",
    "StockReleased",
    "PaymentAuthorized",
    "PaymentDeclined",
    "PaymentPending",
    "PaymentReceived",
    "PaymentVoided",
    "PaymentRefunded",
];

/// The cancel reason when the payment did not arrive in time.
pub const PAYMENT_TIMED_OUT: &str = "payment timed out";
/// The cancel reason when the stock reservations were not answered in time.
pub const RESERVATION_TIMED_OUT: &str = "stock reservation timed out";

/// Step of the payment authorisation.
pub const AUTHORIZE_STEP: &str = "authorize-payment";
/// Step of the payment void.
pub const VOID_STEP: &str = "void-payment";
/// Step of the payment refund.
pub const REFUND_STEP: &str = "refund-payment";
/// Step of the order confirmation.
pub const CONFIRM_STEP: &str = "confirm-order";
/// Step of the order cancellation.
pub const CANCEL_STEP: &str = "cancel-order";

/// The step reserving `sku`.
pub fn reserve_step(sku: &str) -> String {
    format!("reserve:{sku}")
}

/// The step releasing `sku`.
pub fn release_step(sku: &str) -> String {
    format!("release:{sku}")
}

/// The order-fulfilment saga (stream category `OrderFulfilment`, one stream per order id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OrderFulfilment;

// ---------------------------------------------------------------------------------------------
// what it sends
// ---------------------------------------------------------------------------------------------

/// A command the saga sends, with its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "aggregate_type", deny_unknown_fields)]
pub enum FulfilmentCommand {
    /// To the inventory of `sku`.
    Inventory {
        /// The SKU (the target's id).
        sku: String,
        /// The command.
        command: InventoryCommand,
    },
    /// To the payment of `order_id`.
    Payment {
        /// The order (the target's id).
        order_id: String,
        /// The command.
        command: PaymentCommand,
    },
    /// To the order `order_id`.
    Order {
        /// The order (the target's id).
        order_id: String,
        /// The command.
        command: OrderCommand,
    },
}

impl SagaCommand for FulfilmentCommand {
    fn visit<V: SagaCommandVisitor>(&self, visitor: V) -> V::Output {
        match self {
            Self::Inventory { sku, command } => visitor.visit::<Inventory>(sku, command),
            Self::Payment { order_id, command } => visitor.visit::<Payment>(order_id, command),
            Self::Order { order_id, command } => visitor.visit::<Order>(order_id, command),
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
    pub sku: String,
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
        amount: i64,
    },
    /// `PaymentAuthorized`.
    Authorized {
        /// Amount authorised.
        amount: i64,
    },
    /// `PaymentReceived`.
    Received {
        /// Amount received.
        amount: i64,
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
    fn is_paid(&self) -> bool {
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
        order_id: String,
        /// Its customer.
        customer_id: String,
        /// Its lines, in sku order.
        lines: Vec<FulfilmentLine>,
        /// The total to pay, in minor units.
        total: i64,
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
        sku: String,
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

// ---------------------------------------------------------------------------------------------
// the saga log
// ---------------------------------------------------------------------------------------------

/// What the instance was waiting for when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WaitingFor {
    /// Answers to the reservations.
    Stock,
    /// The payment.
    Payment,
}

/// Why the instance compensates. Kept as a set: several may be true, in any order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "failure")]
pub enum Failure {
    /// A line could not be reserved.
    ReservationRefused {
        /// The line.
        sku: String,
        /// The inventory's rule, e.g. `insufficient-stock`.
        rule: String,
    },
    /// The provider declined the payment.
    PaymentDeclined {
        /// Its reason, e.g. `card-declined`.
        reason: String,
    },
    /// The payment refused the authorisation.
    PaymentRefused {
        /// Its rule.
        rule: String,
    },
    /// The deadline passed.
    TimedOut {
        /// While waiting for this.
        waiting_for: WaitingFor,
    },
    /// The order refused to be confirmed (for another reason than being cancelled).
    ConfirmationRefused {
        /// Its rule.
        rule: String,
    },
    /// The order was cancelled by someone else (the customer, an operator).
    CancelledElsewhere,
}

impl Failure {
    /// The failure in words, as a cancel reason.
    fn describe(&self) -> String {
        match self {
            Self::ReservationRefused { sku, rule } => {
                format!("stock reservation refused for {sku}: {rule}")
            }
            Self::PaymentDeclined { reason } => format!("payment declined: {reason}"),
            Self::PaymentRefused { rule } => format!("payment refused: {rule}"),
            Self::TimedOut {
                waiting_for: WaitingFor::Payment,
            } => PAYMENT_TIMED_OUT.to_owned(),
            Self::TimedOut {
                waiting_for: WaitingFor::Stock,
            } => RESERVATION_TIMED_OUT.to_owned(),
            Self::ConfirmationRefused { rule } => format!("confirmation refused: {rule}"),
            Self::CancelledElsewhere => "cancelled by someone else".to_owned(),
        }
    }
}

/// How an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FulfilmentOutcome {
    /// The order is confirmed, its stock reserved and its payment taken.
    Confirmed,
    /// The order is cancelled and everything the saga did is undone.
    Cancelled,
    /// Everything the saga did is undone, but the order refused to be cancelled (see
    /// [`OrderProgress::cancel_refused`]): someone must look at it.
    Compensated,
}

/// The undo the payment needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentUndo {
    /// `VoidPayment`: no money was received.
    Void,
    /// `RefundPayment`: money was received.
    Refund,
}

/// The saga log; the storage format. Facts it learnt (observations, refusals, deadlines)
/// and steps it took (`...Requested`, each the record of a command to send).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data")]
pub enum FulfilmentEvent {
    /// The order was placed: its lines are to be reserved (steps `reserve:{sku}`).
    FulfilmentStarted {
        /// The order.
        order_id: String,
        /// Its customer.
        customer_id: String,
        /// Its lines.
        lines: Vec<FulfilmentLine>,
        /// The total to pay.
        total: i64,
        /// How it is paid.
        payment_method: String,
        /// When it was placed.
        placed_at: DateTime<Utc>,
    },
    /// An event of the order's stream.
    OrderObserved {
        /// Its version.
        version: u64,
        /// What it says.
        order: ObservedOrder,
    },
    /// An event about this order in a line's inventory stream.
    StockObserved {
        /// The line.
        sku: String,
        /// The event's version in `Inventory-{sku}`.
        version: u64,
        /// What it says.
        stock: ObservedStock,
    },
    /// An event of the payment's stream.
    PaymentObserved {
        /// Its version.
        version: u64,
        /// What it says.
        payment: ObservedPayment,
    },
    /// A line's `ReserveStock` was rejected.
    ReservationRefused {
        /// The line.
        sku: String,
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// A line's `ReleaseStock` was rejected: the line is left as it is.
    ReleaseFailed {
        /// The line.
        sku: String,
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// `AuthorizePayment` was rejected.
    PaymentRefused {
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// `VoidPayment` / `RefundPayment` was rejected: the payment is left as it is.
    PaymentUndoFailed {
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// `ConfirmOrder` was rejected.
    ConfirmationRefused {
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// `CancelOrder` was rejected.
    CancellationRefused {
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// The deadline passed.
    FulfilmentTimedOut {
        /// What the instance was waiting for.
        waiting_for: WaitingFor,
        /// When the runner saw it pass.
        at: DateTime<Utc>,
    },
    /// Step `authorize-payment`.
    PaymentRequested {
        /// Amount to authorise.
        amount: i64,
        /// Method.
        method: String,
        /// When the instance started waiting for it: the last reservation.
        since: DateTime<Utc>,
    },
    /// Step `confirm-order`.
    ConfirmationRequested {},
    /// Step `void-payment` / `refund-payment`.
    PaymentUndoRequested {
        /// Which.
        undo: PaymentUndo,
    },
    /// Step `release:{sku}`.
    ReleaseRequested {
        /// The line.
        sku: String,
    },
    /// Step `cancel-order`.
    CancellationRequested {
        /// The reason given to the order.
        reason: String,
    },
    /// The instance reached an outcome.
    FulfilmentCompleted {
        /// Which.
        outcome: FulfilmentOutcome,
    },
}

impl DomainEvent for FulfilmentEvent {}

// ---------------------------------------------------------------------------------------------
// state
// ---------------------------------------------------------------------------------------------

/// Where a line is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LineProgress {
    /// Units to reserve.
    pub quantity: i64,
    /// Version of the last event of `Inventory-{sku}` about this order applied (0: none).
    pub version: u64,
    /// What the inventory last said about this order (`None`: nothing yet).
    pub stock: Option<ObservedStock>,
    /// When it was reserved, once it was.
    pub reserved_at: Option<DateTime<Utc>>,
    /// The rule that refused the reservation, if one did.
    pub refused: Option<String>,
    /// Whether the release was asked for.
    pub release_requested: bool,
    /// The rule that refused the release, if one did.
    pub release_failed: Option<String>,
}

impl LineProgress {
    /// No answer to the reservation yet: its `ReserveStock` is in flight.
    fn in_flight(&self) -> bool {
        self.stock.is_none() && self.refused.is_none()
    }

    /// The order holds stock here that the saga has not given up on releasing.
    fn held(&self) -> bool {
        matches!(self.stock, Some(ObservedStock::Reserved { .. })) && self.release_failed.is_none()
    }
}

/// The payment step as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Amount to authorise.
    pub amount: i64,
    /// Method.
    pub method: String,
    /// When the instance started waiting for it.
    pub since: DateTime<Utc>,
}

/// Where the payment is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PaymentProgress {
    /// The authorisation asked for, once it was.
    pub requested: Option<PaymentRequest>,
    /// Version of the last event of `Payment-{id}` applied (0: none).
    pub version: u64,
    /// What the payment last said.
    pub observed: Option<ObservedPayment>,
    /// The rule that refused the authorisation, if one did.
    pub refused: Option<String>,
    /// The undo asked for, once it was.
    pub undo: Option<PaymentUndo>,
    /// The rule that refused the undo, if one did.
    pub undo_failed: Option<String>,
}

impl PaymentProgress {
    /// The undo the payment needs now, if any: a void while no money was received (an
    /// unanswered authorisation included, so that a late one is refused), a refund once it
    /// was.
    fn undo_needed(&self) -> Option<PaymentUndo> {
        if self.undo_failed.is_some() {
            return None;
        }
        match &self.observed {
            Some(ObservedPayment::Received { .. }) => Some(PaymentUndo::Refund),
            Some(ObservedPayment::Pending { .. } | ObservedPayment::Authorized { .. }) => {
                Some(PaymentUndo::Void)
            }
            Some(
                ObservedPayment::Declined { .. }
                | ObservedPayment::Voided
                | ObservedPayment::Refunded,
            ) => None,
            None => self.requested.as_ref().map(|_| PaymentUndo::Void),
        }
    }
}

/// Where the order is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderProgress {
    /// Version of the last event of `Order-{id}` applied (0: none after the placing).
    pub version: u64,
    /// What the order last said after it was placed.
    pub observed: Option<ObservedOrder>,
    /// Whether the confirmation was asked for.
    pub confirm_requested: bool,
    /// The rule that refused the confirmation, if one did.
    pub confirm_refused: Option<String>,
    /// The cancellation asked for (its reason), once it was.
    pub cancel_requested: Option<String>,
    /// The rule that refused the cancellation (other than "already cancelled"), if one did.
    pub cancel_refused: Option<String>,
}

/// What an instance knows, folded from its log.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FulfilmentState {
    /// The order, once started (`None`: no instance).
    pub order_id: Option<String>,
    /// Its customer.
    pub customer_id: String,
    /// The total to pay.
    pub total: i64,
    /// How it is paid.
    pub payment_method: String,
    /// When the order was placed.
    pub placed_at: Option<DateTime<Utc>>,
    /// The lines, by sku.
    pub lines: BTreeMap<String, LineProgress>,
    /// The payment.
    pub payment: PaymentProgress,
    /// The order.
    pub order: OrderProgress,
    /// Why it compensates (empty: it does not).
    pub failures: BTreeSet<Failure>,
    /// How it ended, once it did (a confirmed order cancelled later ends again, cancelled).
    pub outcome: Option<FulfilmentOutcome>,
}

impl FulfilmentState {
    /// Whether the instance exists.
    pub fn is_started(&self) -> bool {
        self.order_id.is_some()
    }

    /// Whether it undoes what it did: something failed, and the order was not confirmed
    /// (a confirmed order is undone only by its cancellation).
    pub fn is_compensating(&self) -> bool {
        !self.failures.is_empty()
            && (self.outcome != Some(FulfilmentOutcome::Confirmed) || self.order_is_cancelled())
    }

    /// Whether the order is known to be cancelled.
    pub fn order_is_cancelled(&self) -> bool {
        matches!(self.order.observed, Some(ObservedOrder::Cancelled { .. }))
            || self.failures.contains(&Failure::CancelledElsewhere)
    }

    fn order_is_confirmed(&self) -> bool {
        self.order.observed == Some(ObservedOrder::Confirmed)
    }

    fn all_reserved(&self) -> bool {
        self.lines.values().all(|l| l.stock.is_some())
    }

    fn is_paid(&self) -> bool {
        self.total == 0
            || self
                .payment
                .observed
                .as_ref()
                .is_some_and(ObservedPayment::is_paid)
    }

    /// What it waits for that has a deadline, if anything.
    pub fn waiting_for(&self) -> Option<WaitingFor> {
        if !self.is_started() || self.is_compensating() || self.outcome.is_some() {
            return None;
        }
        if !self.all_reserved() {
            return Some(WaitingFor::Stock);
        }
        (self.payment.requested.is_some() && !self.is_paid()).then_some(WaitingFor::Payment)
    }

    /// The reason the order is cancelled with: every failure, in words.
    pub fn cancel_reason(&self) -> String {
        let reasons: Vec<String> = self.failures.iter().map(Failure::describe).collect();
        reasons.join("; ")
    }
}

// ---------------------------------------------------------------------------------------------
// the aggregate
// ---------------------------------------------------------------------------------------------

impl Aggregate for OrderFulfilment {
    const CATEGORY: &'static str = "OrderFulfilment";

    type Event = FulfilmentEvent;
    type State = FulfilmentState;
    type Command = FulfilmentInput;

    fn initial() -> FulfilmentState {
        FulfilmentState::default()
    }

    fn evolve(mut s: FulfilmentState, event: &FulfilmentEvent) -> FulfilmentState {
        match event {
            FulfilmentEvent::FulfilmentStarted {
                order_id,
                customer_id,
                lines,
                total,
                payment_method,
                placed_at,
            } => {
                s.order_id = Some(order_id.clone());
                s.customer_id = customer_id.clone();
                s.total = *total;
                s.payment_method = payment_method.clone();
                s.placed_at = Some(*placed_at);
                for line in lines {
                    s.lines.entry(line.sku.clone()).or_default().quantity = line.quantity;
                }
            }
            FulfilmentEvent::OrderObserved { version, order } => {
                if *version > s.order.version {
                    s.order.version = *version;
                    s.order.observed = Some(order.clone());
                    if let ObservedOrder::Cancelled { by_saga: false, .. } = order {
                        s.failures.insert(Failure::CancelledElsewhere);
                    }
                }
            }
            FulfilmentEvent::StockObserved {
                sku,
                version,
                stock,
            } => {
                if let Some(line) = s.lines.get_mut(sku)
                    && *version > line.version
                {
                    line.version = *version;
                    if let ObservedStock::Reserved { at, .. } = stock {
                        line.reserved_at = Some(*at);
                    }
                    line.stock = Some(stock.clone());
                }
            }
            FulfilmentEvent::PaymentObserved { version, payment } => {
                if *version > s.payment.version {
                    s.payment.version = *version;
                    if let ObservedPayment::Declined { reason } = payment {
                        s.failures.insert(Failure::PaymentDeclined {
                            reason: reason.clone(),
                        });
                    }
                    s.payment.observed = Some(payment.clone());
                }
            }
            FulfilmentEvent::ReservationRefused { sku, rule, .. } => {
                if let Some(line) = s.lines.get_mut(sku) {
                    line.refused = Some(rule.clone());
                    s.failures.insert(Failure::ReservationRefused {
                        sku: sku.clone(),
                        rule: rule.clone(),
                    });
                }
            }
            FulfilmentEvent::ReleaseFailed { sku, rule, .. } => {
                if let Some(line) = s.lines.get_mut(sku) {
                    line.release_failed = Some(rule.clone());
                }
            }
            FulfilmentEvent::PaymentRefused { rule, .. } => {
                s.payment.refused = Some(rule.clone());
                s.failures
                    .insert(Failure::PaymentRefused { rule: rule.clone() });
            }
            FulfilmentEvent::PaymentUndoFailed { rule, .. } => {
                s.payment.undo_failed = Some(rule.clone());
            }
            FulfilmentEvent::ConfirmationRefused { rule, .. } => {
                s.order.confirm_refused = Some(rule.clone());
                s.failures.insert(if rule == ORDER_CANCELLED {
                    Failure::CancelledElsewhere
                } else {
                    Failure::ConfirmationRefused { rule: rule.clone() }
                });
            }
            FulfilmentEvent::CancellationRefused { rule, .. } => {
                if rule == ORDER_ALREADY_CANCELLED {
                    s.failures.insert(Failure::CancelledElsewhere);
                } else {
                    s.order.cancel_refused = Some(rule.clone());
                }
            }
            FulfilmentEvent::FulfilmentTimedOut { waiting_for, .. } => {
                s.failures.insert(Failure::TimedOut {
                    waiting_for: *waiting_for,
                });
            }
            FulfilmentEvent::PaymentRequested {
                amount,
                method,
                since,
            } => {
                s.payment.requested = Some(PaymentRequest {
                    amount: *amount,
                    method: method.clone(),
                    since: *since,
                });
            }
            FulfilmentEvent::ConfirmationRequested {} => s.order.confirm_requested = true,
            FulfilmentEvent::PaymentUndoRequested { undo } => s.payment.undo = Some(*undo),
            FulfilmentEvent::ReleaseRequested { sku } => {
                if let Some(line) = s.lines.get_mut(sku) {
                    line.release_requested = true;
                }
            }
            FulfilmentEvent::CancellationRequested { reason } => {
                s.order.cancel_requested = Some(reason.clone());
            }
            FulfilmentEvent::FulfilmentCompleted { outcome } => s.outcome = Some(*outcome),
        }
        s
    }

    fn decide(
        state: &FulfilmentState,
        input: &FulfilmentInput,
    ) -> Result<Vec<FulfilmentEvent>, Rejection> {
        let facts = match input {
            FulfilmentInput::OrderPlaced { .. } if state.is_started() => return Ok(vec![]),
            FulfilmentInput::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total,
                payment_method,
                placed_at,
            } => start(
                order_id,
                customer_id,
                lines,
                *total,
                payment_method,
                *placed_at,
            ),
            // An event about an order with no instance (a reservation made by hand, say) is
            // none of the saga's business.
            _ if !state.is_started() => return Ok(vec![]),
            FulfilmentInput::OrderObserved { version, order } => {
                vec![FulfilmentEvent::OrderObserved {
                    version: *version,
                    order: order.clone(),
                }]
            }
            FulfilmentInput::StockObserved {
                sku,
                version,
                stock,
            } => vec![FulfilmentEvent::StockObserved {
                sku: sku.clone(),
                version: *version,
                stock: stock.clone(),
            }],
            FulfilmentInput::PaymentObserved { version, payment } => {
                vec![FulfilmentEvent::PaymentObserved {
                    version: *version,
                    payment: payment.clone(),
                }]
            }
            FulfilmentInput::Refused {
                command,
                rule,
                message,
            } => refusal(state, command, rule, message).into_iter().collect(),
            FulfilmentInput::TimedOut { at } => state
                .waiting_for()
                .map(|waiting_for| FulfilmentEvent::FulfilmentTimedOut {
                    waiting_for,
                    at: *at,
                })
                .into_iter()
                .collect(),
        };
        // A fact already known (a redelivery, an observation older than the one recorded)
        // changes nothing and is not recorded again; the steps it led to were taken when it
        // was first seen.
        let learnt = Self::fold(state.clone(), facts.iter());
        if learnt == *state {
            return Ok(vec![]);
        }
        Ok(advance(learnt, facts))
    }
}

/// The rule of `ConfirmOrder` on a cancelled order.
const ORDER_CANCELLED: &str = "order-cancelled";
/// The rule of `CancelOrder` on an order cancelled for another reason.
const ORDER_ALREADY_CANCELLED: &str = "order-already-cancelled";
/// The rule of `VoidPayment` once the money was received.
const PAYMENT_ALREADY_RECEIVED: &str = "payment-already-received";

fn start(
    order_id: &str,
    customer_id: &str,
    lines: &[FulfilmentLine],
    total: i64,
    payment_method: &str,
    placed_at: DateTime<Utc>,
) -> Vec<FulfilmentEvent> {
    let mut events = vec![FulfilmentEvent::FulfilmentStarted {
        order_id: order_id.to_owned(),
        customer_id: customer_id.to_owned(),
        lines: lines.to_vec(),
        total,
        payment_method: payment_method.to_owned(),
        placed_at,
    }];
    // A sku that cannot name an inventory stream can never be reserved: say so now rather
    // than wait for the deadline.
    for line in lines {
        if let Err(e) = StreamId::new("tenant", Inventory::CATEGORY, &line.sku) {
            events.push(FulfilmentEvent::ReservationRefused {
                sku: line.sku.clone(),
                rule: "invalid-id".to_owned(),
                message: e.to_string(),
            });
        }
    }
    events
}

/// The fact a refusal of `command` tells, if it still concerns the instance.
fn refusal(
    s: &FulfilmentState,
    command: &FulfilmentCommand,
    rule: &str,
    message: &str,
) -> Option<FulfilmentEvent> {
    let (rule, message) = (rule.to_owned(), message.to_owned());
    match command {
        FulfilmentCommand::Inventory { sku, command } => {
            let line = s.lines.get(sku)?;
            match command {
                InventoryCommand::ReserveStock { .. } if line.in_flight() => {
                    Some(FulfilmentEvent::ReservationRefused {
                        sku: sku.clone(),
                        rule,
                        message,
                    })
                }
                InventoryCommand::ReleaseStock { .. }
                    if line.release_requested && line.release_failed.is_none() =>
                {
                    Some(FulfilmentEvent::ReleaseFailed {
                        sku: sku.clone(),
                        rule,
                        message,
                    })
                }
                _ => None,
            }
        }
        FulfilmentCommand::Payment { command, .. } => match command {
            PaymentCommand::AuthorizePayment { .. }
                if s.payment.requested.is_some() && s.payment.refused.is_none() =>
            {
                Some(FulfilmentEvent::PaymentRefused { rule, message })
            }
            // The money arrived before the void: its `PaymentReceived` turns the undo into a
            // refund, so this refusal is only a race to wait out.
            PaymentCommand::VoidPayment { .. } if rule == PAYMENT_ALREADY_RECEIVED => None,
            PaymentCommand::VoidPayment { .. } | PaymentCommand::RefundPayment {}
                if s.payment.undo.is_some() && s.payment.undo_failed.is_none() =>
            {
                Some(FulfilmentEvent::PaymentUndoFailed { rule, message })
            }
            _ => None,
        },
        FulfilmentCommand::Order { command, .. } => match command {
            OrderCommand::ConfirmOrder {} if s.order.confirm_requested => {
                Some(FulfilmentEvent::ConfirmationRefused { rule, message })
            }
            OrderCommand::CancelOrder { .. } if s.order.cancel_requested.is_some() => {
                Some(FulfilmentEvent::CancellationRefused { rule, message })
            }
            _ => None,
        },
    }
}

/// `facts` followed by every step they lead to from `state` (which already includes them).
fn advance(mut state: FulfilmentState, mut events: Vec<FulfilmentEvent>) -> Vec<FulfilmentEvent> {
    // Each step changes the state so that it is not taken again; the bound only guards
    // against a bug turning this into an endless loop.
    for _ in 0..(state.lines.len() + 8) {
        let steps = next_steps(&state);
        if steps.is_empty() {
            break;
        }
        state = OrderFulfilment::fold(state, steps.iter());
        events.extend(steps);
    }
    events
}

/// The steps `s` calls for now (empty when it waits or is done).
fn next_steps(s: &FulfilmentState) -> Vec<FulfilmentEvent> {
    if s.is_compensating() {
        compensation_steps(s)
    } else {
        forward_steps(s)
    }
}

fn forward_steps(s: &FulfilmentState) -> Vec<FulfilmentEvent> {
    if !s.all_reserved() {
        return vec![];
    }
    if s.total > 0 && s.payment.requested.is_none() {
        // The last reservation's time, not the time this input arrived: the state must not
        // depend on the order in which the reservations were seen.
        let since = s
            .lines
            .values()
            .filter_map(|l| l.reserved_at)
            .max()
            .or(s.placed_at)
            .unwrap_or_default();
        return vec![FulfilmentEvent::PaymentRequested {
            amount: s.total,
            method: s.payment_method.clone(),
            since,
        }];
    }
    if !s.is_paid() {
        return vec![];
    }
    if !s.order.confirm_requested {
        return vec![FulfilmentEvent::ConfirmationRequested {}];
    }
    if s.order_is_confirmed() && s.outcome != Some(FulfilmentOutcome::Confirmed) {
        return vec![FulfilmentEvent::FulfilmentCompleted {
            outcome: FulfilmentOutcome::Confirmed,
        }];
    }
    vec![]
}

fn compensation_steps(s: &FulfilmentState) -> Vec<FulfilmentEvent> {
    // 1. the payment (done last, undone first)
    if let Some(undo) = s.payment.undo_needed() {
        if s.payment.undo != Some(undo) {
            return vec![FulfilmentEvent::PaymentUndoRequested { undo }];
        }
        return vec![];
    }
    // 2. the stock: answers to reservations in flight first, then release what is held
    if s.lines.values().any(LineProgress::in_flight) {
        return vec![];
    }
    let releases: Vec<FulfilmentEvent> = s
        .lines
        .iter()
        .rev()
        .filter(|(_, l)| l.held() && !l.release_requested)
        .map(|(sku, _)| FulfilmentEvent::ReleaseRequested { sku: sku.clone() })
        .collect();
    if !releases.is_empty() {
        return releases;
    }
    if s.lines.values().any(LineProgress::held) {
        return vec![];
    }
    // 3. the order
    let cancelled = s.order_is_cancelled();
    if !cancelled && s.order.cancel_refused.is_none() {
        if s.order.cancel_requested.is_none() {
            return vec![FulfilmentEvent::CancellationRequested {
                reason: s.cancel_reason(),
            }];
        }
        return vec![];
    }
    let outcome = if cancelled {
        FulfilmentOutcome::Cancelled
    } else {
        FulfilmentOutcome::Compensated
    };
    if s.outcome != Some(outcome) {
        return vec![FulfilmentEvent::FulfilmentCompleted { outcome }];
    }
    vec![]
}

// ---------------------------------------------------------------------------------------------
// the saga
// ---------------------------------------------------------------------------------------------

impl Saga for OrderFulfilment {
    type Send = FulfilmentCommand;

    /// `OrderPlaced` needs the order's history: it does not carry the lines (and schema 1
    /// not even the method), so the saga folds the order up to it.
    fn needs_history(event: &EventEnvelope) -> bool {
        event.event_type == "OrderPlaced" && category_of(event) == Some(Order::CATEGORY)
    }

    fn input(
        event: &EventEnvelope,
        history: &[EventEnvelope],
    ) -> Result<Option<(String, FulfilmentInput)>, String> {
        if !INPUT_EVENT_TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        let stream = StreamId::parse(&event.stream_id).map_err(|e| e.to_string())?;
        let id = stream.id().to_owned();
        let version = event.version;
        let of = |types: &[&str]| types.contains(&event.event_type.as_str());
        Ok(match stream.category() {
            c if c == Order::CATEGORY && of(Order::EVENT_TYPES) => {
                match decode::<OrderEvent>(event)? {
                    OrderEvent::OrderPlaced {
                        total,
                        payment_method,
                    } => Some((
                        id.clone(),
                        placed(&id, event, history, total, payment_method)?,
                    )),
                    OrderEvent::OrderConfirmed {} => Some((
                        id,
                        FulfilmentInput::OrderObserved {
                            version,
                            order: ObservedOrder::Confirmed,
                        },
                    )),
                    OrderEvent::OrderCancelled { reason } => {
                        let saga_stream = format!("{}/{}-{id}", stream.tenant(), Self::CATEGORY);
                        let own = Pending {
                            step: CANCEL_STEP.to_owned(),
                            command: (),
                        }
                        .command_id(&saga_stream);
                        let by_saga = event.metadata.command_id == own;
                        Some((
                            id,
                            FulfilmentInput::OrderObserved {
                                version,
                                order: ObservedOrder::Cancelled { reason, by_saga },
                            },
                        ))
                    }
                    _ => None,
                }
            }
            c if c == Inventory::CATEGORY && of(Inventory::EVENT_TYPES) => {
                let (order_id, stock) = match decode::<InventoryEvent>(event)? {
                    InventoryEvent::StockReserved { order_id, quantity } => (
                        order_id,
                        ObservedStock::Reserved {
                            quantity,
                            at: event.occurred_at,
                        },
                    ),
                    InventoryEvent::StockReleased { order_id, .. } => {
                        (order_id, ObservedStock::Released)
                    }
                    InventoryEvent::StockReceived { .. } => return Ok(None),
                };
                Some((
                    order_id,
                    FulfilmentInput::StockObserved {
                        sku: id,
                        version,
                        stock,
                    },
                ))
            }
            c if c == Payment::CATEGORY && of(Payment::EVENT_TYPES) => {
                let payment = match decode::<PaymentEvent>(event)? {
                    PaymentEvent::PaymentPending { amount, .. } => {
                        ObservedPayment::Pending { amount }
                    }
                    PaymentEvent::PaymentAuthorized { amount, .. } => {
                        ObservedPayment::Authorized { amount }
                    }
                    PaymentEvent::PaymentReceived { amount, .. } => {
                        ObservedPayment::Received { amount }
                    }
                    PaymentEvent::PaymentDeclined { reason, .. } => {
                        ObservedPayment::Declined { reason }
                    }
                    PaymentEvent::PaymentVoided { .. } => ObservedPayment::Voided,
                    PaymentEvent::PaymentRefunded { .. } => ObservedPayment::Refunded,
                };
                Some((id, FulfilmentInput::PaymentObserved { version, payment }))
            }
            _ => None,
        })
    }

    fn pending(s: &FulfilmentState) -> Vec<Pending<FulfilmentCommand>> {
        let Some(order_id) = s.order_id.clone() else {
            return vec![];
        };
        let mut out = Vec::new();
        let payment = |command| FulfilmentCommand::Payment {
            order_id: order_id.clone(),
            command,
        };
        let order = |command| FulfilmentCommand::Order {
            order_id: order_id.clone(),
            command,
        };
        let compensating = s.is_compensating();
        if compensating {
            let undone = matches!(
                s.payment.observed,
                Some(ObservedPayment::Voided | ObservedPayment::Refunded)
            );
            if !undone && s.payment.undo_failed.is_none() {
                match s.payment.undo {
                    Some(PaymentUndo::Void) => out.push(Pending {
                        step: VOID_STEP.to_owned(),
                        command: payment(PaymentCommand::VoidPayment {
                            order_id: order_id.clone(),
                        }),
                    }),
                    Some(PaymentUndo::Refund) => out.push(Pending {
                        step: REFUND_STEP.to_owned(),
                        command: payment(PaymentCommand::RefundPayment {}),
                    }),
                    None => {}
                }
            }
            for (sku, line) in s.lines.iter().rev() {
                if line.release_requested && line.held() {
                    out.push(Pending {
                        step: release_step(sku),
                        command: FulfilmentCommand::Inventory {
                            sku: sku.clone(),
                            command: InventoryCommand::ReleaseStock {
                                order_id: order_id.clone(),
                            },
                        },
                    });
                }
            }
            if let Some(reason) = &s.order.cancel_requested
                && !s.order_is_cancelled()
                && s.order.cancel_refused.is_none()
            {
                out.push(Pending {
                    step: CANCEL_STEP.to_owned(),
                    command: order(OrderCommand::CancelOrder {
                        reason: reason.clone(),
                    }),
                });
            }
        }
        // A reservation stays asked for until it is answered, compensating or not: the
        // release that undoes it must come after it.
        for (sku, line) in &s.lines {
            if line.in_flight() {
                out.push(Pending {
                    step: reserve_step(sku),
                    command: FulfilmentCommand::Inventory {
                        sku: sku.clone(),
                        command: InventoryCommand::ReserveStock {
                            order_id: order_id.clone(),
                            quantity: line.quantity,
                        },
                    },
                });
            }
        }
        if !compensating {
            if let Some(request) = &s.payment.requested
                && s.payment.observed.is_none()
                && s.payment.refused.is_none()
            {
                out.push(Pending {
                    step: AUTHORIZE_STEP.to_owned(),
                    command: payment(PaymentCommand::AuthorizePayment {
                        order_id: order_id.clone(),
                        amount: request.amount,
                        method: request.method.clone(),
                    }),
                });
            }
            if s.order.confirm_requested
                && s.order.observed.is_none()
                && s.order.confirm_refused.is_none()
            {
                out.push(Pending {
                    step: CONFIRM_STEP.to_owned(),
                    command: order(OrderCommand::ConfirmOrder {}),
                });
            }
        }
        out
    }

    fn refused(command: &Pending<FulfilmentCommand>, rejection: &Rejection) -> FulfilmentInput {
        FulfilmentInput::Refused {
            command: command.command.clone(),
            rule: rejection.rule.to_string(),
            message: rejection.message.clone(),
        }
    }

    fn waiting_since(s: &FulfilmentState) -> Option<DateTime<Utc>> {
        match s.waiting_for()? {
            WaitingFor::Stock => s.placed_at,
            WaitingFor::Payment => s.payment.requested.as_ref().map(|r| r.since),
        }
    }

    fn timed_out(now: DateTime<Utc>) -> FulfilmentInput {
        FulfilmentInput::TimedOut { at: now }
    }
}

fn category_of(event: &EventEnvelope) -> Option<&str> {
    let (_, rest) = event.stream_id.split_once('/')?;
    rest.split_once('-').map(|(category, _)| category)
}

/// The event of `envelope`, lifted to the current schema first (the runner upcasts what it
/// reads, but an event carried by a notification may be as written).
fn decode<E: DomainEvent>(envelope: &EventEnvelope) -> Result<E, String> {
    let (data, _) = registry::upcasters().upcast_ref(
        &envelope.event_type,
        envelope.schema_version,
        &envelope.data,
    );
    E::decode(&envelope.event_type, &data).map_err(|e| e.to_string())
}

/// The start input of the order placed at `event`: its lines come from the order folded
/// from `history` up to and including `event`, whatever schema `event` was written in.
fn placed(
    order_id: &str,
    event: &EventEnvelope,
    history: &[EventEnvelope],
    total: i64,
    payment_method: String,
) -> Result<FulfilmentInput, String> {
    let mut order = Order::initial();
    let mut reached = false;
    for earlier in history
        .iter()
        .filter(|e| e.stream_id == event.stream_id && e.version <= event.version)
    {
        if !Order::EVENT_TYPES.contains(&earlier.event_type.as_str()) {
            continue;
        }
        order = Order::evolve(order, &decode::<OrderEvent>(earlier)?);
        reached |= earlier.version == event.version;
    }
    if !reached {
        return Err(format!(
            "{}@{} (OrderPlaced) needs its stream's history up to it; got {} events",
            event.stream_id,
            event.version,
            history.len()
        ));
    }
    Ok(FulfilmentInput::OrderPlaced {
        order_id: order_id.to_owned(),
        customer_id: order.customer_id.unwrap_or_default(),
        lines: order
            .lines
            .iter()
            .map(|(sku, line)| FulfilmentLine {
                sku: sku.clone(),
                quantity: line.quantity,
            })
            .collect(),
        total,
        payment_method,
        placed_at: event.occurred_at,
    })
}

/// Builds a saga input from its type name and JSON data (for tools and tests; clients cannot
/// submit them: [`RegisteredAggregate::parse_http_command`] refuses every one).
pub fn parse_input(
    input_type: &str,
    data: serde_json::Value,
) -> Result<FulfilmentInput, crate::CommandParseError> {
    <OrderFulfilment as RegisteredAggregate>::parse_command(input_type, data)
}
