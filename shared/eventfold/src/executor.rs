//! The command path: load (or take from cache), decide, append, retry on conflict.
//! Snapshots taken are measured: [`crate::snapshot_size`].

use crate::aggregate::{Aggregate, CodecError, DomainEvent, Rejection};
use crate::cache::{CacheFor, NoCache, StateCache, StateCaches};
use crate::envelope::{EventEnvelope, Metadata, StreamId};
use crate::store::{Cause, EventStore, ExpectedVersion, LoadOptions, Snapshot, StoreError};
use crate::upcast::Upcasters;
use serde::Deserialize;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::retry::MAX_BUDGETED_ATTEMPTS;
pub use crate::retry::decorrelated_jitter;
pub use crate::snapshot_size::{SNAPSHOT_BYTES, SNAPSHOT_WARN_BYTES};

/// The request context a command runs under; stamped on every event it produces.
pub type CommandContext = Metadata;

/// Waits between conflict retries; given by the host so this crate stays runtime-free.
pub type Backoff = Arc<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Tuning of the command path.
#[derive(Clone)]
pub struct ExecutorConfig {
    /// Take a snapshot in the commit that crosses each multiple of this many events (0: never).
    pub snapshot_every: u64,
    /// Attempts per command before a conflict is reported (at least 1), unless a retry
    /// budget applies.
    pub max_attempts: u32,
    /// For a command without `expected_version`: retry conflicts for this long after it
    /// started (or until the caller's deadline, when sooner), however many attempts that
    /// takes, so a hot stream slows its writers down instead of failing them. `None`:
    /// `max_attempts` bounds the retries.
    pub retry_budget: Option<Duration>,
    /// Streams whose latest state is kept in memory, per aggregate type the executor's
    /// caches hold (0: no cache). An executor made by [`CommandExecutor::new`] caches
    /// nothing whatever this says; [`CommandExecutor::caching`] builds its caches from it.
    pub cache_capacity: usize,
    /// Sleep between conflict retries; `None` retries at once.
    pub backoff: Option<Backoff>,
}

impl std::fmt::Debug for ExecutorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorConfig")
            .field("snapshot_every", &self.snapshot_every)
            .field("max_attempts", &self.max_attempts)
            .field("retry_budget", &self.retry_budget)
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
            retry_budget: None,
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
    /// The commit would not fit in one store write; nothing was written.
    #[error("commit to {stream_id} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The stream the commit was for.
        stream_id: String,
        /// Estimated size.
        size: usize,
        /// Store limit.
        limit: usize,
    },
    /// The store is unavailable; the caller may retry later.
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Stored data could not be read or an event could not be encoded: a bug or corruption.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
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
            StoreError::TooLarge {
                stream_id,
                size,
                limit,
            } => Self::TooLarge {
                stream_id,
                size,
                limit,
            },
            StoreError::Unavailable(m) => Self::Unavailable(m),
            e @ (StoreError::Invalid(_) | StoreError::Corrupt { .. }) => Self::Internal(e.into()),
        }
    }
}

impl From<CodecError> for CommandError {
    fn from(e: CodecError) -> Self {
        Self::Internal(e.into())
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
    /// State after the command (shared with the executor's cache: no copy is made for it).
    pub state: Arc<S>,
    /// How many decide/append attempts it took.
    pub attempts: u32,
    /// The serialized size of the snapshot this commit carried to the store, if it took one
    /// (the store may still drop it: see the module docs).
    pub snapshot_bytes: Option<usize>,
}

/// Runs commands against an [`EventStore`]: the same path for the HTTP API and for sagas.
///
/// `C` holds the warm states ([`crate::cache`]): the executor runs the commands of an
/// aggregate `A` where `C: CacheFor<A>`, so which aggregates it serves, and where their
/// states live, is checked at compile time. [`NoCache`] (the default) reads every stream.
pub struct CommandExecutor<S, C = NoCache> {
    store: S,
    config: ExecutorConfig,
    caches: C,
    upcasters: Upcasters,
}

impl<S: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug for CommandExecutor<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandExecutor")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("caches", &self.caches)
            .finish()
    }
}

