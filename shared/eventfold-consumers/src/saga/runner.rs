//! Runs a [`Saga`] on notifications and on deadline ticks, exactly once in effect.
//!
//! For each notification the runner keeps a checkpoint per (saga, source stream) in the
//! read-model store, as the projector does for counter views: a version at or below it is a
//! duplicate (acknowledged); versions between it and the notification are read from the event
//! store first, so every event of the source stream is offered to [`Saga::input`] once, in
//! order. An input runs through [`CommandExecutor::execute`] on the instance's own stream,
//! then every [`Saga::pending`] command goes through the same executor to its target (reached
//! by [`SagaCommand::visit`]), under [`Pending::command_id`]. A refusal is fed back as
//! [`Saga::refused`] and the new pending commands are sent, a bounded number of rounds. The
//! deadline index is brought up to date (right after the input, and again when refusals moved
//! the state), and only then does the checkpoint move.
//!
//! Every write is idempotent (the executor's decide says "already done", the index is set, not
//! added to), so a crash anywhere before the checkpoint move only means the next delivery does
//! the same again, and sends what was recorded but not sent.
//!
//! Deadlines: [`SagaRunner::tick`] lists the instances due (a range read of the index, not of
//! the open instances), re-reads each, and feeds [`Saga::timed_out`] only at the version it
//! found due; index entries carry the instance's version, so a tick and an input racing on
//! one instance leave the newer state's deadline.
//!
//! Metadata: every command the runner issues carries the triggering event's correlation id;
//! an input's causation and command id are the triggering event's id; a sent command's
//! causation is the saga event that recorded its step (the last one of the instance's stream
//! when it is sent), its id the step's command id.

use super::deadline::DeadlineIndex;
use super::{InputError, Pending, Saga, SagaCommand};
use crate::Notification;
use crate::projection::{ReadModelError, ReadModelStore};
use eventfold::cache::CacheFor;
use eventfold::envelope::{EventEnvelope, Metadata, StreamId};
use eventfold::executor::{CommandError, CommandExecutor};
use eventfold::store::{EventStore, StoreError};
use eventfold::upcast::Upcasters;
use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

mod batch;
mod group;
mod prime;
mod send;
mod tick;

pub use batch::SagaBatch;
pub use group::GroupOutcome;
use send::Sender;
pub use tick::Ticked;

/// Tuning of a [`SagaRunner`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerConfig {
    /// How long an instance may wait: its deadline is [`Saga::waiting_since`] plus this.
    pub timeout: Duration,
    /// Rounds of "send the pending commands, feed back the refusals" per input (at least 1).
    pub max_rounds: u32,
    /// Due instances one tick handles at most (the next tick takes the rest).
    pub tick_batch: usize,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(900),
            max_rounds: 8,
            tick_batch: 100,
        }
    }
}

/// Why a notification or an instance's deadline could not be handled; a notification stays
/// unacknowledged (and is retried, then dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The notification names no valid stream, or carries another event than it announces.
    #[error("bad notification: {0}")]
    BadNotification(String),
    /// The event store failed while reading the source stream.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read-model store (checkpoints, deadline index) failed.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    /// The table does not (yet) hold versions the notification announced.
    #[error("{stream_id} lacks versions {from}..={to} in the event store")]
    Missing {
        /// Source stream.
        stream_id: String,
        /// First missing version.
        from: u64,
        /// Announced version.
        to: u64,
    },
    /// The saga could not turn an event into an input (bad data, or an invalid instance id).
    #[error("{saga} cannot take {event_type} v{version} of {stream_id} as input: {source}")]
    Input {
        /// The saga.
        saga: &'static str,
        /// Source stream.
        stream_id: String,
        /// Event version.
        version: u64,
        /// Event type.
        event_type: String,
        /// Why.
        source: InputError,
    },
    /// A command on the saga's stream or on a target failed (not a rejection of a sent
    /// command, which the saga is told about): the store, a conflict that outlasted the
    /// retries, or stored data that does not read.
    #[error("command on {stream_id} failed: {source}")]
    Command {
        /// The stream the command ran on.
        stream_id: String,
        /// What went wrong.
        source: CommandError,
    },
    /// The invocation's answer-by time came before this input started: it is delivered
    /// again ([`SagaBatch::until`]).
    #[error("not handled: the invocation's deadline was near")]
    Deadline,
    /// Refusals kept producing new commands to send beyond [`RunnerConfig::max_rounds`].
    #[error("{stream_id} did not settle within {rounds} rounds of sending and refusals")]
    Unsettled {
        /// The saga stream.
        stream_id: String,
        /// Rounds run.
        rounds: u32,
    },
}

