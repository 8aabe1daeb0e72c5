//! The engine: what a request with a key gets, and what happens to its record afterwards.

use super::{
    Acquired, Clock, IdempotencyConfig, IdempotencyError, IdempotencyKey, IdempotencyRecord,
    IdempotencyStore, PayloadHash, Scope, Status, StoredResponse, SystemClock,
};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// What a request with an idempotency key gets.
pub enum Begin<'a, S: IdempotencyStore> {
    /// First request for the key (or the old record expired): run the handler, then
    /// [`Lock::finish`] with its response.
    Run(Lock<'a, S>),
    /// The key was used for another payload (HTTP 422 `idempotency-key-reused`).
    KeyReused,
    /// The first request still runs (HTTP 409 `idempotency-in-progress`, `Retry-After`
    /// whole seconds, at least 1).
    InProgress {
        /// When the running request's lock expires, from now.
        retry_after: Duration,
    },
    /// The request already completed: replay this (with `Idempotent-Replayed: true`); the
    /// handler must not run.
    Replay(StoredResponse),
}

impl<S: IdempotencyStore> std::fmt::Debug for Begin<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Begin::Run(lock) => f.debug_tuple("Run").field(lock).finish(),
            Begin::KeyReused => f.write_str("KeyReused"),
            Begin::InProgress { retry_after } => f
                .debug_struct("InProgress")
                .field("retry_after", retry_after)
                .finish(),
            Begin::Replay(r) => f.debug_tuple("Replay").field(r).finish(),
        }
    }
}

/// The pure decision on a live record found holding the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The record expired: the request takes the key over.
    TakeOver,
    /// Same key, other payload.
    KeyReused,
    /// Same payload, still running.
    InProgress {
        /// Until its lock expires (whole seconds, at least 1).
        retry_after: Duration,
    },
    /// Same payload, completed: its response.
    Replay(StoredResponse),
}

/// Decides what a request with `payload` gets from `held`, the record holding its key, at
/// `now`. An expired record counts as absent whatever its state or payload; a live one with
/// another payload is a reused key even while it runs (the caller's bug, whatever the state).
pub fn decide(
    held: &IdempotencyRecord,
    payload: &PayloadHash,
    now: DateTime<Utc>,
) -> Result<Decision, IdempotencyError> {
    if !held.is_live(now) {
        return Ok(Decision::TakeOver);
    }
    if &held.payload_hash != payload {
        return Ok(Decision::KeyReused);
    }
    match held.status {
        Status::InProgress => Ok(Decision::InProgress {
            retry_after: whole_seconds_until(held.expires_at, now),
        }),
        Status::Completed => match &held.response {
            Some(r) => Ok(Decision::Replay(r.clone())),
            None => Err(IdempotencyError::Corrupt {
                record_key: held.record_key.clone(),
                detail: "completed record without a response".into(),
            }),
        },
    }
}

fn whole_seconds_until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let ms = (at - now).num_milliseconds().max(0) as u64;
    Duration::from_secs(ms.div_ceil(1000).max(1))
}

/// Stores keep milliseconds; so does everything the engine writes, so a record reads back
/// exactly as written.
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

