//! The `Payment` aggregate: authorising, receiving, voiding and refunding the payment of
//! one order.
//!
//! Stream: `{tenant}/Payment-{order_id}` (the aggregate id is the order id). The payment
//! provider is simulated by a deterministic rule so that `decide` stays pure: an
//! authorisation is declined when the amount exceeds [`AUTHORIZATION_LIMIT`] (reason
//! [`DECLINE_AMOUNT_OVER_LIMIT`]) or the method is [`DECLINED_METHOD`] (reason
//! [`DECLINE_CARD_DECLINED`]). A decline is not a rejection: it is the event
//! [`PaymentEvent::PaymentDeclined`], which the order saga reacts to. After a decline the
//! payment may be attempted again with another amount or method.
//!
//! Asynchronous payment: an authorisation by [`PENDING_METHOD`] (`bank_transfer`) is
//! neither authorised nor declined but pending ([`PaymentEvent::PaymentPending`]) until the
//! money arrives: `ReceivePayment` of exactly the pending amount
//! ([`PaymentEvent::PaymentReceived`]). `VoidPayment` gives up a payment whose money has not
//! been received (none yet, pending, declined or authorised): after it the payment is over,
//! and money that arrives later, or a late authorisation, is refused (`payment-voided`).
//! Received money goes back with `RefundPayment`.
//!
//! Rules (the `rule` of each [`Rejection`]):
//!
//! | rule | when |
//! |---|---|
//! | `order-id-required` | `AuthorizePayment` / `VoidPayment` with an empty order id |
//! | `order-id-invalid`, `method-invalid` | `AuthorizePayment` (or `VoidPayment`, for the order id) with an order id or method that breaks the id rule ([`crate::values`]) |
//! | `method-required` | `AuthorizePayment` with an empty method |
//! | `amount-must-be-positive` | `AuthorizePayment` / `ReceivePayment` with amount ≤ 0 |
//! | `order-id-mismatch` | `AuthorizePayment` / `VoidPayment` for another order than earlier attempts |
//! | `payment-already-authorized` | `AuthorizePayment` of another amount once authorised |
//! | `payment-pending` | `AuthorizePayment` of another amount while a payment is pending |
//! | `payment-already-received` | `AuthorizePayment` of another amount, or `VoidPayment`, once the money was received |
//! | `payment-already-refunded` | `AuthorizePayment` / `ReceivePayment` once refunded |
//! | `payment-voided` | `AuthorizePayment` / `ReceivePayment` / `RefundPayment` once voided |
//! | `payment-not-pending` | `ReceivePayment` when no payment is pending (none, declined or authorised) |
//! | `payment-amount-mismatch` | `ReceivePayment` of another amount than the pending (or received) one |
//! | `payment-not-authorized` | `RefundPayment` of a payment whose money was never taken (none, declined or pending) |
//!
//! Order ids are typed ([`OrderId`]): the `order-id-required` / `order-id-invalid`
//! rejections come from [`parse_command`] ([`CommandParseError::Rejected`]), before any state
//! is read; so does nothing else. Amounts are [`Money`].
//!
//! Already done (no events): `AuthorizePayment` of the same amount once authorised, pending
//! or received; `AuthorizePayment` with the same amount and method as the attempt just
//! declined; `ReceivePayment` of the received amount once received; `VoidPayment` once
//! voided or refunded; `RefundPayment` once refunded.

use crate::command::{CommandParseError, RegisteredAggregate};
use crate::values::{Money, OrderId, require_key, require_text};
use eventfold::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use strum::VariantNames;

/// Amounts above this are declined.
pub const AUTHORIZATION_LIMIT: Money = Money::from_minor(1_000_000);
/// The bound, in bytes of serialized JSON, of a payment's state: a few fields whatever the
/// number of attempts (the longest order id and method). Checked by the state-size tests.
pub const STATE_BOUND_BYTES: usize = 2 * 1024;

/// The payment method that is always declined.
pub const DECLINED_METHOD: &str = "card_declined";
/// Decline reason when the amount exceeds [`AUTHORIZATION_LIMIT`].
pub const DECLINE_AMOUNT_OVER_LIMIT: &str = "amount-over-limit";
/// Decline reason when the method is [`DECLINED_METHOD`].
pub const DECLINE_CARD_DECLINED: &str = "card-declined";
/// The payment method that stays pending until `ReceivePayment`.
pub const PENDING_METHOD: &str = "bank_transfer";

