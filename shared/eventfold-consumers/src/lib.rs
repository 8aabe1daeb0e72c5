//! What reads the fan-out: the [`Notification`] every consumer gets, projections
//! ([`projection`]: views, the read-model store port, the projector with checkpoints and gap
//! catch-up), sagas ([`saga`]: the process-manager shape, its runner, deadlines) and dead
//! letters ([`deadletter`]: what a consumer gave up on, notes, redrive plans).
//!
//! Every consumer treats a notification as a hint and the event table as the truth, keeps a
//! checkpoint per source stream, and has exactly-once effects under duplicated, reordered
//! and dropped notifications.
//!
//! Owns: the consumer side of the event store. Must not import: any AWS crate, `lambda_*`,
//! an async runtime in its public API, `eventfold-streaming` (topics are a separate product),
//! or `eventfold-testkit` (the contract suites for these ports live there, as a
//! dev-dependency). Business rules live in `shop`.
#![forbid(unsafe_code)]

pub mod deadletter;
pub mod notification;
pub mod projection;
pub mod saga;

pub use notification::{Notification, NotificationError};
pub use saga::{InputError, Pending, Saga, SagaCommand, SagaCommandVisitor};
