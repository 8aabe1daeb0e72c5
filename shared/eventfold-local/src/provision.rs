//! Creates the template's resources on an emulator (or any endpoint): tables with their
//! streams, SNS topics, SQS queues (dead-letter queues first), subscriptions and KMS keys.

use crate::template::{KeyPart, QueueSpec, SubscriptionSpec, TableSpec, Template, TopicSpec};
use anyhow::{Context, Result, anyhow};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use std::collections::HashMap;

fn key_schema(parts: &[KeyPart]) -> Result<Vec<KeySchemaElement>> {
    parts
        .iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .context("key schema")
        })
        .collect()
}

/// Creates `table` unless a table of that name exists; returns true when it created it.
pub async fn ensure_table(client: &Client, table: &TableSpec) -> Result<bool> {
    if client
        .describe_table()
        .table_name(&table.name)
        .send()
        .await
        .is_ok()
    {
        return Ok(false);
    }
    let mut req = client
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&table.key)?));
    for (name, kind) in &table.attributes {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::from(kind.as_str()))
                .build()?,
        );
    }
    for index in &table.indexes {
        let projection = Projection::builder()
            .projection_type(ProjectionType::from(index.projection.as_str()))
            .set_non_key_attributes(
                (!index.non_key_attributes.is_empty()).then(|| index.non_key_attributes.clone()),
            )
            .build();
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.name)
                .set_key_schema(Some(key_schema(&index.key)?))
                .projection(projection)
                .build()?,
        );
    }
    if let Some(view) = &table.stream_view_type {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view.as_str()))
                .build()?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        // Someone else (a parallel test, another local stack) created it first.
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(false);
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("creating table {}", table.name)));
        }
    }
    if let Some(attr) = &table.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&table.name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attr)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .with_context(|| format!("enabling TTL on {}", table.name))?;
    }
    Ok(true)
}

/// What [`provision`] found or created.
#[derive(Debug, Clone, Default)]
pub struct Provisioned {
    /// Tables as (spec, created now?).
    pub tables: Vec<(TableSpec, bool)>,
    /// Topics as (spec, ARN).
    pub topics: Vec<(TopicSpec, String)>,
    /// Queues as (spec, URL, ARN).
    pub queues: Vec<(QueueSpec, String, String)>,
    /// Subscriptions as (spec, subscription ARN).
    pub subscriptions: Vec<(SubscriptionSpec, String)>,
    /// KMS keys as (logical id, key ARN).
    pub keys: Vec<(String, String)>,
}

/// Creates the KMS key `logical_id` names unless the alias `alias/{name}` already points to
/// one (KMS picks key ids itself, so the alias is what makes a second run find the first
/// run's key); returns (key id, key ARN).
pub async fn ensure_kms_key(client: &aws_sdk_kms::Client, name: &str) -> Result<(String, String)> {
    let alias = format!("alias/{name}");
    let aliases = client
        .list_aliases()
        .send()
        .await
        .context("listing KMS aliases")?;
    let existing = aliases
        .aliases()
        .iter()
        .find(|a| a.alias_name() == Some(alias.as_str()))
        .and_then(|a| a.target_key_id().map(str::to_owned));
    let key_id = match existing {
        Some(id) => id,
        None => {
            let made = client
                .create_key()
                .description(format!("eventfold local: {name}"))
                .send()
                .await
                .with_context(|| format!("creating KMS key {name}"))?;
            let id = made
                .key_metadata()
                .map(|m| m.key_id().to_owned())
                .ok_or_else(|| anyhow!("CreateKey answered no key id"))?;
            client
                .create_alias()
                .alias_name(&alias)
                .target_key_id(&id)
                .send()
                .await
                .with_context(|| format!("creating KMS alias {alias}"))?;
            id
        }
    };
    let described = client
        .describe_key()
        .key_id(&key_id)
        .send()
        .await
        .with_context(|| format!("describing KMS key {key_id}"))?;
    let arn = described
        .key_metadata()
        .and_then(|m| m.arn())
        .ok_or_else(|| anyhow!("DescribeKey answered no ARN"))?
        .to_owned();
    Ok((key_id, arn))
}

