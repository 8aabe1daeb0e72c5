//! DynamoDB adapters of the streaming ports: the topics table and the consumer-groups table.
//!
//! Topics: key `pk` = tenant, `sk` = topic name; a create is one `PutItem` with
//! `attribute_not_exists(pk)` that returns the existing item when it fails, so it never
//! overwrites; floors are a map attribute raised by a conditional `UpdateItem`.
//! Groups: key `pk` = `{tenant}/{topic}`, `sk` = group id; every write is a `PutItem`
//! conditioned on the revision read (or on absence), so two consumers of a group never
//! lose each other's commit. Members live in the same item (`generation`, and `members`: a
//! map of member id to its session, expiry, partitions and pending auto-commit), so a
//! member's ownership check and the offsets it commits are one conditional write. Records themselves are commits of the events table
//! ([`crate::DynamoEventStore`]).

use crate::config::ConfigError;
use crate::dynamodb::{n, s};
use crate::faults::from_sdk;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use chrono::{DateTime, SecondsFormat, Utc};
use eventfold_streaming::members::Member;
use eventfold_streaming::{
    CatalogueError, CreateOutcome, GroupState, GroupStore, Membership, Offsets, Topic,
    TopicCatalogue, TopicPage, TopicSettings, Versioned,
};
use std::collections::HashMap;

type Item = HashMap<String, AttributeValue>;

fn ts(t: &DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn get_s(item: &Item, k: &str) -> Result<String, CatalogueError> {
    match item.get(k) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        _ => Err(CatalogueError::Corrupt(format!(
            "attribute {k} missing or not a string"
        ))),
    }
}

fn get_n(item: &Item, k: &str) -> Result<u64, CatalogueError> {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v
            .parse()
            .map_err(|_| CatalogueError::Corrupt(format!("attribute {k}={v} is not a count"))),
        _ => Err(CatalogueError::Corrupt(format!(
            "attribute {k} missing or not a number"
        ))),
    }
}

fn get_time(item: &Item, k: &str) -> Result<DateTime<Utc>, CatalogueError> {
    let text = get_s(item, k)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| CatalogueError::Corrupt(format!("{k}={text} is not RFC 3339")))
}

fn offsets_attr(offsets: &Offsets) -> AttributeValue {
    AttributeValue::M(
        offsets
            .iter()
            .map(|(p, o)| (p.to_string(), n(*o)))
            .collect(),
    )
}

fn offsets_of(item: &Item, k: &str) -> Result<Offsets, CatalogueError> {
    let Some(AttributeValue::M(map)) = item.get(k) else {
        return Ok(Offsets::new());
    };
    map.iter()
        .map(|(p, v)| {
            let p = p
                .parse()
                .map_err(|_| CatalogueError::Corrupt(format!("{k} names partition {p}")))?;
            let o = match v {
                AttributeValue::N(o) => o.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| CatalogueError::Corrupt(format!("{k}[{p}] is not an offset")))?;
            Ok((p, o))
        })
        .collect()
}

fn members_attr(members: &Membership) -> AttributeValue {
    AttributeValue::M(
        members
            .members
            .iter()
            .map(|(id, m)| {
                let fields = HashMap::from([
                    ("session_timeout_ms".to_owned(), n(m.session_timeout_ms)),
                    (
                        "expires_at_ms".to_owned(),
                        AttributeValue::N(m.expires_at_ms.to_string()),
                    ),
                    (
                        "partitions".to_owned(),
                        AttributeValue::L(m.partitions.iter().map(|p| n(*p)).collect()),
                    ),
                    ("delivered".to_owned(), offsets_attr(&m.delivered)),
                ]);
                (id.clone(), AttributeValue::M(fields))
            })
            .collect(),
    )
}

