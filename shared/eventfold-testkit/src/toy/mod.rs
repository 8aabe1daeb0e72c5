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

mod account;
mod chaos;
mod transfer;

pub use account::*;
pub use chaos::*;
pub use transfer::*;

/// Category of the request streams (the saga's main source).
pub const REQUEST: &str = "Request";