/// Creates `topic` (idempotent: CreateTopic returns the existing one); returns its ARN.
pub async fn ensure_topic(client: &aws_sdk_sns::Client, topic: &TopicSpec) -> Result<String> {
    let mut req = client.create_topic().name(&topic.name);
    // Only true flags are sent: some emulators take any value as "set".
    if topic.fifo {
        req = req.attributes("FifoTopic", "true");
        if topic.content_based_deduplication {
            req = req.attributes("ContentBasedDeduplication", "true");
        }
    }
    let out = req
        .send()
        .await
        .with_context(|| format!("creating topic {}", topic.name))?;
    out.topic_arn
        .ok_or_else(|| anyhow!("CreateTopic {} returned no ARN", topic.name))
}

/// A queue's attributes as CreateQueue and SetQueueAttributes take them.
type QueueAttributes = HashMap<QueueAttributeName, String>;

fn queue_attributes(queue: &QueueSpec, dead_letter_arn: Option<&str>) -> Result<QueueAttributes> {
    let mut attrs = HashMap::new();
    if queue.fifo {
        attrs.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        attrs.insert(
            QueueAttributeName::ContentBasedDeduplication,
            queue.content_based_deduplication.to_string(),
        );
        if let Some(v) = &queue.deduplication_scope {
            attrs.insert(QueueAttributeName::DeduplicationScope, v.clone());
        }
        if let Some(v) = &queue.fifo_throughput_limit {
            attrs.insert(QueueAttributeName::FifoThroughputLimit, v.clone());
        }
    }
    for (name, value) in [
        (
            QueueAttributeName::VisibilityTimeout,
            queue.visibility_timeout,
        ),
        (
            QueueAttributeName::MessageRetentionPeriod,
            queue.message_retention_period,
        ),
        (QueueAttributeName::DelaySeconds, queue.delay_seconds),
    ] {
        if let Some(v) = value {
            attrs.insert(name, v.to_string());
        }
    }
    if let Some(redrive) = &queue.redrive {
        let arn = dead_letter_arn.ok_or_else(|| {
            anyhow!(
                "queue {} redrives to {}, which is not provisioned",
                queue.logical_id,
                redrive.dead_letter_queue
            )
        })?;
        attrs.insert(
            QueueAttributeName::RedrivePolicy,
            json!({"deadLetterTargetArn": arn, "maxReceiveCount": redrive.max_receive_count})
                .to_string(),
        );
    }
    Ok(attrs)
}

/// Creates `queue`, or brings an existing one to the template's attributes; returns
/// (URL, ARN, created now?). `dead_letter_arn` is the ARN of its redrive target.
pub async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    queue: &QueueSpec,
    dead_letter_arn: Option<&str>,
) -> Result<(String, String, bool)> {
    let attrs = queue_attributes(queue, dead_letter_arn)?;
    let existing = match client.get_queue_url().queue_name(&queue.name).send().await {
        Ok(out) => out.queue_url,
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist()) =>
        {
            None
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("looking up queue {}", queue.name)));
        }
    };
    let (url, created) = match existing {
        Some(url) => {
            // FifoQueue cannot change; everything else is brought in line.
            let mut mutable = attrs.clone();
            mutable.remove(&QueueAttributeName::FifoQueue);
            if !mutable.is_empty() {
                client
                    .set_queue_attributes()
                    .queue_url(&url)
                    .set_attributes(Some(mutable))
                    .send()
                    .await
                    .with_context(|| format!("updating queue {}", queue.name))?;
            }
            (url, false)
        }
        None => {
            let out = client
                .create_queue()
                .queue_name(&queue.name)
                .set_attributes((!attrs.is_empty()).then_some(attrs))
                .send()
                .await
                .with_context(|| format!("creating queue {}", queue.name))?;
            let url = out
                .queue_url
                .ok_or_else(|| anyhow!("CreateQueue {} returned no URL", queue.name))?;
            (url, true)
        }
    };
    let arn = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .with_context(|| format!("reading the ARN of queue {}", queue.name))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| anyhow!("queue {} has no QueueArn", queue.name))?;
    Ok((url, arn, created))
}

