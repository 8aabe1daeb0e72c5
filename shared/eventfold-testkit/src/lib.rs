//! The test kit: given/when/then for aggregates ([`given()`]), the contract suite of every
//! port, named after the port it checks ([`event_store`], [`read_models`],
//! [`deadline_index`], [`dead_letters`], [`idempotency`], [`streaming`], [`key_ring`]), which every
//! adapter (memory or AWS) must pass, and a toy saga to test saga runners with ([`toy`]).
//!
//! A dev-dependency only: no Lambda function links it (`scripts/check-boundaries` checks).
//! Must not import: any AWS crate, `lambda_*`, `shop`, or a function crate.
#![forbid(unsafe_code)]

pub mod dead_letters;
pub mod deadline_index;
pub mod event_store;
pub mod given;
pub mod idempotency;
pub mod key_ring;
pub mod read_models;
pub mod streaming;
pub mod toy;

pub use given::{Given, given};
