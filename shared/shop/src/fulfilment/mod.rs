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

mod aggregate;
mod event;
mod input;
mod saga;
mod state;

// For the links of the module docs to the `Saga` methods.
#[cfg(doc)]
use eventfold_consumers::Saga;

pub use event::*;
pub use input::*;
pub use saga::parse_input;
pub use state::*;

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

/// The bound, in bytes of serialized JSON, of an instance's state: a line per sku of the
/// order (at most [`crate::order::MAX_ORDER_LINES`], skus of the maximum length), the latest
/// observation of each stream and the failures, whatever the number of inputs. Checked by
/// the state-size tests.
pub const STATE_BOUND_BYTES: usize = 48 * 1024;

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