fn after(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Idempotent execution over a store: [`Idempotency::begin`], run, [`Lock::finish`].
pub struct Idempotency<S> {
    store: S,
    config: IdempotencyConfig,
    clock: Arc<dyn Clock>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> Idempotency<S> {
    /// An engine on `store` with the system clock.
    pub fn new(store: S, config: IdempotencyConfig) -> Self {
        Self {
            store,
            config,
            clock: Arc::new(SystemClock),
        }
    }

    /// The same engine reading time from `clock` (tests move it).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.config
    }

    /// When a lock taken at `now` expires: at the invocation's `deadline` (Lambda kills it
    /// then, so nobody can finish later), else after the configured default; never sooner
    /// than a second from now, so a nearly dead invocation does not invite an instant takeover.
    pub fn in_progress_until(
        &self,
        now: DateTime<Utc>,
        deadline: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        let now = millis(now);
        let floor = after(now, Duration::from_secs(1));
        match deadline {
            Some(d) => millis(d).max(floor),
            None => after(now, self.config.default_in_progress).max(floor),
        }
    }

    /// Takes the lock for `key` in `scope` with one conditional write, or learns from the
    /// refused write what the request gets instead. `deadline` is the invocation's (Lambda
    /// context), `None` outside Lambda. A store failure is an error: running the handler
    /// unguarded could run it twice.
    pub async fn begin(
        &self,
        scope: &Scope,
        key: &IdempotencyKey,
        payload: &PayloadHash,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<Begin<'_, S>, IdempotencyError> {
        let now = millis(self.clock.now());
        let record = IdempotencyRecord {
            record_key: scope.record_key(key),
            tenant: scope.tenant.clone(),
            key: key.as_str().to_owned(),
            status: Status::InProgress,
            payload_hash: payload.clone(),
            lock_id: uuid::Uuid::now_v7().to_string(),
            expires_at: self.in_progress_until(now, deadline),
            response: None,
        };
        // A store applies the same expiry rule as `decide`, so a refused write returns a live
        // record; the second attempt only covers a store that disagreed once.
        for _ in 0..2 {
            let held = match self.store.acquire(&record, now).await? {
                Acquired::Locked => {
                    return Ok(Begin::Run(Lock {
                        engine: self,
                        record,
                        open: true,
                    }));
                }
                Acquired::Held(held) => held,
            };
            match decide(&held, payload, now)? {
                Decision::TakeOver => continue,
                Decision::KeyReused => return Ok(Begin::KeyReused),
                Decision::InProgress { retry_after } => {
                    return Ok(Begin::InProgress { retry_after });
                }
                Decision::Replay(response) => return Ok(Begin::Replay(response)),
            }
        }
        Err(IdempotencyError::Unavailable(
            format!(
                "the store refused to lock {} for an expired record",
                record.record_key
            )
            .into(),
        ))
    }
}

/// Why a finished request's response was not stored (its record was deleted instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStored {
    /// The handler failed (5xx): a retry must run again.
    ServerError {
        /// The status it answered.
        status: u16,
    },
    /// The caller released the lock (the handler failed without a response).
    Released,
    /// The response is larger than a record holds; it went out unstored, so a retry runs
    /// again (and, for a command, meets whatever the first run did).
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit it broke (the engine's or the store's).
        limit: usize,
    },
}

/// What became of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The response is stored (`COMPLETED`) and replays until the record expires.
    Stored,
    /// The record was deleted: the next request with the key runs.
    Released(NotStored),
    /// The lock expired and another request took the key over (or the record is gone):
    /// nothing was written. Send the response anyway; it is just not the stored one.
    LockLost,
}

/// The lock of a running request: finish it with the handler's response, or release it.
/// Dropped unfinished (a panic, an early return), the key stays in progress until the lock
/// expires.
pub struct Lock<'a, S: IdempotencyStore> {
    engine: &'a Idempotency<S>,
    record: IdempotencyRecord,
    open: bool,
}

impl<S: IdempotencyStore> std::fmt::Debug for Lock<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("record", &self.record)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

