//! Dead letters: what a consumer gave up on, kept so that an operator can see it, redrive it
//! or discard it, and nothing is lost silently.
//!
//! A [`DeadLetter`] is one message a queue moved to its dead-letter queue (the consumer failed
//! it `maxReceiveCount` times), or one commit whose notification could not be republished
//! after a stream batch failed. Consumers leave a short [`FailureNote`] each time they fail a
//! message (one write per failure, none per success), which the processor joins to the dead
//! letter by message id, so the letter says why.
//!
//! The mechanics shared by every adapter live here: bounded notes ([`FailureNote::new`]),
//! ids ([`letter_id`]), "blocked behind" ([`record_blocking`]: a later letter of a stream
//! another open letter of the same consumer already blocks names that letter) and the redrive
//! plan ([`redrive_plan`]: one redrive covers every open letter of the stream, in order,
//! because the consumer reads the versions in between from the events table).

mod memory;

pub use memory::MemoryDeadLetterStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventfold::Cause;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Longest error text a note keeps (characters beyond it are cut).
pub const MAX_NOTE_ERROR: usize = 1000;
/// Tenant of letters whose message names no stream (a body that is not a notification):
/// reserved (starts with `_`), so no caller's token sees them; operators do.
pub const UNKNOWN_TENANT: &str = "_unknown";

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for an operator (or for the processor's own retries).
    Open,
    /// Sent back to its consumer.
    Redriven,
    /// Given up on, with a reason.
    Discarded,
}

impl Status {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Redriven => "redriven",
            Self::Discarded => "discarded",
        }
    }

    /// Reads a status name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Self::Open),
            "redriven" => Some(Self::Redriven),
            "discarded" => Some(Self::Discarded),
            _ => None,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message (or commit) a consumer gave up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Stable id: the same failure recorded twice is one letter ([`letter_id`]).
    pub id: String,
    /// Tenant of the stream (or [`UNKNOWN_TENANT`]).
    pub tenant: String,
    /// Open, redriven or discarded.
    pub status: Status,
    /// The queue it came from (e.g. `projector-dlq`).
    pub source_queue: String,
    /// The consumer that failed it (`projector`, `saga`, `stream-publisher`).
    pub consumer: String,
    /// The source stream, when the message names one.
    pub stream_id: Option<String>,
    /// First version the letter covers.
    pub first_version: Option<u64>,
    /// Last version the letter covers (a commit may hold several events).
    pub last_version: Option<u64>,
    /// Event type of the (first) event, when known.
    pub event_type: Option<String>,
    /// The queue's message id (SQS letters).
    pub message_id: Option<String>,
    /// The message body as it arrived (for stream letters, a description of the commit).
    pub body: String,
    /// Message attributes (`MessageGroupId`, ...).
    pub attributes: BTreeMap<String, String>,
    /// Deliveries before it was given up on.
    pub receive_count: u32,
    /// When it first failed.
    pub first_failure_at: DateTime<Utc>,
    /// When it last failed.
    pub last_failure_at: DateTime<Utc>,
    /// The consumer's last error (from its failure note), bounded.
    pub last_error: Option<String>,
    /// The open letter of the same consumer and stream this one waits behind.
    pub blocked_behind: Option<String>,
    /// Who last changed the status (`None`: nobody yet).
    pub changed_by: Option<String>,
    /// When the status last changed.
    pub changed_at: Option<DateTime<Utc>>,
    /// Why (a discard's reason, or what a redrive did).
    pub reason: Option<String>,
}

/// A consumer's word on a message it just failed, joined to the dead letter later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureNote {
    /// The consumer.
    pub consumer: String,
    /// The queue's message id.
    pub message_id: String,
    /// Tenant of the stream, when known.
    pub tenant: Option<String>,
    /// Source stream, when known.
    pub stream_id: Option<String>,
    /// Announced version, when known.
    pub version: Option<u64>,
    /// The error, at most [`MAX_NOTE_ERROR`] characters.
    pub error: String,
    /// When it failed.
    pub at: DateTime<Utc>,
}

