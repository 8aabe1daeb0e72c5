//! The deadline index: which saga instances wait, and until when.
//!
//! One entry per waiting instance, replaced whenever its deadline moves and removed when it no
//! longer waits, so a tick reads only the instances that are due (a range query on the due
//! time), never every open instance.

use crate::projection::ReadModelError;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// When a waiting instance's deadline falls, and the conversation it belongs to (so the
/// commands its timeout causes carry the same correlation id as the rest of its story).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deadline {
    /// When the instance has waited long enough.
    pub due_at: DateTime<Utc>,
    /// Correlation id of the input that started the wait.
    pub correlation_id: String,
}

/// An indexed instance whose deadline has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueInstance {
    /// The saga stream, `{tenant}/{Category}-{id}`.
    pub stream_id: String,
    /// Its deadline.
    pub deadline: Deadline,
}

/// Storage of the deadlines of waiting saga instances, per saga.
#[async_trait]
pub trait DeadlineIndex: Send + Sync {
    /// Sets the deadline of the instance `stream_id` of saga `saga` as of its stream's
    /// `version`, replacing any earlier one; `None` removes it (the instance does not wait).
    /// A write for an older version than the one stored is ignored (not an error): when a
    /// tick and an input race, the deadline of the newer state stays, whatever the order of
    /// their writes. Idempotent.
    async fn set_deadline(
        &self,
        saga: &str,
        stream_id: &str,
        version: u64,
        deadline: Option<&Deadline>,
    ) -> Result<(), ReadModelError>;

    /// The instances of `saga` due at or before `until`, earliest first (ties by stream id),
    /// at most `limit` of them.
    async fn due(
        &self,
        saga: &str,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<DueInstance>, ReadModelError>;

    /// The writes of the saga steps one invocation handled, as one request where the store
    /// can (checkpoints are the saga's, as [`ReadModelStore::checkpoint`] reads them under
    /// the view name `saga`).
    ///
    /// Makes every one of `deadlines` and `moves` of saga `saga` (each key at most once),
    /// all or nothing, with each write's own condition: an entry for an older version than
    /// the stored one, or a checkpoint not at its `expected`, writes nothing
    /// ([`Together::NotWritten`]). The default writes nothing: stores that have no
    /// multi-item conditional write leave the writes to the caller, one at a time.
    ///
    /// [`ReadModelStore::checkpoint`]: crate::projection::ReadModelStore::checkpoint
    async fn write_together(
        &self,
        saga: &str,
        deadlines: &[DeadlineWrite],
        moves: &[CheckpointMove],
    ) -> Result<Together, ReadModelError> {
        let _ = (saga, deadlines, moves);
        Ok(Together::NotWritten)
    }
}

/// A deadline entry to set ([`DeadlineIndex::set_deadline`]'s arguments, for one instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadlineWrite {
    /// The saga stream, `{tenant}/{Category}-{id}`.
    pub stream_id: String,
    /// Its version the entry is for.
    pub version: u64,
    /// The deadline (`None`: the instance does not wait).
    pub deadline: Option<Deadline>,
}

/// A move of the saga's checkpoint on one source stream from `expected` to `new` (what
/// [`ReadModelStore::add`](crate::projection::ReadModelStore::add) does without deltas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointMove {
    /// Source stream.
    pub stream_id: String,
    /// The checkpoint stored now (0: none).
    pub expected: u64,
    /// The checkpoint after the move.
    pub new: u64,
}

/// What [`DeadlineIndex::write_together`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Together {
    /// Every write is made.
    Written,
    /// Nothing is written: a condition failed (an entry older than the stored one, or a
    /// checkpoint that moved), or the store cannot write these together. The caller makes
    /// the writes one at a time, which sorts out each one.
    NotWritten,
}
