//! Eventfold's framework core: the mechanics of event sourcing, free of any cloud.
//!
//! Owns the event envelope and stream ids ([`envelope`]), the [`Aggregate`] shape
//! (`initial` / `evolve` / `decide`), the [`EventStore`] port with its error kinds, the
//! [`CommandExecutor`] (load, decide, append, retry on conflict, bounded state cache),
//! snapshot policy, upcasters, the [`MemoryEventStore`] adapter, the idempotency port, engine
//! and memory store ([`idempotency`]), the dead-letter port, its mechanics and memory store
//! ([`deadletter`]), the saga port and its runner ([`saga`]: checkpoints,
//! commands through the executor, refusals, the deadline index and tick), streaming without a
//! broker ([`streaming`]: topics whose partitions are streams, publish, consumer groups,
//! history, with the topic-catalogue and group-store ports and memory adapters), a given/when/then
//! kit (`testing`) and the store contract suite every adapter must pass (`contract`); those two
//! (and the read-model, idempotency, deadline-index and streaming contracts, and the toy saga) exist only
//! with the `testing` feature, which tests and dev-dependencies enable, so they never compile
//! into a Lambda.
//!
//! Must not import: any AWS crate, `lambda_*`, or an async runtime in its public API
//! (futures are runtime-agnostic; tokio is a dev-dependency only). Business rules live in
//! `shop`, never here.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cache;
#[cfg(any(test, feature = "testing"))]
pub mod contract;
pub mod deadletter;
pub mod envelope;
pub mod executor;
pub mod idempotency;
pub mod memory;
pub mod projection;
pub mod saga;
pub mod store;
pub mod streaming;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod upcast;

pub use aggregate::{Aggregate, DomainEvent, Rejection};
pub use envelope::{EventEnvelope, Metadata, NewEvent, StreamId, StreamIdError};
pub use executor::{CommandContext, CommandError, CommandExecutor, CommandOutcome, ExecutorConfig};
pub use memory::MemoryEventStore;
pub use saga::{InputError, Pending, Saga, SagaCommand, SagaCommandVisitor};
pub use store::{
    AppendOutcome, EventStore, ExpectedVersion, LoadOptions, LoadedCommits, LoadedStream, Snapshot,
    StoreError,
};
pub use upcast::Upcasters;