fn membership_of(item: &Item) -> Result<Membership, CatalogueError> {
    let generation = match item.get("generation") {
        Some(_) => get_n(item, "generation")?,
        None => 0,
    };
    let Some(AttributeValue::M(members)) = item.get("members") else {
        return Ok(Membership {
            generation,
            ..Membership::default()
        });
    };
    let corrupt = |id: &str, what: &str| CatalogueError::Corrupt(format!("member {id}: {what}"));
    let members = members
        .iter()
        .map(|(id, v)| {
            let AttributeValue::M(m) = v else {
                return Err(corrupt(id, "not a map"));
            };
            let expires_at_ms = match m.get("expires_at_ms") {
                Some(AttributeValue::N(v)) => v.parse().ok(),
                _ => None,
            }
            .ok_or_else(|| corrupt(id, "expires_at_ms is not a time"))?;
            let partitions = match m.get("partitions") {
                Some(AttributeValue::L(l)) => l
                    .iter()
                    .map(|p| match p {
                        AttributeValue::N(p) => p.parse().ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<u32>>>(),
                _ => None,
            }
            .ok_or_else(|| corrupt(id, "partitions is not a list of partitions"))?;
            Ok((
                id.clone(),
                Member {
                    session_timeout_ms: get_n(m, "session_timeout_ms")?,
                    expires_at_ms,
                    partitions,
                    delivered: offsets_of(m, "delivered")?,
                },
            ))
        })
        .collect::<Result<_, _>>()?;
    Ok(Membership {
        generation,
        members,
    })
}

/// The topics of every tenant on a DynamoDB table keyed `pk` (tenant) + `sk` (name).
#[derive(Debug, Clone)]
pub struct DynamoTopicCatalogue {
    client: Client,
    table: String,
}

table_store!(DynamoTopicCatalogue);

impl DynamoTopicCatalogue {
    fn encode(tenant: &str, topic: &Topic) -> Item {
        HashMap::from([
            ("pk".to_owned(), s(tenant)),
            ("sk".to_owned(), s(&topic.name)),
            ("partitions".to_owned(), n(topic.settings.partitions)),
            (
                "retention_days".to_owned(),
                n(topic.settings.retention_days),
            ),
            ("description".to_owned(), s(&topic.settings.description)),
            ("created_at".to_owned(), ts(&topic.created_at)),
            ("created_by".to_owned(), s(&topic.created_by)),
            ("floors".to_owned(), AttributeValue::M(HashMap::new())),
        ])
    }

    fn decode(item: &Item) -> Result<Topic, CatalogueError> {
        let small = |k: &str| {
            u32::try_from(get_n(item, k)?)
                .map_err(|_| CatalogueError::Corrupt(format!("{k} out of range")))
        };
        Ok(Topic {
            name: get_s(item, "sk")?,
            settings: TopicSettings {
                partitions: small("partitions")?,
                retention_days: small("retention_days")?,
                description: get_s(item, "description")?,
            },
            created_at: get_time(item, "created_at")?,
            created_by: get_s(item, "created_by")?,
        })
    }

    async fn item(&self, tenant: &str, name: &str) -> Result<Option<Item>, CatalogueError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(tenant))
            .key("sk", s(name))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(got.item)
    }
}

#[async_trait]
impl TopicCatalogue for DynamoTopicCatalogue {
    async fn get(&self, tenant: &str, name: &str) -> Result<Option<Topic>, CatalogueError> {
        self.item(tenant, name)
            .await?
            .map(|item| Self::decode(&item))
            .transpose()
    }

