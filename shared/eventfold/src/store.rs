//! The event-store port: what every adapter (memory, DynamoDB, ...) must provide.

use crate::envelope::EventEnvelope;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A folded state stored beside the commit that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Stream version the state includes (the last event of its commit).
    pub version: u64,
    /// The aggregate's `STATE_SCHEMA` when the snapshot was taken.
    pub state_schema: u32,
    /// The serialized state.
    pub state: serde_json::Value,
}

/// How to load a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Only a snapshot with this state schema may shorten the load; `None` replays everything.
    pub state_schema: Option<u32>,
    /// Expected distance between snapshots in events: lets an adapter size its first read.
    pub snapshot_every: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            state_schema: None,
            snapshot_every: 100,
        }
    }
}

/// The version a writer appends after: the end of a stream as the writer observed it.
///
/// It can only come from the store itself (a load's [`LoadedStream::expected`], an append's
/// [`AppendOutcome::expected`], or the end of a catch-up read, [`ExpectedVersion::after`]), or
/// be [`ExpectedVersion::NEW`] for a stream not written yet. So it is always a commit boundary
/// at (or behind) the head: adapters key commits by their first version and need not guard
/// against an append in the middle of a commit or past the end of a stream, which a bare
/// number would allow.
///
/// The one way around that, [`ExpectedVersion::assumed`] (tests and contract suites only),
/// makes a version no store vouches for ([`ExpectedVersion::is_vouched`]): stores check such
/// a version against the stream before appending after it (the DynamoDB store with one
/// extra read), so a contract suite can prove a mid-commit or past-head append is refused.
/// Equality, order and hashing look at the number only.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedVersion {
    version: u64,
    vouched: bool,
}

impl PartialEq for ExpectedVersion {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
    }
}

impl Eq for ExpectedVersion {}

impl PartialOrd for ExpectedVersion {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ExpectedVersion {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.version.cmp(&other.version)
    }
}

impl std::hash::Hash for ExpectedVersion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version.hash(state);
    }
}

impl ExpectedVersion {
    /// A stream with no events yet.
    pub const NEW: Self = Self::vouched(0);

    const fn vouched(version: u64) -> Self {
        Self {
            version,
            vouched: true,
        }
    }

    /// The version as a number (0: a new stream).
    pub fn get(self) -> u64 {
        self.version
    }

    /// Whether a store (or the topic catalogue) reported this version; only
    /// [`ExpectedVersion::assumed`] makes one that is not, and stores check those.
    pub fn is_vouched(self) -> bool {
        self.vouched
    }

    /// The end after reading `tail`, the events that follow this version in its stream
    /// (a catch-up read): the last one's version, or this one when `tail` is empty.
    /// `None` when `tail` does not continue this version contiguously.
    pub fn after(self, tail: &[EventEnvelope]) -> Option<Self> {
        let contiguous = tail
            .iter()
            .enumerate()
            .all(|(i, e)| e.version == self.version + 1 + i as u64);
        // The end of a read to the head is a boundary the store reported, whatever `self` was.
        contiguous.then(|| Self::vouched(self.version + tail.len() as u64))
    }

    /// The head of a stream as a store's [`EventStore::head`] read it, or the offset floor
    /// a topic catalogue keeps for a partition whose records all expired (streaming): a
    /// commit boundary the writer observed, like a load's. Never build one from input.
    pub fn at_head(version: u64) -> Self {
        Self::vouched(version)
    }

    /// A version taken on trust, for tests and the adapters' contract suite (which check
    /// what stores do with versions no load or append reported): not vouched for, so a
    /// store checks it against the stream before appending after it.
    pub fn assumed(version: u64) -> Self {
        Self {
            version,
            vouched: false,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.version.fmt(f)
    }
}

/// What a load returns: the newest usable snapshot (if any) and every event after it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadedStream {
    /// Current version of the stream (0: no events).
    pub version: u64,
    /// Newest snapshot with the requested schema, if one exists.
    pub snapshot: Option<Snapshot>,
    /// Events after the snapshot (or all of them), oldest first.
    pub events: Vec<EventEnvelope>,
    /// Store requests the load took (for cost accounting).
    pub requests: u32,
}

