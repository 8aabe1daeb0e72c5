//! A toy saga and its target, for tests of saga runners on any store (test kit only).
//!
//! A money transfer between two `Account`s, requested on a `Request` stream:
//!
//! - `Request` streams hold `Drafted {from, to, amount}`, then `Submitted {}` (which needs the
//!   stream's history to become an input: the details are in the draft), `Approved {}` and
//!   `Noted {}` (ignored). The instance id is the request's id.
//! - The [`Transfer`] saga debits `from` (step `debit`), waits for the approval, credits `to`
//!   (step `credit`), and is done. A refused debit fails the transfer; a refused credit or
//!   a deadline passed while waiting for the approval refunds `from` (step `refund`).
//! - [`Account`] decides idempotently per transfer: a second debit, credit or refund of the
//!   same transfer is "already done".

use super::{Pending, Saga, SagaCommand, SagaCommandVisitor};
use crate::aggregate::{Aggregate, DomainEvent, Rejection};
use crate::envelope::{EventEnvelope, Metadata, NewEvent, StreamId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeSet;

/// Category of the request streams (the saga's main source).
pub const REQUEST: &str = "Request";

// ---------------------------------------------------------------------------------------------
// Account: the target
// ---------------------------------------------------------------------------------------------

/// An account that transfers debit, credit and refund.
#[derive(Debug)]
pub struct Account;

/// What an account is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Opens it with a balance.
    Open {
        /// Opening balance.
        balance: i64,
    },
    /// Takes `amount` for `transfer` (once).
    Debit {
        /// Transfer id.
        transfer: String,
        /// Amount.
        amount: i64,
    },
    /// Adds `amount` for `transfer` (once).
    Credit {
        /// Transfer id.
        transfer: String,
        /// Amount.
        amount: i64,
    },
    /// Gives back what `transfer` debited (once).
    Refund {
        /// Transfer id.
        transfer: String,
        /// Amount.
        amount: i64,
    },
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AccountEvent {
    /// Opened.
    Opened {
        /// Opening balance.
        balance: i64,
    },
    /// Debited for a transfer.
    Debited {
        /// Transfer id.
        transfer: String,
        /// Amount.
        amount: i64,
    },
    /// Credited for a transfer.
    Credited {
        /// Transfer id.
        transfer: String,
        /// Amount.
        amount: i64,
    },
    /// Refunded for a transfer.
    Refunded {
        /// Transfer id.
        transfer: String,
        /// Amount.
        amount: i64,
    },
}

impl DomainEvent for AccountEvent {}

/// An account's balance and the transfers it took part in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// Opened at all.
    pub open: bool,
    /// Balance.
    pub balance: i64,
    /// Transfers debited.
    pub debited: BTreeSet<String>,
    /// Transfers credited.
    pub credited: BTreeSet<String>,
    /// Transfers refunded.
    pub refunded: BTreeSet<String>,
}

impl Aggregate for Account {
    const CATEGORY: &'static str = "Account";
    type Event = AccountEvent;
    type State = AccountState;
    type Command = AccountCommand;

    fn initial() -> AccountState {
        AccountState::default()
    }

    fn evolve(mut s: AccountState, e: &AccountEvent) -> AccountState {
        match e {
            AccountEvent::Opened { balance } => {
                s.open = true;
                s.balance = *balance;
            }
            AccountEvent::Debited { transfer, amount } => {
                s.balance -= amount;
                s.debited.insert(transfer.clone());
            }
            AccountEvent::Credited { transfer, amount } => {
                s.balance += amount;
                s.credited.insert(transfer.clone());
            }
            AccountEvent::Refunded { transfer, amount } => {
                s.balance += amount;
                s.refunded.insert(transfer.clone());
            }
        }
        s
    }