impl FailureNote {
    /// A note with `error` cut to [`MAX_NOTE_ERROR`] characters.
    pub fn new(
        consumer: &str,
        message_id: &str,
        stream: Option<(&str, u64)>,
        error: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let tenant = stream.and_then(|(s, _)| s.split_once('/').map(|(t, _)| t.to_owned()));
        Self {
            consumer: consumer.to_owned(),
            message_id: message_id.to_owned(),
            tenant,
            stream_id: stream.map(|(s, _)| s.to_owned()),
            version: stream.map(|(_, v)| v),
            error: truncate(error, MAX_NOTE_ERROR),
            at,
        }
    }
}

/// `text` cut to `max` characters (an ellipsis marks the cut).
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// Which letters to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this consumer's.
    pub consumer: Option<String>,
    /// Only with this status.
    pub status: Option<Status>,
    /// Only of this stream.
    pub stream_id: Option<String>,
}

impl Filter {
    /// Whether `letter` passes.
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.consumer.as_ref().is_none_or(|c| *c == letter.consumer)
            && self.status.is_none_or(|s| s == letter.status)
            && self
                .stream_id
                .as_ref()
                .is_none_or(|s| letter.stream_id.as_ref() == Some(s))
    }
}

/// A status change: to what, by whom, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The new status (not [`Status::Open`]).
    pub to: Status,
    /// Who changes it (a token's subject, `cli:<user>`, or `dlq-processor`).
    pub by: String,
    /// Why.
    pub reason: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Why the dead-letter store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// No such letter (for this tenant).
    #[error("no dead letter {0}")]
    NotFound(String),
    /// The letter is not open (it was redriven or discarded already).
    #[error("dead letter {id} is {status}, not open")]
    NotOpen {
        /// The letter.
        id: String,
        /// Its status.
        status: Status,
    },
    /// The backing service failed; retry later.
    #[error("dead-letter store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The request or the stored data is bad; retrying will not help.
    #[error("dead-letter store refused: {0}")]
    Invalid(#[source] Cause),
}