/// The payment aggregate (stream category `Payment`, one stream per order id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Payment;

/// What callers ask of an order's payment. Adjacently tagged:
/// `{"type": "AuthorizePayment", "data": {..}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data", deny_unknown_fields)]
pub enum PaymentCommand {
    /// Asks the (simulated) provider to authorise an amount.
    AuthorizePayment {
        /// The order being paid (the aggregate id).
        order_id: OrderId,
        /// Amount; must be > 0.
        amount: Money,
        /// Payment method, e.g. `card`.
        method: String,
    },
    /// Gives an authorised (or received) payment back.
    RefundPayment {},
    /// Records that the pending amount arrived (e.g. the bank transfer was credited).
    ReceivePayment {
        /// Amount received; must be the pending amount.
        amount: Money,
    },
    /// Gives up a payment whose money has not been received; later money is refused.
    VoidPayment {
        /// The order being paid (the aggregate id).
        order_id: OrderId,
    },
}

impl RegisteredAggregate for Payment {}

/// Builds a payment command from its type name and JSON data. `RefundPayment` accepts
/// `null` (absent) or `{}` as data; unknown fields are refused.
pub fn parse_command(
    command_type: &str,
    data: serde_json::Value,
) -> Result<PaymentCommand, CommandParseError> {
    <Payment as RegisteredAggregate>::parse_command(command_type, data)
}

/// What happened to an order's payment; the storage format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, VariantNames)]
#[serde(tag = "type", content = "data")]
pub enum PaymentEvent {
    /// The amount was authorised.
    PaymentAuthorized {
        /// The order being paid.
        order_id: OrderId,
        /// Amount authorised.
        amount: Money,
        /// Payment method used.
        method: String,
    },
    /// The provider declined the attempt.
    PaymentDeclined {
        /// The order being paid.
        order_id: OrderId,
        /// Amount attempted.
        amount: Money,
        /// Payment method attempted.
        method: String,
        /// Why it was declined, e.g. [`DECLINE_CARD_DECLINED`].
        reason: String,
    },
    /// The authorised amount was given back.
    PaymentRefunded {
        /// The order that was paid.
        order_id: OrderId,
        /// Amount refunded.
        amount: Money,
    },
    /// The attempt waits for the money ([`PENDING_METHOD`]).
    PaymentPending {
        /// The order being paid.
        order_id: OrderId,
        /// Amount due.
        amount: Money,
        /// Payment method, e.g. [`PENDING_METHOD`].
        method: String,
    },
    /// The pending amount arrived.
    PaymentReceived {
        /// The order that was paid.
        order_id: OrderId,
        /// Amount received.
        amount: Money,
    },
    /// The payment was given up before any money was received.
    PaymentVoided {
        /// The order that was to be paid.
        order_id: OrderId,
        /// Amount of the attempt voided (0 when none was made).
        amount: Money,
    },
}

impl DomainEvent for PaymentEvent {}

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// The last attempt was authorised.
    Authorized,
    /// The last attempt was declined (another may follow).
    Declined,
    /// The authorised (or received) amount was refunded.
    Refunded,
    /// Waiting for the money of the last attempt.
    Pending,
    /// The pending amount arrived.
    Received,
    /// Given up before money was received.
    Voided,
}

/// What an order's payment knows, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PaymentState {
    /// `None` until the first authorisation attempt.
    pub status: Option<PaymentStatus>,
    /// The order being paid (`None` until the first attempt).
    pub order_id: Option<OrderId>,
    /// Amount of the last attempt (0 before any attempt).
    pub amount: Money,
    /// Method of the last attempt (`None` before any attempt).
    pub method: Option<String>,
    /// Why the last attempt was declined, if it was.
    pub decline_reason: Option<String>,
}

impl Aggregate for Payment {
    const CATEGORY: &'static str = "Payment";

    type Event = PaymentEvent;
    type State = PaymentState;
    type Command = PaymentCommand;

    fn initial() -> PaymentState {
        PaymentState::default()
    }

    /// `AuthorizePayment` usually starts the payment's stream (the saga's first step for an
    /// order): decided without reading it first; a later attempt finds the stream at the
    /// append and is decided again on what it holds.
    fn assume_new(command: &PaymentCommand) -> bool {
        matches!(command, PaymentCommand::AuthorizePayment { .. })
    }

