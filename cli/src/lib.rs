//! The `eventfold` command-line tool, as a library so the integration tests and the
//! benchmarks (`eventfold-bench`, in the `bench` package) drive the very same local stack.
//!
//! Owns the operator commands (`local`, `token`, `projections`, `dlq`, `iam`, `check-artifacts`, `verify`, `console`, `gdpr`) and the wiring of
//! the shop's functions into the generic local runtime ([`local`]). The runtime itself
//! (emulator, template, provisioning, event sources, gateway, JWT) is `eventfold-local`; the
//! business rules are `shop`; AWS adapter logic is `eventfold-aws`.
#![forbid(unsafe_code)]

pub mod args;
pub mod artifacts;
pub mod console;
pub mod demo;
pub mod dlq;
pub mod gdpr;
pub mod iam;
pub mod local;
pub mod rebuild;
pub mod verify;
