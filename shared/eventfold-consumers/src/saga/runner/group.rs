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
//! [`SagaRunner::handle_in`] does: a group of one, a stream read from its start (the saga
//! warms the target then), an input that needs its stream's history, a gap longer than a
//! page, or anything that fails while planning (it fails again, attributed, on its own).
//! When that is the first notification past the checkpoint, it goes alone and the rest of
//! the group is planned again; when it is a later one, the rest goes one at a time rather
//! than be planned (and read) again.

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

/// How a group (or what is left of it) goes.
enum Planned<C> {
    /// Its instances at once.
    Run(Plan<C>),
    /// Its first notification alone, then the rest planned again.
    HeadAlone,
    /// One notification at a time.
    OneByOne,
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
        // A head that cannot be planned (the stream's start, say) goes alone, and the rest
        // is planned again.
        while start < group.len() {
            let rest = &group[start..];
            let (handled, failed) = match self.plan(batch, rest).await {
                Planned::Run(plan) => self.run(batch, rest, plan).await,
                Planned::HeadAlone => self.one_by_one(batch, &rest[..1]).await,
                Planned::OneByOne => self.one_by_one(batch, rest).await,
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

    /// The events of `group` past the checkpoint, as inputs by instance, or how the group
    /// goes instead: its head alone (what stops the plan is the first notification past the
    /// checkpoint: once it is handled, the rest can be planned without reading it again),
    /// or one notification at a time (anything later: planning again would read again).
    async fn plan(&self, batch: &SagaBatch, group: &[Notification]) -> Planned<G::Command> {
        let Some(first) = group.first() else {
            return Planned::OneByOne;
        };
        if group.len() < 2 || group.iter().any(|n| n.stream_id != first.stream_id) {
            return Planned::OneByOne;
        }
        let Ok(source) = first.checked_stream() else {
            return Planned::OneByOne;
        };
        let Ok(mut at) = self.checkpoint_in(batch, &first.stream_id).await else {
            return Planned::OneByOne;
        };
        let mut plan = Plan {
            handled: vec![Handled::default(); group.len()],
            lanes: BTreeMap::new(),
            tenant: source.tenant().to_owned(),
        };
        // Whether no notification past the checkpoint has been planned yet.
        let mut head = true;
        let stop = |head: bool| {
            if head {
                Planned::HeadAlone
            } else {
                Planned::OneByOne
            }
        };
        for (i, n) in group.iter().enumerate() {
            if n.checked_stream().is_err() {
                return stop(head);
            }
            if n.version <= at {
                plan.handled[i].duplicate = true;
                continue;
            }
            let from = at + 1;
            if from == 1 || crate::projection::page_end(at, n.version) < n.version {
                return stop(head);
            }
            plan.handled[i].behind = n.version - from;
            let Ok(events) = self
                .events_between(n, from, n.version, &mut plan.handled[i])
                .await
            else {
                return stop(head);
            };
            for event in events {
                if G::needs_history(&event) {
                    return stop(head);
                }
                match G::input(&event, &[]) {
                    Ok(Some((id, input))) => {
                        plan.handled[i].inputs += 1;
                        plan.lanes.entry(id).or_default().push((i, input, event));
                    }
                    Ok(None) => {}
                    Err(_) => return stop(head),
                }
            }
            at = n.version;
            head = false;
        }
        // One instance gains nothing from the concurrent path: keep the proven one.
        if plan.lanes.len() > 1 {
            Planned::Run(plan)
        } else {
            Planned::OneByOne
        }
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
