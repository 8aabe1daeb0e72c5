//! Eventfold's write-side core: the mechanics of event sourcing, free of any cloud.
//!
//! Owns the event envelope and stream ids ([`envelope`]), the [`Aggregate`] shape
//! (`initial` / `evolve` / `decide`), the [`EventStore`] port with its error kinds, the
//! [`CommandExecutor`] (load, decide, append, retry on conflict, bounded state caches, one
//! per aggregate type, whose set the executor's type names: [`cache`], [`state_caches!`]),
//! snapshot policy, upcasters, byte budgets of list pages ([`page`]) and the
//! [`MemoryEventStore`] adapter; crypto-shredding of personal data: the [`Personal`] field
//! type and its sealing passes ([`personal`]), the [`KeyRing`] port ([`keyring`]) and the
//! [`SealingStore`] that seals and opens at the storage boundary ([`sealing`]).
//!
//! What reads the fan-out (notifications, projections, sagas, dead letters) lives in
//! `eventfold-consumers`; topics and consumer groups in `eventfold-streaming`; idempotent
//! requests in `eventfold-idempotency`; given/when/then and the contract suites in
//! `eventfold-testkit` (a dev-dependency only).
//!
//! Must not import: any AWS crate, `lambda_*`, an async runtime in its public API (futures
//! are runtime-agnostic; tokio is a dev-dependency only), or any other Eventfold crate: every
//! other crate builds on this one. Business rules live in `shop`, never here.
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod cache;
pub mod envelope;
pub mod executor;
pub mod keyring;
pub mod memory;
pub mod page;
pub mod personal;
mod retry;
pub mod sealing;
pub mod snapshot_size;
pub mod store;
pub mod upcast;

pub use aggregate::{Aggregate, DomainEvent, Rejection};
pub use cache::{CacheFor, NoCache, StateCache, StateCaches};
pub use envelope::{EventEnvelope, Metadata, NewEvent, StreamId, StreamIdError};
pub use executor::{CommandContext, CommandError, CommandExecutor, CommandOutcome, ExecutorConfig};
pub use keyring::{CachedKeyRing, KeyError, KeyRing, MemoryKeyRing, NoKeys, SubjectKey};
pub use memory::MemoryEventStore;
pub use page::{PageBudget, wire_len};
pub use personal::{DataKey, Personal, REDACTED_TEXT};
pub use sealing::SealingStore;
pub use store::{
    AppendOutcome, Cause, EventStore, ExpectedVersion, LoadOptions, LoadedCommits, LoadedStream,
    Snapshot, StoreError,
};
pub use upcast::Upcasters;
