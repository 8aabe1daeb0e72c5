//! The values of streaming: tuning, records in and out, consume, seek, lag and history
//! requests and answers, and the checks a record passes before anything is written.

use super::{
    MAX_DATA_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS, MAX_KEY_BYTES, Offsets, StreamingError,
    Topic, validate_token,
};
use chrono::{DateTime, Utc};
use eventfold::envelope::EventEnvelope;
use eventfold::executor::Backoff;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use uuid::Uuid;

/// Schema version of a record's stored payload (`{key, headers, data}`).
pub const RECORD_SCHEMA: u32 = 1;

/// Tuning of [`Streams`](crate::Streams).
#[derive(Clone)]
pub struct StreamsConfig {
    /// How long a publish keeps retrying lost races on a hot partition (the caller's
    /// deadline, when sooner, wins).
    pub retry_budget: Duration,
    /// Sleep between conflict retries and between long-poll reads; `None`: no waiting (a
    /// long poll returns at once, conflicts retry at once).
    pub sleep: Option<Backoff>,
    /// Floors are raised once per this many offsets of a partition (see
    /// [`TopicCatalogue::floor`](crate::TopicCatalogue::floor)): one extra write per block, and a partition whose records
    /// all expired resumes at most this far ahead.
    pub floor_block: u64,
    /// Estimated bytes of one commit of records (the store refuses past its item limit).
    pub max_commit_bytes: usize,
    /// First and longest pause between the reads of a long poll.
    pub poll_interval: (Duration, Duration),
    /// The byte budget of one consume or history answer, in [`eventfold::wire_len`] bytes of
    /// its records: past it the answer stops (at least one record) and the rest comes on the
    /// next call. An HTTP function answering through Lambda must keep it under Lambda's 6 MB
    /// response limit (`eventfold_aws::http::PAGE_BYTES`); the default is that budget.
    pub page_bytes: usize,
    /// Now, for sessions' expiry ([`system_clock`] unless a test moves time itself).
    pub clock: Clock,
}

/// A source of the current time.
pub type Clock = std::sync::Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The system's clock.
pub fn system_clock() -> Clock {
    std::sync::Arc::new(Utc::now)
}

impl std::fmt::Debug for StreamsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsConfig")
            .field("retry_budget", &self.retry_budget)
            .field("sleep", &self.sleep.is_some())
            .field("floor_block", &self.floor_block)
            .field("max_commit_bytes", &self.max_commit_bytes)
            .field("poll_interval", &self.poll_interval)
            .field("page_bytes", &self.page_bytes)
            .finish()
    }
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            retry_budget: Duration::from_secs(20),
            sleep: None,
            floor_block: 1000,
            max_commit_bytes: 300 * 1024,
            poll_interval: (Duration::from_millis(50), Duration::from_millis(500)),
            page_bytes: 5 * 1024 * 1024,
            clock: system_clock(),
        }
    }
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRecord {
    /// `[a-zA-Z0-9._-]{1,128}`.
    pub event_type: String,
    /// The payload (any JSON, at most [`MAX_DATA_BYTES`] serialized).
    pub data: Value,
    /// Records with one key go to one partition, in publish order.
    #[serde(default)]
    pub key: Option<String>,
    /// Free string headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl NewRecord {
    /// Checks every limit; the serialized size of `data` on success.
    pub fn validate(&self) -> Result<usize, StreamingError> {
        validate_token("event_type", &self.event_type)?;
        if let Some(key) = &self.key
            && (key.is_empty() || key.len() > MAX_KEY_BYTES)
        {
            return Err(StreamingError::Invalid(format!(
                "key must be 1-{MAX_KEY_BYTES} bytes"
            )));
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(StreamingError::Invalid(format!(
                "at most {MAX_HEADERS} headers"
            )));
        }
        for (name, value) in &self.headers {
            validate_token("header name", name)?;
            if value.len() > MAX_HEADER_VALUE_BYTES {
                return Err(StreamingError::Invalid(format!(
                    "header '{name}' is longer than {MAX_HEADER_VALUE_BYTES} bytes"
                )));
            }
        }
        check_storable(&self.data, 0)?;
        let size = serde_json::to_vec(&self.data).map_or(usize::MAX, |v| v.len());
        if size > MAX_DATA_BYTES {
            return Err(StreamingError::TooLarge(format!(
                "data of {size} bytes exceeds {MAX_DATA_BYTES}"
            )));
        }
        Ok(size)
    }
}

/// Deepest nesting of a record's `data`: the store nests it four levels down, and DynamoDB
/// takes 32.
pub const MAX_DATA_DEPTH: usize = 24;

