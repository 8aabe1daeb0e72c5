//! Sagas (process managers) in the aggregate's shape, with commands out.
//!
//! A saga instance is an event-sourced stream of its own (`{tenant}/{CATEGORY}-{id}`): every
//! step it takes is an event of that stream, so its history is the saga log, and it is loaded,
//! decided and appended by the same [`CommandExecutor`](eventfold::CommandExecutor) path as any
//! aggregate. A [`Saga`] is therefore an [`Aggregate`] whose commands are the saga's *inputs*
//! (what happened elsewhere, a refusal of a command it sent, a passed deadline), plus:
//!
//! - [`Saga::input`]: which instance an event of another stream concerns, and as what input.
//!   An event that cannot say enough alone (an `OrderPlaced` written before it carried its
//!   lines) asks for its stream's history ([`Saga::needs_history`]), which the runner reads
//!   from the event store, upcast, up to and including the event;
//! - [`Saga::pending`]: the commands its state calls for (steps recorded whose outcome it has
//!   not yet seen). A runner records the step first (appends the saga's events), then sends
//!   every pending command, each under a command id derived from the saga and the step
//!   ([`Pending::command_id`]); a redelivered input records nothing new and sends the same
//!   commands again, which their targets treat as already done. A crash between recording and
//!   sending therefore loses nothing: the next input (or the deadline tick) sends them;
//! - [`Saga::refused`]: the input that tells the saga a command it sent was rejected;
//! - [`Saga::waiting_since`] / [`Saga::timed_out`]: deadlines. The runner indexes an instance
//!   that waits, and when `since + timeout` has passed it feeds the `timed_out` input.
//!
//! Pure and synchronous like the aggregates: no clock (times come from events and the runner),
//! no I/O. The commands a saga sends go to other aggregates through [`SagaCommand`], which
//! names the target stream and lets a runner reach the target's [`Aggregate`] type through a
//! visitor (the same pattern as a registry of aggregates), and names the caches of its
//! targets ([`SagaCommand::Targets`]), so the runner's executor keeps their warm states.
//!
//! [`SagaRunner`] ([`runner`]) is that runner: notifications in (checkpoint per saga and source
//! stream, gaps read from the event store), commands out through the
//! [`CommandExecutor`](eventfold::CommandExecutor), deadlines through a [`DeadlineIndex`] (the
//! read-model store's; [`MemoryReadModelStore`](crate::projection::MemoryReadModelStore) has
//! one) and a tick. The test kit (which depends on this crate, so no link) holds a small
//! saga to test runners with, `eventfold_testkit::toy`, and the suite every deadline index
//! must pass, `eventfold_testkit::deadline_index`.

mod deadline;
pub mod runner;

pub use deadline::{CheckpointMove, Deadline, DeadlineIndex, DeadlineWrite, DueInstance, Together};
pub use runner::{
    GroupOutcome, Handled, RunnerConfig, SagaBatch, SagaCaches, SagaError, SagaRunner, Ticked,
};

use chrono::{DateTime, Utc};
use eventfold::aggregate::{Aggregate, CodecError, Rejection};
use eventfold::cache::{CacheFor, StateCaches};
use eventfold::envelope::{EventEnvelope, StreamIdError};
use std::fmt::Debug;

/// A process manager: an aggregate whose commands are inputs, with the commands it sends.
pub trait Saga: Aggregate {
    /// What the saga asks of other aggregates.
    type Send: SagaCommand;

    /// Whether `event` needs the history of its stream to become an input (default: no).
    fn needs_history(_event: &EventEnvelope) -> bool {
        false
    }

    /// The instance id (the saga stream's id within the event's tenant) an event of another
    /// stream concerns, with the input it makes; `Ok(None)` when the saga ignores the event.
    /// `history` is the event's stream from version 1 up to and including `event`, upcast,
    /// when [`Self::needs_history`] asked for it, else empty. An `Err` is a known event type
    /// whose data does not decode, or an event that does not say what the saga needs (not
    /// acknowledged).
    fn input(
        event: &EventEnvelope,
        history: &[EventEnvelope],
    ) -> Result<Option<(String, Self::Command)>, InputError>;

