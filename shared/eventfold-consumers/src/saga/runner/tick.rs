//! Deadline ticks: the instances due fed their timeout, and the deadline index kept up to date.

use super::*;
use crate::projection::ReadModelStore;
use crate::saga::Saga;
use crate::saga::deadline::{Deadline, DeadlineIndex, DueInstance};
use chrono::{DateTime, TimeDelta, Utc};
use eventfold::envelope::{Metadata, StreamId};
use eventfold::executor::CommandError;
use eventfold::store::EventStore;

/// What one tick did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ticked {
    /// Index entries found due.
    pub due: usize,
    /// Instances fed their timeout.
    pub timed_out: usize,
    /// Entries that were out of date (the instance no longer waits, or waits longer): fixed.
    pub stale: usize,
    /// What the timeouts caused (saga events, commands sent, refusals).
    pub handled: Handled,
    /// Instances that failed, with the error; the others were handled regardless.
    pub failed: Vec<(String, String)>,
}

/// Times a tick re-reads an instance that moved while its timeout was being decided.
const CONFLICT_ATTEMPTS: u32 = 4;

impl<G, E, R> SagaRunner<G, E, R>
where
    G: Saga,
    SagaCaches<G>: CacheFor<G>,
    E: EventStore,
    R: ReadModelStore + DeadlineIndex,
{
    /// Feeds [`Saga::timed_out`] to every instance whose deadline is at or before `now` (at
    /// most [`RunnerConfig::tick_batch`] of them) and sends what that calls for. Entries that
    /// no longer match their instance are corrected instead. One instance failing does not
    /// stop the others; the failures are listed.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Ticked, SagaError> {
        let name = checkpoint_name::<G>();
        let due = self
            .models
            .due(&name, now, self.config.tick_batch.max(1))
            .await?;
        let mut ticked = Ticked {
            due: due.len(),
            ..Ticked::default()
        };
        for entry in &due {
            if let Err(e) = self.fire(&name, entry, now, &mut ticked).await {
                tracing::error!(saga = G::CATEGORY, stream_id = %entry.stream_id, error = %e, "deadline not handled");
                ticked.failed.push((entry.stream_id.clone(), e.to_string()));
            }
        }
        if ticked.due > 0 {
            tracing::info!(
                saga = G::CATEGORY,
                due = ticked.due,
                timed_out = ticked.timed_out,
                stale = ticked.stale,
                failed = ticked.failed.len(),
                "tick"
            );
        }
        Ok(ticked)
    }

    /// Handles one due entry: checks it against the instance's state, then times it out, at
    /// exactly the version checked (an input that lands in between makes it check again).
    async fn fire(
        &self,
        name: &str,
        entry: &DueInstance,
        now: DateTime<Utc>,
        ticked: &mut Ticked,
    ) -> Result<(), SagaError> {
        let stream = StreamId::parse(&entry.stream_id).map_err(|e| {
            SagaError::BadNotification(format!("deadline index entry {}: {e}", entry.stream_id))
        })?;
        let command_error = |source| SagaError::Command {
            stream_id: entry.stream_id.clone(),
            source,
        };
        let correlation_id = entry.deadline.correlation_id.clone();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            // A fresh read: the entry may be older than the instance's last step.
            let (version, state) = self
                .executor
                .load::<G>(&stream)
                .await
                .map_err(command_error)?;
            let due_at = self.due_at(&state);
            if due_at.is_none_or(|d| d > now) {
                let deadline = due_at.map(|due_at| Deadline {
                    due_at,
                    correlation_id: correlation_id.clone(),
                });
                self.models
                    .set_deadline(name, &entry.stream_id, version, deadline.as_ref())
                    .await?;
                ticked.stale += 1;
                return Ok(());
            }
            let command_id = format!(
                "{}:deadline@{}",
                entry.stream_id,
                entry.deadline.due_at.to_rfc3339()
            );
            let context = Metadata {
                tenant: stream.tenant().to_owned(),
                actor: Self::actor(),
                correlation_id: correlation_id.clone(),
                causation_id: command_id.clone(),
                command_id,
                // A deadline is caused by the clock, not by a traced request.
                trace: None,
            };
            // The deadline was judged on `version`: the timeout must not land on a newer
            // state (one that may wait for something else, or not at all).
            match self
                .executor
                .execute::<G>(&stream, Some(version), &G::timed_out(now), &context)
                .await
            {
                Ok(outcome) => break outcome,
                Err(CommandError::Conflict { .. }) if attempt < CONFLICT_ATTEMPTS => continue,
                Err(source) => return Err(command_error(source)),
            }
        };
        ticked.timed_out += 1;
        ticked.handled.saga_events += outcome.events.len();
        let instance = Instance {
            stream,
            last_event: outcome.events.last().map(|e| e.event_id.to_string()),
            version: outcome.version,
            state: outcome.state,
            correlation_id,
            trace: None,
        };
        self.index(Index::Now, &instance).await?;
        self.settle(Index::Now, instance, &mut ticked.handled).await
    }

    /// When the instance in `state` is due, if it waits.
    pub(super) fn due_at(&self, state: &G::State) -> Option<DateTime<Utc>> {
        let since = G::waiting_since(state)?;
        let timeout = TimeDelta::from_std(self.config.timeout).ok()?;
        since.checked_add_signed(timeout)
    }

    /// Sets the instance's entry in the deadline index from its state, now or in `sink`'s
    /// batch.
    pub(super) async fn index(
        &self,
        sink: Index<'_>,
        instance: &Instance<G::State>,
    ) -> Result<(), SagaError> {
        let deadline = self.due_at(&instance.state).map(|due_at| Deadline {
            due_at,
            correlation_id: instance.correlation_id.clone(),
        });
        let stream_id = instance.stream.to_string();
        match sink {
            Index::Batch(batch) => batch.deadline(&stream_id, instance.version, deadline),
            Index::Now => {
                self.models
                    .set_deadline(
                        &checkpoint_name::<G>(),
                        &stream_id,
                        instance.version,
                        deadline.as_ref(),
                    )
                    .await?
            }
        }
        Ok(())
    }
}
