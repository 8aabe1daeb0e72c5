//! Tables, topics, queues and subscriptions: what provisioning creates.

use super::{Template, flag, target_of, text};
use serde_json::Value;

/// A key of a table or index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPart {
    /// Attribute name.
    pub name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    /// Index name.
    pub name: String,
    /// Its key.
    pub key: Vec<KeyPart>,
    /// `ALL`, `KEYS_ONLY` or `INCLUDE`.
    pub projection: String,
    /// Attributes projected with `INCLUDE`.
    pub non_key_attributes: Vec<String>,
}

/// An `AWS::DynamoDB::Table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Logical id in the template.
    pub logical_id: String,
    /// Physical name.
    pub name: String,
    /// Primary key.
    pub key: Vec<KeyPart>,
    /// Attribute name -> `S` / `N` / `B`.
    pub attributes: Vec<(String, String)>,
    /// Global secondary indexes.
    pub indexes: Vec<IndexSpec>,
    /// `NEW_IMAGE` etc. when the table has a stream.
    pub stream_view_type: Option<String>,
    /// TTL attribute, when enabled.
    pub ttl_attribute: Option<String>,
}

/// An `AWS::SNS::Topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Logical id.
    pub logical_id: String,
    /// Physical name (`TopicName`, else `{stack}-{LogicalId}` plus `.fifo` for FIFO topics).
    pub name: String,
    /// `FifoTopic`.
    pub fifo: bool,
    /// `ContentBasedDeduplication`.
    pub content_based_deduplication: bool,
}

/// A queue's `RedrivePolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveSpec {
    /// Logical id of the dead-letter queue (from `deadLetterTargetArn: !GetAtt Q.Arn`).
    pub dead_letter_queue: String,
    /// Receives before a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

/// An `AWS::SQS::Queue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Logical id.
    pub logical_id: String,
    /// Physical name (`QueueName`, else `{stack}-{LogicalId}` plus `.fifo` for FIFO queues).
    pub name: String,
    /// `FifoQueue`.
    pub fifo: bool,
    /// `ContentBasedDeduplication`.
    pub content_based_deduplication: bool,
    /// `DeduplicationScope` (`messageGroup` / `queue`).
    pub deduplication_scope: Option<String>,
    /// `FifoThroughputLimit` (`perMessageGroupId` / `perQueue`).
    pub fifo_throughput_limit: Option<String>,
    /// `VisibilityTimeout`, seconds.
    pub visibility_timeout: Option<u32>,
    /// `MessageRetentionPeriod`, seconds.
    pub message_retention_period: Option<u32>,
    /// `DelaySeconds`.
    pub delay_seconds: Option<u32>,
    /// `RedrivePolicy`.
    pub redrive: Option<RedriveSpec>,
}

/// An SNS subscription (`AWS::SNS::Subscription`, or an entry of a topic's `Subscription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// Logical id (`{Topic}Subscription{n}` for inline subscriptions).
    pub logical_id: String,
    /// Logical id of the topic.
    pub topic: String,
    /// `sqs`, `lambda`, `https`, ...
    pub protocol: String,
    /// Logical id of the endpoint queue, when it is one of the template's queues.
    pub queue: Option<String>,
    /// The endpoint, resolved when possible (queue ARN, URL, ...).
    pub endpoint: Option<String>,
    /// `RawMessageDelivery`.
    pub raw_message_delivery: bool,
    /// `FilterPolicy` as JSON text.
    pub filter_policy: Option<String>,
    /// `FilterPolicyScope` (`MessageAttributes` / `MessageBody`).
    pub filter_policy_scope: Option<String>,
}

