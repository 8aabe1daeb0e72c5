//! Warming a target's state from a history the runner read anyway: when a notification of a
//! stream the saga may send commands to is read from the stream's start (its first input,
//! whose history the filtered-out events before it make a gap), the read goes on to the
//! stream's head in the same request and the target's state at the head goes into the
//! executor's cache. The command the saga sends there later (an order's confirmation after
//! its payment) then appends without reading the stream. A state gone stale meanwhile costs
//! nothing in correctness: the append finds the stream moved and the executor catches up, as
//! for any cached state.

use super::*;
use crate::saga::TargetVisitor;
use eventfold::aggregate::Aggregate;
use eventfold::cache::StateCaches;
use eventfold::store::ExpectedVersion;

/// Events read from a stream's start at most (one page of a catch-up): a longer stream is
/// read as before, page by page, and not warmed.
const PRIME_LIMIT: usize = crate::projection::CATCH_UP_PAGE as usize;

/// Whether the saga's commands may target the streams of `category`.
struct Targets;

impl<T> TargetVisitor<T> for Targets {
    type Output = ();
    fn visit<A: Aggregate>(self) {}
}

/// Folds a target's whole stream and caches the state at its head.
struct Primer<'a, E, T> {
    executor: &'a CommandExecutor<E, T>,
    stream_id: &'a str,
    events: &'a [EventEnvelope],
    head: ExpectedVersion,
}

impl<E: EventStore, T: StateCaches> TargetVisitor<T> for Primer<'_, E, T> {
    /// Whether the state was cached.
    type Output = bool;

    fn visit<A: Aggregate>(self) -> bool
    where
        T: CacheFor<A>,
    {
        let Some(cache) = CacheFor::<A>::states(self.executor.caches()) else {
            return false;
        };
        // A history the aggregate cannot read is left to the executor's own load to report.
        match self.executor.fold_envelopes::<A>(A::initial(), self.events) {
            Ok(state) => {
                cache.put(self.stream_id, self.head, state);
                true
            }
            Err(_) => false,
        }
    }
}

impl<G, E, R> SagaRunner<G, E, R>
where
    G: Saga,
    SagaCaches<G>: CacheFor<G>,
    E: EventStore,
    R: ReadModelStore + DeadlineIndex,
{
    /// Events `1..=to` of `n`'s stream, as [`Self::events_between`] reads them. When that
    /// takes a read and the stream is one the saga's commands may target, the read goes on to
    /// the head (within [`PRIME_LIMIT`] events) and warms the target's state with it.
    pub(super) async fn events_from_start(
        &self,
        n: &Notification,
        source: &StreamId,
        to: u64,
        handled: &mut Handled,
    ) -> Result<Vec<EventEnvelope>, SagaError> {
        let carried = to == 1 && n.event.as_ref().is_some_and(|e| e.version == 1);
        let target = <G::Send as SagaCommand>::visit_target(source.category(), Targets).is_some();
        if carried || !target {
            return self.events_between(n, 1, to, handled).await;
        }
        let raw = self
            .executor
            .store()
            .load_range(&n.stream_id, 1, None, Some(PRIME_LIMIT))
            .await?;
        handled.events_read += raw.len();
        let contiguous = raw
            .iter()
            .enumerate()
            .all(|(i, e)| e.version == 1 + i as u64);
        if !contiguous || (raw.len() as u64) < to {
            return Err(SagaError::Missing {
                stream_id: n.stream_id.clone(),
                from: 1,
                to,
            });
        }
        // Fewer than asked: the read reached the head, a commit boundary the store reported.
        if raw.len() < PRIME_LIMIT
            && let Some(head) = ExpectedVersion::NEW.after(&raw)
        {
            let primer = Primer {
                executor: &self.executor,
                stream_id: &n.stream_id,
                events: &raw,
                head,
            };
            <G::Send as SagaCommand>::visit_target(source.category(), primer);
        }
        Ok(self.upcast_all(raw.into_iter().take(to as usize).collect()))
    }
}
