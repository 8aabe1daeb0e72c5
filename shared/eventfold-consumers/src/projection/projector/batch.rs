//! A batch of notifications at a fraction of the requests: [`Projector::handle_batch`] reads
//! the state of every (view, stream) it touches at once, applies each group in memory and
//! writes each (view, stream) once per group.

use super::{
    Applied, CATCH_UP_PAGE, GroupOutcome, OwnedView, ProjectError, Projector, Sums, ViewRef,
    add_into, view_error,
};
use crate::Notification;
use crate::projection::{Doc, Found, ModelKey, ReadModelError, ReadModelStore, ViewPointer};
use eventfold::envelope::StreamId;
use eventfold::store::EventStore;
use serde_json::Value;
use std::collections::{HashMap, HashSet};

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

/// What reading by the pointers last seen came to ([`Projector::handle_batch`]).
enum ByPointers {
    /// They still hold: the views they select and the batch's states.
    Read(Vec<OwnedView>, HashMap<(usize, String), Pending>),
    /// They moved to these (remembered): the states must be read by them.
    Moved(Vec<ViewPointer>),
    /// None seen yet, the views are pinned, or the read failed: read the pointers alone.
    Unknown,
}

/// How advancing a (view, stream) over one notification failed.
enum Failed {
    /// The notification could not be applied; what was applied before it stands.
    Step(ProjectError),
    /// A write of earlier progress failed: everything from the group's notification `since`
    /// on is unwritten (or unknown), and the state must be read again.
    Write { since: usize, error: ProjectError },
}

impl<E: EventStore, R: ReadModelStore> Projector<E, R> {
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
        let (owned, read) = match self.read_by_seen_pointers(groups).await {
            ByPointers::Read(owned, states) => (owned, Some(states)),
            ByPointers::Moved(pointers) => (self.versions_of(&pointers), None),
            ByPointers::Unknown => match self.active_views().await {
                Ok(owned) => (owned, None),
                // Without the pointers no version is known to be complete: every group waits.
                Err(error) => {
                    let reason = error.to_string();
                    return groups
                        .iter()
                        .map(|_| GroupOutcome {
                            applied: Vec::new(),
                            failure: Some(ProjectError::ReadModel(ReadModelError::Unavailable(
                                reason.clone().into(),
                            ))),
                        })
                        .collect();
                }
            },
        };
        let views: Vec<ViewRef<'_>> = owned.iter().map(OwnedView::as_view).collect();
        let mut states = match read {
            Some(states) => states,
            None => self.prefetch(&views, groups).await,
        };
        let mut outcomes = Vec::with_capacity(groups.len());
        for group in groups {
            outcomes.push(self.apply_group(&views, group, &mut states).await);
        }
        outcomes
    }

    /// The views and the batch's states in one read, when the pointers last seen still hold:
    /// the pointers are read again in the same request as the states they select.
    async fn read_by_seen_pointers(&self, groups: &[Vec<Notification>]) -> ByPointers {
        if !self.reads_pointers() {
            return ByPointers::Unknown;
        }
        let Some(seen) = self.seen_pointers() else {
            return ByPointers::Unknown;
        };
        let owned = self.versions_of(&seen);
        let views: Vec<ViewRef<'_>> = owned.iter().map(OwnedView::as_view).collect();
        let (slots, state_keys) = state_keys(&views, groups);
        let mut keys: Vec<ModelKey> = self
            .view_names()
            .into_iter()
            .map(|view| ModelKey::Pointer { view })
            .collect();
        let pointers = keys.len();
        keys.extend(state_keys);
        let mut found = match self.models.get_many(&keys).await {
            Ok(found) if found.len() == keys.len() => found,
            _ => return ByPointers::Unknown,
        };
        let states = found.split_off(pointers);
        let mut now = Vec::with_capacity(pointers);
        for f in found {
            match f {
                Found::Pointer(p) => now.push(p),
                _ => return ByPointers::Unknown,
            }
        }
        if now != seen {
            self.remember_pointers(&now);
            return ByPointers::Moved(now);
        }
        let states = states_of(&views, slots, states);
        drop(views);
        ByPointers::Read(owned, states)
    }

    /// The state of every (view, stream) the batch touches, in one batched read. When that
    /// read fails, nothing: each state is then read on its own when first needed, so one
    /// unreadable key fails its own notifications only.
    async fn prefetch(
        &self,
        views: &[ViewRef<'_>],
        groups: &[Vec<Notification>],
    ) -> HashMap<(usize, String), Pending> {
        let (slots, keys) = state_keys(views, groups);
        if keys.is_empty() {
            return HashMap::new();
        }
        let found = match self.models.get_many(&keys).await {
            Ok(found) if found.len() == keys.len() => found,
            Ok(found) => {
                tracing::warn!(
                    asked = keys.len(),
                    got = found.len(),
                    "batched checkpoint read answered the wrong number of keys; reading one at a time"
                );
                return HashMap::new();
            }
            Err(error) => {
                tracing::warn!(keys = keys.len(), %error, "batched checkpoint read failed; reading one at a time");
                return HashMap::new();
            }
        };
        states_of(views, slots, found)
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
                                "an earlier write of this view failed".into(),
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
}

/// Which (view, stream) states `groups` touch, and the keys that read them, in one order.
fn state_keys(
    views: &[ViewRef<'_>],
    groups: &[Vec<Notification>],
) -> (Vec<(usize, StreamId, String)>, Vec<ModelKey>) {
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
    (slots, keys)
}

/// The states read for `slots` ([`state_keys`]); a key answered with something else is left
/// out, to be read on its own.
fn states_of(
    views: &[ViewRef<'_>],
    slots: Vec<(usize, StreamId, String)>,
    found: Vec<Found>,
) -> HashMap<(usize, String), Pending> {
    let mut states = HashMap::with_capacity(slots.len());
    for ((i, stream, stream_id), found) in slots.into_iter().zip(found) {
        let state = match (views[i], found) {
            (ViewRef::Stream(_), Found::Doc(doc)) => Pending::of_doc(&stream, &stream_id, doc),
            (ViewRef::Counter(_), Found::Checkpoint(cp)) => {
                Pending::new(&stream, &stream_id, cp, None)
            }
            // Not what was asked: left to the single read.
            _ => continue,
        };
        states.insert((i, stream_id), state);
    }
    states
}
