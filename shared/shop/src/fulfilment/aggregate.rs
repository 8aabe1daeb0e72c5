//! The saga as an aggregate: its log folded into its state (`evolve`), an input decided into events (`decide`).

use super::*;
use crate::command::RegisteredAggregate;
use crate::inventory::InventoryCommand;
use crate::order::OrderCommand;
use crate::payment::PaymentCommand;
use eventfold::{Aggregate, Rejection};

impl Aggregate for OrderFulfilment {
    const CATEGORY: &'static str = "OrderFulfilment";

    type Event = FulfilmentEvent;
    type State = FulfilmentState;
    type Command = FulfilmentInput;

    fn initial() -> FulfilmentState {
        FulfilmentState::default()
    }

    /// `OrderPlaced` starts the instance's stream: decided without reading it first (a
    /// redelivery finds the stream at the append, and is decided again on what it holds).
    fn assume_new(input: &FulfilmentInput) -> bool {
        matches!(input, FulfilmentInput::OrderPlaced(_))
    }

    fn evolve(mut s: FulfilmentState, event: &FulfilmentEvent) -> FulfilmentState {
        match event {
            FulfilmentEvent::FulfilmentStarted(PlacedOrder {
                order_id,
                customer_id,
                lines,
                total,
                payment_method,
                placed_at,
            }) => {
                s.order_id = Some(order_id.clone());
                s.customer_id = Some(customer_id.clone());
                s.total = *total;
                s.payment_method = payment_method.clone();
                s.placed_at = Some(*placed_at);
                for line in lines {
                    s.lines.entry(line.sku.clone()).or_default().quantity = line.quantity;
                }
            }
            FulfilmentEvent::OrderObserved(OrderObservation { version, order }) => {
                if *version > s.order.version {
                    s.order.version = *version;
                    s.order.observed = Some(order.clone());
                    if let ObservedOrder::Cancelled { by_saga: false, .. } = order {
                        s.failures.insert(Failure::CancelledElsewhere);
                    }
                }
            }
            FulfilmentEvent::StockObserved(StockObservation {
                sku,
                version,
                stock,
            }) => {
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
            FulfilmentEvent::PaymentObserved(PaymentObservation { version, payment }) => {
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
            FulfilmentInput::OrderPlaced(_) if state.is_started() => return Ok(vec![]),
            // Every line's sku names an inventory stream (a `Sku` keeps the stream id's id
            // rule), so every line can be reserved.
            FulfilmentInput::OrderPlaced(placed) => {
                vec![FulfilmentEvent::FulfilmentStarted(placed.clone())]
            }
            // An event about an order with no instance (a reservation made by hand, say) is
            // none of the saga's business.
            _ if !state.is_started() => return Ok(vec![]),
            FulfilmentInput::OrderObserved(seen) => {
                vec![FulfilmentEvent::OrderObserved(seen.clone())]
            }
            FulfilmentInput::StockObserved(seen) => {
                vec![FulfilmentEvent::StockObserved(seen.clone())]
            }
            FulfilmentInput::PaymentObserved(seen) => {
                vec![FulfilmentEvent::PaymentObserved(seen.clone())]
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

/// Its commands are its inputs: only the system (the saga runner) sends them.
impl RegisteredAggregate for OrderFulfilment {
    const ACCEPTS_EXTERNAL_COMMANDS: bool = false;
}

/// The rule of `ConfirmOrder` on a cancelled order.
const ORDER_CANCELLED: &str = "order-cancelled";
/// The rule of `CancelOrder` on an order cancelled for another reason.
const ORDER_ALREADY_CANCELLED: &str = "order-already-cancelled";
/// The rule of `VoidPayment` once the money was received.
const PAYMENT_ALREADY_RECEIVED: &str = "payment-already-received";

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
    if s.total.is_positive() && s.payment.requested.is_none() {
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
