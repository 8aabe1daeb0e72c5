//! [`Streams`]: the topic catalogue's use (defaults, creation, heads) and publishing; the
//! group side (consume, commit, seek, lag) and history are in `consume`.

use super::ports::{CatalogueError, CreateOutcome, GroupStore, TopicCatalogue};
use super::types::{
    Contention, NewRecord, PartitionInfo, Published, RECORD_SCHEMA, StreamsConfig, TopicInfo,
};
use super::{
    DEFAULT_TOPICS, MAX_BATCH, StreamingError, Topic, TopicSettings, partition_for,
    partition_stream, validate_topic_name,
};
use chrono::{DateTime, Utc};
use eventfold::envelope::{EventEnvelope, Metadata};
use eventfold::executor::decorrelated_jitter;
use eventfold::store::{EventStore, StoreError};
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use uuid::Uuid;

impl From<CatalogueError> for StreamingError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::Unavailable(m) => Self::Unavailable(m),
            CatalogueError::Corrupt(m) => Self::Internal(m.into()),
        }
    }
}

/// The streaming behaviour over an event store, a topic catalogue and a group store.
pub struct Streams<E, C, G> {
    pub(super) store: E,
    pub(super) topics: C,
    pub(super) groups: G,
    pub(super) config: StreamsConfig,
    /// Topics never change once created (a different create is 409), so a warm function keeps
    /// them.
    pub(super) known: Mutex<HashMap<(String, String), Topic>>,
    /// Tenants whose default topics exist.
    pub(super) seeded: Mutex<HashSet<String>>,
    /// The head of each partition this process last saw: the next append's expectation.
    pub(super) heads: Mutex<HashMap<String, u64>>,
    pub(super) round_robin: AtomicU32,
    /// Races lost since the last [`Streams::take_contention`], and how many were retried.
    pub(super) lost_races: AtomicU64,
    pub(super) retried_races: AtomicU64,
}

impl<E, C, G> std::fmt::Debug for Streams<E, C, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams")
            .field("config", &self.config)
            .finish()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Partition `p` of `topic` within `partitions`.
pub(super) fn check_partition(topic: &Topic, p: u32) -> Result<(), StreamingError> {
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
            lost_races: AtomicU64::new(0),
            retried_races: AtomicU64::new(0),
        }
    }

    /// The races lost since the last call, which starts the count again. Taken rather than
    /// read, so that concurrent callers (several requests of one process) count each race
    /// once.
    pub fn take_contention(&self) -> Contention {
        Contention {
            lost: self.lost_races.swap(0, Ordering::Relaxed),
            retried: self.retried_races.swap(0, Ordering::Relaxed),
        }
    }

    /// Counts one lost race; `retried` when another attempt follows.
    pub(super) fn lost_race(&self, retried: bool) {
        self.lost_races.fetch_add(1, Ordering::Relaxed);
        if retried {
            self.retried_races.fetch_add(1, Ordering::Relaxed);
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

    pub(super) async fn head(
        &self,
        tenant: &str,
        topic: &Topic,
        p: u32,
    ) -> Result<u64, StreamingError> {
        let stream = partition_stream(tenant, &topic.name, p)?.to_string();
        let head = self.store.head(&stream).await?;
        self.saw(&stream, head);
        Ok(head)
    }

    pub(super) fn saw(&self, stream: &str, head: u64) {
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
                .append_expiring(
                    &key,
                    eventfold::ExpectedVersion::at_head(head),
                    events,
                    Some(expires_at),
                )
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
                    let retry = Instant::now() + pause < give_up_at;
                    self.lost_race(retry);
                    if !retry {
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
}
