//! [`Streams`]: topics, publish, consume with consumer groups, history.

use super::ports::{
    CatalogueError, CreateOutcome, GroupState, GroupStore, TopicCatalogue, Versioned,
};
use super::{
    DEFAULT_TOPICS, MAX_BATCH, MAX_CONSUME, MAX_DATA_BYTES, MAX_HEADER_VALUE_BYTES, MAX_HEADERS,
    MAX_HISTORY_LIMIT, MAX_KEY_BYTES, MAX_WAIT_MS, Offsets, StreamingError, Topic, TopicSettings,
    partition_for, partition_stream, validate_token, validate_topic_name,
};
use crate::envelope::{EventEnvelope, Metadata};
use crate::executor::{Backoff, decorrelated_jitter};
use crate::store::{EventStore, StoreError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Schema version of a record's stored payload (`{key, headers, data}`).
pub const RECORD_SCHEMA: u32 = 1;

/// Tuning of [`Streams`].
#[derive(Clone)]
pub struct StreamsConfig {
    /// How long a publish keeps retrying lost races on a hot partition (the caller's
    /// deadline, when sooner, wins).
    pub retry_budget: Duration,
    /// Sleep between conflict retries and between long-poll reads; `None`: no waiting (a
    /// long poll returns at once, conflicts retry at once).
    pub sleep: Option<Backoff>,
    /// Floors are raised once per this many offsets of a partition (see
    /// [`TopicCatalogue::floor`]): one extra write per block, and a partition whose records
    /// all expired resumes at most this far ahead.
    pub floor_block: u64,
    /// Estimated bytes of one commit of records (the store refuses past its item limit).
    pub max_commit_bytes: usize,
    /// First and longest pause between the reads of a long poll.
    pub poll_interval: (Duration, Duration),
}

impl std::fmt::Debug for StreamsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamsConfig")
            .field("retry_budget", &self.retry_budget)
            .field("sleep", &self.sleep.is_some())
            .field("floor_block", &self.floor_block)
            .field("max_commit_bytes", &self.max_commit_bytes)
            .field("poll_interval", &self.poll_interval)
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
    /// Most records to return (1..=[`MAX_CONSUME`]).
    pub max: usize,
    /// Longest wait for a record when none is there (<= [`MAX_WAIT_MS`]).
    pub wait: Duration,
    /// Commit what the group's previous `auto_commit` call returned, and remember what this
    /// one returns.
    pub auto_commit: bool,
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
    /// Page size (1..=[`MAX_HISTORY_LIMIT`]).
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

/// Records scanned per history page at most (filters may skip many), beyond the page size.
const HISTORY_SCAN: usize = 5000;
/// Conflict retries of a group write.
const GROUP_ATTEMPTS: u32 = 64;

impl From<CatalogueError> for StreamingError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::Unavailable(m) => Self::Unavailable(m),
            CatalogueError::Corrupt(m) => Self::Internal(m),
        }
    }
}

/// The streaming behaviour over an event store, a topic catalogue and a group store.
pub struct Streams<E, C, G> {
    store: E,
    topics: C,
    groups: G,
    config: StreamsConfig,
    /// Topics never change once created (a different create is 409), so a warm function keeps
    /// them.
    known: Mutex<HashMap<(String, String), Topic>>,
    /// Tenants whose default topics exist.
    seeded: Mutex<HashSet<String>>,
    /// The head of each partition this process last saw: the next append's expectation.
    heads: Mutex<HashMap<String, u64>>,
    round_robin: AtomicU32,
}

impl<E, C, G> std::fmt::Debug for Streams<E, C, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("config", &self.config)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Partition `p` of `topic` within `partitions`.
fn check_partition(topic: &Topic, p: u32) -> Result<(), StreamingError> {
    if p < topic.settings.partitions {
        Ok(())
    } else {
        Err(StreamingError::OutOfRange(format!(
            "topic '{}' has partitions 0..{}, not {p}",
            topic.name, topic.settings.partitions
        )))
    }
}