impl LoadedStream {
    /// The version to append after, as this load observed the stream.
    pub fn expected(&self) -> ExpectedVersion {
        ExpectedVersion::vouched(self.version)
    }
}

/// A load whose events the store lends as it holds them: one shared slice per commit, so
/// reading a stream for a decision need not copy its events ([`EventStore::load_commits`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadedCommits {
    /// Current version of the stream (0: no events).
    pub version: u64,
    /// Newest snapshot with the requested schema, if one exists.
    pub snapshot: Option<Arc<Snapshot>>,
    /// The commits after the snapshot (or all of them), oldest first; each one's events in
    /// order. A slice may hold several commits (an adapter that reads owned events lends
    /// them as one).
    pub commits: Vec<Arc<[EventEnvelope]>>,
    /// Store requests the load took (for cost accounting).
    pub requests: u32,
}

impl LoadedCommits {
    /// The version to append after, as this load observed the stream.
    pub fn expected(&self) -> ExpectedVersion {
        ExpectedVersion::vouched(self.version)
    }

    /// The events after the snapshot, oldest first.
    pub fn events(&self) -> impl Iterator<Item = &EventEnvelope> {
        self.commits.iter().flat_map(|c| c.iter())
    }
}

impl From<LoadedStream> for LoadedCommits {
    fn from(loaded: LoadedStream) -> Self {
        let commits = if loaded.events.is_empty() {
            Vec::new()
        } else {
            vec![Arc::from(loaded.events)]
        };
        Self {
            version: loaded.version,
            snapshot: loaded.snapshot.map(Arc::new),
            commits,
            requests: loaded.requests,
        }
    }
}

/// A successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Stream version after the commit.
    pub version: u64,
}

impl AppendOutcome {
    /// The version to append the next commit after.
    pub fn expected(&self) -> ExpectedVersion {
        ExpectedVersion::vouched(self.version)
    }
}

/// Why a port's backing service failed: its own error, kept whole so the cause chain reaches
/// the logs and Lambda's error report. A plain message converts too (`"why".into()`).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the store could not do what was asked; callers branch on these.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else appended first: the expected version is stale.
    #[error("concurrency conflict on {stream_id}: expected version {expected}")]
    Conflict {
        /// The contended stream.
        stream_id: String,
        /// The version the writer expected.
        expected: u64,
    },
    /// The commit exceeds what the store can hold in one write (refused before writing).
    #[error("commit to {stream_id} of {size} bytes exceeds the store's limit of {limit} bytes")]
    TooLarge {
        /// The stream the commit was for.
        stream_id: String,
        /// Estimated size of the commit.
        size: usize,
        /// The store's limit.
        limit: usize,
    },
    /// The request was malformed (bad versions, events not matching the stream).
    #[error("invalid append: {0}")]
    Invalid(#[source] Cause),
    /// Stored data could not be read back (corruption or an unknown format).
    #[error("corrupt stored data in {stream_id}: {detail}")]
    Corrupt {
        /// The stream holding the bad item.
        stream_id: String,
        /// What was wrong.
        detail: String,
    },
    /// The backing service failed or throttled; retrying later may succeed.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Cause),
}

