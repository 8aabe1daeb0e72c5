//! `Transfer`: the toy saga (debit, wait for the approval, credit; refund on failure).

use super::*;
use chrono::{DateTime, Utc};
use eventfold::aggregate::{Aggregate, DomainEvent, Rejection};
use eventfold::envelope::{EventEnvelope, StreamId};
use eventfold_consumers::saga::{
    InputError, Pending, Saga, SagaCommand, SagaCommandVisitor, TargetVisitor,
};
use serde::{Deserialize, Serialize};

/// The transfer saga.
#[derive(Debug)]
pub struct Transfer;

/// Where a transfer stands.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Phase {
    /// Nothing recorded.
    #[default]
    New,
    /// Debit sent, not yet seen.
    Debiting,
    /// Debited; waiting for the approval since the debit.
    AwaitingApproval {
        /// When the debit happened.
        since: DateTime<Utc>,
    },
    /// Credit sent.
    Crediting,
    /// Refund sent.
    Refunding,
    /// Credited.
    Done,
    /// The debit was refused.
    Failed,
    /// Refunded.
    Compensated,
}

/// A transfer's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TransferState {
    /// Phase.
    pub phase: Phase,
    /// Transfer id.
    pub id: String,
    /// Debited account.
    pub from: String,
    /// Credited account.
    pub to: String,
    /// Amount.
    pub amount: i64,
    /// The approval arrived (it may come before the debit is seen).
    pub approved: bool,
    /// Refusal rule or `timeout`, when there was one.
    pub reason: Option<String>,
}

/// The saga's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferInput {
    /// A submitted request.
    Start {
        /// Transfer id.
        id: String,
        /// From.
        from: String,
        /// To.
        to: String,
        /// Amount.
        amount: i64,
    },
    /// The debit happened at `at`.
    DebitDone {
        /// When.
        at: DateTime<Utc>,
    },
    /// The request was approved.
    Approve,
    /// The credit happened.
    CreditDone,
    /// The refund happened.
    RefundDone,
    /// A sent command was refused.
    Refused {
        /// Step.
        step: String,
        /// Rule.
        rule: String,
    },
    /// The approval did not come in time.
    TimedOut {
        /// When the runner noticed.
        at: DateTime<Utc>,
    },
}

/// The saga's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TransferEvent {
    /// Started; the debit is to be sent.
    Started {
        /// Transfer id.
        id: String,
        /// From.
        from: String,
        /// To.
        to: String,
        /// Amount.
        amount: i64,
    },
    /// Debit seen.
    DebitRecorded {
        /// When the debit happened.
        at: DateTime<Utc>,
    },
    /// Approval seen.
    ApprovalRecorded,
    /// Credit seen.
    CreditRecorded,
    /// Refund seen.
    RefundRecorded,
    /// A step was refused.
    StepRefused {
        /// Step.
        step: String,
        /// Rule.
        rule: String,
    },
    /// The wait for the approval timed out.
    DeadlinePassed {
        /// When.
        at: DateTime<Utc>,
    },
}

impl DomainEvent for TransferEvent {}

/// What a transfer asks of accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferCommand {
    /// Target account id.
    pub account: String,
    /// The command.
    pub command: AccountCommand,
}

eventfold::state_caches! {
    /// The warm states of a transfer runner's executor: the accounts it sends commands to
    /// and the transfers themselves.
    pub struct TransferCaches {
        account: Account,
        transfer: Transfer,
    }
}

impl SagaCommand for TransferCommand {
    type Targets = TransferCaches;

    fn visit<V: SagaCommandVisitor<TransferCaches>>(&self, visitor: V) -> V::Output {
        visitor.visit::<Account>(&self.account, self.command.clone())
    }

    fn visit_target<V: TargetVisitor<TransferCaches>>(
        category: &str,
        visitor: V,
    ) -> Option<V::Output> {
        (category == Account::CATEGORY).then(|| visitor.visit::<Account>())
    }
}

/// The phase after the debit was seen, given whether the approval already came.
fn after_debit(s: &TransferState, at: DateTime<Utc>) -> Phase {
    if s.approved {
        Phase::Crediting
    } else {
        Phase::AwaitingApproval { since: at }
    }
}

impl Aggregate for Transfer {
    const CATEGORY: &'static str = "Transfer";
    type Event = TransferEvent;
    type State = TransferState;
    type Command = TransferInput;

    fn initial() -> TransferState {
        TransferState::default()
    }

    fn evolve(mut s: TransferState, e: &TransferEvent) -> TransferState {
        match e {
            TransferEvent::Started {
                id,
                from,
                to,
                amount,
            } => {
                s.id = id.clone();
                s.from = from.clone();
                s.to = to.clone();
                s.amount = *amount;
                s.phase = Phase::Debiting;
            }
            TransferEvent::DebitRecorded { at } => s.phase = after_debit(&s, *at),
            TransferEvent::ApprovalRecorded => {
                s.approved = true;
                if matches!(s.phase, Phase::AwaitingApproval { .. }) {
                    s.phase = Phase::Crediting;
                }
            }
            TransferEvent::CreditRecorded => s.phase = Phase::Done,
            TransferEvent::RefundRecorded => s.phase = Phase::Compensated,
            TransferEvent::StepRefused { step, rule } => {
                s.reason = Some(rule.clone());
                s.phase = if step == "debit" {
                    Phase::Failed
                } else {
                    Phase::Refunding
                };
            }
            TransferEvent::DeadlinePassed { .. } => {
                s.reason = Some("timeout".into());
                s.phase = Phase::Refunding;
            }
        }
        s
    }