impl<E: EventStore, C: TopicCatalogue, G: GroupStore> Streams<E, C, G> {
    /// Streams over `store` (the events table), `topics` and `groups`.
    pub fn new(store: E, topics: C, groups: G, config: StreamsConfig) -> Self {
        Self {
            store,
            topics,
            groups,
            config,
            known: Mutex::new(HashMap::new()),
            seeded: Mutex::new(HashSet::new()),
            heads: Mutex::new(HashMap::new()),
            round_robin: AtomicU32::new(0),
        }
    }

    /// The event store.
    pub fn store(&self) -> &E {
        &self.store
    }

    /// The topic catalogue.
    pub fn catalogue(&self) -> &C {
        &self.topics
    }

    /// The group store.
    pub fn groups(&self) -> &G {
        &self.groups
    }

    /// Now, in whole milliseconds: what every catalogue stores exactly, so a topic reads back
    /// as it was answered.
    fn now_millis() -> DateTime<Utc> {
        let now = Utc::now();
        DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
    }

    fn default_topic(name: &str) -> Topic {
        Topic {
            name: name.to_owned(),
            settings: TopicSettings {
                description: format!("default topic {name}"),
                ..TopicSettings::default()
            },
            created_at: Self::now_millis(),
            created_by: "system".into(),
        }
    }

    /// The tenant's topic `name`; a default topic is created on first use.
    pub async fn topic(&self, tenant: &str, name: &str) -> Result<Topic, StreamingError> {
        validate_topic_name(name)?;
        let key = (tenant.to_owned(), name.to_owned());
        if let Some(t) = lock(&self.known).get(&key) {
            return Ok(t.clone());
        }
        let topic = match self.topics.get(tenant, name).await? {
            Some(t) => t,
            None if DEFAULT_TOPICS.contains(&name) => {
                let fresh = Self::default_topic(name);
                match self.topics.create(tenant, &fresh).await? {
                    CreateOutcome::Created => fresh,
                    CreateOutcome::Exists(t) => t,
                }
            }
            None => return Err(StreamingError::UnknownTopic(name.to_owned())),
        };
        lock(&self.known).insert(key, topic.clone());
        Ok(topic)
    }

    /// Creates a topic; `Ok((topic, false))` when it existed with the same settings.
    pub async fn create_topic(
        &self,
        tenant: &str,
        actor: &str,
        name: &str,
        settings: TopicSettings,
    ) -> Result<(Topic, bool), StreamingError> {
        validate_topic_name(name)?;
        settings.validate()?;
        let topic = Topic {
            name: name.to_owned(),
            settings,
            created_at: Self::now_millis(),
            created_by: actor.to_owned(),
        };
        let (topic, created) = match self.topics.create(tenant, &topic).await? {
            CreateOutcome::Created => (topic, true),
            CreateOutcome::Exists(existing) if existing.settings == topic.settings => {
                (existing, false)
            }
            CreateOutcome::Exists(existing) => {
                return Err(StreamingError::TopicExists {
                    name: name.to_owned(),
                    existing: Box::new(existing),
                });
            }
        };
        lock(&self.known).insert((tenant.to_owned(), name.to_owned()), topic.clone());
        Ok((topic, created))
    }

