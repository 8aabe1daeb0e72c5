//! The key-ring port of crypto-shredding: one data key per (tenant, data subject), created on
//! first use, deleted for good by a forget ([`KeyRing`]); an in-memory adapter
//! ([`MemoryKeyRing`]) and a bounded, time-limited cache in front of any adapter
//! ([`CachedKeyRing`]).
//!
//! **Contract.** `key_for_sealing` gives the subject's one key, creating it if there is none
//! (two racing creators agree on one: the adapter's create is conditional), and refuses
//! ([`KeyError::Forgotten`]) once the subject is forgotten: a forget leaves a tombstone, so
//! no later write can make the subject's data readable again. `key_for_opening` gives the key
//! a sealed value names, or `None` when it is gone. `forget` is idempotent.
//!
//! **Cache and how a warm instance learns of a forget.** Fetching a key costs a key-table
//! read and a key-service decrypt; [`CachedKeyRing`] keeps up to `capacity` subjects' keys
//! for `ttl` each (least recently used evicted first), so a warm command on a known subject
//! makes no request for its key. The instance that forgets drops its entry at once; any
//! other warm instance keeps using a cached key for at most `ttl` after the forget (no
//! broadcast reaches Lambda instances). That window is acceptable because (1) the forget
//! itself is final in storage at once: the key is deleted, so nothing read from storage later
//! opens; (2) within the window an instance can only seal new values of the subject, which
//! the aggregate refuses after `SubjectForgotten`, or open values for a view that the
//! projector scrubs on `SubjectForgotten` and never writes back (the view keeps the
//! forgotten mark); (3) Art. 17 asks for erasure "without undue delay", and a minute is well
//! within it.

use crate::personal::DataKey;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The subject was forgotten: no key will be made for it again.
    #[error("data subject {subject} of tenant {tenant} was forgotten")]
    Forgotten {
        /// The tenant.
        tenant: String,
        /// The subject.
        subject: String,
    },
    /// The key table or key service failed; retrying later may succeed.
    #[error("key ring unavailable: {0}")]
    Unavailable(#[source] crate::store::Cause),
}

/// What the key ring holds for a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKey {
    /// Nothing: the subject never had personal data sealed.
    None,
    /// A live key.
    Active,
    /// A tombstone: the key was deleted by a forget.
    Forgotten,
}

