//! IAM as the local stack enforces it, with nothing of the stack itself: no template, no
//! HTTP server, no AWS SDK.
//!
//! Owns:
//! - [`policy`]: evaluation as IAM documents it (the only user of `iam-rs`, so it could be
//!   replaced);
//! - [`managed`]: the AWS managed policies SAM attaches, pinned in `managed/`;
//! - [`role`]: a function's role, its statements one by one;
//! - [`classify`]: a request's actions and resources, as AWS authorizes them;
//! - [`record`] and [`report`]: the calls checked, and per function what was exercised, what
//!   was granted and never exercised, and which statements no recorded call needs.
#![forbid(unsafe_code)]

pub mod classify;
pub mod managed;
pub mod policy;
pub mod record;
pub mod report;
pub mod role;

pub use policy::{Decision, Statement, evaluate};
pub use role::Role;
