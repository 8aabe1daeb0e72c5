//! What an instance knows, folded from its log.

use super::*;
use crate::values::{CustomerId, Money, OrderId, Sku};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    pub(super) fn in_flight(&self) -> bool {
        self.stock.is_none() && self.refused.is_none()
    }

    /// The order holds stock here that the saga has not given up on releasing.
    pub(super) fn held(&self) -> bool {
        matches!(self.stock, Some(ObservedStock::Reserved { .. })) && self.release_failed.is_none()
    }
}

/// The payment step as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// Amount to authorise.
    pub amount: Money,
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
    pub(super) fn undo_needed(&self) -> Option<PaymentUndo> {
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
    pub order_id: Option<OrderId>,
    /// Its customer, once started.
    pub customer_id: Option<CustomerId>,
    /// The total to pay.
    pub total: Money,
    /// How it is paid.
    pub payment_method: String,
    /// When the order was placed.
    pub placed_at: Option<DateTime<Utc>>,
    /// The lines, by sku.
    pub lines: BTreeMap<Sku, LineProgress>,
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

    pub(super) fn order_is_confirmed(&self) -> bool {
        self.order.observed == Some(ObservedOrder::Confirmed)
    }

    pub(super) fn all_reserved(&self) -> bool {
        self.lines.values().all(|l| l.stock.is_some())
    }

    pub(super) fn is_paid(&self) -> bool {
        self.total == Money::ZERO
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