    fn evolve(mut state: PaymentState, event: &PaymentEvent) -> PaymentState {
        match event {
            PaymentEvent::PaymentAuthorized {
                order_id,
                amount,
                method,
            } => {
                state.status = Some(PaymentStatus::Authorized);
                state.order_id = Some(order_id.clone());
                state.amount = *amount;
                state.method = Some(method.clone());
                state.decline_reason = None;
            }
            PaymentEvent::PaymentDeclined {
                order_id,
                amount,
                method,
                reason,
            } => {
                state.status = Some(PaymentStatus::Declined);
                state.order_id = Some(order_id.clone());
                state.amount = *amount;
                state.method = Some(method.clone());
                state.decline_reason = Some(reason.clone());
            }
            PaymentEvent::PaymentRefunded { .. } => {
                state.status = Some(PaymentStatus::Refunded);
            }
            PaymentEvent::PaymentPending {
                order_id,
                amount,
                method,
            } => {
                state.status = Some(PaymentStatus::Pending);
                state.order_id = Some(order_id.clone());
                state.amount = *amount;
                state.method = Some(method.clone());
                state.decline_reason = None;
            }
            PaymentEvent::PaymentReceived { .. } => {
                state.status = Some(PaymentStatus::Received);
            }
            PaymentEvent::PaymentVoided { order_id, .. } => {
                state.status = Some(PaymentStatus::Voided);
                state.order_id = Some(order_id.clone());
            }
        }
        state
    }

    fn decide(
        state: &PaymentState,
        command: &PaymentCommand,
    ) -> Result<Vec<PaymentEvent>, Rejection> {
        match command {
            PaymentCommand::AuthorizePayment {
                order_id,
                amount,
                method,
            } => decide_authorize(state, order_id, *amount, method),
            PaymentCommand::RefundPayment {} => decide_refund(state),
            PaymentCommand::ReceivePayment { amount } => decide_receive(state, *amount),
            PaymentCommand::VoidPayment { order_id } => decide_void(state, order_id),
        }
    }
}

fn decide_authorize(
    state: &PaymentState,
    order_id: &OrderId,
    amount: Money,
    method: &str,
) -> Result<Vec<PaymentEvent>, Rejection> {
    require_text(method, "method-required", "payment method")?;
    require_key(method, "method-invalid", "payment method")?;
    if !amount.is_positive() {
        return Err(Rejection::new(
            "amount-must-be-positive",
            format!("amount must be greater than zero, got {amount}"),
        ));
    }
    require_same_order(state, order_id)?;
    match state.status {
        None => Ok(vec![attempt(order_id, amount, method)]),
        Some(PaymentStatus::Declined)
            if state.amount == amount && state.method.as_deref() == Some(method) =>
        {
            Ok(vec![])
        }
        Some(PaymentStatus::Declined) => Ok(vec![attempt(order_id, amount, method)]),
        Some(PaymentStatus::Authorized) if state.amount == amount => Ok(vec![]),
        Some(PaymentStatus::Authorized) => Err(Rejection::new(
            "payment-already-authorized",
            format!("the payment is already authorised for {}", state.amount),
        )),
        Some(PaymentStatus::Pending) if state.amount == amount => Ok(vec![]),
        Some(PaymentStatus::Pending) => Err(Rejection::new(
            "payment-pending",
            format!("a payment of {} is pending", state.amount),
        )),
        Some(PaymentStatus::Received) if state.amount == amount => Ok(vec![]),
        Some(PaymentStatus::Received) => Err(Rejection::new(
            "payment-already-received",
            format!("a payment of {} was received", state.amount),
        )),
        Some(PaymentStatus::Refunded) => Err(refunded()),
        Some(PaymentStatus::Voided) => Err(voided()),
    }
}

fn refunded() -> Rejection {
    Rejection::new("payment-already-refunded", "the payment was refunded")
}

fn voided() -> Rejection {
    Rejection::new(
        "payment-voided",
        "the payment was voided (timed out or given up): nothing is due",
    )
}

fn require_same_order(state: &PaymentState, order_id: &OrderId) -> Result<(), Rejection> {
    match &state.order_id {
        Some(existing) if existing != order_id => Err(Rejection::new(
            "order-id-mismatch",
            format!("this payment is for order '{existing}', not '{order_id}'"),
        )),
        _ => Ok(()),
    }
}