/// Per-subject data keys (see the module docs for the contract).
#[async_trait]
pub trait KeyRing: Send + Sync + std::fmt::Debug {
    /// The subject's key for sealing, created on first use; [`KeyError::Forgotten`] after a
    /// forget.
    async fn key_for_sealing(&self, tenant: &str, subject: &str) -> Result<DataKey, KeyError>;
    /// The subject's key `kid` for opening, `None` when it is gone (or never was).
    async fn key_for_opening(
        &self,
        tenant: &str,
        subject: &str,
        kid: &str,
    ) -> Result<Option<DataKey>, KeyError>;
    /// Deletes the subject's key and leaves a tombstone; gives what was held before.
    async fn forget(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError>;
    /// What is held for the subject.
    async fn status(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError>;
}

/// Shared key rings are key rings.
#[async_trait]
impl<T: KeyRing + ?Sized> KeyRing for std::sync::Arc<T> {
    async fn key_for_sealing(&self, tenant: &str, subject: &str) -> Result<DataKey, KeyError> {
        (**self).key_for_sealing(tenant, subject).await
    }
    async fn key_for_opening(
        &self,
        tenant: &str,
        subject: &str,
        kid: &str,
    ) -> Result<Option<DataKey>, KeyError> {
        (**self).key_for_opening(tenant, subject, kid).await
    }
    async fn forget(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        (**self).forget(tenant, subject).await
    }
    async fn status(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        (**self).status(tenant, subject).await
    }
}

/// A fresh random data key (ids are random too: a key id is never reused).
pub fn random_key() -> DataKey {
    let id: u128 = rand::random();
    DataKey::new(format!("{id:032x}"), rand::random())
}

#[derive(Debug, Clone)]
enum Slot {
    Active(DataKey),
    Forgotten,
}

type SubjectRef = (String, String);

/// Keys in process memory (tests, the in-process bench): the same contract as the AWS
/// adapter, and a count of the requests it served (what a cache in front saves).
#[derive(Debug, Default)]
pub struct MemoryKeyRing {
    slots: Mutex<HashMap<SubjectRef, Slot>>,
    requests: AtomicU64,
}

impl MemoryKeyRing {
    /// An empty key ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests served so far (every call of the port).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<SubjectRef, Slot>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // A poisoned lock only means another test thread panicked; the map is still whole.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn subject_ref(tenant: &str, subject: &str) -> SubjectRef {
    (tenant.to_owned(), subject.to_owned())
}

#[async_trait]
impl KeyRing for MemoryKeyRing {
    async fn key_for_sealing(&self, tenant: &str, subject: &str) -> Result<DataKey, KeyError> {
        let mut slots = self.slots();
        match slots
            .entry(subject_ref(tenant, subject))
            .or_insert_with(|| Slot::Active(random_key()))
        {
            Slot::Active(key) => Ok(key.clone()),
            Slot::Forgotten => Err(KeyError::Forgotten {
                tenant: tenant.to_owned(),
                subject: subject.to_owned(),
            }),
        }
    }

    async fn key_for_opening(
        &self,
        tenant: &str,
        subject: &str,
        kid: &str,
    ) -> Result<Option<DataKey>, KeyError> {
        Ok(match self.slots().get(&subject_ref(tenant, subject)) {
            Some(Slot::Active(key)) if key.id == kid => Some(key.clone()),
            _ => None,
        })
    }

    async fn forget(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        let before = self
            .slots()
            .insert(subject_ref(tenant, subject), Slot::Forgotten);
        Ok(status_of(before.as_ref()))
    }

    async fn status(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        Ok(status_of(self.slots().get(&subject_ref(tenant, subject))))
    }
}

fn status_of(slot: Option<&Slot>) -> SubjectKey {
    match slot {
        None => SubjectKey::None,
        Some(Slot::Active(_)) => SubjectKey::Active,
        Some(Slot::Forgotten) => SubjectKey::Forgotten,
    }
}

/// How long a cached key is used before it is fetched again: the longest a warm instance
/// other than the forgetting one may go on using a forgotten subject's key.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(60);

/// Subjects whose keys a [`CachedKeyRing`] keeps by default.
pub const KEY_CACHE_CAPACITY: usize = 1024;

struct Cached {
    tick: u64,
    at: Instant,
    slot: Slot,
}

#[derive(Default)]
struct Lru {
    entries: HashMap<SubjectRef, Cached>,
    order: BTreeMap<u64, SubjectRef>,
    tick: u64,
}

/// A bounded LRU of keys with a time to live in front of a [`KeyRing`] (module docs).
pub struct CachedKeyRing<K> {
    inner: K,
    capacity: usize,
    ttl: Duration,
    lru: Mutex<Lru>,
}

impl<K: std::fmt::Debug> std::fmt::Debug for CachedKeyRing<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedKeyRing")
            .field("inner", &self.inner)
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<K: KeyRing> CachedKeyRing<K> {
    /// `inner` behind a cache of [`KEY_CACHE_CAPACITY`] subjects for [`KEY_CACHE_TTL`].
    pub fn new(inner: K) -> Self {
        Self::with_limits(inner, KEY_CACHE_CAPACITY, KEY_CACHE_TTL)
    }

    /// `inner` behind a cache of `capacity` subjects (at least 1), each kept for `ttl`.
    pub fn with_limits(inner: K, capacity: usize, ttl: Duration) -> Self {
        Self {
            inner,
            capacity: capacity.max(1),
            ttl,
            lru: Mutex::new(Lru::default()),
        }
    }

    /// The key ring behind the cache.
    pub fn inner(&self) -> &K {
        &self.inner
    }

    /// Subjects cached now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, key: &SubjectRef) -> Option<Slot> {
        let mut lru = self.lock();
        let lru = &mut *lru;
        let fresh = lru.entries.get(key).map(|c| c.at.elapsed() < self.ttl)?;
        if !fresh {
            if let Some(old) = lru.entries.remove(key) {
                lru.order.remove(&old.tick);
            }
            return None;
        }
        lru.tick += 1;
        let tick = lru.tick;
        let cached = lru.entries.get_mut(key)?;
        lru.order.remove(&cached.tick);
        cached.tick = tick;
        lru.order.insert(tick, key.clone());
        Some(cached.slot.clone())
    }

    fn put(&self, key: SubjectRef, slot: Slot) {
        let mut lru = self.lock();
        let lru = &mut *lru;
        lru.tick += 1;
        let tick = lru.tick;
        if let Some(old) = lru.entries.insert(
            key.clone(),
            Cached {
                tick,
                at: Instant::now(),
                slot,
            },
        ) {
            lru.order.remove(&old.tick);
        }
        lru.order.insert(tick, key);
        while lru.entries.len() > self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.entries.remove(&oldest);
        }
    }
}

