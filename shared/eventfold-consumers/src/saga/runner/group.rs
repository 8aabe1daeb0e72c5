//! One source stream's notifications of a batch, taken together: the inputs they make for
//! distinct instances run at once, each instance's in order.
//!
//! A FIFO message group is one source stream, handed over in order, one batch at a time.
//! A hot stream (a SKU every order reserves on) feeds a different instance with nearly each
//! event: handled one after another, its backlog drains at one step's latency per event,
//! and every order behind it waits. What must stay in order is one instance's inputs (its
//! stream's decisions) and the checkpoint (it moves past a version only when every input up
//! to it was handled). So the events are read first (the notifications carry them; a gap is
//! read from the store), turned into inputs, split by instance, and the instances run
//! concurrently. The checkpoint moves to the last notification before the first failure.
//! Inputs after it that went through are delivered again with the failed one, and find
//! their steps done: every step is idempotent.
//!
//! What this does not plan for goes one notification at a time, as
//! [`SagaRunner::handle_in`] does, and the rest of the group is planned again: a group of
//! one, a stream read from its start (the saga warms the target then), an input that needs
//! its stream's history, a gap longer than a page, or anything that fails while planning (it
//! fails again, attributed, on its own).

use super::{Handled, SagaBatch, SagaCaches, SagaError, SagaRunner};
use crate::Notification;
use crate::projection::ReadModelStore;
use crate::saga::Saga;
use crate::saga::deadline::DeadlineIndex;
use eventfold::cache::CacheFor;
use eventfold::envelope::EventEnvelope;
use eventfold::store::EventStore;
use std::collections::BTreeMap;
use std::time::Instant;
use tracing::Instrument;

/// What a group's notifications come to before anything runs.
struct Plan<C> {
    /// Per notification: what it did so far (duplicates, reads, how far behind).
    handled: Vec<Handled>,
    /// Per instance id: its inputs in order (notification index, input, the event).
    lanes: BTreeMap<String, Vec<(usize, C, EventEnvelope)>>,
    /// The tenant of the source stream.
    tenant: String,
}

/// What a group came to: what each notification before the first failure did, and the
/// first failure (its index in the group and why).
pub type GroupOutcome = (Vec<Handled>, Option<(usize, SagaError)>);

impl<G, E, R> SagaRunner<G, E, R>
where
    G: Saga,
    SagaCaches<G>: CacheFor<G>,
    E: EventStore,
    R: ReadModelStore + DeadlineIndex,
{
    /// Handles `group`, the notifications of one source stream in version order, within
    /// `batch`: the inputs for distinct instances at once, each instance's in order (see
    /// the module's documentation). No input starts past the batch's answer-by time
    /// ([`SagaBatch::until`]): the notification it belongs to fails with
    /// [`SagaError::Deadline`].
    pub async fn handle_group_in(&self, batch: &SagaBatch, group: &[Notification]) -> GroupOutcome {
        let mut done = Vec::with_capacity(group.len());
        let mut start = 0;
        // What cannot be planned is the group's head (the stream's start, say): it goes
        // alone, and the rest is planned again.
        while start < group.len() {
            let rest = &group[start..];
            let (handled, failed) = match self.plan(batch, rest).await {
                Some(plan) => self.run(batch, rest, plan).await,
                None if rest.len() > 1 => self.one_by_one(batch, &rest[..1]).await,
                None => self.one_by_one(batch, rest).await,
            };
            let went = if failed.is_some() { 0 } else { handled.len() };
            done.extend(handled);
            if let Some((i, e)) = failed {
                return (done, Some((start + i, e)));
            }
            start += went;
        }
        (done, None)
    }

    async fn one_by_one(&self, batch: &SagaBatch, group: &[Notification]) -> GroupOutcome {
        let mut done = Vec::with_capacity(group.len());
        for (i, n) in group.iter().enumerate() {
            if past(batch) {
                return (done, Some((i, SagaError::Deadline)));
            }
            match self.handle_in(batch, n).await {
                Ok(handled) => done.push(handled),
                Err(e) => return (done, Some((i, e))),
            }
        }
        (done, None)
    }

    /// The events of `group` past the checkpoint, as inputs by instance; `None` when the
    /// group is to go one notification at a time.
    async fn plan(&self, batch: &SagaBatch, group: &[Notification]) -> Option<Plan<G::Command>> {
        let first = group.first()?;
        if group.len() < 2 || group.iter().any(|n| n.stream_id != first.stream_id) {
            return None;
        }
        let source = first.checked_stream().ok()?;
        let mut at = self.checkpoint_in(batch, &first.stream_id).await.ok()?;
        let mut plan = Plan {
            handled: vec![Handled::default(); group.len()],
            lanes: BTreeMap::new(),
            tenant: source.tenant().to_owned(),
        };
        for (i, n) in group.iter().enumerate() {
            if n.checked_stream().is_err() {
                return None;
            }
            if n.version <= at {
                plan.handled[i].duplicate = true;
                continue;
            }
            let from = at + 1;
            if from == 1 || crate::projection::page_end(at, n.version) < n.version {
                return None;
            }
            plan.handled[i].behind = n.version - from;
            let events = self
                .events_between(n, from, n.version, &mut plan.handled[i])
                .await
                .ok()?;
            for event in events {
                if G::needs_history(&event) {
                    return None;
                }
                if let Some((id, input)) = G::input(&event, &[]).ok()? {
                    plan.handled[i].inputs += 1;
                    plan.lanes.entry(id).or_default().push((i, input, event));
                }
            }
            at = n.version;
        }
        // One instance gains nothing from the concurrent path: keep the proven one.
        (plan.lanes.len() > 1).then_some(plan)
    }

    async fn run(
        &self,
        batch: &SagaBatch,
        group: &[Notification],
        plan: Plan<G::Command>,
    ) -> GroupOutcome {
        let Plan {
            mut handled,
            lanes,
            tenant,
        } = plan;
        let tenant = tenant.as_str();
        let lanes = lanes.into_iter().map(|(id, inputs)| async move {
            let mut done: Vec<(usize, Handled)> = Vec::new();
            for (i, input, event) in inputs {
                if past(batch) {
                    return (done, Some((i, SagaError::Deadline)));
                }
                let span = tracing::info_span!(
                    "input",
                    stream_id = %event.stream_id,
                    version = event.version,
                    event_type = %event.event_type,
                    correlation_id = %event.metadata.correlation_id,
                    instance = %id,
                );
                match self
                    .step(batch, tenant, &id, input, &event)
                    .instrument(span)
                    .await
                {
                    Ok(step) => done.push((i, step)),
                    Err(e) => return (done, Some((i, e))),
                }
            }
            (done, None)
        });
        let mut failure: Option<(usize, SagaError)> = None;
        for (done, failed) in futures_util::future::join_all(lanes).await {
            for (i, step) in done {
                handled[i].add(step);
            }
            if let Some((i, e)) = failed {
                match &failure {
                    Some((first, _)) if *first <= i => {
                        tracing::warn!(saga = G::CATEGORY, error = %e, "a later input of the group failed too");
                    }
                    _ => failure = Some((i, e)),
                }
            }
        }
        let through = failure.as_ref().map_or(group.len(), |(i, _)| *i);
        if let Some(last) = through.checked_sub(1) {
            batch.advance(&group[last].stream_id, group[last].version);
        }
        handled.truncate(through);
        (handled, failure)
    }
}

/// Whether the batch's answer-by time has come.
fn past(batch: &SagaBatch) -> bool {
    batch.answer_by().is_some_and(|by| Instant::now() >= by)
}
