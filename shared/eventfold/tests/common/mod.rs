//! Shared fixtures for the integration tests: a tiny `Counter` aggregate and `Probe`, an
//! [`EventStore`] that delegates to a shared [`MemoryEventStore`] while counting loads,
//! recording snapshots, yielding like a networked store and, on request, simulating a
//! concurrent writer.

// Each test binary uses a different subset of these fixtures.
#![allow(dead_code)]

use async_trait::async_trait;
use eventfold::{
    Aggregate, AppendOutcome, CommandContext, DomainEvent, EventEnvelope, EventStore, LoadOptions,
    LoadedCommits, LoadedStream, MemoryEventStore, Metadata, Rejection, Snapshot, StoreError,
    StreamId,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

// ---------------------------------------------------------------------------------------------
// The test aggregate
// ---------------------------------------------------------------------------------------------

/// Counter events. `Added` is at schema 2 (schema 1 called the field `amount`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CounterEvent {
    Added { n: i64 },
    Reset,
    Marked { id: String },
}

impl DomainEvent for CounterEvent {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "Added" { 2 } else { 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CounterState {
    pub total: i64,
    pub adds: u64,
    pub resets: u32,
    pub marks: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CounterCommand {
    /// One `Added`; `n == 0` breaks `amount-not-zero`, leaving [-LIMIT, LIMIT] breaks
    /// `within-limit`.
    Add { n: i64 },
    /// One `Added` per amount, in a single commit; empty means "nothing to do".
    AddMany { ns: Vec<i64> },
    /// `Reset`, or nothing when already at zero.
    Reset,
    /// `Marked` once per id; again is "already done".
    SetOnce { id: String },
}

pub const LIMIT: i64 = 1_000_000;

pub struct Counter;

impl Aggregate for Counter {
    const CATEGORY: &'static str = "Counter";
    type Event = CounterEvent;
    type State = CounterState;
    type Command = CounterCommand;

    fn initial() -> CounterState {
        CounterState::default()
    }

    fn evolve(mut state: CounterState, event: &CounterEvent) -> CounterState {
        match event {
            CounterEvent::Added { n } => {
                state.total += n;
                state.adds += 1;
            }
            CounterEvent::Reset => {
                state.total = 0;
                state.resets += 1;
            }
            CounterEvent::Marked { id } => {
                state.marks.insert(id.clone());
            }
        }
        state
    }

    fn decide(
        state: &CounterState,
        command: &CounterCommand,
    ) -> Result<Vec<CounterEvent>, Rejection> {
        match command {
            CounterCommand::Add { n } => Ok(vec![check_add(state.total, *n)?]),
            CounterCommand::AddMany { ns } => {
                let mut total = state.total;
                ns.iter()
                    .map(|&n| {
                        let event = check_add(total, n)?;
                        total += n;
                        Ok(event)
                    })
                    .collect()
            }
            CounterCommand::Reset if state.total == 0 => Ok(vec![]),
            CounterCommand::Reset => Ok(vec![CounterEvent::Reset]),
            CounterCommand::SetOnce { id } if state.marks.contains(id) => Ok(vec![]),
            CounterCommand::SetOnce { id } => Ok(vec![CounterEvent::Marked { id: id.clone() }]),
        }
    }
}

fn check_add(total: i64, n: i64) -> Result<CounterEvent, Rejection> {
    if n == 0 {
        return Err(Rejection::new(
            "amount-not-zero",
            "adding 0 changes nothing",
        ));
    }
    if !(-LIMIT..=LIMIT).contains(&(total + n)) {
        return Err(Rejection::new(
            "within-limit",
            format!("{total} + {n} leaves the limit"),
        ));
    }
    Ok(CounterEvent::Added { n })
}

/// Same events and state as [`Counter`], but a newer state schema: its snapshots and
/// `Counter`'s must never be mistaken for each other.
pub struct CounterV2;

impl Aggregate for CounterV2 {
    const CATEGORY: &'static str = "Counter";
    const STATE_SCHEMA: u32 = 2;
    type Event = CounterEvent;
    type State = CounterState;
    type Command = CounterCommand;

