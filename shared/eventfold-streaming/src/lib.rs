//! Event streaming without a broker: topics whose partitions are streams of the event store.
//!
//! A topic belongs to a tenant and has a fixed number of partitions; partition `p` of topic
//! `t` is the stream `{tenant}/Topic-{t}.{p}`, so a record's offset is that stream's version
//! (contiguous, never reused) and a publish is the same conditional append as a command. The
//! partition of a keyed record is [`partition_for`] (a stable hash: order holds per key).
//! Consumer groups keep a committed offset per partition in a [`GroupStore`], moved only
//! forward by commits (seek is the one way back). A group is read either through one shared
//! cursor (callers that never join) or by members that share its partitions ([`members`]:
//! join, heartbeat, leave, generations, the range assignment). [`Streams`] is the whole behaviour, over
//! any [`EventStore`](eventfold::EventStore), [`TopicCatalogue`] and [`GroupStore`]; the HTTP shape lives in the
//! function that serves it.
//!
//! Owns: topics, partitions, publish, consume, consumer groups, history. Must not import:
//! any AWS crate, `lambda_*`, an async runtime in its public API, or `eventfold-consumers`
//! (the fan-out's consumers are a separate product).
#![forbid(unsafe_code)]

mod consume;
mod groups;
pub mod members;
mod ports;
mod service;
mod types;

pub use groups::GroupDescription;
pub use members::{Assignment, MemberClaim, MemberInfo, Membership};
pub use ports::{
    CatalogueError, CreateOutcome, GroupState, GroupStore, MemoryGroupStore, MemoryTopicCatalogue,
    TopicCatalogue, TopicPage, Versioned,
};
pub use service::Streams;
pub use types::{
    Clock, ConsumeRequest, Consumed, Contention, HistoryPage, HistoryQuery, MAX_DATA_DEPTH,
    NewRecord, PartitionInfo, PartitionLag, Published, RECORD_SCHEMA, Record, SeekTo,
    StreamsConfig, TopicInfo, system_clock,
};

use chrono::{DateTime, Utc};
use eventfold::envelope::StreamId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The category of every partition stream (`{tenant}/Topic-{topic}.{p}`); fan-out consumers
/// tell topic records apart by it.
pub const TOPIC_CATEGORY: &str = "Topic";

/// The topics every tenant has from the start (created on first use).
pub const DEFAULT_TOPICS: &[&str] = &[
    "user-events",
    "data-lake-events",
    "mlops-events",
    "security-events",
    "system-events",
];

/// Partitions of a topic created without a count.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 64;
/// Retention of a topic created without one, in days.
pub const DEFAULT_RETENTION_DAYS: u32 = 7;
/// Longest retention, in days.
pub const MAX_RETENTION_DAYS: u32 = 3650;
/// Longest topic description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Largest `data` of one record, as serialized JSON: with its key and headers a record stays
/// well inside one SNS message (256 KB), so the fan-out carries it whole.
pub const MAX_DATA_BYTES: usize = 64 * 1024;
/// Longest record key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Most headers on one record.
pub const MAX_HEADERS: usize = 32;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// Most records in one publish.
pub const MAX_BATCH: usize = 100;
/// Most records one consume returns.
pub const MAX_CONSUME: usize = 1000;
/// Longest long-poll of a consume, in milliseconds.
pub const MAX_WAIT_MS: u64 = 20_000;
/// Largest history page.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// Why a streaming request was refused or failed; callers map each to a status.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    /// The tenant has no such topic.
    #[error("topic '{0}' does not exist")]
    UnknownTopic(String),
    /// A name, a setting or a value is not acceptable; nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// A partition or an offset the topic does not have.
    #[error("{0}")]
    OutOfRange(String),
    /// A record is larger than [`MAX_DATA_BYTES`] (or its commit than the store takes).
    #[error("{0}")]
    TooLarge(String),
    /// The topic exists with other settings.
    #[error("topic '{name}' exists with other settings")]
    TopicExists {
        /// The topic.
        name: String,
        /// What it is.
        existing: Box<Topic>,
    },
    /// The caller's view of the group's membership is out of date: it names a generation
    /// that is over, a partition it does not own, no longer is a member, or makes a
    /// single-cursor call on a group that has members. Nothing was written.
    #[error("{detail}")]
    Rebalanced {
        /// The group's current generation.
        generation: u64,
        /// The partitions the member owns now, when it still is a member.
        partitions: Option<Vec<u32>>,
        /// What was refused and why.
        detail: String,
    },
    /// Contention outlasted the retries.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A backing store is unavailable; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(#[source] eventfold::Cause),
    /// Stored data could not be read: a bug or corruption.
    #[error("internal error: {0}")]
    Internal(#[source] eventfold::Cause),
}

impl From<eventfold::store::StoreError> for StreamingError {
    fn from(e: eventfold::store::StoreError) -> Self {
        use eventfold::store::StoreError as E;
        match e {
            E::Conflict { stream_id, .. } => Self::Conflict(stream_id),
            E::TooLarge { size, limit, .. } => Self::TooLarge(format!(
                "the records of one partition take {size} bytes, more than the {limit} one write holds"
            )),
            E::Unavailable(m) => Self::Unavailable(m),
            e @ (E::Invalid(_) | E::Corrupt { .. }) => Self::Internal(e.into()),
        }
    }
}

/// Checks a topic name: `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn validate_topic_name(name: &str) -> Result<(), StreamingError> {
    let b = name.as_bytes();
    let ok = (1..=63).contains(&b.len())
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(StreamingError::Invalid(format!(
            "invalid topic name '{}': 1-63 characters of a-z 0-9 . _ -, starting with a letter or digit",
            truncated(name)
        )))
    }
}

