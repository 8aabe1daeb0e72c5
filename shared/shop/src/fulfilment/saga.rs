//! The saga port: events of other streams turned into inputs, the commands to send, refusals and deadlines.

use super::*;
use crate::command::{CommandParseError, RegisteredAggregate};
use crate::inventory::{Inventory, InventoryCommand, InventoryEvent};
use crate::order::{Order, OrderCommand, OrderEvent};
use crate::payment::{Payment, PaymentCommand, PaymentEvent};
use crate::upcast::upcasters;
use crate::values::{Money, OrderId, Sku};
use chrono::{DateTime, Utc};
use eventfold::aggregate::CodecError;
use eventfold::{Aggregate, DomainEvent, EventEnvelope, Rejection, StreamId};
use eventfold_consumers::{InputError, Pending, Saga};

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
    ) -> Result<Option<(String, FulfilmentInput)>, InputError> {
        if !INPUT_EVENT_TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        let stream = StreamId::parse(&event.stream_id)?;
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
                        id,
                        placed(
                            OrderId::of_stream(&stream),
                            event,
                            history,
                            total,
                            payment_method,
                        )?,
                    )),
                    OrderEvent::OrderConfirmed {} => Some((
                        id,
                        FulfilmentInput::OrderObserved(OrderObservation {
                            version,
                            order: ObservedOrder::Confirmed,
                        }),
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
                            FulfilmentInput::OrderObserved(OrderObservation {
                                version,
                                order: ObservedOrder::Cancelled { reason, by_saga },
                            }),
                        ))
                    }
                    _ => None,
                }
            }
            c if c == Inventory::CATEGORY && of(Inventory::EVENT_TYPES) => {
                let (order_id, stock) = match decode::<InventoryEvent>(event)? {
                    InventoryEvent::StockReserved {
                        order_id, quantity, ..
                    } => (
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
                    order_id.into_string(),
                    FulfilmentInput::StockObserved(StockObservation {
                        sku: Sku::of_stream(&stream),
                        version,
                        stock,
                    }),
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
                Some((
                    id,
                    FulfilmentInput::PaymentObserved(PaymentObservation { version, payment }),
                ))
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
                            // What lets the inventory recognise this reservation if it
                            // arrives after the line's release (inventory module docs).
                            placed_at: s.placed_at,
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
fn decode<E: DomainEvent>(envelope: &EventEnvelope) -> Result<E, CodecError> {
    let (data, _) = upcasters().upcast_ref(
        &envelope.event_type,
        envelope.schema_version,
        &envelope.data,
    );
    E::decode(&envelope.event_type, &data)
}

/// The start input of the order placed at `event`: its lines come from the order folded
/// from `history` up to and including `event`, whatever schema `event` was written in.
fn placed(
    order_id: OrderId,
    event: &EventEnvelope,
    history: &[EventEnvelope],
    total: Money,
    payment_method: String,
) -> Result<FulfilmentInput, InputError> {
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
        return Err(InputError::Incomplete(format!(
            "{}@{} (OrderPlaced) needs its stream's history up to it; got {} events",
            event.stream_id,
            event.version,
            history.len()
        )));
    }
    let customer_id = order.customer_id.ok_or_else(|| {
        InputError::Incomplete(format!(
            "{}@{} (OrderPlaced): the order's history up to it has no OrderCreated",
            event.stream_id, event.version
        ))
    })?;
    Ok(FulfilmentInput::OrderPlaced(PlacedOrder {
        order_id,
        customer_id,
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
    }))
}

/// Builds a saga input from its type name and JSON data (for tools and tests; clients cannot
/// submit them: the saga accepts no external commands,
/// [`RegisteredAggregate::ACCEPTS_EXTERNAL_COMMANDS`]).
pub fn parse_input(
    input_type: &str,
    data: serde_json::Value,
) -> Result<FulfilmentInput, CommandParseError> {
    <OrderFulfilment as RegisteredAggregate>::parse_command(input_type, data)
}
