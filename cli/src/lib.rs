//! The `eventfold` command-line tool, as a library so the integration tests drive the very
//! same local stack.
//!
//! Owns the `eventfold` commands (`local`, `token`, `projections`, `dlq`, `bench`) and the wiring of
//! the shop's functions into the generic local runtime ([`local`]). The runtime itself
//! (emulator, template, provisioning, event sources, gateway, JWT) is `eventfold-local`; the
//! business rules are `shop`; AWS adapter logic is `eventfold-aws`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_cold;
pub mod bench_projector;
pub mod bench_streaming;
pub mod demo;
pub mod dlq;
pub mod local;
pub mod rebuild;
