//! The `Payment` aggregate: authorising and refunding the payment of one order.
//!
//! Stream: `{tenant}/Payment-{order_id}` (the aggregate id is the order id). The payment
//! provider is simulated by a deterministic rule so that `decide` stays pure: an
//! authorisation is declined when the amount exceeds [`AUTHORIZATION_LIMIT`] (reason
//! [`DECLINE_AMOUNT_OVER_LIMIT`]) or the method is [`DECLINED_METHOD`] (reason
//! [`DECLINE_CARD_DECLINED`]). A decline is not a rejection: it is the event
//! [`PaymentEvent::PaymentDeclined`], which the order saga reacts to. After a decline the
//! payment may be attempted again with another amount or method.
//!
//! Rules (the `rule` of each [`Rejection`]):
//!
//! | rule | when |
//! |---|---|
//! | `order-id-required` | `AuthorizePayment` with an empty order id |
//! | `method-required` | `AuthorizePayment` with an empty method |
//! | `amount-must-be-positive` | `AuthorizePayment` with amount ≤ 0 |
//! | `order-id-mismatch` | `AuthorizePayment` for another order than earlier attempts |
//! | `payment-already-authorized` | `AuthorizePayment` of another amount once authorised |
//! | `payment-already-refunded` | `AuthorizePayment` once refunded |
//! | `payment-not-authorized` | `RefundPayment` of a payment that was never authorised (none or declined) |
//!
//! Already done (no events): `AuthorizePayment` of the same amount once authorised;
//! `AuthorizePayment` with the same amount and method as the attempt just declined;
//! `RefundPayment` once refunded.

use crate::registry::RegisteredAggregate;
use crate::{CommandParseError, require_text};
use eventfold::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use strum::VariantNames;

/// Amounts (minor units) above this are declined.
pub const AUTHORIZATION_LIMIT: i64 = 1_000_000;
/// The payment method that is always declined.
pub const DECLINED_METHOD: &str = "card_declined";
/// Decline reason when the amount exceeds [`AUTHORIZATION_LIMIT`].
pub const DECLINE_AMOUNT_OVER_LIMIT: &str = "amount-over-limit";
/// Decline reason when the method is [`DECLINED_METHOD`].
pub const DECLINE_CARD_DECLINED: &str = "card-declined";

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
        order_id: String,
        /// Amount in minor units; must be > 0.
        amount: i64,
        /// Payment method, e.g. `card`.
        method: String,
    },
    /// Gives an authorised payment back.
    RefundPayment {},
}

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
        order_id: String,
        /// Amount authorised in minor units.
        amount: i64,
        /// Payment method used.
        method: String,
    },
    /// The provider declined the attempt.
    PaymentDeclined {
        /// The order being paid.
        order_id: String,
        /// Amount attempted in minor units.
        amount: i64,
        /// Payment method attempted.
        method: String,
        /// Why it was declined, e.g. [`DECLINE_CARD_DECLINED`].
        reason: String,
    },
    /// The authorised amount was given back.
    PaymentRefunded {
        /// The order that was paid.
        order_id: String,
        /// Amount refunded in minor units.
        amount: i64,
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
    /// The authorised amount was refunded.
    Refunded,
}

/// What an order's payment knows, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PaymentState {
    /// `None` until the first authorisation attempt.
    pub status: Option<PaymentStatus>,
    /// The order being paid (`None` until the first attempt).
    pub order_id: Option<String>,
    /// Amount of the last attempt in minor units (0 before any attempt).
    pub amount: i64,
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
        }
    }
}

fn decide_authorize(
    state: &PaymentState,
    order_id: &str,
    amount: i64,
    method: &str,
) -> Result<Vec<PaymentEvent>, Rejection> {
    require_text(order_id, "order-id-required", "order id")?;
    require_text(method, "method-required", "payment method")?;
    if amount <= 0 {
        return Err(Rejection::new(
            "amount-must-be-positive",
            format!("amount must be greater than zero, got {amount}"),
        ));
    }
    if let Some(existing) = &state.order_id
        && existing != order_id
    {
        return Err(Rejection::new(
            "order-id-mismatch",
            format!("this payment is for order '{existing}', not '{order_id}'"),
        ));
    }
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
        Some(PaymentStatus::Refunded) => Err(Rejection::new(
            "payment-already-refunded",
            "the payment was refunded",
        )),
    }
}

/// The simulated provider's answer to an authorisation attempt.
fn attempt(order_id: &str, amount: i64, method: &str) -> PaymentEvent {
    let decline_reason = if amount > AUTHORIZATION_LIMIT {
        Some(DECLINE_AMOUNT_OVER_LIMIT)
    } else if method == DECLINED_METHOD {
        Some(DECLINE_CARD_DECLINED)
    } else {
        None
    };
    match decline_reason {
        Some(reason) => PaymentEvent::PaymentDeclined {
            order_id: order_id.to_owned(),
            amount,
            method: method.to_owned(),
            reason: reason.to_owned(),
        },
        None => PaymentEvent::PaymentAuthorized {
            order_id: order_id.to_owned(),
            amount,
            method: method.to_owned(),
        },
    }
}

fn decide_refund(state: &PaymentState) -> Result<Vec<PaymentEvent>, Rejection> {
    match state.status {
        Some(PaymentStatus::Authorized) => Ok(vec![PaymentEvent::PaymentRefunded {
            order_id: state.order_id.clone().unwrap_or_default(),
            amount: state.amount,
        }]),
        Some(PaymentStatus::Refunded) => Ok(vec![]),
        Some(PaymentStatus::Declined) => Err(Rejection::new(
            "payment-not-authorized",
            "a declined payment cannot be refunded",
        )),
        None => Err(Rejection::new(
            "payment-not-authorized",
            "no payment has been authorised",
        )),
    }
}