impl<S: EventStore> CommandExecutor<S> {
    /// An executor over `store` with `config`, no upcasters and no cache (see
    /// [`Self::caching`]).
    pub fn new(store: S, config: ExecutorConfig) -> Self {
        Self {
            store,
            config,
            caches: NoCache,
            upcasters: Upcasters::new(),
        }
    }
}

impl<S: EventStore, C> CommandExecutor<S, C> {
    /// The same executor keeping warm states in caches `D`, built from the config's
    /// `cache_capacity` (streams kept per aggregate type), e.g. `.caching::<ShopCaches>()`
    /// for a set made by [`state_caches!`](crate::state_caches), or
    /// `.caching::<StateCache<A::State>>()` for one aggregate type. The states held in `C` are
    /// dropped.
    pub fn caching<D: StateCaches>(self) -> CommandExecutor<S, D> {
        CommandExecutor {
            caches: D::with_capacity(self.config.cache_capacity),
            store: self.store,
            config: self.config,
            upcasters: self.upcasters,
        }
    }

    /// Uses `upcasters` whenever stored events are read.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// The caches of warm states.
    pub fn caches(&self) -> &C {
        &self.caches
    }

    /// `A`'s cache, when `C` keeps `A`'s states.
    fn states<A: Aggregate>(&self) -> Option<&StateCache<A::State>>
    where
        C: CacheFor<A>,
    {
        self.caches.states()
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
        self.fold_events::<A>(state, envelopes)
    }

