//! Bounded LRUs of recent stream states, so a warm function can decide without reading.
//!
//! A [`StateCache<T>`] holds the states of one state type `T`; which aggregate's states an
//! executor caches, and where, is said by its caches type at compile time: [`CacheFor<A>`]
//! names the cache of aggregate `A` in a set of caches (a `CommandExecutor<S, C>` asks its
//! `C`). [`NoCache`] caches nothing, a lone [`StateCache`] caches the aggregates of its state
//! type, and [`state_caches!`](crate::state_caches) makes a set with one cache per aggregate
//! type listed:
//!
//! ```
//! # use eventfold::{Aggregate, DomainEvent, Rejection};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! # #[serde(tag = "type", content = "data")]
//! # enum Ticked { Ticked }
//! # impl DomainEvent for Ticked {}
//! # macro_rules! toy {
//! #     ($name:ident, $state:ty) => {
//! #         struct $name;
//! #         impl Aggregate for $name {
//! #             const CATEGORY: &'static str = stringify!($name);
//! #             type Event = Ticked;
//! #             type State = $state;
//! #             type Command = ();
//! #             fn initial() -> $state { Default::default() }
//! #             fn evolve(state: $state, _: &Ticked) -> $state { state }
//! #             fn decide(_: &$state, _: &()) -> Result<Vec<Ticked>, Rejection> { Ok(vec![]) }
//! #         }
//! #     };
//! # }
//! # toy!(Clock, u64);
//! # toy!(Label, String);
//! use eventfold::cache::{CacheFor, StateCaches};
//! use eventfold::ExpectedVersion;
//!
//! eventfold::state_caches! {
//!     /// The warm states of a clock and a label service.
//!     pub struct Caches { clock: Clock, label: Label }
//! }
//!
//! let caches = Caches::with_capacity(8);
//! let clocks = CacheFor::<Clock>::states(&caches).expect("clocks are cached");
//! clocks.put("acme/Clock-1", ExpectedVersion::NEW, 7);
//! let labels = CacheFor::<Label>::states(&caches).expect("labels are cached");
//! assert!(labels.is_empty(), "each aggregate type has its own cache");
//! assert_eq!(clocks.get("acme/Clock-1"), Some((ExpectedVersion::NEW, 7)));
//! ```
//!
//! A state of one type cannot be asked for as another: the compiler refuses it.
//!
//! ```compile_fail
//! use eventfold::cache::StateCache;
//! let cache = StateCache::<u32>::new(2);
//! let wrong: Option<(eventfold::ExpectedVersion, String)> = cache.get("acme/Counter-1");
//! ```

use crate::aggregate::Aggregate;
use crate::store::ExpectedVersion;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

struct Inner<T> {
    entries: HashMap<String, (u64, ExpectedVersion, Arc<T>)>, // stream -> (tick, version, state)
    order: BTreeMap<u64, String>,                             // tick -> stream, oldest first
    tick: u64,
}

impl<T> Default for Inner<T> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
        }
    }
}

/// Bounded least-recently-used map of `stream_id -> (version, state)`, for states of type `T`.
pub struct StateCache<T> {
    capacity: usize,
    inner: Mutex<Inner<T>>,
}

