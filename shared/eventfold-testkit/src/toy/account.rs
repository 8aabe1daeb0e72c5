//! `Account`: the target of the toy saga, deciding idempotently per transfer.

use eventfold::aggregate::{Aggregate, DomainEvent, Rejection};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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
