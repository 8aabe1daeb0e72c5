//! A small bounded LRU of recent stream states, so a warm function can decide without reading.

use crate::store::ExpectedVersion;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

type Shared = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct Inner {
    entries: HashMap<String, (u64, ExpectedVersion, Shared)>, // stream -> (tick, version, state)
    order: BTreeMap<u64, String>,                             // tick -> stream, oldest first
    tick: u64,
}

/// Bounded least-recently-used map of `stream_id -> (version, state)`.
///
/// States of any aggregate type live side by side; a lookup with the wrong type is a miss.
pub struct StateCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for StateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl StateCache {
    /// A cache holding at most `capacity` streams (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every mutation below completes before unlocking, so a poisoned lock holds a
        // consistent map.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of cached streams.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached version and state of `stream_id`, if present and of type `S`.
    pub fn get<S: Clone + Send + Sync + 'static>(
        &self,
        stream_id: &str,
    ) -> Option<(ExpectedVersion, S)> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (old_tick, version, state) = inner.entries.get_mut(stream_id)?;
        let state = state.downcast_ref::<S>()?.clone();
        let version = *version;
        let previous = std::mem::replace(old_tick, tick);
        inner.order.remove(&previous);
        inner.order.insert(tick, stream_id.to_owned());
        Some((version, state))
    }

    /// Takes the version and state of `stream_id` out of the cache (a miss when absent or of
    /// another type). A command evolves the state it took and puts the result back, so a warm
    /// command copies no state unless someone else still holds it.
    pub fn take<S: Send + Sync + 'static>(
        &self,
        stream_id: &str,
    ) -> Option<(ExpectedVersion, Arc<S>)> {
        let mut inner = self.lock();
        let (tick, version, state) = inner.entries.remove(stream_id)?;
        inner.order.remove(&tick);
        match state.downcast::<S>() {
            Ok(state) => Some((version, state)),
            Err(other) => {
                // Another type under this stream id: leave it where it was.
                inner
                    .entries
                    .insert(stream_id.to_owned(), (tick, version, other));
                inner.order.insert(tick, stream_id.to_owned());
                None
            }
        }
    }

    /// Remembers `state` at `version`, evicting the least recently used stream when full.
    pub fn put<S: Send + Sync + 'static>(
        &self,
        stream_id: &str,
        version: ExpectedVersion,
        state: S,
    ) {
        self.put_shared(stream_id, version, Arc::new(state));
    }

    /// [`Self::put`] of a state the caller shares (it keeps its own handle).
    pub fn put_shared<S: Send + Sync + 'static>(
        &self,
        stream_id: &str,
        version: ExpectedVersion,
        state: Arc<S>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((old, _, _)) = inner
            .entries
            .insert(stream_id.to_owned(), (tick, version, state))
        {
            inner.order.remove(&old);
        }
        inner.order.insert(tick, stream_id.to_owned());
        while inner.entries.len() > self.capacity {
            let Some((_, victim)) = inner.order.pop_first() else {
                break;
            };
            inner.entries.remove(&victim);
        }
    }

    /// Forgets `stream_id` (after a conflict proved the cached state stale).
    pub fn forget(&self, stream_id: &str) {
        let mut inner = self.lock();
        if let Some((tick, _, _)) = inner.entries.remove(stream_id) {
            inner.order.remove(&tick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> ExpectedVersion {
        ExpectedVersion::assumed(n)
    }

    #[test]
    fn evicts_least_recently_used_and_misses_on_wrong_type() {
        let c = StateCache::new(2);
        c.put("a", v(1), 10u32);
        c.put("b", v(2), 20u32);
        assert_eq!(c.get::<u32>("a"), Some((v(1), 10))); // a is now most recent
        c.put("c", v(3), 30u32); // evicts b
        assert_eq!(c.get::<u32>("b"), None);
        assert_eq!(c.get::<u32>("a"), Some((v(1), 10)));
        assert_eq!(c.get::<String>("c"), None);
        assert_eq!(c.len(), 2);
        c.forget("a");
        assert_eq!(c.get::<u32>("a"), None);
        let off = StateCache::new(0);
        off.put("a", v(1), 1u8);
        assert!(off.is_empty());
    }

    #[test]
    fn take_moves_the_state_out_and_leaves_other_types_alone() {
        let c = StateCache::new(4);
        c.put("a", v(3), String::from("state"));
        assert_eq!(c.take::<u32>("a"), None, "wrong type: a miss");
        let (version, s) = c.take::<String>("a").expect("cached");
        assert_eq!((version, s.as_str()), (v(3), "state"));
        assert_eq!(Arc::strong_count(&s), 1, "the cache kept no handle");
        assert!(c.is_empty());
        c.put_shared("a", v(4), s.clone());
        assert_eq!(c.get::<String>("a"), Some((v(4), "state".into())));
        assert_eq!(Arc::strong_count(&s), 2);
    }
}