/// Checks an event type, a consumer group id or a header name: `[a-zA-Z0-9._-]{1,128}`.
pub fn validate_token(what: &str, value: &str) -> Result<(), StreamingError> {
    let ok = (1..=128).contains(&value.len())
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StreamingError::Invalid(format!(
            "invalid {what} '{}': 1-128 characters of A-Z a-z 0-9 . _ -",
            truncated(value)
        )))
    }
}

/// At most 64 characters of a refused value, for messages.
fn truncated(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    if cut.len() < s.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

/// What a topic's creator chooses; fixed once the topic exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSettings {
    /// Number of partitions (1..=[`MAX_PARTITIONS`]).
    pub partitions: u32,
    /// Days a record is kept (1..=[`MAX_RETENTION_DAYS`]); older ones go by the store's expiry.
    pub retention_days: u32,
    /// Free text.
    pub description: String,
}

impl Default for TopicSettings {
    fn default() -> Self {
        Self {
            partitions: DEFAULT_PARTITIONS,
            retention_days: DEFAULT_RETENTION_DAYS,
            description: String::new(),
        }
    }
}

impl TopicSettings {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), StreamingError> {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(StreamingError::Invalid(format!(
                "partitions must be 1..={MAX_PARTITIONS}"
            )));
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.retention_days) {
            return Err(StreamingError::Invalid(format!(
                "retention_days must be 1..={MAX_RETENTION_DAYS}"
            )));
        }
        if self.description.chars().count() > MAX_DESCRIPTION_CHARS {
            return Err(StreamingError::Invalid(format!(
                "description is longer than {MAX_DESCRIPTION_CHARS} characters"
            )));
        }
        Ok(())
    }
}

/// A topic as the catalogue holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// The name (unique within the tenant).
    pub name: String,
    /// Partitions, retention, description.
    #[serde(flatten)]
    pub settings: TopicSettings,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Who created it (`system` for the default topics).
    pub created_by: String,
}

/// The stable partition of `key` among `partitions`: FNV-1a (64-bit) of the key's UTF-8
/// bytes, modulo the count. Published records depend on it (order per key), so it must never
/// change: offset basis 0xcbf29ce484222325, prime 0x100000001b3, as in the FNV reference.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The stream of partition `partition` of `topic`: `{tenant}/Topic-{topic}.{partition}`.
pub fn partition_stream(
    tenant: &str,
    topic: &str,
    partition: u32,
) -> Result<StreamId, StreamingError> {
    StreamId::new(tenant, TOPIC_CATEGORY, &format!("{topic}.{partition}"))
        .map_err(|e| StreamingError::Invalid(e.to_string()))
}

/// Offsets per partition (partition -> offset).
pub type Offsets = BTreeMap<u32, u64>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_hash_is_fnv1a_and_never_changes() {
        // FNV-1a 64 reference values: "" -> cbf29ce484222325, "a" -> af63dc4c8601ec8c.
        assert_eq!(
            partition_for("", 1 << 31),
            (0xcbf2_9ce4_8422_2325u64 % (1 << 31)) as u32
        );
        assert_eq!(
            partition_for("a", 1 << 31),
            (0xaf63_dc4c_8601_ec8cu64 % (1 << 31)) as u32
        );
        // Pinned: a change here re-partitions every keyed record ever published.
        let keys = ["user-1", "user-2", "order-42", "k"];
        let four: Vec<u32> = keys.iter().map(|k| partition_for(k, 4)).collect();
        assert_eq!(four, [0, 1, 0, 2]);
        let sixty_four: Vec<u32> = keys.iter().map(|k| partition_for(k, 64)).collect();
        assert_eq!(sixty_four, [20, 45, 20, 10]);
        assert_eq!(partition_for("anything", 1), 0);
    }

    #[test]
    fn keys_spread_over_the_partitions() {
        let mut counts = [0u32; 8];
        for i in 0..800 {
            counts[partition_for(&format!("key-{i}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|c| *c > 50), "{counts:?}");
    }

    #[test]
    fn names_are_checked() {
        for good in ["user-events", "a", "0.b_c-d", &"x".repeat(63)] {
            assert!(validate_topic_name(good).is_ok(), "{good}");
        }
        for bad in ["", "User", "-a", ".a", "a b", "a/b", &"x".repeat(64), "é"] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
        assert!(validate_token("event type", "user.created").is_ok());
        assert!(validate_token("event type", "User_Created-2").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(validate_token("event type", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_streams_are_valid_stream_ids() {
        let longest = "x".repeat(63);
        let s = partition_stream("acme", &longest, MAX_PARTITIONS - 1).expect("valid");
        assert_eq!(s.category(), TOPIC_CATEGORY);
        assert_eq!(s.to_string(), format!("acme/Topic-{longest}.63"));
        let parsed = StreamId::parse(&s.to_string()).expect("parses back");
        assert_eq!(parsed, s);
        assert_eq!(
            partition_stream("acme", "user-events", 0)
                .expect("valid")
                .to_string(),
            "acme/Topic-user-events.0"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(TopicSettings::default().validate().is_ok());
        for bad in [
            TopicSettings {
                partitions: 0,
                ..Default::default()
            },
            TopicSettings {
                partitions: 65,
                ..Default::default()
            },
            TopicSettings {
                retention_days: 0,
                ..Default::default()
            },
            TopicSettings {
                description: "d".repeat(1025),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