/// What one notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handled {
    /// The notification was at or below the checkpoint.
    pub duplicate: bool,
    /// Events read from the event store (gaps, thin notifications, histories).
    pub events_read: usize,
    /// Versions of the source stream not seen before this notification (`version -
    /// checkpoint - 1`, 0 when in order): how far a catch-up reached back.
    pub behind: u64,
    /// Events the saga took as inputs.
    pub inputs: usize,
    /// Events appended to saga streams (inputs and refusals).
    pub saga_events: usize,
    /// Commands sent to targets (including resends their targets found already done).
    pub commands_sent: usize,
    /// Sent commands their targets rejected (fed back as refusals).
    pub refusals: usize,
}

impl Handled {
    fn add(&mut self, o: Self) {
        self.events_read += o.events_read;
        self.behind = self.behind.max(o.behind);
        self.inputs += o.inputs;
        self.saga_events += o.saga_events;
        self.commands_sent += o.commands_sent;
        self.refusals += o.refusals;
    }
}

/// The caches of the executor that runs saga `G`: its commands' targets'
/// ([`SagaCommand::Targets`]), which must cache `G`'s own states too.
pub type SagaCaches<G> = <<G as Saga>::Send as SagaCommand>::Targets;

/// Runs saga `G` over an event store `E` (through one [`CommandExecutor`], for the saga's
/// streams and its targets alike, caching their warm states in [`SagaCaches<G>`]) and a
/// read-model store `R` (checkpoints, deadline index).
pub struct SagaRunner<G: Saga, E, R> {
    executor: CommandExecutor<E, SagaCaches<G>>,
    models: R,
    config: RunnerConfig,
    upcasters: Upcasters,
    saga: PhantomData<fn() -> G>,
}

impl<G: Saga, E, R> std::fmt::Debug for SagaRunner<G, E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SagaRunner")
            .field("saga", &G::CATEGORY)
            .field("config", &self.config)
            .finish()
    }
}

/// The name of saga `G`'s checkpoints (as a counter view's) and of its deadline index.
pub fn checkpoint_name<G: Saga>() -> String {
    format!("saga:{}", G::CATEGORY)
}

/// Where a step's deadline entry goes: written at once (a tick), or left to the batch's
/// commit (a notification).
#[derive(Clone, Copy)]
enum Index<'a> {
    Now,
    Batch(&'a SagaBatch),
}

/// What the runner knows of an instance while it settles it.
struct Instance<S> {
    stream: StreamId,
    state: Arc<S>,
    version: u64,
    /// Id of the newest saga event known (the causation of the commands sent next).
    last_event: Option<String>,
    correlation_id: String,
    /// Trace header of the input being handled: the commands it causes join its trace.
    trace: Option<String>,
}