/// The simulated provider's answer to an authorisation attempt.
fn attempt(order_id: &OrderId, amount: Money, method: &str) -> PaymentEvent {
    let decline_reason = if amount > AUTHORIZATION_LIMIT {
        Some(DECLINE_AMOUNT_OVER_LIMIT)
    } else if method == DECLINED_METHOD {
        Some(DECLINE_CARD_DECLINED)
    } else {
        None
    };
    match decline_reason {
        Some(reason) => PaymentEvent::PaymentDeclined {
            order_id: order_id.clone(),
            amount,
            method: method.to_owned(),
            reason: reason.to_owned(),
        },
        None if method == PENDING_METHOD => PaymentEvent::PaymentPending {
            order_id: order_id.clone(),
            amount,
            method: method.to_owned(),
        },
        None => PaymentEvent::PaymentAuthorized {
            order_id: order_id.clone(),
            amount,
            method: method.to_owned(),
        },
    }
}

fn decide_refund(state: &PaymentState) -> Result<Vec<PaymentEvent>, Rejection> {
    // Every event that sets a status names the order, so a status comes with an order id.
    match (state.status, &state.order_id) {
        (Some(PaymentStatus::Authorized | PaymentStatus::Received), Some(order_id)) => {
            Ok(vec![PaymentEvent::PaymentRefunded {
                order_id: order_id.clone(),
                amount: state.amount,
            }])
        }
        (Some(PaymentStatus::Refunded), _) => Ok(vec![]),
        (Some(PaymentStatus::Declined), _) => Err(Rejection::new(
            "payment-not-authorized",
            "a declined payment cannot be refunded",
        )),
        (Some(PaymentStatus::Pending), _) => Err(Rejection::new(
            "payment-not-authorized",
            "a pending payment has not been received; void it instead",
        )),
        (Some(PaymentStatus::Voided), _) => Err(voided()),
        (None | Some(PaymentStatus::Authorized | PaymentStatus::Received), _) => Err(
            Rejection::new("payment-not-authorized", "no payment has been authorised"),
        ),
    }
}

fn decide_receive(state: &PaymentState, amount: Money) -> Result<Vec<PaymentEvent>, Rejection> {
    if !amount.is_positive() {
        return Err(Rejection::new(
            "amount-must-be-positive",
            format!("amount must be greater than zero, got {amount}"),
        ));
    }
    let mismatch = || {
        Rejection::new(
            "payment-amount-mismatch",
            format!("the payment is of {}, not {amount}", state.amount),
        )
    };
    // Every event that sets a status names the order, so a status comes with an order id.
    match (state.status, &state.order_id) {
        (Some(PaymentStatus::Pending), Some(order_id)) if state.amount == amount => {
            Ok(vec![PaymentEvent::PaymentReceived {
                order_id: order_id.clone(),
                amount,
            }])
        }
        (Some(PaymentStatus::Received), _) if state.amount == amount => Ok(vec![]),
        (Some(PaymentStatus::Pending | PaymentStatus::Received), _) => Err(mismatch()),
        (Some(PaymentStatus::Voided), _) => Err(voided()),
        (Some(PaymentStatus::Refunded), _) => Err(refunded()),
        (None | Some(PaymentStatus::Declined | PaymentStatus::Authorized), _) => Err(
            Rejection::new("payment-not-pending", "no payment is waiting for money"),
        ),
    }
}

fn decide_void(state: &PaymentState, order_id: &OrderId) -> Result<Vec<PaymentEvent>, Rejection> {
    require_same_order(state, order_id)?;
    match state.status {
        None
        | Some(PaymentStatus::Declined | PaymentStatus::Pending | PaymentStatus::Authorized) => {
            Ok(vec![PaymentEvent::PaymentVoided {
                order_id: order_id.clone(),
                amount: state.amount,
            }])
        }
        // Nothing is held any more: what a void asks for is already the case.
        Some(PaymentStatus::Voided | PaymentStatus::Refunded) => Ok(vec![]),
        Some(PaymentStatus::Received) => Err(Rejection::new(
            "payment-already-received",
            format!("{} was received: refund it instead", state.amount),
        )),
    }
}
