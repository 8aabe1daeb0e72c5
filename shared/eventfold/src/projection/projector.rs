//! Applies notifications to views exactly once.

use super::{
    ApplyError, CounterView, Doc, Found, ModelKey, Notification, ReadModelError, ReadModelStore,
    StreamView, ViewError,
};
use crate::envelope::{EventEnvelope, StreamId};
use crate::store::{EventStore, StoreError};
use crate::upcast::Upcasters;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Attempts per view when another consumer moves the checkpoint under us.
const CONFLICT_ATTEMPTS: u32 = 4;
/// Events a gap is read and applied in at most, per page (each page moves the checkpoint).
pub const CATCH_UP_PAGE: u64 = 100;

/// Why a notification could not be applied; it stays unacknowledged (and is retried).
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    /// The notification names no valid stream.
    #[error("notification for invalid stream: {0}")]
    BadNotification(String),
    /// The event store failed while filling a gap.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The read-model store failed.
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
    /// A view refused an event.
    #[error(transparent)]
    View(#[from] ViewError),
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
}

/// What one notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Views that changed.
    pub views_changed: usize,
    /// Views for which it was a duplicate.
    pub duplicates: usize,
    /// Events read from the event store (gaps and thin notifications).
    pub events_read: usize,
    /// Versions the furthest-behind view had not seen before this one (`version - checkpoint
    /// - 1`, 0 when in order): how far a catch-up reached back.
    pub behind: u64,
}

/// What one group of a batch came to ([`Projector::handle_batch`]).
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// What each applied notification did, in order: a prefix of the group, every one of them
    /// durably written for every view.
    pub applied: Vec<Applied>,
    /// Why the notification after the last applied one failed; `None` when the whole group
    /// was applied. The notifications after it were not applied (hold them back).
    pub failure: Option<ProjectError>,
}

/// Counter deltas per document key.
type Sums = BTreeMap<String, BTreeMap<String, i64>>;

/// A (view, source stream) while a batch is applied: what the store holds and what is
/// applied in memory on top of it, not yet written.
struct Pending {
    stream: StreamId,
    stream_id: String,
    /// The checkpoint in the store.
    written: u64,
    /// The checkpoint applied in memory (`>= written`).
    at: u64,
    /// Stream views: the document at `at` (`None`: no document).
    data: Option<Value>,
    /// Counter views: what the events `written + 1 ..= at` add.
    sums: Sums,
    /// Index in its group of the first notification whose effect is not written yet.
    since: Option<usize>,
}

impl Pending {
    fn new(stream: &StreamId, stream_id: &str, checkpoint: u64, data: Option<Value>) -> Self {
        Self {
            stream: stream.clone(),
            stream_id: stream_id.to_owned(),
            written: checkpoint,
            at: checkpoint,
            data,
            sums: Sums::new(),
            since: None,
        }
    }

    /// The state of a stream view from its stored document.
    fn of_doc(stream: &StreamId, stream_id: &str, doc: Option<Doc>) -> Self {
        let checkpoint = doc.as_ref().map_or(0, |d| d.checkpoint);
        let data = doc.map(|d| d.data).filter(|d| !d.is_null());
        Self::new(stream, stream_id, checkpoint, data)
    }
}

/// How advancing a (view, stream) over one notification failed.
enum Failed {
    /// The notification could not be applied; what was applied before it stands.
    Step(ProjectError),
    /// A write of earlier progress failed: everything from the group's notification `since`
    /// on is unwritten (or unknown), and the state must be read again.
    Write { since: usize, error: ProjectError },
}

/// Applies notifications to a set of views over a read-model store.
pub struct Projector<E, R> {
    events: E,
    models: R,
    stream_views: Vec<Arc<dyn StreamView>>,
    counter_views: Vec<Arc<dyn CounterView>>,
    upcasters: Upcasters,
}

impl<E, R> std::fmt::Debug for Projector<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self
            .stream_views
            .iter()
            .map(|v| v.name())
            .chain(self.counter_views.iter().map(|v| v.name()))
            .collect();
        f.debug_struct("Projector").field("views", &names).finish()
    }
}