    /// A page of the tenant's topics (the defaults included), in name order.
    pub async fn list_topics(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<super::TopicPage, StreamingError> {
        if !lock(&self.seeded).contains(tenant) {
            for name in DEFAULT_TOPICS {
                self.topic(tenant, name).await?;
            }
            lock(&self.seeded).insert(tenant.to_owned());
        }
        Ok(self.topics.list(tenant, after, limit.max(1)).await?)
    }

    /// A topic with the head of each partition.
    pub async fn topic_info(&self, tenant: &str, name: &str) -> Result<TopicInfo, StreamingError> {
        let topic = self.topic(tenant, name).await?;
        let mut heads = Vec::new();
        for p in 0..topic.settings.partitions {
            heads.push(PartitionInfo {
                partition: p,
                head: self.head(tenant, &topic, p).await?,
            });
        }
        Ok(TopicInfo { topic, heads })
    }

    async fn head(&self, tenant: &str, topic: &Topic, p: u32) -> Result<u64, StreamingError> {
        let stream = partition_stream(tenant, &topic.name, p)?.to_string();
        let head = self.store.head(&stream).await?;
        self.saw(&stream, head);
        Ok(head)
    }

    fn saw(&self, stream: &str, head: u64) {
        let mut heads = lock(&self.heads);
        let at = heads.entry(stream.to_owned()).or_insert(0);
        *at = (*at).max(head);
    }

    /// Publishes `records` (1..=[`MAX_BATCH`]) to `topic`: every record is checked before
    /// anything is written; records of one partition are appended in their order, packed
    /// into as few commits as fit. Stops retrying lost races at `deadline`.
    ///
    /// Partitions are written one after the other: a failure part-way leaves the earlier
    /// partitions written (there is no cross-partition atomicity, as in Kafka).
    pub async fn publish(
        &self,
        context: &Metadata,
        topic: &str,
        records: Vec<NewRecord>,
        deadline: Option<Instant>,
    ) -> Result<Vec<Published>, StreamingError> {
        if records.is_empty() || records.len() > MAX_BATCH {
            return Err(StreamingError::Invalid(format!(
                "a publish carries 1..={MAX_BATCH} records"
            )));
        }
        let mut sizes = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let size = r.validate().map_err(|e| match e {
                StreamingError::Invalid(m) => StreamingError::Invalid(format!("record {i}: {m}")),
                StreamingError::TooLarge(m) => StreamingError::TooLarge(format!("record {i}: {m}")),
                other => other,
            })?;
            sizes.push(size);
        }
        let topic = self.topic(&context.tenant, topic).await?;
        let partitions = topic.settings.partitions;
        let mut by_partition: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            let p = match &r.key {
                Some(k) => partition_for(k, partitions),
                None => self.round_robin.fetch_add(1, Ordering::Relaxed) % partitions,
            };
            by_partition.entry(p).or_default().push(i);
        }
        let mut out: Vec<Option<Published>> = vec![None; records.len()];
        let give_up_at = {
            let budget = Instant::now() + self.config.retry_budget;
            deadline.map_or(budget, |d| d.min(budget))
        };
        for (p, indices) in by_partition {
            // Commits of at most `max_commit_bytes` (estimated), in record order.
            let mut chunk: Vec<usize> = Vec::new();
            let mut bytes = 0;
            let mut chunks = Vec::new();
            for i in indices {
                let r = &records[i];
                let estimate = sizes[i]
                    + 200
                    + r.event_type.len()
                    + r.key.as_ref().map_or(0, String::len)
                    + r.headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 8)
                        .sum::<usize>();
                if !chunk.is_empty() && bytes + estimate > self.config.max_commit_bytes {
                    chunks.push(std::mem::take(&mut chunk));
                    bytes = 0;
                }
                chunk.push(i);
                bytes += estimate;
            }
            chunks.push(chunk);
            for chunk in chunks {
                let batch: Vec<&NewRecord> = chunk.iter().map(|i| &records[*i]).collect();
                let placed = self
                    .append_partition(context, &topic, p, &batch, give_up_at)
                    .await?;
                for (i, published) in chunk.into_iter().zip(placed) {
                    out[i] = Some(published);
                }
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Appends `batch` as one commit at the end of partition `p`, retrying lost races with
    /// decorrelated jitter until `give_up_at`.
    async fn append_partition(
        &self,
        context: &Metadata,
        topic: &Topic,
        p: u32,
        batch: &[&NewRecord],
        give_up_at: Instant,
    ) -> Result<Vec<Published>, StreamingError> {
        let tenant = &context.tenant;
        let stream = partition_stream(tenant, &topic.name, p)?;
        let key = stream.to_string();
        let cached = lock(&self.heads).get(&key).copied();
        let mut head = match cached {
            Some(h) => h,
            None => self.fresh_head(tenant, topic, p, &key).await?,
        };
        let expires_at =
            Utc::now() + chrono::Duration::days(i64::from(topic.settings.retention_days));
        let block = self.config.floor_block.max(1);
        let mut pause = Duration::ZERO;
        loop {
            let last = head + batch.len() as u64;
            // Raised before the append that reaches a new block, so a floor always covers
            // every offset handed out but the last block's.
            if last / block > head / block {
                self.topics
                    .raise_floor(tenant, &topic.name, p, (last / block) * block)
                    .await?;
            }
            let now = Utc::now();
            let events: Vec<EventEnvelope> = batch
                .iter()
                .enumerate()
                .map(|(i, r)| EventEnvelope {
                    event_id: Uuid::now_v7(),
                    stream_id: key.clone(),
                    version: head + 1 + i as u64,
                    event_type: r.event_type.clone(),
                    schema_version: RECORD_SCHEMA,
                    data: json!({"key": r.key, "headers": r.headers, "data": r.data}),
                    occurred_at: now,
                    metadata: context.clone(),
                })
                .collect();
            let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
            match self
                .store
                .append_expiring(&key, head, events, Some(expires_at))
                .await
            {
                Ok(done) => {
                    lock(&self.heads).insert(key.clone(), done.version);
                    return Ok(ids
                        .into_iter()
                        .enumerate()
                        .map(|(i, event_id)| Published {
                            partition: p,
                            offset: head + 1 + i as u64,
                            event_id,
                        })
                        .collect());
                }
                Err(StoreError::Conflict { .. }) => {
                    pause = decorrelated_jitter(pause);
                    if Instant::now() + pause >= give_up_at {
                        lock(&self.heads).remove(&key);
                        return Err(StreamingError::Conflict(format!(
                            "partition {p} of '{}' stayed contended past the retry budget",
                            topic.name
                        )));
                    }
                    if let Some(sleep) = &self.config.sleep {
                        sleep(pause).await;
                    }
                    head = self.fresh_head(tenant, topic, p, &key).await?;
                }
                Err(e) => {
                    lock(&self.heads).remove(&key);
                    return Err(e.into());
                }
            }
        }
    }

    /// The head to append after, read from the store: past the floor when every record of
    /// the partition expired, so no offset is handed out twice.
    async fn fresh_head(
        &self,
        tenant: &str,
        topic: &Topic,
        p: u32,
        key: &str,
    ) -> Result<u64, StreamingError> {
        let head = self.store.head(key).await?;
        if head > 0 {
            return Ok(head);
        }
        let floor = self.topics.floor(tenant, &topic.name, p).await?;
        Ok(if floor == 0 {
            0
        } else {
            floor + self.config.floor_block.max(1) - 1
        })
    }

    /// Up to `max` records after `after` across the topic's partitions, each partition's
    /// share first, then what is left from the partitions that had more.
    async fn read_after(
        &self,
        tenant: &str,
        topic: &Topic,
        after: &Offsets,
        max: usize,
        reads: &mut u32,
    ) -> Result<Vec<Record>, StreamingError> {
        let partitions = topic.settings.partitions;
        let share = max.div_ceil(partitions as usize).max(1);
        let mut out = Vec::new();
        let mut full = Vec::new();
        for p in 0..partitions {
            if out.len() >= max {
                break;
            }
            let from = after.get(&p).copied().unwrap_or(0) + 1;
            let want = share.min(max - out.len());
            let got = self
                .read_partition(tenant, topic, p, from, want, reads)
                .await?;
            if got.len() == want {
                full.push(p);
            }
            out.extend(got);
        }
        for p in full {
            if out.len() >= max {
                break;
            }
            let from = out
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| r.offset)
                .max()
                .unwrap_or(0)
                + 1;
            let want = max - out.len();
            out.extend(
                self.read_partition(tenant, topic, p, from, want, reads)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn read_partition(
        &self,
        tenant: &str,
        topic: &Topic,
        p: u32,
        from: u64,
        want: usize,
        reads: &mut u32,
    ) -> Result<Vec<Record>, StreamingError> {
        let key = partition_stream(tenant, &topic.name, p)?.to_string();
        *reads += 1;
        let events = self.store.load_range(&key, from, None, Some(want)).await?;
        if let Some(last) = events.last() {
            self.saw(&key, last.version);
        }
        Ok(events
            .into_iter()
            .map(|e| Record::from_envelope(&topic.name, p, e))
            .collect())
    }

    async fn group_state(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Versioned<GroupState>, StreamingError> {
        Ok(self
            .groups
            .get(tenant, topic, group)
            .await?
            .unwrap_or(Versioned {
                value: GroupState::default(),
                revision: 0,
            }))
    }

    /// Writes `change(state)` with optimistic concurrency, reading again after a lost race.
    async fn update_group(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        mut current: Versioned<GroupState>,
        change: impl Fn(&GroupState) -> GroupState,
    ) -> Result<GroupState, StreamingError> {
        for _ in 0..GROUP_ATTEMPTS {
            let mut next = change(&current.value);
            if next == current.value && current.revision > 0 {
                return Ok(next);
            }
            next.updated_at = Some(Utc::now());
            if self
                .groups
                .put(tenant, topic, group, &next, current.revision)
                .await?
            {
                return Ok(next);
            }
            current = self.group_state(tenant, topic, group).await?;
        }
        Err(StreamingError::Conflict(format!(
            "group '{group}' of '{topic}' stayed contended"
        )))
    }

    /// Up to `max` records after the group's committed offsets, waiting up to `wait` (and
    /// not past `deadline`) for one to arrive when none is there.
    pub async fn consume(
        &self,
        tenant: &str,
        req: &ConsumeRequest,
        deadline: Option<Instant>,
    ) -> Result<Consumed, StreamingError> {
        validate_token("group_id", &req.group)?;
        if !(1..=MAX_CONSUME).contains(&req.max) {
            return Err(StreamingError::Invalid(format!(
                "max must be 1..={MAX_CONSUME}"
            )));
        }
        if req.wait > Duration::from_millis(MAX_WAIT_MS) {
            return Err(StreamingError::Invalid(format!(
                "wait_ms must be 0..={MAX_WAIT_MS}"
            )));
        }
        let topic = self.topic(tenant, &req.topic).await?;
        let state = self.group_state(tenant, &topic.name, &req.group).await?;
        let mut reads = 1;
        let mut committed = state.value.committed.clone();
        if req.auto_commit {
            merge_max(&mut committed, &state.value.delivered);
        }
        let started = Instant::now();
        let stop_at = {
            let until = started + req.wait;
            deadline.map_or(until, |d| d.min(until))
        };
        let (first, longest) = self.config.poll_interval;
        let mut interval = first;
        let records = loop {
            let records = self
                .read_after(tenant, &topic, &committed, req.max, &mut reads)
                .await?;
            let Some(sleep) = &self.config.sleep else {
                break records;
            };
            let now = Instant::now();
            if !records.is_empty() || now >= stop_at {
                break records;
            }
            sleep(interval.min(stop_at - now)).await;
            interval = (interval * 3 / 2).min(longest);
        };
        if req.auto_commit {
            let mut delivered = Offsets::new();
            for r in &records {
                let at = delivered.entry(r.partition).or_insert(0);
                *at = (*at).max(r.offset);
            }
            let base = committed.clone();
            let written = self
                .update_group(tenant, &topic.name, &req.group, state, |s| {
                    let mut committed = s.committed.clone();
                    merge_max(&mut committed, &base);
                    GroupState {
                        committed,
                        delivered: delivered.clone(),
                        updated_at: s.updated_at,
                    }
                })
                .await?;
            committed = written.committed;
        }
        Ok(Consumed {
            records,
            committed,
            reads,
        })
    }

    /// Checks that every partition of `offsets` exists and no offset is past its head.
    async fn check_offsets(
        &self,
        tenant: &str,
        topic: &Topic,
        offsets: &Offsets,
    ) -> Result<(), StreamingError> {
        for (p, offset) in offsets {
            check_partition(topic, *p)?;
            let key = partition_stream(tenant, &topic.name, *p)?.to_string();
            let known = lock(&self.heads).get(&key).copied().unwrap_or(0);
            if *offset <= known {
                continue;
            }
            let head = self.head(tenant, topic, *p).await?;
            if *offset > head {
                return Err(StreamingError::OutOfRange(format!(
                    "offset {offset} of partition {p} is past its head {head}"
                )));
            }
        }
        Ok(())
    }

    /// Commits `offsets` (the last processed offset per partition) for `group`: monotonic, a
    /// lower offset than the committed one is ignored. Returns the committed offsets.
    pub async fn commit(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        offsets: &Offsets,
    ) -> Result<Offsets, StreamingError> {
        validate_token("group_id", group)?;
        let topic = self.topic(tenant, topic).await?;
        self.check_offsets(tenant, &topic, offsets).await?;
        let state = self.group_state(tenant, &topic.name, group).await?;
        let written = self
            .update_group(tenant, &topic.name, group, state, |s| {
                let mut committed = s.committed.clone();
                merge_max(&mut committed, offsets);
                GroupState {
                    committed,
                    ..s.clone()
                }
            })
            .await?;
        Ok(written.committed)
    }

    /// Moves `group` to `to` on every partition (the one way back); forgets any pending
    /// auto-commit. Returns the committed offsets.
    pub async fn seek(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        to: SeekTo,
    ) -> Result<Offsets, StreamingError> {
        validate_token("group_id", group)?;
        let topic = self.topic(tenant, topic).await?;
        let mut offsets = Offsets::new();
        for p in 0..topic.settings.partitions {
            let at = match to {
                SeekTo::Earliest => 0,
                SeekTo::Latest => self.head(tenant, &topic, p).await?,
                SeekTo::Timestamp(t) => self.offset_before(tenant, &topic, p, t).await?,
            };
            offsets.insert(p, at);
        }
        let state = self.group_state(tenant, &topic.name, group).await?;
        let written = self
            .update_group(tenant, &topic.name, group, state, |s| GroupState {
                committed: offsets.clone(),
                delivered: Offsets::new(),
                updated_at: s.updated_at,
            })
            .await?;
        Ok(written.committed)
    }

    /// The last offset of partition `p` published before `t` (0: none): a binary search on
    /// the partition, whose records are in publish-time order. An expired record counts as
    /// before any time still asked about.
    async fn offset_before(
        &self,
        tenant: &str,
        topic: &Topic,
        p: u32,
        t: DateTime<Utc>,
    ) -> Result<u64, StreamingError> {
        let key = partition_stream(tenant, &topic.name, p)?.to_string();
        let head = self.store.head(&key).await?;
        let (mut lo, mut hi) = (0u64, head);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let at = self.store.load_range(&key, mid, Some(mid), Some(1)).await?;
            let before = at.first().is_none_or(|e| e.occurred_at < t);
            if before {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(lo)
    }

    /// Per-partition lag of `group` (head - committed).
    pub async fn lag(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Vec<PartitionLag>, StreamingError> {
        validate_token("group_id", group)?;
        let topic = self.topic(tenant, topic).await?;
        let state = self.group_state(tenant, &topic.name, group).await?;
        let mut out = Vec::new();
        for p in 0..topic.settings.partitions {
            let head = self.head(tenant, &topic, p).await?;
            let committed = state.value.committed.get(&p).copied().unwrap_or(0);
            out.push(PartitionLag {
                partition: p,
                head,
                committed,
                lag: head.saturating_sub(committed),
            });
        }
        Ok(out)
    }

    /// A page of the topic's records in time order, merged across partitions, filtered;
    /// touches no group.
    pub async fn history(
        &self,
        tenant: &str,
        q: &HistoryQuery,
    ) -> Result<HistoryPage, StreamingError> {
        if !(1..=MAX_HISTORY_LIMIT).contains(&q.limit) {
            return Err(StreamingError::Invalid(format!(
                "limit must be 1..={MAX_HISTORY_LIMIT}"
            )));
        }
        if let Some(t) = &q.event_type {
            validate_token("event_type", t)?;
        }
        if let (Some(s), Some(u)) = (q.since, q.until)
            && s > u
        {
            return Err(StreamingError::Invalid("since is after until".into()));
        }
        let topic = self.topic(tenant, &q.topic).await?;
        let partitions = topic.settings.partitions;
        let mut cursor = Offsets::new();
        for p in 0..partitions {
            let start = match (&q.after, q.since) {
                (Some(after), _) => after.get(&p).copied().unwrap_or(0),
                (None, Some(since)) => self.offset_before(tenant, &topic, p, since).await?,
                (None, None) => 0,
            };
            cursor.insert(p, start);
        }
        if let Some(after) = &q.after
            && let Some(p) = after.keys().find(|p| **p >= partitions)
        {
            return Err(StreamingError::Invalid(format!(
                "cursor names partition {p}, which the topic does not have"
            )));
        }
        let chunk = q.limit.clamp(10, 200);
        let mut buffers: Vec<VecDeque<Record>> = vec![VecDeque::new(); partitions as usize];
        let mut done = vec![false; partitions as usize];
        let mut reads = 0;
        let mut records = Vec::new();
        let mut scanned = 0;
        loop {
            for p in 0..partitions as usize {
                if buffers[p].is_empty() && !done[p] {
                    let from = cursor[&(p as u32)] + 1;
                    let got = self
                        .read_partition(tenant, &topic, p as u32, from, chunk, &mut reads)
                        .await?;
                    if got.len() < chunk {
                        done[p] = true;
                    }
                    for r in got {
                        if q.until.is_some_and(|u| r.timestamp > u) {
                            done[p] = true;
                            break;
                        }
                        buffers[p].push_back(r);
                    }
                }
            }
            let next = (0..partitions as usize)
                .filter_map(|p| buffers[p].front().map(|r| (r.timestamp, p)))
                .min();
            let Some((_, p)) = next else {
                return Ok(HistoryPage {
                    records,
                    next: None,
                });
            };
            let Some(r) = buffers[p].pop_front() else {
                continue;
            };
            cursor.insert(p as u32, r.offset);
            scanned += 1;
            let wanted = q.event_type.as_ref().is_none_or(|t| *t == r.event_type)
                && q.key.as_ref().is_none_or(|k| Some(k) == r.key.as_ref());
            if wanted {
                records.push(r);
            }
            if records.len() >= q.limit || scanned >= q.limit + HISTORY_SCAN {
                let exhausted = (0..partitions as usize).all(|p| done[p] && buffers[p].is_empty());
                return Ok(HistoryPage {
                    records,
                    next: (!exhausted).then_some(cursor),
                });
            }
        }
    }
}

/// `into[p] = max(into[p], from[p])` for every partition of `from`.
fn merge_max(into: &mut Offsets, from: &Offsets) {
    for (p, o) in from {
        let at = into.entry(*p).or_insert(0);
        *at = (*at).max(*o);
    }
}
