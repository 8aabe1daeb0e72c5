//! The saga log: what an instance learnt and the steps it took, and why and how it ended.

use super::*;
use crate::values::{Money, Sku};
use chrono::{DateTime, Utc};
use eventfold::DomainEvent;
use serde::{Deserialize, Serialize};
use strum::VariantNames;

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
        sku: Sku,
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
    pub(super) fn describe(&self) -> String {
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
///
/// The facts the saga is told are recorded as told: their payloads are the inputs' (a newtype
/// variant's `data` is its struct's fields, as a struct variant's was). Unknown fields in
/// stored data are ignored (unlike an input's, [`FulfilmentInput`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data")]
pub enum FulfilmentEvent {
    /// The order was placed: its lines are to be reserved (steps `reserve:{sku}`).
    FulfilmentStarted(PlacedOrder),
    /// An event of the order's stream.
    OrderObserved(OrderObservation),
    /// An event about this order in a line's inventory stream.
    StockObserved(StockObservation),
    /// An event of the payment's stream.
    PaymentObserved(PaymentObservation),
    /// A line's `ReserveStock` was rejected.
    ReservationRefused {
        /// The line.
        sku: Sku,
        /// The rule.
        rule: String,
        /// The explanation.
        message: String,
    },
    /// A line's `ReleaseStock` was rejected: the line is left as it is.
    ReleaseFailed {
        /// The line.
        sku: Sku,
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
        amount: Money,
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
        sku: Sku,
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
