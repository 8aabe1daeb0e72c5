//! The command path: load (or take from cache), decide, append, retry on conflict.

use crate::aggregate::{Aggregate, CodecError, DomainEvent, Rejection};
use crate::cache::StateCache;
use crate::envelope::{EventEnvelope, Metadata, StreamId};
use crate::store::{EventStore, LoadOptions, Snapshot, StoreError};
use crate::upcast::Upcasters;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The request context a command runs under; stamped on every event it produces.
pub type CommandContext = Metadata;

/// Waits between conflict retries; given by the host so this crate stays runtime-free.
pub type Backoff = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Tuning of the command path.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Take a snapshot in the commit that crosses each multiple of this many events (0: never).
    pub snapshot_every: u64,
    /// Attempts per command before a conflict is reported (at least 1).
    pub max_attempts: u32,
    /// Streams whose latest state is kept in memory (0: no cache).
    pub cache_capacity: usize,
    /// Sleep between conflict retries; `None` retries at once.
    pub backoff: Option<Backoff>,
}

impl std::fmt::Debug for ExecutorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorConfig")
            .field("snapshot_every", &self.snapshot_every)
            .field("max_attempts", &self.max_attempts)
            .field("cache_capacity", &self.cache_capacity)
            .field("backoff", &self.backoff.is_some())
            .finish()
    }
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            snapshot_every: 100,
            max_attempts: 8,
            cache_capacity: 1024,
            backoff: None,
        }
    }
}

/// Why a command did not produce a commit. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A business rule said no; nothing was written.
    #[error("rejected by rule {}: {}", .0.rule, .0.message)]
    Rejected(Rejection),
    /// The stream is not at the version the caller expected, or contention outlasted the retries.
    #[error("conflict on {stream_id}: expected version {expected}, stream is at {actual}")]
    Conflict {
        /// The contended stream.
        stream_id: String,
        /// The version the caller (or the last attempt) expected.
        expected: u64,
        /// The version last seen.
        actual: u64,
    },
    /// The commit would not fit in one store write.
    #[error("commit of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Estimated size.
        size: usize,
        /// Store limit.
        limit: usize,
    },
    /// The store is unavailable; the caller may retry later.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read or an event could not be encoded: a bug or corruption.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict {
                stream_id,
                expected,
            } => Self::Conflict {
                stream_id,
                expected,
                actual: expected,
            },
            StoreError::TooLarge { size, limit } => Self::TooLarge { size, limit },
            StoreError::Unavailable(m) => Self::Unavailable(m),
            e @ (StoreError::Invalid(_) | StoreError::Corrupt { .. }) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<CodecError> for CommandError {
    fn from(e: CodecError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// A command that went through.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome<S> {
    /// The stream written.
    pub stream_id: String,
    /// Stream version after the command.
    pub version: u64,
    /// The events appended (empty when the decision was "already done").
    pub events: Vec<EventEnvelope>,
    /// True when this command created the stream.
    pub created: bool,
    /// State after the command.
    pub state: S,
    /// How many decide/append attempts it took.
    pub attempts: u32,
}

/// Runs commands against an [`EventStore`]: the same path for the HTTP API and for sagas.
pub struct CommandExecutor<S> {
    store: S,
    config: ExecutorConfig,
    cache: StateCache,
    upcasters: Upcasters,
}

impl<S: std::fmt::Debug> std::fmt::Debug for CommandExecutor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandExecutor")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish()
    }
}

impl<S: EventStore> CommandExecutor<S> {
    /// An executor over `store` with `config` and no upcasters.
    pub fn new(store: S, config: ExecutorConfig) -> Self {
        Self {
            store,
            cache: StateCache::new(config.cache_capacity),
            config,
            upcasters: Upcasters::new(),
        }
    }

    /// Uses `upcasters` whenever stored events are read.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The tuning in force.
    pub fn config(&self) -> &ExecutorConfig {
        &self.config
    }

    fn load_options<A: Aggregate>(&self) -> LoadOptions {
        LoadOptions {
            state_schema: Some(A::STATE_SCHEMA),
            snapshot_every: self.config.snapshot_every,
        }
    }

    /// Decodes stored envelopes (through the upcasters) and folds them onto `state`.
    pub fn fold_envelopes<A: Aggregate>(
        &self,
        state: A::State,
        envelopes: &[EventEnvelope],
    ) -> Result<A::State, CommandError> {
        envelopes.iter().try_fold(state, |state, env| {
            let (data, _) =
                self.upcasters
                    .upcast_ref(&env.event_type, env.schema_version, &env.data);
            let event = A::Event::decode(&env.event_type, &data)?;
            Ok(A::evolve(state, &event))
        })
    }

    /// Reads the stream from the store (snapshot + tail) and folds it; refreshes the cache.
    pub async fn load<A: Aggregate>(
        &self,
        stream: &StreamId,
    ) -> Result<(u64, A::State), CommandError> {
        let key = stream.to_string();
        let loaded = self.store.load(&key, self.load_options::<A>()).await?;
        let base = match &loaded.snapshot {
            Some(snap) => serde_json::from_value(snap.state.clone()).map_err(|e| {
                CommandError::Internal(format!(
                    "snapshot of {key} at {} unreadable: {e}",
                    snap.version
                ))
            })?,
            None => A::initial(),
        };
        let state = self.fold_envelopes::<A>(base, &loaded.events)?;
        self.cache.put(&key, loaded.version, state.clone());
        Ok((loaded.version, state))
    }