impl<G, E, R> SagaRunner<G, E, R>
where
    G: Saga,
    SagaCaches<G>: CacheFor<G>,
    E: EventStore,
    R: ReadModelStore + DeadlineIndex,
{
    /// A runner of `G` executing through `executor`, keeping checkpoints and deadlines in
    /// `models`. The executor's caches are [`SagaCaches<G>`]: build it with
    /// `CommandExecutor::new(store, config).caching()`.
    pub fn new(
        executor: CommandExecutor<E, SagaCaches<G>>,
        models: R,
        config: RunnerConfig,
    ) -> Self {
        Self {
            executor,
            models,
            config,
            upcasters: Upcasters::new(),
            saga: PhantomData,
        }
    }

    /// Lifts old schemas of source events before the saga sees them (the executor has its
    /// own upcasters for the streams it loads).
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// The executor (saga streams and targets).
    pub fn executor(&self) -> &CommandExecutor<E, SagaCaches<G>> {
        &self.executor
    }

    /// The read-model store (checkpoints and deadlines).
    pub fn models(&self) -> &R {
        &self.models
    }

    /// The tuning in force.
    pub fn config(&self) -> &RunnerConfig {
        &self.config
    }

    /// Who the runner's commands are issued by.
    fn actor() -> String {
        checkpoint_name::<G>()
    }

    /// Offers every event of `n`'s stream up to `n.version` that the saga has not seen to
    /// [`Saga::input`], handling each input fully before moving the checkpoint past it: a
    /// batch of one ([`Self::begin`], [`Self::handle_in`], [`Self::commit`]).
    pub async fn handle(&self, n: &Notification) -> Result<Handled, SagaError> {
        let batch = self.begin(std::slice::from_ref(n)).await?;
        let handled = self.handle_in(&batch, n).await;
        // What the handled inputs recorded is written even when a later one failed.
        let committed = self.commit(&batch).await;
        let handled = handled?;
        committed?;
        Ok(handled)
    }

    /// [`Self::handle`] within `batch`: the checkpoint is the batch's, and the checkpoint
    /// moves and deadline entries are left to [`Self::commit`]. Notifications of one stream
    /// must be handled in order.
    pub async fn handle_in(
        &self,
        batch: &SagaBatch,
        n: &Notification,
    ) -> Result<Handled, SagaError> {
        let source = n
            .checked_stream()
            .map_err(|e| SagaError::BadNotification(e.to_string()))?;
        let mut handled = Handled::default();
        let checkpoint = self.checkpoint_in(batch, &n.stream_id).await?;
        if n.version <= checkpoint {
            handled.duplicate = true;
            return Ok(handled);
        }
        handled.behind = n.version - checkpoint - 1;
        let mut at = checkpoint;
        // A long gap is read a page at a time (bounded memory); the checkpoint moves after
        // each input, and at each page's end.
        while at < n.version {
            let (from, to) = (at + 1, crate::projection::page_end(at, n.version));
            let events = if from == 1 {
                self.events_from_start(n, &source, to, &mut handled).await?
            } else {
                self.events_between(n, from, to, &mut handled).await?
            };
            for (i, event) in events.iter().enumerate() {
                if event.version <= at {
                    continue; // another consumer handled it meanwhile
                }
                let history = if G::needs_history(event) {
                    // A page that starts the stream holds its history so far.
                    if from == 1 {
                        events[..=i].to_vec()
                    } else {
                        let raw = self
                            .executor
                            .store()
                            .load_range(&n.stream_id, 1, Some(event.version), None)
                            .await?;
                        handled.events_read += raw.len();
                        self.upcast_all(raw)
                    }
                } else {
                    Vec::new()
                };
                let input = G::input(event, &history).map_err(|source| SagaError::Input {
                    saga: G::CATEGORY,
                    stream_id: event.stream_id.clone(),
                    version: event.version,
                    event_type: event.event_type.clone(),
                    source,
                })?;
                let Some((id, input)) = input else { continue };
                handled.inputs += 1;
                let step = self.step(batch, source.tenant(), &id, input, event).await?;
                handled.add(step);
                at = event.version;
                batch.advance(&n.stream_id, at);
            }
            if at < to {
                at = to;
                batch.advance(&n.stream_id, at);
            }
        }
        tracing::debug!(
            saga = G::CATEGORY,
            stream_id = %n.stream_id,
            version = n.version,
            inputs = handled.inputs,
            sent = handled.commands_sent,
            refusals = handled.refusals,
            read = handled.events_read,
            "notification handled"
        );
        Ok(handled)
    }

    /// Where `batch` has the checkpoint of source stream `stream_id`, read from the store
    /// (and remembered by the batch) the first time.
    async fn checkpoint_in(&self, batch: &SagaBatch, stream_id: &str) -> Result<u64, SagaError> {
        if let Some(at) = batch.checkpoint(stream_id) {
            return Ok(at);
        }
        let stored = self
            .models
            .checkpoint(&checkpoint_name::<G>(), stream_id)
            .await?;
        batch.known(stream_id, stored);
        Ok(stored)
    }

    /// Runs one input on its instance, indexes the instance's deadline and sends what its
    /// state calls for.
    async fn step(
        &self,
        batch: &SagaBatch,
        tenant: &str,
        id: &str,
        input: G::Command,
        event: &EventEnvelope,
    ) -> Result<Handled, SagaError> {
        let mut handled = Handled::default();
        let stream = StreamId::new(tenant, G::CATEGORY, id).map_err(|e| SagaError::Input {
            saga: G::CATEGORY,
            stream_id: event.stream_id.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            source: InputError::Stream(e),
        })?;
        let correlation_id = if event.metadata.correlation_id.is_empty() {
            event.event_id.to_string()
        } else {
            event.metadata.correlation_id.clone()
        };
        let context = Metadata {
            tenant: tenant.to_owned(),
            actor: Self::actor(),
            correlation_id: correlation_id.clone(),
            causation_id: event.event_id.to_string(),
            command_id: event.event_id.to_string(),
            trace: event.metadata.trace.clone(),
        };
        let outcome = match self
            .executor
            .execute_within::<G>(&stream, None, &input, &context, batch.answer_by())
            .await
        {
            Ok(o) => o,
            Err(CommandError::Rejected(rejection)) => {
                // The saga's own verdict on this input: retrying would change nothing.
                tracing::warn!(saga = G::CATEGORY, stream_id = %stream, event_id = %event.event_id, %rejection, "input refused by the saga");
                return Ok(handled);
            }
            Err(source) => {
                return Err(SagaError::Command {
                    stream_id: stream.to_string(),
                    source,
                });
            }
        };
        handled.saga_events += outcome.events.len();
        let instance = Instance {
            stream,
            last_event: outcome.events.last().map(|e| e.event_id.to_string()),
            version: outcome.version,
            state: outcome.state,
            correlation_id,
            trace: event.metadata.trace.clone(),
        };
        // Indexed before sending: a target that keeps failing must not keep the deadline off
        // (the batch writes it even when sending fails).
        let sink = Index::Batch(batch);
        self.index(sink, &instance).await?;
        self.settle(sink, instance, &mut handled).await?;
        Ok(handled)
    }

    /// Sends every pending command of `instance`, feeds refusals back and sends again, until
    /// nothing new is pending; re-indexes the deadline when refusals moved the state.
    async fn settle(
        &self,
        sink: Index<'_>,
        mut instance: Instance<G::State>,
        handled: &mut Handled,
    ) -> Result<(), SagaError> {
        let saga_stream = instance.stream.to_string();
        let tenant = instance.stream.tenant().to_owned();
        let deadline = match sink {
            Index::Batch(batch) => batch.answer_by(),
            Index::Now => None,
        };
        let rounds = self.config.max_rounds.max(1);
        // Steps already sent while handling this input: later rounds need not resend them.
        let mut sent: HashSet<String> = HashSet::new();
        let mut moved = false;
        for _ in 0..rounds {
            let pending: Vec<Pending<G::Send>> = G::pending(&instance.state)
                .into_iter()
                .filter(|p| !sent.contains(&p.command_id(&saga_stream)))
                .collect();
            if pending.is_empty() {
                if moved {
                    self.index(sink, &instance).await?;
                }
                return Ok(());
            }
            let causation_id = match &instance.last_event {
                Some(id) => id.clone(),
                None => self.last_event_id(&instance).await?,
            };
            instance.last_event = Some(causation_id.clone());
            let mut refusals = Vec::new();
            for p in &pending {
                let command_id = p.command_id(&saga_stream);
                let context = Metadata {
                    tenant: tenant.clone(),
                    actor: Self::actor(),
                    correlation_id: instance.correlation_id.clone(),
                    causation_id: causation_id.clone(),
                    command_id: command_id.clone(),
                    trace: instance.trace.clone(),
                };
                let (target, result) = p
                    .command
                    .visit(Sender {
                        executor: &self.executor,
                        tenant: &tenant,
                        context: &context,
                        deadline,
                    })
                    .await;
                match result {
                    Ok(()) => {
                        handled.commands_sent += 1;
                        sent.insert(command_id);
                    }
                    Err(CommandError::Rejected(rejection)) => {
                        tracing::info!(saga = G::CATEGORY, stream_id = %saga_stream, %target, step = %p.step, %rejection, "sent command refused");
                        refusals.push((p, rejection, command_id));
                    }
                    Err(source) => {
                        return Err(SagaError::Command {
                            stream_id: target,
                            source,
                        });
                    }
                }
            }
            for (p, rejection, command_id) in refusals {
                handled.refusals += 1;
                let context = Metadata {
                    tenant: tenant.clone(),
                    actor: Self::actor(),
                    correlation_id: instance.correlation_id.clone(),
                    causation_id: command_id.clone(),
                    command_id: format!("{command_id}:refused"),
                    trace: instance.trace.clone(),
                };
                let input = G::refused(p, &rejection);
                match self
                    .executor
                    .execute_within::<G>(&instance.stream, None, &input, &context, deadline)
                    .await
                {
                    Ok(outcome) => {
                        handled.saga_events += outcome.events.len();
                        if let Some(e) = outcome.events.last() {
                            instance.last_event = Some(e.event_id.to_string());
                            moved = true;
                        }
                        instance.version = outcome.version;
                        instance.state = outcome.state;
                    }
                    // The command stays pending and is refused again next round, until the
                    // bound reports the instance as unsettled.
                    Err(CommandError::Rejected(r)) => {
                        tracing::error!(saga = G::CATEGORY, stream_id = %saga_stream, step = %p.step, rejection = %r, "the saga refused a refusal");
                    }
                    Err(source) => {
                        return Err(SagaError::Command {
                            stream_id: saga_stream,
                            source,
                        });
                    }
                }
            }
        }
        Err(SagaError::Unsettled {
            stream_id: saga_stream,
            rounds,
        })
    }

    /// The id of the newest event of the instance's stream (the step a resend belongs to).
    async fn last_event_id(&self, instance: &Instance<G::State>) -> Result<String, SagaError> {
        if instance.version == 0 {
            return Ok(instance.correlation_id.clone());
        }
        let last = self
            .executor
            .store()
            .load_range(
                &instance.stream.to_string(),
                instance.version,
                Some(instance.version),
                Some(1),
            )
            .await?;
        Ok(last.first().map_or_else(
            || instance.correlation_id.clone(),
            |e| e.event_id.to_string(),
        ))
    }

    fn upcast_all(&self, raw: Vec<EventEnvelope>) -> Vec<EventEnvelope> {
        raw.into_iter()
            .map(|e| self.upcasters.upcast_envelope(e))
            .collect()
    }

    /// Events `from..=to` of the notification's stream (see [`Notification::events_between`]).
    async fn events_between(
        &self,
        n: &Notification,
        from: u64,
        to: u64,
        handled: &mut Handled,
    ) -> Result<Vec<EventEnvelope>, SagaError> {
        n.events_between(
            self.executor.store(),
            &self.upcasters,
            (from, to),
            &mut handled.events_read,
        )
        .await?
        .ok_or_else(|| SagaError::Missing {
            stream_id: n.stream_id.clone(),
            from,
            to,
        })
    }
}