#[async_trait]
impl<K: KeyRing + std::fmt::Debug> KeyRing for CachedKeyRing<K> {
    async fn key_for_sealing(&self, tenant: &str, subject: &str) -> Result<DataKey, KeyError> {
        let at = subject_ref(tenant, subject);
        match self.get(&at) {
            Some(Slot::Active(key)) => return Ok(key),
            Some(Slot::Forgotten) => {
                return Err(KeyError::Forgotten {
                    tenant: tenant.to_owned(),
                    subject: subject.to_owned(),
                });
            }
            None => {}
        }
        match self.inner.key_for_sealing(tenant, subject).await {
            Ok(key) => {
                self.put(at, Slot::Active(key.clone()));
                Ok(key)
            }
            Err(e @ KeyError::Forgotten { .. }) => {
                self.put(at, Slot::Forgotten);
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn key_for_opening(
        &self,
        tenant: &str,
        subject: &str,
        kid: &str,
    ) -> Result<Option<DataKey>, KeyError> {
        let at = subject_ref(tenant, subject);
        match self.get(&at) {
            Some(Slot::Active(key)) if key.id == kid => return Ok(Some(key)),
            Some(Slot::Forgotten) => return Ok(None),
            _ => {}
        }
        let found = self.inner.key_for_opening(tenant, subject, kid).await?;
        // Only a found key is cached: "not found" may be a forget or a key id this reader
        // was handed by mistake, and the next read should ask again.
        if let Some(key) = &found {
            self.put(at, Slot::Active(key.clone()));
        }
        Ok(found)
    }

    async fn forget(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        let before = self.inner.forget(tenant, subject).await?;
        self.put(subject_ref(tenant, subject), Slot::Forgotten);
        Ok(before)
    }

    async fn status(&self, tenant: &str, subject: &str) -> Result<SubjectKey, KeyError> {
        // Never from the cache: an export says what storage holds.
        self.inner.status(tenant, subject).await
    }
}

/// The key ring of a deployment that has none configured: sealing is refused (so personal
/// data is never stored in plaintext for want of a key), and opening finds nothing (sealed
/// values read as redacted).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKeys;

#[async_trait]
impl KeyRing for NoKeys {
    async fn key_for_sealing(&self, _tenant: &str, _subject: &str) -> Result<DataKey, KeyError> {
        Err(KeyError::Unavailable(
            "no key ring is configured: personal data cannot be stored".into(),
        ))
    }
    async fn key_for_opening(
        &self,
        _tenant: &str,
        _subject: &str,
        _kid: &str,
    ) -> Result<Option<DataKey>, KeyError> {
        Ok(None)
    }
    async fn forget(&self, _tenant: &str, _subject: &str) -> Result<SubjectKey, KeyError> {
        Err(KeyError::Unavailable("no key ring is configured".into()))
    }
    async fn status(&self, _tenant: &str, _subject: &str) -> Result<SubjectKey, KeyError> {
        Ok(SubjectKey::None)
    }
}