impl<T> std::fmt::Debug for StateCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCache")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl<T> StateCache<T> {
    /// A cache holding at most `capacity` streams (0 disables it).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
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

    /// The cached version and state of `stream_id`, if present.
    pub fn get(&self, stream_id: &str) -> Option<(ExpectedVersion, T)>
    where
        T: Clone,
    {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (old_tick, version, state) = inner.entries.get_mut(stream_id)?;
        let state = T::clone(state);
        let version = *version;
        let previous = std::mem::replace(old_tick, tick);
        inner.order.remove(&previous);
        inner.order.insert(tick, stream_id.to_owned());
        Some((version, state))
    }

    /// Takes the version and state of `stream_id` out of the cache (a miss when absent). A
    /// command evolves the state it took and puts the result back, so a warm command copies
    /// no state unless someone else still holds it.
    pub fn take(&self, stream_id: &str) -> Option<(ExpectedVersion, Arc<T>)> {
        let mut inner = self.lock();
        let (tick, version, state) = inner.entries.remove(stream_id)?;
        inner.order.remove(&tick);
        Some((version, state))
    }

    /// Remembers `state` at `version`, evicting the least recently used stream when full.
    pub fn put(&self, stream_id: &str, version: ExpectedVersion, state: T) {
        self.put_shared(stream_id, version, Arc::new(state));
    }

    /// [`Self::put`] of a state the caller shares (it keeps its own handle).
    pub fn put_shared(&self, stream_id: &str, version: ExpectedVersion, state: Arc<T>) {
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

/// Where the warm states of aggregate `A` live in `Self` (a set of caches, one per aggregate
/// type). An executor over caches `C` runs `A`'s commands only where `C: CacheFor<A>`, so
/// the compiler checks that every aggregate it serves has its place (or, for [`NoCache`],
/// none at all).
pub trait CacheFor<A: Aggregate> {
    /// The cache of `A`'s states; `None` when `A`'s states are not kept.
    fn states(&self) -> Option<&StateCache<A::State>>;
}

/// A set of caches an executor builds from its `cache_capacity` (the streams kept per
/// aggregate type).
pub trait StateCaches: Send + Sync {
    /// The caches, each holding at most `capacity` streams (0: none).
    fn with_capacity(capacity: usize) -> Self;
}

/// Caches nothing: every command of every aggregate reads its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoCache;

impl<A: Aggregate> CacheFor<A> for NoCache {
    fn states(&self) -> Option<&StateCache<A::State>> {
        None
    }
}

impl StateCaches for NoCache {
    fn with_capacity(_capacity: usize) -> Self {
        Self
    }
}

/// A lone cache serves every aggregate whose state is `A::State` (an executor of one
/// aggregate type). Keys are whole stream ids, whose category tells aggregates apart.
impl<A: Aggregate> CacheFor<A> for StateCache<A::State> {
    fn states(&self) -> Option<&StateCache<A::State>> {
        Some(self)
    }
}

impl<T: Send + Sync> StateCaches for StateCache<T> {
    fn with_capacity(capacity: usize) -> Self {
        Self::new(capacity)
    }
}

/// A set of state caches, one per aggregate type listed: the struct, its
/// [`StateCaches`](crate::cache::StateCaches) impl and a
/// [`CacheFor<A>`](crate::cache::CacheFor) impl for each aggregate `A`. Each field names the
/// cache of the aggregate after it (fields stay private: callers reach a cache through
/// `CacheFor`). An aggregate listed twice does not compile.
///
/// ```
/// # use eventfold::{Aggregate, DomainEvent, Rejection};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # #[serde(tag = "type", content = "data")]
/// # enum Ticked { Ticked }
/// # impl DomainEvent for Ticked {}
/// # struct Clock;
/// # impl Aggregate for Clock {
/// #     const CATEGORY: &'static str = "Clock";
/// #     type Event = Ticked;
/// #     type State = u64;
/// #     type Command = ();
/// #     fn initial() -> u64 { 0 }
/// #     fn evolve(state: u64, _: &Ticked) -> u64 { state + 1 }
/// #     fn decide(_: &u64, _: &()) -> Result<Vec<Ticked>, Rejection> { Ok(vec![Ticked::Ticked]) }
/// # }
/// use eventfold::{CommandExecutor, ExecutorConfig, MemoryEventStore};
///
/// eventfold::state_caches! {
///     /// The caches of the clock service.
///     pub struct ClockCaches { clock: Clock }
/// }
///
/// let executor = CommandExecutor::new(MemoryEventStore::new(), ExecutorConfig::default())
///     .caching::<ClockCaches>();
/// # let _ = executor;
/// ```
#[macro_export]
macro_rules! state_caches {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $($field:ident : $aggregate:ty),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $($field: $crate::cache::StateCache<<$aggregate as $crate::Aggregate>::State>,)+
        }

        impl $crate::cache::StateCaches for $name {
            fn with_capacity(capacity: usize) -> Self {
                Self {
                    $($field: $crate::cache::StateCache::new(capacity),)+
                }
            }
        }

        $(
            impl $crate::cache::CacheFor<$aggregate> for $name {
                fn states(
                    &self,
                ) -> ::core::option::Option<
                    &$crate::cache::StateCache<<$aggregate as $crate::Aggregate>::State>,
                > {
                    ::core::option::Option::Some(&self.$field)
                }
            }
        )+

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!($name))
                    $(.field(::core::stringify!($field), &self.$field))+
                    .finish()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u64) -> ExpectedVersion {
        ExpectedVersion::assumed(n)
    }

    #[test]
    fn evicts_least_recently_used() {
        let c = StateCache::new(2);
        c.put("a", v(1), 10u32);
        c.put("b", v(2), 20u32);
        assert_eq!(c.get("a"), Some((v(1), 10))); // a is now most recent
        c.put("c", v(3), 30u32); // evicts b
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("a"), Some((v(1), 10)));
        assert_eq!(c.get("c"), Some((v(3), 30)));
        assert_eq!(c.len(), 2);
        c.forget("a");
        assert_eq!(c.get("a"), None);
        let off = StateCache::new(0);
        off.put("a", v(1), 1u8);
        assert!(off.is_empty());
    }

    #[test]
    fn take_moves_the_state_out() {
        let c = StateCache::new(4);
        c.put("a", v(3), String::from("state"));
        assert!(c.take("b").is_none(), "another stream: a miss");
        let (version, s) = c.take("a").expect("cached");
        assert_eq!((version, s.as_str()), (v(3), "state"));
        assert_eq!(Arc::strong_count(&s), 1, "the cache kept no handle");
        assert!(c.is_empty());
        assert!(c.take("a").is_none(), "taken: a miss until put back");
        c.put_shared("a", v(4), s.clone());
        assert_eq!(c.get("a"), Some((v(4), "state".into())));
        assert_eq!(Arc::strong_count(&s), 2);
    }

    #[test]
    fn no_cache_keeps_nothing_and_builds_from_any_capacity() {
        let none = NoCache::with_capacity(16);
        assert_eq!(none, NoCache);
        let one = StateCache::<u32>::with_capacity(1);
        one.put("a", v(1), 1);
        one.put("b", v(2), 2);
        assert_eq!((one.len(), one.get("b")), (1, Some((v(2), 2))));
    }
}