/// Subscribes the endpoint of `sub` to its topic with its attributes (Subscribe is idempotent
/// for the same topic, protocol and endpoint); returns the subscription ARN.
pub async fn ensure_subscription(
    client: &aws_sdk_sns::Client,
    sub: &SubscriptionSpec,
    topic_arn: &str,
    endpoint: &str,
) -> Result<String> {
    let mut req = client
        .subscribe()
        .topic_arn(topic_arn)
        .protocol(&sub.protocol)
        .endpoint(endpoint)
        .return_subscription_arn(true);
    if sub.raw_message_delivery {
        req = req.attributes("RawMessageDelivery", "true");
    }
    if let Some(policy) = &sub.filter_policy {
        req = req.attributes("FilterPolicy", policy);
        if let Some(scope) = &sub.filter_policy_scope {
            req = req.attributes("FilterPolicyScope", scope);
        }
    }
    let out = req
        .send()
        .await
        .with_context(|| format!("subscribing {} to {topic_arn}", sub.logical_id))?;
    out.subscription_arn
        .ok_or_else(|| anyhow!("Subscribe {} returned no ARN", sub.logical_id))
}

/// Creates every resource of the template the local stack emulates: tables (with their
/// streams), topics, queues (dead-letter queues first) and subscriptions. Idempotent: a second
/// run on the same endpoint finds everything in place. Records what only the endpoint knows
/// (queue URLs and ARNs, topic ARNs, stream ARNs) in `template`, so `!Ref` of a queue
/// resolves to its URL as in CloudFormation.
pub async fn provision(
    sdk: &aws_config::SdkConfig,
    template: &mut Template,
) -> Result<Provisioned> {
    let dynamo = Client::new(sdk);
    let mut out = Provisioned::default();
    for table in template.tables() {
        let created = ensure_table(&dynamo, &table).await?;
        if table.stream_view_type.is_some() {
            let described = dynamo
                .describe_table()
                .table_name(&table.name)
                .send()
                .await
                .with_context(|| format!("describing table {}", table.name))?;
            if let Some(arn) = described.table.and_then(|t| t.latest_stream_arn) {
                template.set_runtime(&table.logical_id, "StreamArn", arn);
            }
        }
        out.tables.push((table, created));
    }
    let keys = template.kms_keys();
    if !keys.is_empty() {
        let kms = aws_sdk_kms::Client::new(sdk);
        for logical_id in keys {
            let name = template.physical_name(&logical_id);
            let (id, arn) = ensure_kms_key(&kms, &name).await?;
            template.set_runtime(&logical_id, "Ref", id.clone());
            template.set_runtime(&logical_id, "KeyId", id);
            template.set_runtime(&logical_id, "Arn", arn.clone());
            out.keys.push((logical_id, arn));
        }
    }
    let topics = template.topics();
    let queues = template.queues();
    let subscriptions = template.subscriptions();
    if !topics.is_empty() {
        let sns = aws_sdk_sns::Client::new(sdk);
        for topic in topics {
            let arn = ensure_topic(&sns, &topic).await?;
            template.set_runtime(&topic.logical_id, "Ref", arn.clone());
            template.set_runtime(&topic.logical_id, "TopicArn", arn.clone());
            out.topics.push((topic, arn));
        }
    }
    if !queues.is_empty() {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        for queue in queues {
            let dead_letter_arn = queue.redrive.as_ref().and_then(|r| {
                out.queues
                    .iter()
                    .find(|(q, _, _)| q.logical_id == r.dead_letter_queue)
                    .map(|(_, _, arn)| arn.clone())
            });
            let (url, arn, _) = ensure_queue(&sqs, &queue, dead_letter_arn.as_deref()).await?;
            template.set_runtime(&queue.logical_id, "Ref", url.clone());
            template.set_runtime(&queue.logical_id, "Arn", arn.clone());
            out.queues.push((queue, url, arn));
        }
    }
    if !subscriptions.is_empty() {
        let sns = aws_sdk_sns::Client::new(sdk);
        for sub in subscriptions {
            let Some((_, topic_arn)) = out.topics.iter().find(|(t, _)| t.logical_id == sub.topic)
            else {
                continue;
            };
            let endpoint = match &sub.queue {
                Some(q) => out
                    .queues
                    .iter()
                    .find(|(s, _, _)| &s.logical_id == q)
                    .map(|(_, _, arn)| arn.clone()),
                None => sub.endpoint.clone(),
            };
            let Some(endpoint) = endpoint else {
                tracing::warn!(subscription = %sub.logical_id, "endpoint not resolvable locally; skipped");
                continue;
            };
            let arn = ensure_subscription(&sns, &sub, topic_arn, &endpoint).await?;
            out.subscriptions.push((sub, arn));
        }
    }
    Ok(out)
}