impl<S: IdempotencyStore> Lock<'_, S> {
    /// The `INPROGRESS` record this lock wrote.
    pub fn record(&self) -> &IdempotencyRecord {
        &self.record
    }

    /// Stores `response` when it is a success or a caller's mistake (< 500) and fits;
    /// otherwise deletes the record so a retry runs. Either write is conditional on the lock
    /// still being ours.
    pub async fn finish(self, response: StoredResponse) -> Result<Finished, IdempotencyError> {
        if response.status >= 500 {
            let status = response.status;
            return self.delete(NotStored::ServerError { status }).await;
        }
        self.complete(response).await
    }

    /// Stores `response` for replay whatever its status (when it fits; else as
    /// [`NotStored::TooLarge`]).
    pub async fn complete(
        mut self,
        response: StoredResponse,
    ) -> Result<Finished, IdempotencyError> {
        let (size, limit) = (response.size(), self.engine.config.max_response_bytes);
        if size > limit {
            tracing::warn!(
                record_key = %self.record.record_key,
                size,
                limit,
                "response too large to store for replay; lock released"
            );
            return self.delete(NotStored::TooLarge { size, limit }).await;
        }
        let now = millis(self.engine.clock.now());
        let completed = IdempotencyRecord {
            status: Status::Completed,
            expires_at: after(now, self.engine.config.expires_after),
            response: Some(response),
            ..self.record.clone()
        };
        match self.engine.store.complete(&completed).await {
            Ok(()) => {
                self.open = false;
                Ok(Finished::Stored)
            }
            Err(IdempotencyError::LockLost { .. }) => {
                self.open = false;
                tracing::warn!(record_key = %self.record.record_key, "idempotency lock lost before completion; response not stored");
                Ok(Finished::LockLost)
            }
            Err(IdempotencyError::TooLarge { size, limit }) => {
                self.delete(NotStored::TooLarge { size, limit }).await
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the record (the handler failed without a response): the next request runs.
    pub async fn release(self) -> Result<Finished, IdempotencyError> {
        self.delete(NotStored::Released).await
    }

    async fn delete(mut self, why: NotStored) -> Result<Finished, IdempotencyError> {
        match self
            .engine
            .store
            .release(&self.record.record_key, &self.record.lock_id)
            .await
        {
            Ok(()) => {
                self.open = false;
                Ok(Finished::Released(why))
            }
            Err(IdempotencyError::LockLost { .. }) => {
                self.open = false;
                Ok(Finished::LockLost)
            }
            Err(e) => Err(e),
        }
    }
}

impl<S: IdempotencyStore> Drop for Lock<'_, S> {
    fn drop(&mut self) {
        if self.open {
            tracing::warn!(
                record_key = %self.record.record_key,
                expires_at = %self.record.expires_at,
                "idempotency lock dropped unfinished; the key stays in progress until it expires"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload_hash;
    use chrono::TimeZone;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms)
            .single()
            .expect("valid time")
    }

    fn record(status: Status, expires_ms: i64, body: &str) -> IdempotencyRecord {
        IdempotencyRecord {
            record_key: "rk".into(),
            tenant: "t".into(),
            key: "k".into(),
            status,
            payload_hash: payload_hash("POST", "/c", body.as_bytes()),
            lock_id: "lock".into(),
            expires_at: at(expires_ms),
            response: (status == Status::Completed).then(|| StoredResponse::new(201, "{}")),
        }
    }

    #[test]
    fn live_records_decide_by_payload_then_state() {
        let same = payload_hash("POST", "/c", b"{\"a\":1}");
        let other = payload_hash("POST", "/c", b"{\"a\":2}");
        let running = record(Status::InProgress, 4_200, "{\"a\":1}");
        assert_eq!(
            decide(&running, &same, at(0)).ok(),
            Some(Decision::InProgress {
                retry_after: Duration::from_secs(5)
            }),
            "4.2 s left rounds up to 5"
        );
        assert_eq!(
            decide(&running, &other, at(0)).ok(),
            Some(Decision::KeyReused)
        );
        let done = record(Status::Completed, 3_600_000, "{\"a\":1}");
        assert_eq!(
            decide(&done, &same, at(0)).ok(),
            Some(Decision::Replay(StoredResponse::new(201, "{}")))
        );
        assert_eq!(decide(&done, &other, at(0)).ok(), Some(Decision::KeyReused));
    }

    #[test]
    fn expired_records_are_taken_over_whatever_they_hold() {
        let other = payload_hash("POST", "/c", b"{\"a\":2}");
        for status in [Status::InProgress, Status::Completed] {
            let r = record(status, 1_000, "{\"a\":1}");
            assert_eq!(decide(&r, &other, at(1_000)).ok(), Some(Decision::TakeOver));
            assert_eq!(decide(&r, &other, at(5_000)).ok(), Some(Decision::TakeOver));
            assert_ne!(decide(&r, &other, at(999)).ok(), Some(Decision::TakeOver));
        }
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        let same = payload_hash("POST", "/c", b"{\"a\":1}");
        for (left, secs) in [(1, 1), (999, 1), (1_000, 1), (1_001, 2), (10_000, 10)] {
            let r = record(Status::InProgress, left, "{\"a\":1}");
            assert_eq!(
                decide(&r, &same, at(0)).ok(),
                Some(Decision::InProgress {
                    retry_after: Duration::from_secs(secs)
                }),
                "{left} ms left"
            );
        }
    }

    #[test]
    fn a_completed_record_without_a_response_is_corrupt() {
        let same = payload_hash("POST", "/c", b"{\"a\":1}");
        let mut r = record(Status::Completed, 10_000, "{\"a\":1}");
        r.response = None;
        assert!(matches!(
            decide(&r, &same, at(0)),
            Err(IdempotencyError::Corrupt { .. })
        ));
    }

    #[test]
    fn in_progress_expiry_follows_the_deadline_else_the_default() {
        let engine = Idempotency::new(
            crate::MemoryIdempotencyStore::new(),
            IdempotencyConfig {
                default_in_progress: Duration::from_secs(30),
                ..IdempotencyConfig::default()
            },
        );
        let now = at(0) + chrono::Duration::microseconds(1_500);
        assert_eq!(engine.in_progress_until(now, Some(at(9_250))), at(9_250));
        assert_eq!(engine.in_progress_until(now, None), at(30_001));
        // A deadline already (nearly) passed still gives the lock a second.
        assert_eq!(engine.in_progress_until(now, Some(at(-5))), at(1_001));
        assert_eq!(engine.in_progress_until(now, Some(at(300))), at(1_001));
    }
}