    async fn create(&self, tenant: &str, topic: &Topic) -> Result<CreateOutcome, CatalogueError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::encode(tenant, topic)))
            .condition_expression("attribute_not_exists(pk)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let existing = match failed.item() {
                        Some(item) => item.clone(),
                        // An emulator that does not return the old item: read it.
                        None => self.item(tenant, &topic.name).await?.ok_or_else(|| {
                            CatalogueError::Unavailable("topic vanished during create".into())
                        })?,
                    };
                    Ok(CreateOutcome::Exists(Self::decode(&existing)?))
                }
                _ => Err(from_sdk(e)),
            },
        }
    }

    async fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<TopicPage, CatalogueError> {
        let mut q = self
            .client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .expression_attribute_values(":t", s(tenant))
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        q = match after {
            Some(a) => q
                .key_condition_expression("pk = :t AND sk > :a")
                .expression_attribute_values(":a", s(a)),
            None => q.key_condition_expression("pk = :t"),
        };
        let out = q.send().await.map_err(from_sdk)?;
        let mut topics = out
            .items
            .unwrap_or_default()
            .iter()
            .map(Self::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let more = topics.len() > limit;
        topics.truncate(limit);
        let next_after = more
            .then(|| topics.last().map(|t| t.name.clone()))
            .flatten();
        Ok(TopicPage { topics, next_after })
    }

    async fn floor(&self, tenant: &str, name: &str, partition: u32) -> Result<u64, CatalogueError> {
        let Some(item) = self.item(tenant, name).await? else {
            return Ok(0);
        };
        Ok(offsets_of(&item, "floors")?
            .get(&partition)
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(tenant))
            .key("sk", s(name))
            .update_expression("SET floors.#p = :f")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(floors.#p) OR floors.#p < :f)",
            )
            .expression_attribute_names("#p", partition.to_string())
            .expression_attribute_values(":f", n(floor))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                // Already at or above: a floor never goes down.
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(()),
                _ => Err(from_sdk(e)),
            },
        }
    }
}

/// Consumer-group states on a DynamoDB table keyed `pk` (`{tenant}/{topic}`) + `sk` (group).
#[derive(Debug, Clone)]
pub struct DynamoGroupStore {
    client: Client,
    table: String,
}

table_store!(DynamoGroupStore);

#[async_trait]
impl GroupStore for DynamoGroupStore {
    async fn get(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
    ) -> Result<Option<Versioned<GroupState>>, CatalogueError> {
        let got = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("{tenant}/{topic}")))
            .key("sk", s(group))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        let Some(item) = got.item else {
            return Ok(None);
        };
        Ok(Some(Versioned {
            value: GroupState {
                committed: offsets_of(&item, "committed")?,
                delivered: offsets_of(&item, "delivered")?,
                updated_at: match item.get("updated_at") {
                    Some(_) => Some(get_time(&item, "updated_at")?),
                    None => None,
                },
                membership: membership_of(&item)?,
            },
            revision: get_n(&item, "revision")?,
        }))
    }

    async fn put(
        &self,
        tenant: &str,
        topic: &str,
        group: &str,
        state: &GroupState,
        expected: u64,
    ) -> Result<bool, CatalogueError> {
        let mut item = HashMap::from([
            ("pk".to_owned(), s(format!("{tenant}/{topic}"))),
            ("sk".to_owned(), s(group)),
            ("committed".to_owned(), offsets_attr(&state.committed)),
            ("delivered".to_owned(), offsets_attr(&state.delivered)),
            ("revision".to_owned(), n(expected + 1)),
            ("generation".to_owned(), n(state.membership.generation)),
            ("members".to_owned(), members_attr(&state.membership)),
        ]);
        if let Some(t) = &state.updated_at {
            item.insert("updated_at".to_owned(), ts(t));
        }
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        put = if expected == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("revision = :r")
                .expression_attribute_values(":r", n(expected))
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(from_sdk(e)),
            },
        }
    }
}

/// Where the streaming API keeps its state (`TOPICS_TABLE`, `CONSUMER_GROUPS_TABLE`,
/// `EVENTS_TABLE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingConfig {
    /// The events table: partitions are its streams.
    pub events_table: String,
    /// The topics table.
    pub topics_table: String,
    /// The consumer-groups table.
    pub groups_table: String,
    /// `Idempotency-Key` on publish (`IDEMPOTENCY_TABLE` and friends).
    pub idempotency: Option<crate::IdempotencySettings>,
}

impl StreamingConfig {
    /// Reads the settings through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        Ok(Self {
            events_table: required("EVENTS_TABLE")?,
            topics_table: required("TOPICS_TABLE")?,
            groups_table: required("CONSUMER_GROUPS_TABLE")?,
            idempotency: crate::IdempotencySettings::from_lookup(&lookup)?,
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}