/// Storage of dead letters (tenant-scoped) and of the consumers' failure notes.
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Stores `letter`. A letter with a known id is the same failure seen again: its first
    /// failure time stays, everything else is replaced and it is open again. Returns the
    /// stored letter.
    async fn record(&self, letter: DeadLetter) -> Result<DeadLetter, DeadLetterError>;

    /// The letter `id` of `tenant` (`None`: of any tenant, for operators).
    async fn get(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<Option<DeadLetter>, DeadLetterError>;

    /// Letters of `tenant` (`None`: of every tenant) passing `filter`, oldest failure first,
    /// at most `limit`.
    async fn list(
        &self,
        tenant: Option<&str>,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, DeadLetterError>;

    /// Moves an open letter of `tenant` to `change.to`; [`DeadLetterError::NotOpen`] when it
    /// is not open (nothing changes).
    async fn change(
        &self,
        tenant: &str,
        id: &str,
        change: &Change,
    ) -> Result<DeadLetter, DeadLetterError>;

    /// Keeps a consumer's failure note (a later note for the same message replaces it).
    async fn note(&self, note: &FailureNote) -> Result<(), DeadLetterError>;

    /// The note `consumer` left on `message_id`, if any.
    async fn note_of(
        &self,
        consumer: &str,
        message_id: &str,
    ) -> Result<Option<FailureNote>, DeadLetterError>;
}

/// The stable id of a dead letter: 20 hex digits of the SHA-256 of its parts.
pub fn letter_id(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for p in parts {
        hash.update((p.len() as u64).to_be_bytes());
        hash.update(p.as_bytes());
    }
    hash.finalize()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Records `letter`, naming in `blocked_behind` the open letter of the same tenant, consumer
/// and stream at the lowest version (the one that stopped the stream). Letters may arrive out
/// of order (a DLQ does not promise it across receives): when `letter` is now the lowest, the
/// other open letters of its stream are re-pointed at it.
pub async fn record_blocking(
    store: &(impl DeadLetterStore + ?Sized),
    mut letter: DeadLetter,
) -> Result<DeadLetter, DeadLetterError> {
    let (Some(stream), Some(version)) = (letter.stream_id.clone(), letter.first_version) else {
        return store.record(letter).await;
    };
    let filter = Filter {
        consumer: Some(letter.consumer.clone()),
        status: Some(Status::Open),
        stream_id: Some(stream),
    };
    let others: Vec<DeadLetter> = store
        .list(Some(&letter.tenant), &filter, usize::MAX)
        .await?
        .into_iter()
        .filter(|l| l.id != letter.id)
        .collect();
    let lowest = others
        .iter()
        .filter(|l| l.first_version.is_some_and(|v| v < version))
        .min_by_key(|l| l.first_version);
    letter.blocked_behind = lowest.map(|l| l.id.clone());
    let recorded = store.record(letter).await?;
    if recorded.blocked_behind.is_none() {
        for mut later in others {
            if later.first_version.is_some_and(|v| v > version)
                && later.blocked_behind.as_deref() != Some(recorded.id.as_str())
            {
                later.blocked_behind = Some(recorded.id.clone());
                store.record(later).await?;
            }
        }
    }
    Ok(recorded)
}

/// What one redrive sends and closes.
#[derive(Debug, Clone, PartialEq)]
pub struct RedrivePlan {
    /// The letter to send back (the highest version: its consumer reads the versions in
    /// between from the events table, so one message catches the stream up in order).
    pub send: DeadLetter,
    /// Every open letter the send covers (the asked one included), lowest version first.
    pub covers: Vec<DeadLetter>,
}

/// The plan to redrive the open letter `id` of `tenant`: with a stream, every open letter of
/// the same consumer and stream goes with it; without, it goes alone.
pub async fn redrive_plan(
    store: &(impl DeadLetterStore + ?Sized),
    tenant: &str,
    id: &str,
) -> Result<RedrivePlan, DeadLetterError> {
    let letter = store
        .get(Some(tenant), id)
        .await?
        .ok_or_else(|| DeadLetterError::NotFound(id.to_owned()))?;
    if letter.status != Status::Open {
        return Err(DeadLetterError::NotOpen {
            id: letter.id,
            status: letter.status,
        });
    }
    // A letter without a stream goes alone; so does a stream letter, a commit re-read from
    // the table and republished by itself.
    let stream = match &letter.stream_id {
        Some(s) if letter.consumer != STREAM_CONSUMER => s.clone(),
        _ => {
            return Ok(RedrivePlan {
                send: letter.clone(),
                covers: vec![letter],
            });
        }
    };
    let filter = Filter {
        consumer: Some(letter.consumer.clone()),
        status: Some(Status::Open),
        stream_id: Some(stream),
    };
    let mut covers = store.list(Some(tenant), &filter, usize::MAX).await?;
    if !covers.iter().any(|l| l.id == letter.id) {
        covers.push(letter.clone());
    }
    covers.sort_by_key(|l| (l.first_version, l.last_version));
    let send = covers.last().cloned().unwrap_or(letter);
    Ok(RedrivePlan { send, covers })
}

/// The consumer name of letters for commits whose notifications could not be published.
pub const STREAM_CONSUMER: &str = "stream-publisher";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_bounded_at_a_character_boundary() {
        let long = "é".repeat(MAX_NOTE_ERROR + 50);
        let note = FailureNote::new(
            "projector",
            "m-1",
            Some(("acme/Order-o", 3)),
            &long,
            Utc::now(),
        );
        assert_eq!(note.error.chars().count(), MAX_NOTE_ERROR + 1);
        assert!(note.error.ends_with('…'));
        assert_eq!(note.tenant.as_deref(), Some("acme"));
        let short = FailureNote::new("saga", "m-2", None, "boom", Utc::now());
        assert_eq!(short.error, "boom");
        assert_eq!(short.tenant, None);
    }

    #[test]
    fn ids_are_stable_and_unambiguous() {
        assert_eq!(letter_id(&["a", "b"]), letter_id(&["a", "b"]));
        assert_ne!(letter_id(&["ab", ""]), letter_id(&["a", "b"]));
        assert_eq!(letter_id(&["x"]).len(), 20);
    }

    #[test]
    fn statuses_round_trip() {
        for s in [Status::Open, Status::Redriven, Status::Discarded] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("gone"), None);
    }
}
