//! The storage ports of streaming besides the event store: the topic catalogue and the
//! consumer groups' offsets, with in-memory adapters that pass the same contract as the
//! DynamoDB ones.

use super::members::Membership;
use super::{Offsets, Topic};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventfold::Cause;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Why the catalogue or the group store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The backing service failed or throttled.
    #[error("unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A stored item could not be read back.
    #[error("corrupt stored item: {0}")]
    Corrupt(String),
}

/// What a create found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The topic did not exist; it does now.
    Created,
    /// A topic of that name was there already (with these settings).
    Exists(Topic),
}

/// A page of a tenant's topics, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPage {
    /// The topics.
    pub topics: Vec<Topic>,
    /// The last name of the page when more may follow.
    pub next_after: Option<String>,
}

/// The topics of every tenant.
#[async_trait]
pub trait TopicCatalogue: Send + Sync {
    /// The tenant's topic `name`, if it exists.
    async fn get(&self, tenant: &str, name: &str) -> Result<Option<Topic>, CatalogueError>;

    /// Creates `topic` unless the tenant has one of that name (one conditional write): never
    /// overwrites.
    async fn create(&self, tenant: &str, topic: &Topic) -> Result<CreateOutcome, CatalogueError>;

    /// Up to `limit` topics with names after `after`, in name order.
    async fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TopicPage, CatalogueError>;

    /// The offset floor of a partition (0 when none was raised): no offset at or below it
    /// plus one block will ever be handed out again, even after every record expired.
    async fn floor(&self, tenant: &str, name: &str, partition: u32) -> Result<u64, CatalogueError>;

    /// Raises the floor of a partition to `floor` (never lowers it).
    async fn raise_floor(
        &self,
        tenant: &str,
        name: &str,
        partition: u32,
        floor: u64,
    ) -> Result<(), CatalogueError>;
}

/// A consumer group's position on one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GroupState {
    /// The last processed offset per partition (absent: 0, nothing processed).
    pub committed: Offsets,
    /// The last offsets a consume with `auto_commit` returned, committed by the next one.
    pub delivered: Offsets,
    /// When the state last changed.
    pub updated_at: Option<DateTime<Utc>>,
    /// Its members, their generation and assignment (none: single-cursor mode).
    pub membership: Membership,
}

/// A stored value and its revision (1 after the first write; every write adds one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision.
    pub revision: u64,
}

/// Consumer-group state with optimistic concurrency.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// The group's state on `topic`, if it ever wrote one (a consistent read).
    async fn get(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<Versioned<GroupState>>, CatalogueError>;

    /// Writes `state` if the stored revision is `expected` (0: nothing stored) and makes it
    /// `expected + 1`; `false` (nothing written) when someone else wrote first.
    async fn put(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        state: &GroupState,
        expected: u64,
    ) -> Result<bool, CatalogueError>;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked mid-call; the maps are never left
    // half-written.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Topics in a process-local map.
#[derive(Debug, Default)]
pub struct MemoryTopicCatalogue {
    topics: Mutex<BTreeMap<(String, String), Topic>>,
    floors: Mutex<HashMap<(String, String, u32), u64>>,
}

impl MemoryTopicCatalogue {
    /// An empty catalogue.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl TopicCatalogue for MemoryTopicCatalogue {
    async fn get(&self, tenant: &str, name: &str) -> Result<Option<Topic>, CatalogueError> {
        Ok(lock(&self.topics)
            .get(&(tenant.to_owned(), name.to_owned()))
            .cloned())
    }

    async fn create(&self, tenant: &str, topic: &Topic) -> Result<CreateOutcome, CatalogueError> {
        let mut topics = lock(&self.topics);
        let key = (tenant.to_owned(), topic.name.clone());
        if let Some(existing) = topics.get(&key) {
            return Ok(CreateOutcome::Exists(existing.clone()));
        }
        topics.insert(key, topic.clone());
        Ok(CreateOutcome::Created)
    }

    async fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TopicPage, CatalogueError> {
        let topics = lock(&self.topics);
        let mut page: Vec<Topic> = topics
            .iter()
            .filter(|((t, name), _)| t == tenant && after.is_none_or(|a| name.as_str() > a))
            .map(|(_, topic)| topic.clone())
            .take(limit + 1)
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        let next_after = more.then(|| page.last().map(|t| t.name.clone())).flatten();
        Ok(TopicPage {
            topics: page,
            next_after,
        })
    }

    async fn floor(&self, tenant: &str, name: &str, partition: u32) -> Result<u64, CatalogueError> {
        Ok(lock(&self.floors)
            .get(&(tenant.to_owned(), name.to_owned(), partition))
            .copied()
            .unwrap_or(0))
    }

    async fn raise_floor(
        &self,
        tenant: &str,
        name: &str,
        partition: u32,
        floor: u64,
    ) -> Result<(), CatalogueError> {
        let mut floors = lock(&self.floors);
        let at = floors
            .entry((tenant.to_owned(), name.to_owned(), partition))
            .or_insert(0);
        *at = (*at).max(floor);
        Ok(())
    }
}

/// Group states in a process-local map.
#[derive(Debug, Default)]
pub struct MemoryGroupStore {
    groups: Mutex<HashMap<(String, String, String), Versioned<GroupState>>>,
}

impl MemoryGroupStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl GroupStore for MemoryGroupStore {
    async fn get(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<Versioned<GroupState>>, CatalogueError> {
        Ok(lock(&self.groups)
            .get(&(tenant.to_owned(), topic.to_owned(), group.to_owned()))
            .cloned())
    }

    async fn put(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        state: &GroupState,
        expected: u64,
    ) -> Result<bool, CatalogueError> {
        let mut groups = lock(&self.groups);
        let key = (tenant.to_owned(), topic.to_owned(), group.to_owned());
        let current = groups.get(&key).map_or(0, |v| v.revision);
        if current != expected {
            return Ok(false);
        }
        groups.insert(
            key,
            Versioned {
                value: state.clone(),
                revision: expected + 1,
            },
        );
        Ok(true)
    }
}

/// Shared catalogues are catalogues too.
#[async_trait]
impl<T: TopicCatalogue + ?Sized> TopicCatalogue for std::sync::Arc<T> {
    async fn get(&self, tenant: &str, name: &str) -> Result<Option<Topic>, CatalogueError> {
        (**self).get(tenant, name).await
    }
    async fn create(&self, tenant: &str, topic: &Topic) -> Result<CreateOutcome, CatalogueError> {
        (**self).create(tenant, topic).await
    }
    async fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TopicPage, CatalogueError> {
        (**self).list(tenant, after, limit).await
    }
    async fn floor(&self, tenant: &str, name: &str, partition: u32) -> Result<u64, CatalogueError> {
        (**self).floor(tenant, name, partition).await
    }
    async fn raise_floor(
        &self,
        tenant: &str,
        name: &str,
        partition: u32,
        floor: u64,
    ) -> Result<(), CatalogueError> {
        (**self).raise_floor(tenant, name, partition, floor).await
    }
}

/// Shared group stores are group stores too.
#[async_trait]
impl<T: GroupStore + ?Sized> GroupStore for std::sync::Arc<T> {
    async fn get(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<Versioned<GroupState>>, CatalogueError> {
        (**self).get(tenant, topic, group).await
    }
    async fn put(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        state: &GroupState,
        expected: u64,
    ) -> Result<bool, CatalogueError> {
        (**self).put(tenant, topic, group, state, expected).await
    }
}