/// Storage of event streams with optimistic concurrency, one commit at a time.
///
/// Versions are 1-based and contiguous. An append names the version it follows as an
/// [`ExpectedVersion`], which only a load, an append or a catch-up read can produce (or
/// [`ExpectedVersion::NEW`]): adapters key commits by their first version and rely on appends
/// happening only at observed stream ends.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Loads a stream for deciding: newest usable snapshot plus the events after it.
    async fn load(&self, stream_id: &str, options: LoadOptions)
    -> Result<LoadedStream, StoreError>;

    /// [`Self::load`] with the events lent rather than copied: what the command path folds.
    /// The same snapshot, events and version as `load`; defaults to it (moving its events
    /// into one slice), and a store that keeps commits in memory shares them instead.
    async fn load_commits(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedCommits, StoreError> {
        Ok(self.load(stream_id, options).await?.into())
    }

    /// Reads events with `from_version <= version <= to_version` (no snapshot), oldest first,
    /// at most `limit` of them.
    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError>;

    /// Events after `version`, a version observed from a load or an append (a commit
    /// boundary): the cheap catch-up after a lost race. Defaults to [`Self::load_range`].
    async fn load_after(
        &self,
        stream_id: &str,
        version: ExpectedVersion,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.load_range(stream_id, version.get() + 1, None, None)
            .await
    }

    /// Appends `events` (versions `expected_version + 1 ..`) atomically, with an optional
    /// snapshot of the state after them; fails with [`StoreError::Conflict`] when the stream
    /// has moved past `expected_version`.
    async fn append(
        &self,
        stream_id: &str,
        expected_version: ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError>;

    /// The stream's version (0: no events): what the next append expects. Defaults to a
    /// full [`Self::load`]; adapters answer from the newest commit alone.
    async fn head(&self, stream_id: &str) -> Result<u64, StoreError> {
        let options = LoadOptions {
            state_schema: None,
            snapshot_every: 0,
        };
        Ok(self.load(stream_id, options).await?.version)
    }

    /// [`Self::append`] (without snapshot) of a commit the store may drop after
    /// `expires_at` (streaming records past their retention). Adapters without expiry keep
    /// it, which is what the default does.
    async fn append_expiring(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<AppendOutcome, StoreError> {
        let _ = expires_at;
        self.append(stream_id, expected, events, None).await
    }
}

/// Checks an append request's shape; shared by adapters so they agree on what is invalid.
pub fn validate_append(
    stream_id: &str,
    expected_version: u64,
    events: &[EventEnvelope],
    snapshot: Option<&Snapshot>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::Invalid(
            "a commit needs at least one event".into(),
        ));
    }
    for (i, e) in events.iter().enumerate() {
        if e.stream_id != stream_id {
            return Err(StoreError::Invalid(
                format!(
                    "event {} belongs to {}, not {stream_id}",
                    e.event_id, e.stream_id
                )
                .into(),
            ));
        }
        if e.version != expected_version + 1 + i as u64 {
            return Err(StoreError::Invalid(
                format!(
                    "event versions must run from {} contiguously",
                    expected_version + 1
                )
                .into(),
            ));
        }
    }
    if events.iter().any(|e| e.metadata != events[0].metadata) {
        return Err(StoreError::Invalid(
            "all events of a commit share the commit's metadata".into(),
        ));
    }
    if let Some(s) = snapshot {
        let last = expected_version + events.len() as u64;
        if s.version != last {
            return Err(StoreError::Invalid(
                format!(
                    "snapshot version {} must equal the commit's last version {last}",
                    s.version
                )
                .into(),
            ));
        }
    }
    Ok(())
}

/// Shared stores (one client behind many executors) are stores too.
#[async_trait]
impl<T: EventStore + ?Sized> EventStore for std::sync::Arc<T> {
    async fn load(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedStream, StoreError> {
        (**self).load(stream_id, options).await
    }

    async fn load_commits(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedCommits, StoreError> {
        (**self).load_commits(stream_id, options).await
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        (**self)
            .load_range(stream_id, from_version, to_version, limit)
            .await
    }

    async fn load_after(
        &self,
        stream_id: &str,
        version: ExpectedVersion,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        (**self).load_after(stream_id, version).await
    }

    async fn append(
        &self,
        stream_id: &str,
        expected_version: ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        (**self)
            .append(stream_id, expected_version, events, snapshot)
            .await
    }

    async fn head(&self, stream_id: &str) -> Result<u64, StoreError> {
        (**self).head(stream_id).await
    }

    async fn append_expiring(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<AppendOutcome, StoreError> {
        (**self)
            .append_expiring(stream_id, expected, events, expires_at)
            .await
    }
}
