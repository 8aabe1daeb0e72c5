//! The storage boundary of crypto-shredding: an [`EventStore`] in front of any other that
//! seals personal values ([`crate::personal`]) in events and snapshots before they are
//! written, and opens them after they are read.
//!
//! **Why a store decorator.** Everything the command path writes (each commit's events and
//! its snapshot) and reads (loads, catch-ups, ranges) crosses the [`EventStore`] port, and
//! the port is async, so the keys can be fetched there before the synchronous cipher pass.
//! So the executor, the aggregates and the views stay as they are (pure, keyless), and every
//! table downstream of the events table (the stream, SNS, SQS, dead letters) only ever
//! carries what the store wrote: sealed values. The command API withholds personal values
//! from its answers ([`crate::personal::withhold`]) because the idempotency store keeps them.
//!
//! **Cost.** A commit without personal values is written as it came (one JSON walk, no key
//! request). A commit with them asks the key ring once per subject: with a
//! [`crate::keyring::CachedKeyRing`] that is no request at all when warm. Reads open only
//! values that are sealed; a load with none is handed on as lent (no copy).
//!
//! **Errors.** Sealing for a forgotten subject is refused ([`StoreError::Invalid`]: the
//! aggregate should have refused first); a key service outage is [`StoreError::Unavailable`].
//! Opening never fails on a missing key: the value reads as redacted.

use crate::envelope::EventEnvelope;
use crate::keyring::{KeyError, KeyRing};
use crate::personal::{self, DataKey};
use crate::store::{
    AppendOutcome, EventStore, ExpectedVersion, LoadOptions, LoadedCommits, LoadedStream, Snapshot,
    StoreError,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An event store that seals personal values on the way in and opens them on the way out.
#[derive(Debug, Clone)]
pub struct SealingStore<S, K> {
    inner: S,
    keys: K,
}

impl<S: EventStore, K: KeyRing> SealingStore<S, K> {
    /// `inner` with personal values sealed by keys from `keys`.
    pub fn new(inner: S, keys: K) -> Self {
        Self { inner, keys }
    }

    /// The store behind (what holds the sealed values).
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The key ring.
    pub fn keys(&self) -> &K {
        &self.keys
    }

    /// Seals the personal values of `events` and `snapshot` of `stream_id`'s tenant.
    async fn seal(
        &self,
        stream_id: &str,
        events: &mut [EventEnvelope],
        snapshot: Option<&mut Snapshot>,
    ) -> Result<(), StoreError> {
        let mut subjects = BTreeSet::new();
        for e in events.iter() {
            personal::plaintext_subjects(&e.data, &mut subjects);
        }
        if let Some(s) = &snapshot {
            personal::plaintext_subjects(&s.state, &mut subjects);
        }
        if subjects.is_empty() {
            return Ok(());
        }
        let tenant = tenant_of(stream_id);
        let mut keys = BTreeMap::new();
        for subject in subjects {
            let key = self
                .keys
                .key_for_sealing(tenant, &subject)
                .await
                .map_err(store_error)?;
            keys.insert(subject, key);
        }
        let sealed = |value: &mut serde_json::Value| {
            personal::seal(value, tenant, &keys).map_err(|e| StoreError::Invalid(e.into()))
        };
        for e in events.iter_mut() {
            sealed(&mut e.data)?;
        }
        if let Some(s) = snapshot {
            sealed(&mut s.state)?;
        }
        Ok(())
    }

    /// The keys of the sealed values in `values` of `tenant`, as far as they still exist.
    async fn keys_for<'v>(
        &self,
        tenant: &str,
        values: impl Iterator<Item = &'v serde_json::Value>,
    ) -> Result<BTreeMap<(String, String), DataKey>, StoreError> {
        let mut wanted = BTreeSet::new();
        values.for_each(|v| personal::sealed_keys(v, &mut wanted));
        let mut keys = BTreeMap::new();
        for (subject, kid) in wanted {
            let found = self
                .keys
                .key_for_opening(tenant, &subject, &kid)
                .await
                .map_err(store_error)?;
            if let Some(key) = found {
                keys.insert((subject, kid), key);
            }
        }
        Ok(keys)
    }

    /// Opens the sealed values of `events` in place.
    async fn open_events(
        &self,
        stream_id: &str,
        events: &mut [EventEnvelope],
    ) -> Result<(), StoreError> {
        if !events.iter().any(|e| personal::has_sealed(&e.data)) {
            return Ok(());
        }
        let tenant = tenant_of(stream_id);
        let keys = self
            .keys_for(tenant, events.iter().map(|e| &e.data))
            .await?;
        for e in events {
            personal::open(&mut e.data, tenant, &keys);
        }
        Ok(())
    }

    /// Opens the sealed values of a snapshot's state.
    async fn open_snapshot(&self, stream_id: &str, s: &mut Snapshot) -> Result<(), StoreError> {
        if !personal::has_sealed(&s.state) {
            return Ok(());
        }
        let tenant = tenant_of(stream_id);
        let keys = self.keys_for(tenant, std::iter::once(&s.state)).await?;
        personal::open(&mut s.state, tenant, &keys);
        Ok(())
    }
}