    fn decide(s: &AccountState, c: &AccountCommand) -> Result<Vec<AccountEvent>, Rejection> {
        if let AccountCommand::Open { balance } = c {
            return Ok(if s.open {
                vec![]
            } else {
                vec![AccountEvent::Opened { balance: *balance }]
            });
        }
        if !s.open {
            return Err(Rejection::new("account-not-open", "no such account"));
        }
        Ok(match c {
            AccountCommand::Open { .. } => vec![],
            AccountCommand::Debit { transfer, .. } if s.debited.contains(transfer) => vec![],
            AccountCommand::Debit { amount, .. } if s.balance < *amount => {
                return Err(Rejection::new(
                    "insufficient-funds",
                    format!("balance {} is less than {amount}", s.balance),
                ));
            }
            AccountCommand::Debit { transfer, amount } => vec![AccountEvent::Debited {
                transfer: transfer.clone(),
                amount: *amount,
            }],
            AccountCommand::Credit { transfer, .. } if s.credited.contains(transfer) => vec![],
            AccountCommand::Credit { transfer, amount } => vec![AccountEvent::Credited {
                transfer: transfer.clone(),
                amount: *amount,
            }],
            AccountCommand::Refund { transfer, .. } if s.refunded.contains(transfer) => vec![],
            AccountCommand::Refund { transfer, .. } if !s.debited.contains(transfer) => {
                return Err(Rejection::new("nothing-to-refund", "never debited"));
            }
            AccountCommand::Refund { transfer, amount } => vec![AccountEvent::Refunded {
                transfer: transfer.clone(),
                amount: *amount,
            }],
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Transfer: the saga
// ---------------------------------------------------------------------------------------------

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

impl SagaCommand for TransferCommand {
    fn visit<V: SagaCommandVisitor>(&self, visitor: V) -> V::Output {
        visitor.visit::<Account>(&self.account, &self.command)
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
fn account_input(event: &EventEnvelope) -> Result<Option<(String, TransferInput)>, String> {
    let decoded =
        AccountEvent::decode(&event.event_type, &event.data).map_err(|e| e.to_string())?;
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
    ) -> Result<Option<(String, TransferInput)>, String> {
        let stream = StreamId::parse(&event.stream_id).map_err(|e| e.to_string())?;
        match (stream.category(), event.event_type.as_str()) {
            (REQUEST, "Submitted") => {
                let draft = history
                    .iter()
                    .rev()
                    .find(|e| e.event_type == "Drafted")
                    .ok_or("Submitted without a draft")?;
                let text = |field: &str| {
                    draft.data[field]
                        .as_str()
                        .map(str::to_owned)
                        .ok_or(format!("draft without {field}"))
                };
                let amount = draft.data["amount"]
                    .as_i64()
                    .ok_or("draft without amount")?;
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

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The source events of request `id` of `tenant`, versions `1..`: a draft, a note, the
/// submission and, when `approved`, the approval. Their correlation id is `corr-{id}`.
pub fn request(
    tenant: &str,
    id: &str,
    from: &str,
    to: &str,
    amount: i64,
    approved: bool,
) -> Vec<EventEnvelope> {
    let stream = StreamId::new(tenant, REQUEST, id).unwrap_or_else(|e| panic!("{e}"));
    let mut parts = vec![
        ("Drafted", json!({"from": from, "to": to, "amount": amount})),
        ("Noted", json!({"text": "please"})),
        ("Submitted", json!({})),
    ];
    if approved {
        parts.push(("Approved", json!({})));
    }
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (event_type, data))| {
            NewEvent {
                event_type: event_type.into(),
                schema_version: 1,
                data,
            }
            .into_envelope(
                &stream,
                i as u64 + 1,
                Utc::now(),
                Metadata {
                    tenant: tenant.into(),
                    actor: "requester".into(),
                    correlation_id: format!("corr-{id}"),
                    causation_id: format!("req-{id}"),
                    command_id: format!("req-{id}-{i}"),
                },
            )
        })
        .collect()
}

/// The approval of request `id` as its event at `version`.
pub fn approval(tenant: &str, id: &str, version: u64) -> EventEnvelope {
    let stream = StreamId::new(tenant, REQUEST, id).unwrap_or_else(|e| panic!("{e}"));
    NewEvent {
        event_type: "Approved".into(),
        schema_version: 1,
        data: json!({}),
    }
    .into_envelope(
        &stream,
        version,
        Utc::now(),
        Metadata {
            tenant: tenant.into(),
            actor: "approver".into(),
            correlation_id: format!("corr-{id}"),
            causation_id: format!("approve-{id}"),
            command_id: format!("approve-{id}"),
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Redelivery chaos
// ---------------------------------------------------------------------------------------------

/// What [`redelivery_chaos`] delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChaosReport {
    /// Notifications handed to the runner.
    pub delivered: usize,
    /// Of those, duplicates (at or below the checkpoint).
    pub duplicates: usize,
    /// Copies dropped.
    pub dropped: usize,
    /// Events the runner read from the store (gaps filled, histories).
    pub events_read: usize,
    /// Ticks run.
    pub ticks: usize,
}

/// Runs five transfers of `tenant` through `runner` as an unreliable bus would deliver their
/// notifications, and checks that every step had exactly one effect.
///
/// Each round announces every event not yet announced, of every request and account stream:
/// three copies of each, shuffled within their stream, a tenth of the copies dropped except
/// those of a stream's last event, the streams interleaved at random. When a round finds
/// nothing new, one tick past the deadline runs (the unapproved transfer times out) and the
/// rounds go on until nothing moves. Then:
///
/// - `t1`, `t2` (approved) are done, `t3` (never approved) compensated after its deadline,
///   `t4` (from an empty account) failed, `t5` (to an account that does not exist)
///   compensated after the refused credit;
/// - every account stream holds exactly one debit, credit or refund per transfer step, the
///   balances add up, and no instance is left in the deadline index.
pub async fn redelivery_chaos<E, R>(
    runner: &super::SagaRunner<Transfer, E, R>,
    tenant: &str,
    seed: u64,
) -> ChaosReport
where
    E: crate::EventStore,
    R: crate::projection::ReadModelStore + super::DeadlineIndex,
{
    use crate::projection::Notification;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let executor = runner.executor();
    let store = executor.store();
    let stream = |category: &str, id: &str| {
        StreamId::new(tenant, category, id).unwrap_or_else(|e| panic!("{e}"))
    };
    for (account, balance) in [("rich", 1000), ("poor", 0), ("x", 0), ("y", 0)] {
        executor
            .execute::<Account>(
                &stream(Account::CATEGORY, account),
                None,
                &AccountCommand::Open { balance },
                &Metadata::root(tenant, "tester", format!("open-{account}")),
            )
            .await
            .unwrap_or_else(|e| panic!("open {account}: {e}"));
    }
    let transfers = [
        ("t1", "rich", "x", 100, true),
        ("t2", "rich", "y", 50, true),
        ("t3", "rich", "x", 30, false),
        ("t4", "poor", "x", 10, true),
        ("t5", "rich", "ghost", 20, true),
    ];
    for (id, from, to, amount, approved) in transfers {
        for e in request(tenant, id, from, to, amount, approved) {
            store
                .append(&e.stream_id.clone(), e.version - 1, vec![e], None)
                .await
                .unwrap_or_else(|err| panic!("append request {id}: {err}"));
        }
    }
    let mut watched: Vec<String> = transfers
        .iter()
        .map(|t| stream(REQUEST, t.0).to_string())
        .collect();
    watched.extend(["rich", "poor", "x", "y"].map(|a| stream(Account::CATEGORY, a).to_string()));

    let mut report = ChaosReport::default();
    let mut announced: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let mut lanes: Vec<Vec<Notification>> = Vec::new();
        for s in &watched {
            let from = announced.get(s).copied().unwrap_or(0) + 1;
            let fresh = store
                .load_range(s, from, None, None)
                .await
                .unwrap_or_else(|e| panic!("read {s}: {e}"));
            let Some(last) = fresh.last().map(|e| e.version) else {
                continue;
            };
            announced.insert(s.clone(), last);
            let mut lane = Vec::new();
            for e in &fresh {
                for _ in 0..3 {
                    if e.version != last && rng.random_bool(0.1) {
                        report.dropped += 1;
                        continue;
                    }
                    lane.push(Notification::of(e).unwrap_or_else(|err| panic!("{err}")));
                }
            }
            lane.shuffle(&mut rng);
            lanes.push(lane);
        }
        if lanes.is_empty() {
            if report.ticks > 0 {
                break;
            }
            let timeout = chrono::TimeDelta::from_std(runner.config().timeout)
                .unwrap_or_else(|e| panic!("{e}"));
            let ticked = runner
                .tick(Utc::now() + timeout + chrono::TimeDelta::seconds(1))
                .await
                .unwrap_or_else(|e| panic!("tick: {e}"));
            assert_eq!(ticked.timed_out, 1, "only t3 waits: {ticked:?}");
            assert!(ticked.failed.is_empty(), "{ticked:?}");
            report.ticks += 1;
            continue;
        }
        // Interleave the streams at random, each lane in its own (shuffled) order.
        while !lanes.is_empty() {
            let i = rng.random_range(0..lanes.len());
            let n = lanes[i].remove(0);
            if lanes[i].is_empty() {
                lanes.swap_remove(i);
            }
            let handled = runner
                .handle(&n)
                .await
                .unwrap_or_else(|e| panic!("{}@{}: {e}", n.stream_id, n.version));
            report.delivered += 1;
            report.duplicates += usize::from(handled.duplicate);
            report.events_read += handled.events_read;
        }
    }

    let saga = |id: &str| stream(Transfer::CATEGORY, id);
    let phases: Vec<(String, Phase)> = {
        let mut out = Vec::new();
        for t in &transfers {
            let (_, s) = executor
                .load::<Transfer>(&saga(t.0))
                .await
                .unwrap_or_else(|e| panic!("load {}: {e}", t.0));
            out.push((t.0.to_owned(), s.phase));
        }
        out
    };
    assert_eq!(
        phases,
        [
            ("t1".to_owned(), Phase::Done),
            ("t2".to_owned(), Phase::Done),
            ("t3".to_owned(), Phase::Compensated),
            ("t4".to_owned(), Phase::Failed),
            ("t5".to_owned(), Phase::Compensated),
        ]
    );
    let mut effects: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for account in ["rich", "poor", "x", "y"] {
        let events = store
            .load_range(
                &stream(Account::CATEGORY, account).to_string(),
                1,
                None,
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("read {account}: {e}"));
        for e in events.iter().skip(1) {
            let transfer = e.data["transfer"].as_str().unwrap_or_default().to_owned();
            *effects
                .entry((account.to_owned(), e.event_type.clone(), transfer))
                .or_default() += 1;
        }
    }
    let want: BTreeMap<(String, String, String), usize> = [
        ("rich", "Debited", "t1"),
        ("x", "Credited", "t1"),
        ("rich", "Debited", "t2"),
        ("y", "Credited", "t2"),
        ("rich", "Debited", "t3"),
        ("rich", "Refunded", "t3"),
        ("rich", "Debited", "t5"),
        ("rich", "Refunded", "t5"),
    ]
    .into_iter()
    .map(|(a, t, id)| ((a.to_owned(), t.to_owned(), id.to_owned()), 1))
    .collect();
    assert_eq!(effects, want, "exactly one effect per step");
    for (account, balance) in [("rich", 850), ("poor", 0), ("x", 100), ("y", 50)] {
        let (_, s) = executor
            .load::<Account>(&stream(Account::CATEGORY, account))
            .await
            .unwrap_or_else(|e| panic!("load {account}: {e}"));
        assert_eq!(s.balance, balance, "balance of {account}");
    }
    let left = runner
        .models()
        .due(
            &super::runner::checkpoint_name::<Transfer>(),
            Utc::now() + chrono::TimeDelta::days(365),
            10,
        )
        .await
        .unwrap_or_else(|e| panic!("due: {e}"));
    assert!(
        left.iter()
            .all(|d| !d.stream_id.starts_with(&format!("{tenant}/"))),
        "{left:?}"
    );
    report
}