    /// The state as of `version` (time travel); `None` when the stream is shorter than that.
    pub async fn state_at<A: Aggregate>(
        &self,
        stream: &StreamId,
        version: u64,
    ) -> Result<Option<A::State>, CommandError> {
        let events = self
            .store
            .load_range(&stream.to_string(), 1, Some(version), None)
            .await?;
        if (events.len() as u64) < version {
            return Ok(None);
        }
        self.fold_envelopes::<A>(A::initial(), &events).map(Some)
    }

    /// Brings a known state up to date with the commits after `version` (a cheap catch-up
    /// read instead of a full reload); refreshes the cache.
    async fn catch_up<A: Aggregate>(
        &self,
        key: &str,
        version: u64,
        state: A::State,
    ) -> Result<(u64, A::State), CommandError> {
        let tail = self.store.load_after(key, version).await?;
        let version = tail.last().map_or(version, |e| e.version);
        let state = self.fold_envelopes::<A>(state, &tail)?;
        self.cache.put(key, version, state.clone());
        Ok((version, state))
    }

    /// Loads (or takes from the cache), decides `command`, appends the resulting events and,
    /// on a conflict, catches up with the commits that won and decides again (bounded).
    ///
    /// With `expected_version`, a stream at any other version is a [`CommandError::Conflict`]
    /// without retry (the caller decided on a state that is gone). Only a state confirmed by
    /// a read may refuse: a rejection, an "already done" or a version mismatch reached on a
    /// cached state is checked again after catching up.
    pub async fn execute<A: Aggregate>(
        &self,
        stream: &StreamId,
        expected_version: Option<u64>,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<CommandOutcome<A::State>, CommandError> {
        let key = stream.to_string();
        let attempts = self.config.max_attempts.max(1);
        let (mut version, mut state, mut confirmed) = match self.cache.get::<A::State>(&key) {
            Some((v, s)) => (v, s, false),
            None => {
                let (v, s) = self.load::<A>(stream).await?;
                (v, s, true)
            }
        };
        let mut attempt = 1;
        loop {
            if let Some(expected) = expected_version
                && expected != version
            {
                if !confirmed {
                    (version, state) = self.catch_up::<A>(&key, version, state).await?;
                    confirmed = true;
                    continue;
                }
                return Err(CommandError::Conflict {
                    stream_id: key,
                    expected,
                    actual: version,
                });
            }
            let decided = A::decide(&state, command);
            if !confirmed && !matches!(&decided, Ok(events) if !events.is_empty()) {
                // No append will reveal a stale cache here: confirm the verdict on fresh state.
                (version, state) = self.catch_up::<A>(&key, version, state).await?;
                confirmed = true;
                continue;
            }
            let decided = decided.map_err(CommandError::Rejected)?;
            if decided.is_empty() {
                return Ok(CommandOutcome {
                    stream_id: key,
                    version,
                    events: Vec::new(),
                    created: false,
                    state,
                    attempts: attempt,
                });
            }
            let now = chrono::Utc::now();
            let mut envelopes = Vec::with_capacity(decided.len());
            for (i, event) in decided.iter().enumerate() {
                let new = event.encode()?;
                envelopes.push(new.into_envelope(
                    stream,
                    version + 1 + i as u64,
                    now,
                    context.clone(),
                ));
            }
            let new_state = A::fold(state.clone(), decided.iter());
            let new_version = version + decided.len() as u64;
            let every = self.config.snapshot_every;
            let snapshot = if every > 0 && version / every < new_version / every {
                Some(Snapshot {
                    version: new_version,
                    state_schema: A::STATE_SCHEMA,
                    state: serde_json::to_value(&new_state).map_err(|e| {
                        CommandError::Internal(format!("state not serializable: {e}"))
                    })?,
                })
            } else {
                None
            };
            match self
                .store
                .append(&key, version, envelopes.clone(), snapshot)
                .await
            {
                Ok(done) => {
                    self.cache.put(&key, done.version, new_state.clone());
                    tracing::debug!(
                        stream_id = %key,
                        version = done.version,
                        events = envelopes.len(),
                        attempt,
                        command_id = %context.command_id,
                        correlation_id = %context.correlation_id,
                        "committed"
                    );
                    return Ok(CommandOutcome {
                        stream_id: key,
                        version: done.version,
                        events: envelopes,
                        created: version == 0,
                        state: new_state,
                        attempts: attempt,
                    });
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::info!(
                        stream_id = %key,
                        expected = version,
                        attempt,
                        command_id = %context.command_id,
                        correlation_id = %context.correlation_id,
                        "append conflict, catching up and deciding again"
                    );
                    if attempt >= attempts {
                        self.cache.forget(&key);
                        let (actual, _) = self.catch_up::<A>(&key, version, state).await?;
                        return Err(CommandError::Conflict {
                            stream_id: key,
                            expected: expected_version.unwrap_or(version),
                            actual,
                        });
                    }
                    if let Some(backoff) = &self.config.backoff {
                        // Full jitter, exponential, capped: spreads contenders out.
                        let ceiling = (5u64 << attempt.min(6)).min(250);
                        backoff(Duration::from_millis(rand::random_range(0..=ceiling))).await;
                    }
                    (version, state) = self.catch_up::<A>(&key, version, state).await?;
                    confirmed = true;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
