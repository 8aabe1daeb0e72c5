//! Applies notifications to views exactly once: one at a time ([`Projector::handle`], here)
//! or a batch at once ([`Projector::handle_batch`], in `batch`).

mod batch;

use super::versions::{VersionedCounter, VersionedStream, stored_name};
use super::{
    ApplyError, CounterView, Doc, ReadModelError, ReadModelStore, StreamView, ViewError,
    ViewPointer,
};
use crate::Notification;
use eventfold::envelope::{EventEnvelope, StreamId};
use eventfold::store::{EventStore, StoreError};
use eventfold::upcast::Upcasters;
use std::collections::BTreeMap;
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

/// Applies notifications to a set of views over a read-model store.
pub struct Projector<E, R> {
    events: E,
    models: R,
    stream_views: Vec<Arc<dyn StreamView>>,
    counter_views: Vec<Arc<dyn CounterView>>,
    upcasters: Upcasters,
    /// Apply to the views exactly as named, ignoring their version pointers (a rebuild
    /// writing one version).
    pinned: bool,
    /// The views' pointers as last read: a batch reads its states by them, in the same
    /// request that reads the pointers again (and reads once more if they moved).
    pointers_seen: std::sync::Mutex<Option<Vec<ViewPointer>>>,
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
            pinned: false,
            pointers_seen: std::sync::Mutex::new(None),
        }
    }

    /// Applies to the views under exactly their names, without reading their version
    /// pointers: for a rebuild that writes one version of a view.
    pub fn pinned(mut self) -> Self {
        self.pinned = true;
        self
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
        let owned = self.active_views().await?;
        let views: Vec<ViewRef<'_>> = owned.iter().map(OwnedView::as_view).collect();
        for view in views
            .into_iter()
            .filter(|v| v.category() == stream.category())
        {
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

    /// Every active version of every view (stream views first, each view's versions newest
    /// first, see [`ViewPointer::active`](super::ViewPointer::active)): one read of the
    /// views' pointers, unless pinned.
    async fn active_views(&self) -> Result<Vec<OwnedView>, ProjectError> {
        if !self.reads_pointers() {
            return Ok(self.base_views());
        }
        let pointers = self.models.pointers(&self.view_names()).await?;
        self.remember_pointers(&pointers);
        Ok(self.versions_of(&pointers))
    }

    /// Whether the views' pointers select what is written (not pinned, some views).
    fn reads_pointers(&self) -> bool {
        let no_views = self.stream_views.is_empty() && self.counter_views.is_empty();
        !self.pinned && !no_views
    }

    /// The views as registered (stream views first), in [`Self::view_names`] order.
    fn base_views(&self) -> Vec<OwnedView> {
        self.stream_views
            .iter()
            .cloned()
            .map(OwnedView::Stream)
            .chain(self.counter_views.iter().cloned().map(OwnedView::Counter))
            .collect()
    }

    /// The pointers last read, if any.
    fn seen_pointers(&self) -> Option<Vec<ViewPointer>> {
        self.pointers_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn remember_pointers(&self, pointers: &[ViewPointer]) {
        *self.pointers_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(pointers.to_vec());
    }

    /// Every active version of every view under `pointers` (one per view, in
    /// [`Self::view_names`] order).
    fn versions_of(&self, pointers: &[ViewPointer]) -> Vec<OwnedView> {
        let base = self.base_views();
        let names = self.view_names();
        let mut views = Vec::with_capacity(base.len());
        for ((view, name), pointer) in base.into_iter().zip(&names).zip(pointers) {
            for version in pointer.active() {
                views.push(match (&view, version) {
                    (_, 1) => view.clone(),
                    (OwnedView::Stream(v), n) => OwnedView::Stream(Arc::new(VersionedStream::new(
                        v.clone(),
                        stored_name(name, n),
                    ))),
                    (OwnedView::Counter(v), n) => OwnedView::Counter(Arc::new(
                        VersionedCounter::new(v.clone(), stored_name(name, n)),
                    )),
                });
            }
        }
        views
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
            let mut sums = Sums::new();
            for e in &events {
                let contribution = view
                    .contribution(e)
                    .map_err(|reason| view_error(view.name(), e, reason))?;
                if let Some((key, deltas)) = contribution {
                    add_into(&mut sums, key, deltas);
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

/// A view of either kind, owned: one active version of a registered view.
#[derive(Clone)]
enum OwnedView {
    Stream(Arc<dyn StreamView>),
    Counter(Arc<dyn CounterView>),
}

impl OwnedView {
    fn as_view(&self) -> ViewRef<'_> {
        match self {
            Self::Stream(v) => ViewRef::Stream(v.as_ref()),
            Self::Counter(v) => ViewRef::Counter(v.as_ref()),
        }
    }
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