    /// Every command `state` calls for: steps recorded and not yet answered. Deterministic,
    /// and each command must be idempotent at its target.
    fn pending(state: &Self::State) -> Vec<Pending<Self::Send>>;

    /// The input telling the saga that `command` (one of its pending ones) was refused.
    fn refused(command: &Pending<Self::Send>, rejection: &Rejection) -> Self::Command;

    /// When the instance started waiting for something that has a deadline, if it waits.
    fn waiting_since(state: &Self::State) -> Option<DateTime<Utc>>;

    /// The input telling a waiting instance that its deadline passed at `now`.
    fn timed_out(now: DateTime<Utc>) -> Self::Command;
}

/// Why an event of another stream could not become a saga input ([`Saga::input`]): bad
/// data, so the runner leaves its notification unacknowledged (retried, then dead-lettered).
/// Keeps the underlying error as its source.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The event's stream id (or the instance id it names) is not a valid stream id.
    #[error(transparent)]
    Stream(#[from] StreamIdError),
    /// The data of an event type the saga knows does not decode.
    #[error(transparent)]
    Decode(#[from] CodecError),
    /// The event, with the history given, does not say what the saga needs (e.g. an event
    /// that starts an instance without the history it is read with).
    #[error("{0}")]
    Incomplete(String),
}

/// A command a saga sends, with the step it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending<C> {
    /// Stable name of the step within the instance, e.g. `reserve:apple` or `cancel`: the
    /// command id is derived from it, so it must not change between redeliveries.
    pub step: String,
    /// The command.
    pub command: C,
}

impl<C> Pending<C> {
    /// The command id of this step of saga stream `saga_stream` (`{tenant}/{Category}-{id}`):
    /// the same on every redelivery, so targets and logs see one command.
    pub fn command_id(&self, saga_stream: &str) -> String {
        format!("{saga_stream}:{}", self.step)
    }
}

/// A command addressed to another aggregate's stream, reachable by its type.
pub trait SagaCommand: Debug + Clone + PartialEq + Send + Sync + 'static {
    /// The caches of the aggregates the commands may target, one per aggregate type (e.g.
    /// made by [`eventfold::state_caches!`]): [`Self::visit`] proves `Targets: CacheFor<A>`
    /// for each target `A`, so a runner's executor keeps their warm states. A runner also
    /// runs its saga on that executor, so for a saga's commands they cache the saga too.
    type Targets: StateCaches;

    /// Runs `visitor` with the target's aggregate type, its id (within the saga's tenant) and
    /// the command, given by value (a copy of the one `self` holds): the compiler knows it is
    /// `A`'s, so the visitor can keep it and decide it against `A`'s state later.
    fn visit<V: SagaCommandVisitor<Self::Targets>>(&self, visitor: V) -> V::Output;

    /// Runs `visitor` with the aggregate type of the streams of `category`, when the saga's
    /// commands may target it; `None` otherwise (the default: no target is named). A runner
    /// that reads such a stream from its start anyway (a notification's history) keeps its
    /// state warm through this, so the command it later sends there appends without reading.
    fn visit_target<V: TargetVisitor<Self::Targets>>(
        category: &str,
        visitor: V,
    ) -> Option<V::Output> {
        let _ = (category, visitor);
        None
    }
}

/// Something to do with one of a saga's target aggregate types, found by its category
/// ([`SagaCommand::visit_target`]). `T` is the saga's [`SagaCommand::Targets`].
pub trait TargetVisitor<T> {
    /// What the visit yields.
    type Output;
    /// Does it with the aggregate `A`.
    fn visit<A: Aggregate>(self) -> Self::Output
    where
        T: CacheFor<A>;
}

/// Something to do with a [`SagaCommand`] once its target type is known (a runner executes
/// it; a test records it). `T` is the command's [`SagaCommand::Targets`]: the visit may use
/// `A`'s cache there.
pub trait SagaCommandVisitor<T> {
    /// What the visit yields.
    type Output;
    /// Does it with the aggregate `A`, whose stream id (within the tenant) is `id`.
    fn visit<A: Aggregate>(self, id: &str, command: A::Command) -> Self::Output
    where
        T: CacheFor<A>;
}