    /// [`Self::fold_envelopes`] over events wherever they lie (a load's lent commits).
    fn fold_events<'e, A: Aggregate>(
        &self,
        state: A::State,
        envelopes: impl IntoIterator<Item = &'e EventEnvelope>,
    ) -> Result<A::State, CommandError> {
        // With no upcaster registered every event reads as written: decode it in place.
        let upcasting = !self.upcasters.is_empty();
        // A plain loop rather than `try_fold`: the state then stays put between events
        // instead of travelling through a `Result` at each step of a replay.
        let mut state = state;
        for env in envelopes {
            let (data, reached) = if upcasting {
                self.upcasters
                    .upcast_ref(&env.event_type, env.schema_version, &env.data)
            } else {
                (Cow::Borrowed(&env.data), env.schema_version)
            };
            let current = A::Event::schema_version(&env.event_type);
            if reached < current {
                return Err(CommandError::Internal(format!(
                    "{} at version {}: a {} event of schema {} reaches only schema {reached} through the upcasters, the current schema is {current}",
                    env.stream_id, env.version, env.event_type, env.schema_version
                ).into()));
            }
            let event = A::Event::decode(&env.event_type, &data)?;
            state = A::evolve_owned(state, event);
        }
        Ok(state)
    }

    /// Reads the stream from the store (snapshot + tail) and folds it; refreshes the cache.
    pub async fn load<A: Aggregate>(
        &self,
        stream: &StreamId,
    ) -> Result<(u64, A::State), CommandError>
    where
        C: CacheFor<A>,
    {
        let key = stream.to_string();
        let (version, state) = self.read::<A>(&key).await?;
        if let Some(cache) = self.states::<A>() {
            cache.put(&key, version, state.clone());
        }
        Ok((version.get(), state))
    }

    /// Reads and folds `key` (snapshot + tail), leaving the cache alone.
    async fn read<A: Aggregate>(
        &self,
        key: &str,
    ) -> Result<(ExpectedVersion, A::State), CommandError> {
        // Lent, not copied: the fold only reads the events.
        let loaded = self
            .store
            .load_commits(key, self.load_options::<A>())
            .await?;
        let base = match loaded.snapshot.as_deref() {
            None => A::initial(),
            Some(snap) => match A::State::deserialize(&snap.state) {
                Ok(state) => state,
                Err(e) => {
                    // A snapshot is an optimisation: one this code cannot read (a state change
                    // shipped without a STATE_SCHEMA bump) costs a full replay, not the stream.
                    tracing::warn!(
                        stream_id = %key,
                        snapshot_version = snap.version,
                        error = %e,
                        "snapshot unreadable: replaying the whole stream"
                    );
                    let events = self.store.load_range(key, 1, None, None).await?;
                    let version = ExpectedVersion::NEW.after(&events).ok_or_else(|| {
                        CommandError::Internal(
                            format!("{key}: the stream's versions have holes").into(),
                        )
                    })?;
                    let state = self.fold_envelopes::<A>(A::initial(), &events)?;
                    return Ok((version, state));
                }
            },
        };
        let state = self.fold_events::<A>(base, loaded.events())?;
        Ok((loaded.expected(), state))
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

    /// Brings a known state up to date with the commits after its version (a cheap catch-up
    /// read instead of a full reload); the result is confirmed.
    async fn catch_up<A: Aggregate>(
        &self,
        key: &str,
        known: Known<A::State>,
    ) -> Result<Known<A::State>, CommandError> {
        let tail = self.store.load_after(key, known.version).await?;
        if tail.is_empty() {
            return Ok(Known {
                confirmed: true,
                ..known
            });
        }
        let last = known.version.after(&tail).ok_or_else(|| {
            CommandError::Internal(
                format!(
                    "{key}: the commits after version {} do not follow it",
                    known.version
                )
                .into(),
            )
        })?;
        let state = self.fold_envelopes::<A>(Arc::unwrap_or_clone(known.state), &tail)?;
        Ok(Known {
            version: last,
            state: Arc::new(state),
            confirmed: true,
        })
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
    ) -> Result<CommandOutcome<A::State>, CommandError>
    where
        C: CacheFor<A>,
    {
        self.execute_within::<A>(stream, expected_version, command, context, None)
            .await
    }

    /// [`Self::execute`] that stops retrying conflicts by `deadline` (an invocation's end,
    /// less the time it needs to answer), even within the configured retry budget.
    pub async fn execute_within<A: Aggregate>(
        &self,
        stream: &StreamId,
        expected_version: Option<u64>,
        command: &A::Command,
        context: &CommandContext,
        deadline: Option<Instant>,
    ) -> Result<CommandOutcome<A::State>, CommandError>
    where
        C: CacheFor<A>,
    {
        let decide = |state: &A::State| A::decide(state, command).map_err(CommandError::Rejected);
        let assume_new = A::assume_new(command);
        self.run::<A, _>(
            stream,
            expected_version,
            &decide,
            assume_new,
            context,
            deadline,
        )
        .await
    }

    /// [`Self::execute`] with the decision given as a function of the state: the same load,
    /// append, retry and cache, for callers that reach a command only through a visitor (a
    /// saga's commands to other aggregates). `decide` may run more than once (after a lost
    /// race); a [`CommandError::Rejected`] it returns is a rejection like `A::decide`'s, any
    /// other error ends the command at once.
    pub async fn execute_with<A, F>(
        &self,
        stream: &StreamId,
        expected_version: Option<u64>,
        decide: F,
        context: &CommandContext,
    ) -> Result<CommandOutcome<A::State>, CommandError>
    where
        A: Aggregate,
        C: CacheFor<A>,
        F: Fn(&A::State) -> Result<Vec<A::Event>, CommandError> + Send + Sync,
    {
        self.run::<A, F>(stream, expected_version, &decide, false, context, None)
            .await
    }

    /// The command path behind [`Self::execute_within`] and [`Self::execute_with`].
    async fn run<A, F>(
        &self,
        stream: &StreamId,
        expected_version: Option<u64>,
        decide: &F,
        assume_new: bool,
        context: &CommandContext,
        deadline: Option<Instant>,
    ) -> Result<CommandOutcome<A::State>, CommandError>
    where
        A: Aggregate,
        C: CacheFor<A>,
        F: Fn(&A::State) -> Result<Vec<A::Event>, CommandError> + Send + Sync,
    {
        let key = stream.to_string();
        let cache = self.states::<A>();
        // The state is taken out of the cache and put back with whatever this command learnt,
        // so a warm command evolves it in place instead of copying it.
        let (version, state, confirmed) = match cache.and_then(|c| c.take(&key)) {
            Some((v, s)) => (v, s, false),
            // Unconfirmed, like a cached state: the append, or a read, checks the assumption.
            None if assume_new => (ExpectedVersion::NEW, Arc::new(A::initial()), false),
            None => {
                let (v, s) = self.read::<A>(&key).await?;
                (v, Arc::new(s), true)
            }
        };
        let known = Known {
            version,
            state,
            confirmed,
        };
        let started = Instant::now();
        let give_up_at = match (expected_version, self.config.retry_budget) {
            // A stale expected version is the caller's to resolve: no budget for it.
            (Some(_), _) | (None, None) => None,
            (None, Some(budget)) => {
                Some(deadline.map_or(started + budget, |d| d.min(started + budget)))
            }
        };
        let (result, known) = self
            .decide_and_append::<A, F>(stream, expected_version, decide, context, known, give_up_at)
            .await;
        if let (Some(cache), Some(known)) = (cache, known) {
            cache.put_shared(&key, known.version, known.state);
        }
        result
    }

    /// The loop of [`Self::execute`] on a state it owns. Gives back the latest state it knows
    /// (for the cache), or `None` when the store failed and the state may be behind.
    async fn decide_and_append<A, F>(
        &self,
        stream: &StreamId,
        expected_version: Option<u64>,
        decide: &F,
        context: &CommandContext,
        mut known: Known<A::State>,
        give_up_at: Option<Instant>,
    ) -> (
        Result<CommandOutcome<A::State>, CommandError>,
        Option<Known<A::State>>,
    )
    where
        A: Aggregate,
        F: Fn(&A::State) -> Result<Vec<A::Event>, CommandError> + Send + Sync,
    {
        let key = stream.to_string();
        let attempts = self.config.max_attempts.max(1);
        let mut attempt = 1;
        let mut pause = Duration::ZERO;
        loop {
            if let Some(expected) = expected_version
                && expected != known.version.get()
            {
                if !known.confirmed {
                    known = match self.catch_up::<A>(&key, known).await {
                        Ok(k) => k,
                        Err(e) => return (Err(e), None),
                    };
                    continue;
                }
                let actual = known.version.get();
                return (
                    Err(CommandError::Conflict {
                        stream_id: key,
                        expected,
                        actual,
                    }),
                    Some(known),
                );
            }
            let decided = match decide(&known.state) {
                // Not a verdict on the state (the decision itself failed): fresh state would
                // not change it.
                Err(e) if !matches!(e, CommandError::Rejected(_)) => return (Err(e), Some(known)),
                decided => decided,
            };
            if !known.confirmed && !matches!(&decided, Ok(events) if !events.is_empty()) {
                // No append will reveal a stale cache here: confirm the verdict on fresh state.
                known = match self.catch_up::<A>(&key, known).await {
                    Ok(k) => k,
                    Err(e) => return (Err(e), None),
                };
                continue;
            }
            let decided = match decided {
                Ok(d) => d,
                Err(e) => return (Err(e), Some(known)),
            };
            if decided.is_empty() {
                let outcome = CommandOutcome {
                    stream_id: key,
                    version: known.version.get(),
                    events: Vec::new(),
                    created: false,
                    state: known.state.clone(),
                    attempts: attempt,
                    snapshot_bytes: None,
                };
                return (Ok(outcome), Some(known));
            }
            let before = known.version;
            let prepared = self.prepare::<A>(stream, before.get(), &decided, context, &known.state);
            let (envelopes, snapshot, folded) = match prepared {
                Ok(p) => p,
                Err(e) => return (Err(e), Some(known)),
            };
            let snapshot_bytes = snapshot.as_ref().map(|(_, bytes)| *bytes);
            let snapshot = snapshot.map(|(snapshot, _)| snapshot);
            match self
                .store
                .append(&key, before, envelopes.clone(), snapshot)
                .await
            {
                Ok(done) => {
                    let new_state = match folded {
                        Some(s) => s,
                        None => A::fold(Arc::unwrap_or_clone(known.state), decided.iter()),
                    };
                    let state = Arc::new(new_state);
                    tracing::debug!(
                        stream_id = %key,
                        version = done.version,
                        events = envelopes.len(),
                        attempt,
                        command_id = %context.command_id,
                        correlation_id = %context.correlation_id,
                        "committed"
                    );
                    let outcome = CommandOutcome {
                        stream_id: key,
                        version: done.version,
                        events: envelopes,
                        created: before == ExpectedVersion::NEW,
                        state: state.clone(),
                        attempts: attempt,
                        snapshot_bytes,
                    };
                    let known = Known {
                        version: done.expected(),
                        state,
                        confirmed: true,
                    };
                    return (Ok(outcome), Some(known));
                }
                Err(StoreError::Conflict { .. }) => {
                    tracing::info!(
                        stream_id = %key,
                        expected = before.get(),
                        attempt,
                        command_id = %context.command_id,
                        correlation_id = %context.correlation_id,
                        "append conflict, catching up and deciding again"
                    );
                    pause = decorrelated_jitter(pause);
                    let retry = match give_up_at {
                        Some(at) => attempt < MAX_BUDGETED_ATTEMPTS && Instant::now() + pause < at,
                        None => attempt < attempts,
                    };
                    if retry && let Some(backoff) = &self.config.backoff {
                        backoff(pause).await;
                    }
                    known = match self.catch_up::<A>(&key, known).await {
                        Ok(k) => k,
                        Err(e) => return (Err(e), None),
                    };
                    if !retry {
                        let actual = known.version.get();
                        return (
                            Err(CommandError::Conflict {
                                stream_id: key,
                                expected: expected_version.unwrap_or(before.get()),
                                actual,
                            }),
                            Some(known),
                        );
                    }
                    attempt += 1;
                }
                Err(e) => return (Err(e.into()), Some(known)),
            }
        }
    }

    /// The envelopes of `decided` after `version`, and the snapshot (with the state it
    /// holds, folded here) when this commit crosses a multiple of `snapshot_every`.
    #[allow(clippy::type_complexity)]
    fn prepare<A: Aggregate>(
        &self,
        stream: &StreamId,
        version: u64,
        decided: &[A::Event],
        context: &CommandContext,
        state: &A::State,
    ) -> Result<
        (
            Vec<EventEnvelope>,
            Option<(Snapshot, usize)>,
            Option<A::State>,
        ),
        CommandError,
    > {
        let now = chrono::Utc::now();
        let mut envelopes = Vec::with_capacity(decided.len());
        for (i, event) in decided.iter().enumerate() {
            let new = event.encode()?;
            envelopes.push(new.into_envelope(stream, version + 1 + i as u64, now, context.clone()));
        }
        let new_version = version + decided.len() as u64;
        let every = self.config.snapshot_every;
        if every == 0 || version / every >= new_version / every {
            return Ok((envelopes, None, None));
        }
        // One commit in `every` carries a snapshot: only then is the state copied.
        let new_state = A::fold(state.clone(), decided.iter());
        let snapshot = crate::snapshot_size::take::<A>(stream, new_version, &new_state)?;
        Ok((envelopes, Some(snapshot), Some(new_state)))
    }
}

/// What the executor knows of a stream while it runs a command: a version, the state there,
/// and whether a read (not only the cache) vouches for it.
struct Known<S> {
    version: ExpectedVersion,
    state: Arc<S>,
    confirmed: bool,
}