/// The tenant part of a stream id (`{tenant}/...`): the scope of its subjects' keys.
fn tenant_of(stream_id: &str) -> &str {
    stream_id.split_once('/').map_or(stream_id, |(t, _)| t)
}

fn store_error(e: KeyError) -> StoreError {
    match e {
        e @ KeyError::Forgotten { .. } => StoreError::Invalid(e.into()),
        KeyError::Unavailable(cause) => StoreError::Unavailable(cause),
    }
}

#[async_trait]
impl<S: EventStore, K: KeyRing> EventStore for SealingStore<S, K> {
    async fn load(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedStream, StoreError> {
        let mut loaded = self.inner.load(stream_id, options).await?;
        self.open_events(stream_id, &mut loaded.events).await?;
        if let Some(s) = &mut loaded.snapshot {
            self.open_snapshot(stream_id, s).await?;
        }
        Ok(loaded)
    }

    async fn load_commits(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedCommits, StoreError> {
        let mut loaded = self.inner.load_commits(stream_id, options).await?;
        let sealed_events = loaded.events().any(|e| personal::has_sealed(&e.data));
        if sealed_events {
            // Only a load that holds sealed values is copied to be opened.
            let mut events: Vec<EventEnvelope> = loaded.events().cloned().collect();
            self.open_events(stream_id, &mut events).await?;
            loaded.commits = vec![Arc::from(events)];
        }
        if let Some(s) = &loaded.snapshot
            && personal::has_sealed(&s.state)
        {
            let mut s = Snapshot::clone(s);
            self.open_snapshot(stream_id, &mut s).await?;
            loaded.snapshot = Some(Arc::new(s));
        }
        Ok(loaded)
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = self
            .inner
            .load_range(stream_id, from_version, to_version, limit)
            .await?;
        self.open_events(stream_id, &mut events).await?;
        Ok(events)
    }

    async fn load_after(
        &self,
        stream_id: &str,
        version: ExpectedVersion,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut events = self.inner.load_after(stream_id, version).await?;
        self.open_events(stream_id, &mut events).await?;
        Ok(events)
    }

    async fn append(
        &self,
        stream_id: &str,
        expected_version: ExpectedVersion,
        mut events: Vec<EventEnvelope>,
        mut snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        self.seal(stream_id, &mut events, snapshot.as_mut()).await?;
        self.inner
            .append(stream_id, expected_version, events, snapshot)
            .await
    }

    async fn head(&self, stream_id: &str) -> Result<u64, StoreError> {
        self.inner.head(stream_id).await
    }

    async fn append_expiring(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        mut events: Vec<EventEnvelope>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<AppendOutcome, StoreError> {
        self.seal(stream_id, &mut events, None).await?;
        self.inner
            .append_expiring(stream_id, expected, events, expires_at)
            .await
    }
}