    fn decide(s: &TransferState, input: &TransferInput) -> Result<Vec<TransferEvent>, Rejection> {
        use TransferInput as I;
        let events = match (input, &s.phase) {
            (
                I::Start {
                    id,
                    from,
                    to,
                    amount,
                },
                Phase::New,
            ) => vec![TransferEvent::Started {
                id: id.clone(),
                from: from.clone(),
                to: to.clone(),
                amount: *amount,
            }],
            (I::DebitDone { at }, Phase::Debiting) => {
                vec![TransferEvent::DebitRecorded { at: *at }]
            }
            (I::Approve, _) if !s.approved => vec![TransferEvent::ApprovalRecorded],
            (I::CreditDone, Phase::Crediting) => vec![TransferEvent::CreditRecorded],
            (I::RefundDone, Phase::Refunding) => vec![TransferEvent::RefundRecorded],
            (I::Refused { step, rule }, Phase::Debiting) if step == "debit" => {
                vec![TransferEvent::StepRefused {
                    step: step.clone(),
                    rule: rule.clone(),
                }]
            }
            (I::Refused { step, rule }, Phase::Crediting) if step == "credit" => {
                vec![TransferEvent::StepRefused {
                    step: step.clone(),
                    rule: rule.clone(),
                }]
            }
            (I::Refused { step, .. }, Phase::Refunding) if step == "refund" => {
                return Err(Rejection::new(
                    "refund-refused",
                    "a refund cannot be refused",
                ));
            }
            (I::TimedOut { at }, Phase::AwaitingApproval { .. }) => {
                vec![TransferEvent::DeadlinePassed { at: *at }]
            }
            // Everything else was already done, or comes too late to matter.
            _ => vec![],
        };
        Ok(events)
    }
}

/// The transfer id of an account event, and its kind.
fn account_input(event: &EventEnvelope) -> Result<Option<(String, TransferInput)>, InputError> {
    let decoded = AccountEvent::decode(&event.event_type, &event.data)?;
    Ok(match decoded {
        AccountEvent::Opened { .. } => None,
        AccountEvent::Debited { transfer, .. } => Some((
            transfer,
            TransferInput::DebitDone {
                at: event.occurred_at,
            },
        )),
        AccountEvent::Credited { transfer, .. } => Some((transfer, TransferInput::CreditDone)),
        AccountEvent::Refunded { transfer, .. } => Some((transfer, TransferInput::RefundDone)),
    })
}

impl Saga for Transfer {
    type Send = TransferCommand;

    fn needs_history(event: &EventEnvelope) -> bool {
        event.event_type == "Submitted"
    }

    fn input(
        event: &EventEnvelope,
        history: &[EventEnvelope],
    ) -> Result<Option<(String, TransferInput)>, InputError> {
        let stream = StreamId::parse(&event.stream_id)?;
        match (stream.category(), event.event_type.as_str()) {
            (REQUEST, "Submitted") => {
                let draft = history
                    .iter()
                    .rev()
                    .find(|e| e.event_type == "Drafted")
                    .ok_or_else(|| InputError::Incomplete("Submitted without a draft".into()))?;
                let text = |field: &str| {
                    draft.data[field]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| InputError::Incomplete(format!("draft without {field}")))
                };
                let amount = draft.data["amount"]
                    .as_i64()
                    .ok_or_else(|| InputError::Incomplete("draft without amount".into()))?;
                Ok(Some((
                    stream.id().to_owned(),
                    TransferInput::Start {
                        id: stream.id().to_owned(),
                        from: text("from")?,
                        to: text("to")?,
                        amount,
                    },
                )))
            }
            (REQUEST, "Approved") => Ok(Some((stream.id().to_owned(), TransferInput::Approve))),
            ("Account", _) => account_input(event),
            _ => Ok(None),
        }
    }

    fn pending(s: &TransferState) -> Vec<Pending<TransferCommand>> {
        let (step, account, command) = match s.phase {
            Phase::Debiting => (
                "debit",
                &s.from,
                AccountCommand::Debit {
                    transfer: s.id.clone(),
                    amount: s.amount,
                },
            ),
            Phase::Crediting => (
                "credit",
                &s.to,
                AccountCommand::Credit {
                    transfer: s.id.clone(),
                    amount: s.amount,
                },
            ),
            Phase::Refunding => (
                "refund",
                &s.from,
                AccountCommand::Refund {
                    transfer: s.id.clone(),
                    amount: s.amount,
                },
            ),
            _ => return Vec::new(),
        };
        vec![Pending {
            step: step.to_owned(),
            command: TransferCommand {
                account: account.clone(),
                command,
            },
        }]
    }

    fn refused(command: &Pending<TransferCommand>, rejection: &Rejection) -> TransferInput {
        TransferInput::Refused {
            step: command.step.clone(),
            rule: rejection.rule.to_string(),
        }
    }

    fn waiting_since(s: &TransferState) -> Option<DateTime<Utc>> {
        match s.phase {
            Phase::AwaitingApproval { since } => Some(since),
            _ => None,
        }
    }

    fn timed_out(now: DateTime<Utc>) -> TransferInput {
        TransferInput::TimedOut { at: now }
    }
}