impl<E: EventStore, R: ReadModelStore> Projector<E, R> {
    /// A projector with no views.
    pub fn new(events: E, models: R) -> Self {
        Self {
            events,
            models,
            stream_views: Vec::new(),
            counter_views: Vec::new(),
            upcasters: Upcasters::new(),
        }
    }

    /// Adds a per-stream view.
    pub fn with_stream_view(mut self, view: Arc<dyn StreamView>) -> Self {
        self.stream_views.push(view);
        self
    }

    /// Adds a cross-stream counter view.
    pub fn with_counter_view(mut self, view: Arc<dyn CounterView>) -> Self {
        self.counter_views.push(view);
        self
    }

    /// Lifts old event schemas before views see them.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// Keeps only the views named in `names` (e.g. to rebuild one view).
    pub fn only(mut self, names: &[&str]) -> Self {
        self.stream_views.retain(|v| names.contains(&v.name()));
        self.counter_views.retain(|v| names.contains(&v.name()));
        self
    }

    /// Names of the views.
    pub fn view_names(&self) -> Vec<String> {
        self.stream_views
            .iter()
            .map(|v| v.name().to_owned())
            .chain(self.counter_views.iter().map(|v| v.name().to_owned()))
            .collect()
    }

    /// The read-model store.
    pub fn models(&self) -> &R {
        &self.models
    }

    /// The event store.
    pub fn events(&self) -> &E {
        &self.events
    }

    /// Events `from..=to` of the notification's stream (see [`Notification::events_between`]).
    async fn events_between(
        &self,
        n: &Notification,
        from: u64,
        to: u64,
        read: &mut usize,
    ) -> Result<Vec<EventEnvelope>, ProjectError> {
        n.events_between(&self.events, &self.upcasters, (from, to), read)
            .await?
            .ok_or_else(|| ProjectError::Missing {
                stream_id: n.stream_id.clone(),
                from,
                to,
            })
    }