    fn initial() -> CounterState {
        Counter::initial()
    }
    fn evolve(state: CounterState, event: &CounterEvent) -> CounterState {
        Counter::evolve(state, event)
    }
    fn decide(
        state: &CounterState,
        command: &CounterCommand,
    ) -> Result<Vec<CounterEvent>, Rejection> {
        Counter::decide(state, command)
    }
}

pub fn stream(id: &str) -> StreamId {
    StreamId::new("t1", Counter::CATEGORY, id).expect("valid stream id")
}

pub fn ctx(command_id: &str) -> CommandContext {
    Metadata::root("t1", "tester", command_id)
}

pub fn add(n: i64) -> CounterCommand {
    CounterCommand::Add { n }
}

/// Decodes stored envelopes (no upcasters) and folds them from `initial`.
pub fn replay(envelopes: &[EventEnvelope]) -> CounterState {
    let events: Vec<CounterEvent> = envelopes
        .iter()
        .map(|e| CounterEvent::decode(&e.event_type, &e.data).expect("stored event decodes"))
        .collect();
    Counter::fold(Counter::initial(), events.iter())
}

// ---------------------------------------------------------------------------------------------
// The probing store
// ---------------------------------------------------------------------------------------------

/// Amount of the event a simulated concurrent writer slips in before a forced conflict.
pub const FOREIGN: i64 = 1_000;

/// Cheap to clone; clones share the same streams and counters, so several executors can
/// write to "one table".
#[derive(Debug, Clone, Default)]
pub struct Probe {
    inner: Arc<MemoryEventStore>,
    loads: Arc<AtomicUsize>,
    catch_ups: Arc<AtomicUsize>,
    conflicts_to_inject: Arc<AtomicU32>,
    snapshots: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Probe {
    pub fn new() -> Self {
        Self::default()
    }

    /// The wrapped store, for writes and reads that bypass the probe.
    pub fn inner(&self) -> &MemoryEventStore {
        &self.inner
    }

    /// How many times `load` was called.
    pub fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }

    /// How many times `load_after` (the catch-up read) was called.
    pub fn catch_ups(&self) -> usize {
        self.catch_ups.load(Ordering::SeqCst)
    }

    /// Makes the next `k` appends lose a race: a foreign `Added { n: FOREIGN }` is appended
    /// first, then the append fails with a conflict.
    pub fn inject_conflicts(&self, k: u32) {
        self.conflicts_to_inject.store(k, Ordering::SeqCst);
    }

    /// Versions of the snapshots successfully stored on `stream_id`, in commit order.
    pub fn snapshot_versions(&self, stream_id: &str) -> Vec<u64> {
        self.snapshots
            .lock()
            .expect("snapshot log lock")
            .iter()
            .filter(|(s, _)| s == stream_id)
            .map(|(_, v)| *v)
            .collect()
    }

    /// Current version of `stream_id`, read straight from the inner store.
    pub async fn version(&self, stream_id: &StreamId) -> u64 {
        self.inner
            .load(&stream_id.to_string(), LoadOptions::default())
            .await
            .expect("load works")
            .version
    }

    /// Every stored event of `stream_id`, oldest first.
    pub async fn events(&self, stream_id: &StreamId) -> Vec<EventEnvelope> {
        self.inner
            .load_range(&stream_id.to_string(), 1, None, None)
            .await
            .expect("range works")
    }

    fn take_injected_conflict(&self) -> bool {
        self.conflicts_to_inject
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
            .is_ok()
    }
}

#[async_trait]
impl EventStore for Probe {
    async fn load(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedStream, StoreError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        let loaded = self.inner.load(stream_id, options).await;
        // Hand over between reading and deciding, as a networked store would, so concurrent
        // tasks really interleave.
        tokio::task::yield_now().await;
        loaded
    }

    async fn load_commits(
        &self,
        stream_id: &str,
        options: LoadOptions,
    ) -> Result<LoadedCommits, StoreError> {
        // The command path's load: counted like `load`, lent by the inner store as it lends
        // them in production use.
        self.loads.fetch_add(1, Ordering::SeqCst);
        let loaded = self.inner.load_commits(stream_id, options).await;
        tokio::task::yield_now().await;
        loaded
    }

    async fn load_range(
        &self,
        stream_id: &str,
        from_version: u64,
        to_version: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.inner
            .load_range(stream_id, from_version, to_version, limit)
            .await
    }

    async fn load_after(
        &self,
        stream_id: &str,
        version: eventfold::ExpectedVersion,
    ) -> Result<Vec<EventEnvelope>, StoreError> {
        self.catch_ups.fetch_add(1, Ordering::SeqCst);
        let tail = self.inner.load_after(stream_id, version).await;
        tokio::task::yield_now().await;
        tail
    }

    async fn append(
        &self,
        stream_id: &str,
        expected_version: eventfold::ExpectedVersion,
        events: Vec<EventEnvelope>,
        snapshot: Option<Snapshot>,
    ) -> Result<AppendOutcome, StoreError> {
        if self.take_injected_conflict() {
            let id = StreamId::parse(stream_id).expect("executor writes valid stream ids");
            let at = self.version(&id).await;
            let foreign = CounterEvent::Added { n: FOREIGN }
                .encode()
                .expect("encodes")
                .into_envelope(&id, at + 1, chrono::Utc::now(), ctx("foreign"));
            self.inner
                .append(
                    stream_id,
                    eventfold::ExpectedVersion::assumed(at),
                    vec![foreign],
                    None,
                )
                .await?;
            return Err(StoreError::Conflict {
                stream_id: stream_id.to_owned(),
                expected: expected_version.get(),
            });
        }
        tokio::task::yield_now().await;
        let snapshot_version = snapshot.as_ref().map(|s| s.version);
        let done = self
            .inner
            .append(stream_id, expected_version, events, snapshot)
            .await?;
        if let Some(v) = snapshot_version {
            self.snapshots
                .lock()
                .expect("snapshot log lock")
                .push((stream_id.to_owned(), v));
        }
        Ok(done)
    }
}
