//! In-memory event store for unit tests and benchmarks; passes the same contract as DynamoDB.

use crate::envelope::EventEnvelope;
use crate::store::{
    AppendOutcome, EventStore, ExpectedVersion, LoadOptions, LoadedCommits, LoadedStream, Snapshot,
    StoreError, validate_append,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One stored commit. Commits are immutable once written, so they are shared rather than
/// copied with every load: [`EventStore::load_commits`] lends them as they lie (the owned
/// reads still copy, as a networked store's decoding would).
#[derive(Debug, Clone)]
struct Commit {
    events: Arc<[EventEnvelope]>,
    snapshot: Option<Arc<Snapshot>>,
}

/// Where a load for `options` starts: the snapshot to fold from (if any) and the commits after.
fn load_start<'a>(
    commits: &'a [Commit],
    options: &LoadOptions,
) -> (Option<&'a Arc<Snapshot>>, &'a [Commit]) {
    let start = commits.iter().rposition(|c| {
        c.snapshot
            .as_ref()
            .is_some_and(|s| Some(s.state_schema) == options.state_schema)
    });
    match start {
        Some(i) => (commits[i].snapshot.as_ref(), &commits[i + 1..]),
        None => (None, commits),
    }
}

/// Streams held in a process-local map, one entry per commit as in the DynamoDB layout.
#[derive(Debug, Default)]
pub struct MemoryEventStore {
    streams: Mutex<HashMap<String, Vec<Commit>>>,
}

impl MemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_streams<T>(&self, f: impl FnOnce(&mut HashMap<String, Vec<Commit>>) -> T) -> T {
        // A poisoned lock only means another test thread panicked mid-call; the map itself
        // is never left half-written, so carry on with it.
        let mut guard = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

fn version_of(commits: &[Commit]) -> u64 {
    commits
        .last()
        .and_then(|c| c.events.last())
        .map_or(0, |e| e.version)
}

#[async_trait]
impl EventStore for MemoryEventStore {
    async fn head(&self, stream_id: &str) -> Result<u64, StoreError> {
        Ok(self.with_streams(|streams| streams.get(stream_id).map_or(0, |c| version_of(c))))
    }

    async fn load(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedStream, StoreError> {
        Ok(self.with_streams(|streams| {
            let Some(commits) = streams.get(stream_id) else {
                return LoadedStream {
                    requests: 1,
                    ..LoadedStream::default()
                };
            };
            let (snapshot, rest) = load_start(commits, &options);
            LoadedStream {
                version: version_of(commits),
                snapshot: snapshot.map(|s| Snapshot::clone(s)),
                events: rest.iter().flat_map(|c| c.events.iter().cloned()).collect(),
                requests: 1,
            }
        }))
    }

    async fn load_commits(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedCommits, StoreError> {
        Ok(self.with_streams(|streams| {
            let Some(commits) = streams.get(stream_id) else {
                return LoadedCommits {
                    requests: 1,
                    ..LoadedCommits::default()
                };
            };
            let (snapshot, rest) = load_start(commits, &options);
            LoadedCommits {
                version: version_of(commits),
                snapshot: snapshot.cloned(),
                commits: rest.iter().map(|c| Arc::clone(&c.events)).collect(),
                requests: 1,
            }
        }))
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(self.with_streams(|streams| {
            streams
                .get(stream_id)
                .into_iter()
                .flatten()
                .flat_map(|c| c.events.iter())
                .filter(|e| e.version >= from_version && to_version.is_none_or(|t| e.version <= t))
                .take(limit.unwrap_or(usize::MAX))
                .cloned()
                .collect()
        }))
    }

    async fn append(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        let expected_version = expected.get();
        validate_append(stream_id, expected_version, &events, snapshot.as_ref())?;
        self.with_streams(|streams| {
            let commits = streams.entry(stream_id.to_owned()).or_default();
            if version_of(commits) != expected_version {
                return Err(StoreError::Conflict {
                    stream_id: stream_id.to_owned(),
                    expected: expected_version,
                });
            }
            let version = expected_version + events.len() as u64;
            commits.push(Commit {
                events: events.into(),
                snapshot: snapshot.map(Arc::new),
            });
            Ok(AppendOutcome { version })
        })
    }
}