impl Template {
    fn key_parts(v: Option<&Value>) -> Vec<KeyPart> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|k| {
                Some(KeyPart {
                    name: k.get("AttributeName")?.as_str()?.to_owned(),
                    key_type: k.get("KeyType")?.as_str()?.to_owned(),
                })
            })
            .collect()
    }

    /// Every DynamoDB table.
    pub fn tables(&self) -> Vec<TableSpec> {
        self.of_type("AWS::DynamoDB::Table")
            .map(|(id, r)| {
                let p = r.get("Properties").cloned().unwrap_or(Value::Null);
                let name = p
                    .get("TableName")
                    .and_then(|v| self.resolve(v))
                    .unwrap_or_else(|| self.physical_name(id));
                let attributes = p
                    .get("AttributeDefinitions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| {
                        Some((
                            a.get("AttributeName")?.as_str()?.to_owned(),
                            a.get("AttributeType")?.as_str()?.to_owned(),
                        ))
                    })
                    .collect();
                let indexes = p
                    .get("GlobalSecondaryIndexes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| {
                        let projection = g.get("Projection");
                        Some(IndexSpec {
                            name: g.get("IndexName")?.as_str()?.to_owned(),
                            key: Self::key_parts(g.get("KeySchema")),
                            projection: projection
                                .and_then(|p| p.get("ProjectionType"))
                                .and_then(Value::as_str)
                                .unwrap_or("ALL")
                                .to_owned(),
                            non_key_attributes: projection
                                .and_then(|p| p.get("NonKeyAttributes"))
                                .and_then(Value::as_array)
                                .into_iter()
                                .flatten()
                                .filter_map(|a| a.as_str().map(str::to_owned))
                                .collect(),
                        })
                    })
                    .collect();
                let ttl = p
                    .get("TimeToLiveSpecification")
                    .filter(|t| t.get("Enabled").and_then(text).as_deref() == Some("true"));
                TableSpec {
                    logical_id: id.clone(),
                    name,
                    key: Self::key_parts(p.get("KeySchema")),
                    attributes,
                    indexes,
                    stream_view_type: p
                        .get("StreamSpecification")
                        .and_then(|s| s.get("StreamViewType"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    ttl_attribute: ttl
                        .and_then(|t| t.get("AttributeName"))
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                }
            })
            .collect()
    }

    /// The logical ids of every KMS key (`AWS::KMS::Key`); the emulator makes them and
    /// records their ids and ARNs, which `!Ref` and `!GetAtt .Arn` then give.
    pub fn kms_keys(&self) -> Vec<String> {
        self.of_type("AWS::KMS::Key")
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every SNS topic.
    pub fn topics(&self) -> Vec<TopicSpec> {
        self.of_type("AWS::SNS::Topic")
            .map(|(id, r)| {
                let p = r.get("Properties");
                TopicSpec {
                    logical_id: id.clone(),
                    name: self.resource_name(id),
                    fifo: flag(p.and_then(|p| p.get("FifoTopic"))),
                    content_based_deduplication: flag(
                        p.and_then(|p| p.get("ContentBasedDeduplication")),
                    ),
                }
            })
            .collect()
    }

    /// Every SQS queue, dead-letter queues before the queues that redrive to them.
    pub fn queues(&self) -> Vec<QueueSpec> {
        let mut queues: Vec<QueueSpec> = self
            .of_type("AWS::SQS::Queue")
            .map(|(id, r)| {
                let p = r.get("Properties");
                let get = |k: &str| p.and_then(|p| p.get(k));
                let redrive = get("RedrivePolicy").and_then(|r| {
                    // The policy may also be given as JSON text.
                    let parsed;
                    let r = match r {
                        Value::String(s) => {
                            parsed = serde_json::from_str::<Value>(s).ok()?;
                            &parsed
                        }
                        other => other,
                    };
                    Some(RedriveSpec {
                        dead_letter_queue: r.get("deadLetterTargetArn").and_then(target_of)?,
                        max_receive_count: self.number(r.get("maxReceiveCount"))?,
                    })
                });
                QueueSpec {
                    logical_id: id.clone(),
                    name: self.resource_name(id),
                    fifo: flag(get("FifoQueue")),
                    content_based_deduplication: flag(get("ContentBasedDeduplication")),
                    deduplication_scope: get("DeduplicationScope").and_then(|v| self.resolve(v)),
                    fifo_throughput_limit: get("FifoThroughputLimit").and_then(|v| self.resolve(v)),
                    visibility_timeout: self.number(get("VisibilityTimeout")),
                    message_retention_period: self.number(get("MessageRetentionPeriod")),
                    delay_seconds: self.number(get("DelaySeconds")),
                    redrive,
                }
            })
            .collect();
        // Dead-letter queues first (a redrive policy needs its target's ARN).
        let mut ordered: Vec<QueueSpec> = Vec::with_capacity(queues.len());
        while !queues.is_empty() {
            let ready = queues.iter().position(|q| {
                q.redrive.as_ref().is_none_or(|r| {
                    ordered.iter().any(|o| o.logical_id == r.dead_letter_queue)
                        || !queues.iter().any(|o| o.logical_id == r.dead_letter_queue)
                })
            });
            // A redrive cycle: take them as they come (the emulator will complain).
            ordered.push(queues.remove(ready.unwrap_or(0)));
        }
        ordered
    }

    /// Every SNS subscription: `AWS::SNS::Subscription` resources and topics' inline ones.
    pub fn subscriptions(&self) -> Vec<SubscriptionSpec> {
        let endpoint = |v: Option<&Value>| -> (Option<String>, Option<String>) {
            let queue = v
                .and_then(target_of)
                .filter(|t| self.resource_type(t) == Some("AWS::SQS::Queue"));
            (queue, v.and_then(|v| self.resolve(v)))
        };
        let mut out: Vec<SubscriptionSpec> = self
            .of_type("AWS::SNS::Subscription")
            .filter_map(|(id, r)| {
                let p = r.get("Properties")?;
                let Some(topic) = p.get("TopicArn").and_then(target_of) else {
                    tracing::warn!(subscription = %id, "TopicArn is not a topic of the template; ignored");
                    return None;
                };
                let (queue, endpoint) = endpoint(p.get("Endpoint"));
                let filter_policy = p.get("FilterPolicy").and_then(|f| match f {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                });
                Some(SubscriptionSpec {
                    logical_id: id.clone(),
                    topic,
                    protocol: p.get("Protocol").and_then(text).unwrap_or_default(),
                    queue,
                    endpoint,
                    raw_message_delivery: flag(p.get("RawMessageDelivery")),
                    filter_policy,
                    filter_policy_scope: p.get("FilterPolicyScope").and_then(|v| self.resolve(v)),
                })
            })
            .collect();
        for (id, r) in self.of_type("AWS::SNS::Topic") {
            let inline = r
                .get("Properties")
                .and_then(|p| p.get("Subscription"))
                .and_then(Value::as_array);
            for (n, sub) in inline.into_iter().flatten().enumerate() {
                let (queue, endpoint) = endpoint(sub.get("Endpoint"));
                out.push(SubscriptionSpec {
                    logical_id: format!("{id}Subscription{n}"),
                    topic: id.clone(),
                    protocol: sub.get("Protocol").and_then(text).unwrap_or_default(),
                    queue,
                    endpoint,
                    raw_message_delivery: false,
                    filter_policy: None,
                    filter_policy_scope: None,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::FANOUT;
    use super::*;

    #[test]
    fn reads_topics_queues_and_subscriptions() {
        let t = Template::parse(FANOUT, "st", "eu-west-1").expect("parses");
        let topics = t.topics();
        let topic = topics
            .iter()
            .find(|t| t.logical_id == "Topic")
            .expect("topic");
        assert_eq!(topic.name, "st-events.fifo");
        assert!(topic.fifo && !topic.content_based_deduplication);
        let plain = topics
            .iter()
            .find(|t| t.logical_id == "Plain")
            .expect("plain");
        assert_eq!(plain.name, "st-Plain");
        assert!(!plain.fifo);

        let queues = t.queues();
        let order: Vec<&str> = queues.iter().map(|q| q.logical_id.as_str()).collect();
        let pos = |id: &str| order.iter().position(|o| *o == id).expect("listed");
        assert!(pos("Dead") < pos("Work"), "DLQ first: {order:?}");
        let work = &queues[pos("Work")];
        assert_eq!(work.name, "st-work.fifo");
        assert!(work.fifo);
        assert_eq!(work.visibility_timeout, Some(60));
        assert_eq!(work.message_retention_period, Some(345_600));
        assert_eq!(
            work.redrive,
            Some(RedriveSpec {
                dead_letter_queue: "Dead".into(),
                max_receive_count: 5
            })
        );
        // Unnamed FIFO queues get the .fifo suffix, as CloudFormation names them.
        assert_eq!(queues[pos("Dead")].name, "st-Dead.fifo");
        assert_eq!(queues[pos("Failures")].name, "st-Failures");
        assert!(queues[pos("Failures")].redrive.is_none());

        let subs = t.subscriptions();
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].topic, "Topic");
        assert_eq!(subs[0].protocol, "sqs");
        assert_eq!(subs[0].queue.as_deref(), Some("Work"));
        assert_eq!(
            subs[0].endpoint.as_deref(),
            Some("arn:aws:sqs:eu-west-1:123456789012:st-work.fifo")
        );
        assert!(subs[0].raw_message_delivery);
        let policy: Value =
            serde_json::from_str(subs[0].filter_policy.as_deref().expect("policy")).expect("json");
        assert_eq!(policy, serde_json::json!({"event_type": ["OrderPlaced"]}));
        assert_eq!(
            subs[0].filter_policy_scope.as_deref(),
            Some("MessageAttributes")
        );
    }
}