/// Refuses what JSON allows but a store cannot hold, so a record that passes is written:
/// nesting past [`MAX_DATA_DEPTH`], numbers outside DynamoDB's range (magnitude 1e-130 to
/// 9.99e125, 38 digits), empty object keys.
fn check_storable(value: &Value, depth: usize) -> Result<(), StreamingError> {
    let refuse = |m: String| Err(StreamingError::Invalid(format!("data: {m}")));
    if depth > MAX_DATA_DEPTH {
        return refuse(format!("nested deeper than {MAX_DATA_DEPTH} levels"));
    }
    match value {
        Value::Number(num) => {
            let text = num.to_string();
            let digits = text
                .split(['e', 'E'])
                .next()
                .unwrap_or("")
                .bytes()
                .filter(u8::is_ascii_digit)
                .count();
            let magnitude = num.as_f64().map_or(0.0, f64::abs);
            if digits > 38 || magnitude >= 9.99e125 || (magnitude != 0.0 && magnitude < 1e-130) {
                return refuse(format!("number {text} is outside the storable range"));
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| check_storable(v, depth + 1)),
        Value::Object(map) => map.iter().try_for_each(|(k, v)| {
            if k.is_empty() {
                return refuse("an object key is empty".into());
            }
            check_storable(v, depth + 1)
        }),
        _ => Ok(()),
    }
}

/// Optimistic-concurrency races a [`Streams`](super::Streams) lost (partition appends that
/// found a newer head, group writes that found a newer revision), for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contention {
    /// Races lost.
    pub lost: u64,
    /// Of those, the ones followed by another attempt (the rest ended in a conflict).
    pub retried: u64,
}

/// Where a published record went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// Its partition.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Its event id (the fan-out's deduplication id).
    pub event_id: Uuid,
}

/// A stored record, as consumers and history see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset in the partition.
    pub offset: u64,
    /// Unique id.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Its key, if it had one.
    pub key: Option<String>,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// Its payload.
    pub data: Value,
    /// When it was published.
    pub timestamp: DateTime<Utc>,
    /// Who published it.
    pub producer: String,
}

impl Record {
    /// The record stored as `env` in partition `partition` of `topic`.
    pub fn from_envelope(topic: &str, partition: u32, env: EventEnvelope) -> Self {
        let mut payload = match env.data {
            Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("data".into(), other);
                map
            }
        };
        let key = match payload.remove("key") {
            Some(Value::String(k)) => Some(k),
            _ => None,
        };
        let headers = payload
            .remove("headers")
            .and_then(|h| serde_json::from_value(h).ok())
            .unwrap_or_default();
        Self {
            topic: topic.to_owned(),
            partition,
            offset: env.version,
            event_id: env.event_id,
            event_type: env.event_type,
            key,
            headers,
            data: payload.remove("data").unwrap_or(Value::Null),
            timestamp: env.occurred_at,
            producer: env.metadata.actor,
        }
    }
}

/// One partition of [`TopicInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// The partition.
    pub partition: u32,
    /// Its newest offset (0: empty).
    pub head: u64,
}

/// A topic with its partitions' heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// The topic.
    #[serde(flatten)]
    pub topic: Topic,
    /// Head per partition.
    pub heads: Vec<PartitionInfo>,
}

/// A consume call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeRequest {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Most records to return (1..=[`MAX_CONSUME`](crate::MAX_CONSUME)).
    pub max: usize,
    /// Longest wait for a record when none is there (<= [`MAX_WAIT_MS`](crate::MAX_WAIT_MS)).
    pub wait: Duration,
    /// Commit what the group's (or the member's) previous `auto_commit` call returned, and
    /// remember what this one returns.
    pub auto_commit: bool,
    /// The member reading (only its partitions); `None`: the group's single cursor.
    pub member: Option<crate::MemberClaim>,
}

/// What a consume returned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consumed {
    /// The records, oldest first per partition.
    pub records: Vec<Record>,
    /// The group's committed offsets the records follow.
    pub committed: Offsets,
    /// Store reads it took (for cost accounting).
    pub reads: u32,
    /// The generation a member read in (`None` for a single-cursor consume).
    pub generation: Option<u64>,
}

/// Where a seek moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// Before the first record: everything is delivered again.
    Earliest,
    /// After the last record: only new records are delivered.
    Latest,
    /// Before the first record published at or after the instant.
    Timestamp(DateTime<Utc>),
}

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// The partition.
    pub partition: u32,
    /// Newest offset.
    pub head: u64,
    /// The group's committed offset.
    pub committed: u64,
    /// `head - committed`.
    pub lag: u64,
    /// The member that owns it in the current generation (`None`: the group has no members).
    pub owner: Option<String>,
}

/// A history read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryQuery {
    /// The topic.
    pub topic: String,
    /// Only records of this type.
    pub event_type: Option<String>,
    /// Only records with this key.
    pub key: Option<String>,
    /// Only records published at or after.
    pub since: Option<DateTime<Utc>>,
    /// Only records published at or before.
    pub until: Option<DateTime<Utc>>,
    /// Page size (1..=[`MAX_HISTORY_LIMIT`](crate::MAX_HISTORY_LIMIT)).
    pub limit: usize,
    /// Where the previous page ended (last offset read per partition).
    pub after: Option<Offsets>,
}

/// A page of history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPage {
    /// Records in time order (ties by partition, then offset).
    pub records: Vec<Record>,
    /// Where to go on from, when more may follow.
    pub next: Option<Offsets>,
}
