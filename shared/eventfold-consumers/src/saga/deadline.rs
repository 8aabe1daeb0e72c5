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
}
