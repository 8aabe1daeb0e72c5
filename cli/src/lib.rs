//! The `eventfold` command-line tool, as a library so the integration tests drive the very
//! same local stack.
//!
//! Owns the local stack (moto emulator process, resources from `infra/template.yaml`, the
//! API Gateway emulator), dev tokens and the bench. Holds no business rules (those are in
//! `shop`) and no AWS adapter logic (that is `eventfold-aws`).
#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
pub mod emulator;
pub mod esm;
pub mod gateway;
pub mod httpc;
pub mod jwt;
pub mod local;
pub mod provision;
pub mod rebuild;
pub mod template;