    /// Applies `n` to every view of its category, exactly once per view.
    pub async fn handle(&self, n: &Notification) -> Result<Applied, ProjectError> {
        let stream = n
            .checked_stream()
            .map_err(|e| ProjectError::BadNotification(e.to_string()))?;
        let mut applied = Applied::default();
        // Every view gets its chance: one view refusing an event must not stall the others
        // (their checkpoints make the redelivery harmless). The first error is reported.
        let mut first_error = None;
        let views = self
            .stream_views
            .iter()
            .map(|v| ViewRef::Stream(v.as_ref()))
            .chain(
                self.counter_views
                    .iter()
                    .map(|v| ViewRef::Counter(v.as_ref())),
            )
            .filter(|v| v.category() == stream.category());
        for view in views {
            if let Err(e) = self.apply_view(view, &stream, n, &mut applied).await {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        tracing::debug!(
            stream_id = %n.stream_id,
            version = n.version,
            event_id = %n.event_id,
            changed = applied.views_changed,
            duplicates = applied.duplicates,
            read = applied.events_read,
            "notification applied"
        );
        Ok(applied)
    }

    /// Applies a batch of notifications, grouped as their queue groups them (a FIFO message
    /// group: one source stream), each group in order and stopped at its first failure.
    ///
    /// Same effects as [`handle`](Self::handle) on each notification in turn, at a fraction of
    /// the requests: the documents and checkpoints of every (view, stream) of the batch are
    /// read in one [`ReadModelStore::get_many`], a group's notifications are applied in
    /// memory, and each (view, stream) is written once per group (row and checkpoint in one
    /// conditional write, as `handle` writes them; a long catch-up still a page at a time).
    /// A notification counts as applied only once its effects are written for every view;
    /// when a write fails, the notifications it carried fail with it, from the first one on.
    /// A write that finds the checkpoint moved by another consumer is redone the way
    /// `handle` does it, notification by notification.
    pub async fn handle_batch(&self, groups: &[Vec<Notification>]) -> Vec<GroupOutcome> {
        let views = self.all_views();
        let mut states = self.prefetch(&views, groups).await;
        let mut outcomes = Vec::with_capacity(groups.len());
        for group in groups {
            outcomes.push(self.apply_group(&views, group, &mut states).await);
        }
        outcomes
    }

    fn all_views(&self) -> Vec<ViewRef<'_>> {
        self.stream_views
            .iter()
            .map(|v| ViewRef::Stream(v.as_ref()))
            .chain(
                self.counter_views
                    .iter()
                    .map(|v| ViewRef::Counter(v.as_ref())),
            )
            .collect()
    }

    /// The state of every (view, stream) the batch touches, in one batched read. When that
    /// read fails, nothing: each state is then read on its own when first needed, so one
    /// unreadable key fails its own notifications only.
    async fn prefetch(
        &self,
        views: &[ViewRef<'_>],
        groups: &[Vec<Notification>],
    ) -> HashMap<(usize, String), Pending> {
        let mut slots = Vec::new();
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for n in groups.iter().flatten() {
            let Ok(stream) = n.checked_stream() else {
                continue;
            };
            for (i, view) in views.iter().enumerate() {
                if view.category() != stream.category() || !seen.insert((i, n.stream_id.clone())) {
                    continue;
                }
                keys.push(match view {
                    ViewRef::Stream(v) => ModelKey::Doc {
                        tenant: stream.tenant().to_owned(),
                        view: v.name().to_owned(),
                        key: stream.id().to_owned(),
                    },
                    ViewRef::Counter(v) => ModelKey::Checkpoint {
                        view: v.name().to_owned(),
                        stream_id: n.stream_id.clone(),
                    },
                });
                slots.push((i, stream.clone(), n.stream_id.clone()));
            }
        }
        let mut states = HashMap::with_capacity(slots.len());
        if keys.is_empty() {
            return states;
        }
        let found = match self.models.get_many(&keys).await {
            Ok(found) if found.len() == keys.len() => found,
            Ok(found) => {
                tracing::warn!(
                    asked = keys.len(),
                    got = found.len(),
                    "batched checkpoint read answered the wrong number of keys; reading one at a time"
                );
                return states;
            }
            Err(error) => {
                tracing::warn!(keys = keys.len(), %error, "batched checkpoint read failed; reading one at a time");
                return states;
            }
        };
        for ((i, stream, stream_id), found) in slots.into_iter().zip(found) {
            let state = match (views[i], found) {
                (ViewRef::Stream(_), Found::Doc(doc)) => Pending::of_doc(&stream, &stream_id, doc),
                (ViewRef::Counter(_), Found::Checkpoint(cp)) => {
                    Pending::new(&stream, &stream_id, cp, None)
                }
                // Not what was asked: leave it to the single read.
                _ => continue,
            };
            states.insert((i, stream_id), state);
        }
        states
    }

    /// The state of `view` for `stream`, read on its own.
    async fn read_state(
        &self,
        view: ViewRef<'_>,
        stream: &StreamId,
        stream_id: &str,
    ) -> Result<Pending, ReadModelError> {
        Ok(match view {
            ViewRef::Stream(v) => Pending::of_doc(
                stream,
                stream_id,
                self.models
                    .get(stream.tenant(), v.name(), stream.id())
                    .await?,
            ),
            ViewRef::Counter(v) => Pending::new(
                stream,
                stream_id,
                self.models.checkpoint(v.name(), stream_id).await?,
                None,
            ),
        })
    }

    /// Applies one group in memory, stopping at its first failing notification (every view
    /// gets its chance at that one, as in `handle`), then writes what it changed.
    async fn apply_group(
        &self,
        views: &[ViewRef<'_>],
        group: &[Notification],
        states: &mut HashMap<(usize, String), Pending>,
    ) -> GroupOutcome {
        let mut applied = Vec::with_capacity(group.len());
        let mut failure: Option<(usize, ProjectError)> = None;
        let fail_at = |failure: &mut Option<(usize, ProjectError)>, at: usize, e: ProjectError| {
            if failure.as_ref().is_none_or(|(k, _)| at < *k) {
                *failure = Some((at, e));
            }
        };
        // The (view, stream) pairs this group changed, in the order it changed them.
        let mut touched: Vec<(usize, String)> = Vec::new();
        for (i, n) in group.iter().enumerate() {
            let stream = match n.checked_stream() {
                Ok(s) => s,
                Err(e) => {
                    fail_at(
                        &mut failure,
                        i,
                        ProjectError::BadNotification(e.to_string()),
                    );
                    break;
                }
            };
            let mut done = Applied::default();
            let mut first_error = None;
            for (v, view) in views.iter().enumerate() {
                if view.category() != stream.category() {
                    continue;
                }
                let slot = (v, n.stream_id.clone());
                let state = match states.entry(slot.clone()) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        match self.read_state(*view, &stream, &n.stream_id).await {
                            Ok(state) => e.insert(state),
                            Err(error) => {
                                first_error.get_or_insert(error.into());
                                continue;
                            }
                        }
                    }
                };
                match self.advance(*view, n, i, state, &mut done).await {
                    Ok(()) => {
                        if state.since.is_some() && !touched.contains(&slot) {
                            touched.push(slot);
                        }
                    }
                    Err(Failed::Step(e)) => {
                        if state.since.is_some() && !touched.contains(&slot) {
                            touched.push(slot);
                        }
                        first_error.get_or_insert(e);
                    }
                    Err(Failed::Write { since, error }) => {
                        states.remove(&slot);
                        fail_at(&mut failure, since, error);
                        first_error.get_or_insert(ProjectError::ReadModel(
                            ReadModelError::Unavailable(
                                "an earlier write of this view failed".to_owned(),
                            ),
                        ));
                    }
                }
            }
            if let Some(e) = first_error {
                fail_at(&mut failure, i, e);
                break;
            }
            tracing::debug!(
                stream_id = %n.stream_id,
                version = n.version,
                event_id = %n.event_id,
                changed = done.views_changed,
                duplicates = done.duplicates,
                read = done.events_read,
                "notification applied in memory"
            );
            applied.push(done);
        }
        // The last notification any view may have applied: the one the group stopped at.
        let stop = failure
            .as_ref()
            .map_or(group.len().saturating_sub(1), |(k, _)| *k);
        for slot in touched {
            let Some(state) = states.get_mut(&slot) else {
                continue;
            };
            let Some(since) = state.since else {
                continue;
            };
            let view = views[slot.0];
            match self.write(view, state).await {
                Ok(()) => {}
                Err(ProjectError::ReadModel(ReadModelError::Conflict { .. })) => {
                    // Another consumer moved the checkpoint: redo this (view, stream) the
                    // one-at-a-time way, which reads it again and retries.
                    let stream = state.stream.clone();
                    states.remove(&slot);
                    for (j, n) in group.iter().enumerate().take(stop + 1).skip(since) {
                        if n.stream_id != slot.1 {
                            continue;
                        }
                        let mut scratch = Applied::default();
                        if let Err(e) = self.apply_view(view, &stream, n, &mut scratch).await {
                            fail_at(&mut failure, j, e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    states.remove(&slot);
                    fail_at(&mut failure, since, e);
                }
            }
        }
        let failure = failure.map(|(k, e)| {
            applied.truncate(k);
            e
        });
        GroupOutcome { applied, failure }
    }

    /// Moves `state` (of `view`) past `n`, the group's notification `i`, in memory; pages of a
    /// long catch-up are written as the page fills, as `handle` writes them.
    async fn advance(
        &self,
        view: ViewRef<'_>,
        n: &Notification,
        i: usize,
        state: &mut Pending,
        done: &mut Applied,
    ) -> Result<(), Failed> {
        if n.version <= state.at {
            done.duplicates += 1;
            return Ok(());
        }
        done.behind = done.behind.max(n.version - state.at - 1);
        while state.at < n.version {
            if state.at - state.written >= CATCH_UP_PAGE {
                let since = state.since.unwrap_or(i);
                self.write(view, state)
                    .await
                    .map_err(|error| Failed::Write { since, error })?;
            }
            let to = n.version.min(state.written.saturating_add(CATCH_UP_PAGE));
            let events = self
                .events_between(n, state.at + 1, to, &mut done.events_read)
                .await
                .map_err(Failed::Step)?;
            match view {
                ViewRef::Stream(v) => {
                    // On a refusal the state stays as it was before this page.
                    let mut data = state.data.clone();
                    for e in &events {
                        data = v.apply(data, e).map_err(|reason| {
                            Failed::Step(view_error(v.name(), e, reason).into())
                        })?;
                    }
                    state.data = data;
                }
                ViewRef::Counter(v) => {
                    let mut sums = Sums::new();
                    for e in &events {
                        let contribution = v.contribution(e).map_err(|reason| {
                            Failed::Step(view_error(v.name(), e, reason).into())
                        })?;
                        if let Some((key, deltas)) = contribution {
                            add_into(&mut sums, key, deltas);
                        }
                    }
                    for (key, deltas) in sums {
                        add_into(&mut state.sums, key, deltas);
                    }
                }
            }
            state.at = to;
            state.since.get_or_insert(i);
        }
        done.views_changed += 1;
        Ok(())
    }

    /// Writes what `state` applied in memory: one conditional write of the row and the
    /// checkpoint (from the stored one), as `handle` writes them.
    async fn write(&self, view: ViewRef<'_>, state: &mut Pending) -> Result<(), ProjectError> {
        if state.at > state.written {
            let tenant = state.stream.tenant();
            match view {
                ViewRef::Stream(v) => {
                    let doc = Doc {
                        key: state.stream.id().to_owned(),
                        data: state.data.clone().unwrap_or(Value::Null),
                        checkpoint: state.at,
                        index: state.data.as_ref().and_then(|d| v.index(d)),
                    };
                    self.models
                        .put(tenant, v.name(), doc, state.written)
                        .await?;
                }
                ViewRef::Counter(v) => {
                    let deltas = std::mem::take(&mut state.sums).into_iter().collect();
                    self.models
                        .add(
                            tenant,
                            v.name(),
                            &state.stream_id,
                            state.written,
                            state.at,
                            deltas,
                        )
                        .await?;
                }
            }
            state.written = state.at;
        }
        state.since = None;
        Ok(())
    }

    /// Moves `view` past `n`, retrying when another consumer moved its checkpoint first.
    async fn apply_view(
        &self,
        view: ViewRef<'_>,
        stream: &StreamId,
        n: &Notification,
        applied: &mut Applied,
    ) -> Result<(), ProjectError> {
        for attempt in 1..=CONFLICT_ATTEMPTS {
            let step = match view {
                ViewRef::Stream(v) => self.try_stream_view(v, stream, n, applied).await,
                ViewRef::Counter(v) => self.try_counter_view(v, stream, n, applied).await,
            };
            match step {
                Ok(Step::Duplicate) => applied.duplicates += 1,
                Ok(Step::Written) => applied.views_changed += 1,
                Err(ProjectError::ReadModel(ReadModelError::Conflict { .. }))
                    if attempt < CONFLICT_ATTEMPTS =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
            return Ok(());
        }
        Err(ReadModelError::Conflict {
            view: view.name().to_owned(),
            key: match view {
                ViewRef::Stream(_) => stream.id().to_owned(),
                ViewRef::Counter(_) => n.stream_id.clone(),
            },
        }
        .into())
    }

    /// One try at a stream view: read its document, fold the missing events, write it back
    /// conditionally on the checkpoint read.
    async fn try_stream_view(
        &self,
        view: &dyn StreamView,
        stream: &StreamId,
        n: &Notification,
        applied: &mut Applied,
    ) -> Result<Step, ProjectError> {
        let (tenant, key) = (stream.tenant(), stream.id());
        let doc = self.models.get(tenant, view.name(), key).await?;
        let mut checkpoint = doc.as_ref().map_or(0, |d| d.checkpoint);
        if n.version <= checkpoint {
            return Ok(Step::Duplicate);
        }
        applied.behind = applied.behind.max(n.version - checkpoint - 1);
        let mut data = doc.map(|d| d.data).filter(|d| !d.is_null());
        // A long gap is read and written a page at a time, so memory stays bounded and
        // every page's progress is kept even if a later page fails.
        while checkpoint < n.version {
            let to = page_end(checkpoint, n.version);
            let events = self
                .events_between(n, checkpoint + 1, to, &mut applied.events_read)
                .await?;
            for e in &events {
                data = view
                    .apply(data, e)
                    .map_err(|reason| view_error(view.name(), e, reason))?;
            }
            let index = data.as_ref().and_then(|d| view.index(d));
            let new = Doc {
                key: key.to_owned(),
                data: data.clone().unwrap_or(serde_json::Value::Null),
                checkpoint: to,
                index,
            };
            self.models
                .put(tenant, view.name(), new, checkpoint)
                .await?;
            checkpoint = to;
        }
        Ok(Step::Written)
    }

    /// One try at a counter view: sum the missing events' contributions and add them in one
    /// write with the checkpoint move.
    async fn try_counter_view(
        &self,
        view: &dyn CounterView,
        stream: &StreamId,
        n: &Notification,
        applied: &mut Applied,
    ) -> Result<Step, ProjectError> {
        let mut checkpoint = self.models.checkpoint(view.name(), &n.stream_id).await?;
        if n.version <= checkpoint {
            return Ok(Step::Duplicate);
        }
        applied.behind = applied.behind.max(n.version - checkpoint - 1);
        while checkpoint < n.version {
            let to = page_end(checkpoint, n.version);
            let events = self
                .events_between(n, checkpoint + 1, to, &mut applied.events_read)
                .await?;
            let mut sums: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
            for e in &events {
                let contribution = view
                    .contribution(e)
                    .map_err(|reason| view_error(view.name(), e, reason))?;
                if let Some((key, deltas)) = contribution {
                    let entry = sums.entry(key).or_default();
                    for (counter, delta) in deltas {
                        let sum = entry.entry(counter).or_default();
                        *sum = sum.saturating_add(delta);
                    }
                }
            }
            let deltas: Vec<_> = sums.into_iter().collect();
            self.models
                .add(
                    stream.tenant(),
                    view.name(),
                    &n.stream_id,
                    checkpoint,
                    to,
                    deltas,
                )
                .await?;
            checkpoint = to;
        }
        Ok(Step::Written)
    }
}

/// Adds `deltas` to the counters of `key` in `sums`.
fn add_into(sums: &mut Sums, key: String, deltas: BTreeMap<String, i64>) {
    let entry = sums.entry(key).or_default();
    for (counter, delta) in deltas {
        let sum = entry.entry(counter).or_default();
        *sum = sum.saturating_add(delta);
    }
}

/// The last version of the catch-up page that starts after `checkpoint`, towards `target`.
pub(crate) fn page_end(checkpoint: u64, target: u64) -> u64 {
    target.min(checkpoint.saturating_add(CATCH_UP_PAGE))
}

/// A view of either kind, as the projector walks them.
#[derive(Clone, Copy)]
enum ViewRef<'a> {
    Stream(&'a dyn StreamView),
    Counter(&'a dyn CounterView),
}

impl ViewRef<'_> {
    fn name(&self) -> &str {
        match self {
            Self::Stream(v) => v.name(),
            Self::Counter(v) => v.name(),
        }
    }

    fn category(&self) -> &str {
        match self {
            Self::Stream(v) => v.category(),
            Self::Counter(v) => v.category(),
        }
    }
}

/// How one try at a view ended.
enum Step {
    /// The view was already past the notification.
    Duplicate,
    /// The view and its checkpoint moved.
    Written,
}

fn view_error(view: &str, e: &EventEnvelope, source: ApplyError) -> ViewError {
    ViewError {
        view: view.to_owned(),
        stream_id: e.stream_id.clone(),
        version: e.version,
        event_type: e.event_type.clone(),
        source,
    }
}
