//! Reads `infra/template.yaml` and resolves what the local stack needs from it: tables,
//! SNS topics, SQS queues (with redrive policies), subscriptions, and functions with their
//! environment, HTTP routes and event sources (DynamoDB streams, SQS queues). The template is
//! the only list of resources; nothing here names a table, a queue or a route.
//!
//! Intrinsics resolve as CloudFormation would: `!Ref` of a topic is its ARN, of a queue its
//! URL (the emulator's, once [`Template::set_runtime`] recorded it), of a table its name.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Account id the local stack pretends to run in.
pub const LOCAL_ACCOUNT: &str = "123456789012";

/// A parsed template with its resolution context.
#[derive(Debug, Clone)]
pub struct Template {
    root: Value,
    /// Stack name used for physical names (`{stack}-{LogicalId}`).
    pub stack: String,
    /// Region for ARNs.
    pub region: String,
    parameters: BTreeMap<String, String>,
    /// Values only the provisioned stack knows (queue URLs, stream ARNs), by
    /// (logical id, attribute); the attribute `Ref` overrides what `!Ref` gives.
    runtime: BTreeMap<(String, String), String>,
}

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

/// An HTTP API route of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// HTTP method, upper case (`ANY` matches all).
    pub method: String,
    /// Path template, e.g. `/api/v1/events/aggregates/{aggregate_type}/{aggregate_id}`.
    pub path: String,
}

/// An `AWS::Serverless::Function`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Logical id.
    pub logical_id: String,
    /// Cargo binary it runs (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    /// Environment, Globals merged in, intrinsics resolved; unresolvable entries left out.
    pub environment: BTreeMap<String, String>,
    /// HTTP API routes.
    pub routes: Vec<RouteSpec>,
    /// Timeout in seconds.
    pub timeout: u64,
    /// Event sources (`DynamoDB` streams and `SQS` queues) the function is mapped to.
    pub event_sources: Vec<EventSourceSpec>,
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

/// Where a stream event source describes the batches it gives up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    /// `SQS` or `SNS`.
    pub kind: String,
    /// Logical id of the queue or topic.
    pub target: String,
}

/// A function's `DynamoDB` event (an event source mapping on a table's stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSourceSpec {
    /// The event's key under `Events`.
    pub name: String,
    /// Logical id of the table (from `Stream: !GetAtt Table.StreamArn`).
    pub table: String,
    /// Records per invocation (default 100).
    pub batch_size: u32,
    /// `TRIM_HORIZON` or `LATEST`.
    pub starting_position: String,
    /// `FilterCriteria.Filters[].Pattern`, parsed; a record passes when any matches.
    pub filters: Vec<Value>,
    /// `FunctionResponseTypes`.
    pub function_response_types: Vec<String>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `MaximumRetryAttempts` (`None`: -1, retry until the record expires).
    pub maximum_retry_attempts: Option<u32>,
    /// `MaximumRecordAgeInSeconds` (`None`: -1, no limit).
    pub maximum_record_age_seconds: Option<u64>,
    /// `DestinationConfig.OnFailure`.
    pub on_failure: Option<DestinationSpec>,
    /// `Enabled` (default true).
    pub enabled: bool,
}

/// A function's `SQS` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSourceSpec {
    /// The event's key under `Events`.
    pub name: String,
    /// Logical id of the queue (from `Queue: !GetAtt Q.Arn`).
    pub queue: String,
    /// Messages per invocation (default 10).
    pub batch_size: u32,
    /// `FilterCriteria.Filters[].Pattern`, parsed.
    pub filters: Vec<Value>,
    /// `FunctionResponseTypes`.
    pub function_response_types: Vec<String>,
    /// `Enabled` (default true).
    pub enabled: bool,
}

/// An event source of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSourceSpec {
    /// A DynamoDB stream.
    DynamoDb(StreamSourceSpec),
    /// An SQS queue.
    Sqs(SqsSourceSpec),
}

impl EventSourceSpec {
    /// The event's key under the function's `Events`.
    pub fn name(&self) -> &str {
        match self {
            Self::DynamoDb(s) => &s.name,
            Self::Sqs(s) => &s.name,
        }
    }

    /// Whether the function reports partial batch failures (`ReportBatchItemFailures`).
    pub fn reports_batch_item_failures(&self) -> bool {
        let types = match self {
            Self::DynamoDb(s) => &s.function_response_types,
            Self::Sqs(s) => &s.function_response_types,
        };
        types.iter().any(|t| t == "ReportBatchItemFailures")
    }
}

/// Turns YAML short-form tags (`!Ref x`) into the long JSON form (`{"Ref": "x"}`).
fn normalize(v: serde_yaml_ng::Value) -> Result<Value> {
    use serde_yaml_ng::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n)?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => {
            Value::Array(items.into_iter().map(normalize).collect::<Result<_>>()?)
        }
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    other => serde_yaml_ng::to_string(&other)?.trim().to_owned(),
                };
                out.insert(key, normalize(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let name = t.tag.to_string();
            let name = name.trim_start_matches('!');
            let inner = normalize(t.value)?;
            let (key, inner) = match name {
                "Ref" => ("Ref".to_owned(), inner),
                "Condition" => ("Condition".to_owned(), inner),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (res, attr) = s
                            .split_once('.')
                            .ok_or_else(|| anyhow!("!GetAtt {s} lacks an attribute"))?;
                        (
                            "Fn::GetAtt".to_owned(),
                            Value::Array(vec![res.into(), attr.into()]),
                        )
                    }
                    other => ("Fn::GetAtt".to_owned(), other),
                },
                other => (format!("Fn::{other}"), inner),
            };
            let mut m = Map::new();
            m.insert(key, inner);
            Value::Object(m)
        }
    })
}

/// The logical id a `!GetAtt X.attr` or `!Ref X` points at.
fn target_of(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if let Some(r) = obj.get("Ref") {
        return r.as_str().map(str::to_owned);
    }
    match obj.get("Fn::GetAtt")? {
        Value::Array(parts) => parts.first()?.as_str().map(str::to_owned),
        Value::String(s) => s.split('.').next().map(str::to_owned),
        _ => None,
    }
}

fn flag(v: Option<&Value>) -> bool {
    v.and_then(text)
        .is_some_and(|t| t.eq_ignore_ascii_case("true"))
}

/// `FilterCriteria.Filters[].Pattern` (JSON text or, leniently, an object).
fn filter_patterns(props: &Value) -> Vec<Value> {
    props
        .get("FilterCriteria")
        .and_then(|f| f.get("Filters"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| match f.get("Pattern")? {
            Value::String(s) => match serde_json::from_str(s) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(pattern = %s, error = %e, "filter pattern is not JSON; ignored");
                    None
                }
            },
            other @ Value::Object(_) => Some(other.clone()),
            _ => None,
        })
        .collect()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(text)
        .collect()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Template {
    /// Parses the template at `path`; `stack` names the local stack.
    pub fn load(path: &Path, stack: &str, region: &str) -> Result<Self> {
        let raw =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&raw, stack, region)
    }

    /// Parses template text.
    pub fn parse(raw: &str, stack: &str, region: &str) -> Result<Self> {
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(raw).context("template is not YAML")?;
        let root = normalize(yaml)?;
        if root.get("Resources").and_then(Value::as_object).is_none() {
            bail!("template has no Resources");
        }
        let mut parameters = BTreeMap::new();
        if let Some(params) = root.get("Parameters").and_then(Value::as_object) {
            for (name, spec) in params {
                if let Some(d) = spec.get("Default").and_then(text) {
                    parameters.insert(name.clone(), d);
                }
            }
        }
        Ok(Self {
            root,
            stack: stack.to_owned(),
            region: region.to_owned(),
            parameters,
            runtime: BTreeMap::new(),
        })
    }

    /// Records a value the provisioned stack knows: `attribute` `Ref` overrides what `!Ref
    /// logical_id` resolves to (a queue's URL), any other name a `!GetAtt` (a table's
    /// `StreamArn`).
    pub fn set_runtime(&mut self, logical_id: &str, attribute: &str, value: impl Into<String>) {
        self.runtime
            .insert((logical_id.to_owned(), attribute.to_owned()), value.into());
    }

    fn runtime(&self, logical_id: &str, attribute: &str) -> Option<String> {
        self.runtime
            .get(&(logical_id.to_owned(), attribute.to_owned()))
            .cloned()
    }

    fn properties(&self, logical_id: &str) -> Option<&Value> {
        self.root
            .get("Resources")?
            .get(logical_id)?
            .get("Properties")
    }

    /// Physical name of a table, queue or topic: its name property when set, else
    /// `{stack}-{LogicalId}` (plus `.fifo` for FIFO queues and topics, as CloudFormation does).
    pub fn resource_name(&self, logical_id: &str) -> String {
        let props = self.properties(logical_id);
        let (name_key, fifo_key) = match self.resource_type(logical_id) {
            Some("AWS::DynamoDB::Table") => ("TableName", None),
            Some("AWS::SQS::Queue") => ("QueueName", Some("FifoQueue")),
            Some("AWS::SNS::Topic") => ("TopicName", Some("FifoTopic")),
            _ => return self.physical_name(logical_id),
        };
        if let Some(name) = props
            .and_then(|p| p.get(name_key))
            .and_then(|v| self.resolve(v))
        {
            return name;
        }
        let fifo = fifo_key.is_some_and(|k| flag(props.and_then(|p| p.get(k))));
        let base = self.physical_name(logical_id);
        if fifo { format!("{base}.fifo") } else { base }
    }

    /// ARN of a queue or topic of the template.
    pub fn arn(&self, logical_id: &str) -> Option<String> {
        let name = self.resource_name(logical_id);
        let service = match self.resource_type(logical_id)? {
            "AWS::SQS::Queue" => "sqs",
            "AWS::SNS::Topic" => "sns",
            "AWS::DynamoDB::Table" => {
                return Some(format!(
                    "arn:aws:dynamodb:{}:{LOCAL_ACCOUNT}:table/{name}",
                    self.region
                ));
            }
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                return Some(format!(
                    "arn:aws:lambda:{}:{LOCAL_ACCOUNT}:function:{name}",
                    self.region
                ));
            }
            _ => return None,
        };
        Some(format!(
            "arn:aws:{service}:{}:{LOCAL_ACCOUNT}:{name}",
            self.region
        ))
    }

    /// URL of a queue: the one the emulator returned once provisioned, else the AWS form.
    pub fn queue_url(&self, logical_id: &str) -> String {
        self.runtime(logical_id, "Ref").unwrap_or_else(|| {
            format!(
                "https://sqs.{}.amazonaws.com/{LOCAL_ACCOUNT}/{}",
                self.region,
                self.resource_name(logical_id)
            )
        })
    }

    /// Overrides a parameter value.
    pub fn set_parameter(&mut self, name: &str, value: &str) {
        self.parameters.insert(name.to_owned(), value.to_owned());
    }

    fn resources(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
    }

    fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.root
            .get("Resources")?
            .get(logical_id)?
            .get("Type")?
            .as_str()
    }

    /// Physical name of a resource in the local stack.
    pub fn physical_name(&self, logical_id: &str) -> String {
        format!("{}-{logical_id}", self.stack)
    }

    fn get_att(&self, res: &str, attr: &str) -> Option<String> {
        if let Some(v) = self.runtime(res, attr) {
            return Some(v);
        }
        match (self.resource_type(res)?, attr) {
            ("AWS::DynamoDB::Table", "Arn")
            | ("AWS::SQS::Queue", "Arn")
            | ("AWS::SNS::Topic", "TopicArn")
            | ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => self.arn(res),
            ("AWS::SQS::Queue", "QueueName") | ("AWS::SNS::Topic", "TopicName") => {
                Some(self.resource_name(res))
            }
            ("AWS::SQS::Queue", "QueueUrl") => Some(self.queue_url(res)),
            _ => None,
        }
    }

    fn reference(&self, name: &str) -> Option<String> {
        match name {
            "AWS::StackName" => Some(self.stack.clone()),
            "AWS::Region" => Some(self.region.clone()),
            "AWS::AccountId" => Some(LOCAL_ACCOUNT.to_owned()),
            "AWS::Partition" => Some("aws".to_owned()),
            "AWS::URLSuffix" => Some("amazonaws.com".to_owned()),
            _ => self.parameters.get(name).cloned().or_else(|| {
                if let Some(v) = self.runtime(name, "Ref") {
                    return Some(v);
                }
                Some(match self.resource_type(name)? {
                    // As in CloudFormation: a topic's Ref is its ARN, a queue's its URL.
                    "AWS::SNS::Topic" => self.arn(name)?,
                    "AWS::SQS::Queue" => self.queue_url(name),
                    "AWS::DynamoDB::Table" => self.resource_name(name),
                    _ => self.physical_name(name),
                })
            }),
        }
    }

    /// Resolves intrinsic functions to a string, when the local stack can know the value.
    pub fn resolve(&self, v: &Value) -> Option<String> {
        if let Some(t) = text(v) {
            return Some(t);
        }
        let obj = v.as_object()?;
        if obj.len() != 1 {
            return None;
        }
        let (fun, arg) = obj.iter().next()?;
        match fun.as_str() {
            "Ref" => self.reference(arg.as_str()?),
            "Fn::GetAtt" => {
                let parts = arg.as_array()?;
                self.get_att(parts.first()?.as_str()?, parts.get(1)?.as_str()?)
            }
            "Fn::Sub" => {
                let (pattern, vars) = match arg {
                    Value::String(s) => (s.as_str(), None),
                    Value::Array(a) => (a.first()?.as_str()?, a.get(1).and_then(Value::as_object)),
                    _ => return None,
                };
                let mut out = String::new();
                let mut rest = pattern;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..].find('}')? + start;
                    let name = &rest[start + 2..end];
                    let value = match vars.and_then(|m| m.get(name)) {
                        Some(v) => self.resolve(v)?,
                        None => match name.split_once('.') {
                            Some((res, attr)) => self.get_att(res, attr)?,
                            None => self.reference(name)?,
                        },
                    };
                    out.push_str(&value);
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                Some(out)
            }
            "Fn::Join" => {
                let parts = arg.as_array()?;
                let sep = parts.first()?.as_str()?;
                let items = parts.get(1)?.as_array()?;
                let resolved: Option<Vec<String>> = items.iter().map(|i| self.resolve(i)).collect();
                Some(resolved?.join(sep))
            }
            _ => None,
        }
    }

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
        self.resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::DynamoDB::Table"))
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

    /// Every serverless function, with Globals merged in.
    pub fn functions(&self) -> Vec<FunctionSpec> {
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        self.resources()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::Function"))
            .map(|(id, r)| {
                let p = r.get("Properties").cloned().unwrap_or(Value::Null);
                let mut environment = BTreeMap::new();
                for source in [globals, Some(&p)] {
                    let vars = source
                        .and_then(|s| s.get("Environment"))
                        .and_then(|e| e.get("Variables"))
                        .and_then(Value::as_object);
                    for (k, v) in vars.into_iter().flatten() {
                        match self.resolve(v) {
                            Some(value) => {
                                environment.insert(k.clone(), value);
                            }
                            None => tracing::warn!(function = %id, variable = %k, "environment value not resolvable locally"),
                        }
                    }
                }
                let binary = r
                    .get("Metadata")
                    .and_then(|m| m.get("BuildProperties"))
                    .and_then(|b| b.get("Binary"))
                    .and_then(Value::as_str)
                    .unwrap_or(id)
                    .to_owned();
                let routes = p
                    .get("Events")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter(|(_, e)| e.get("Type").and_then(Value::as_str) == Some("HttpApi"))
                    .filter_map(|(_, e)| {
                        let props = e.get("Properties")?;
                        Some(RouteSpec {
                            method: props.get("Method").and_then(Value::as_str).unwrap_or("ANY").to_uppercase(),
                            path: props.get("Path")?.as_str()?.to_owned(),
                        })
                    })
                    .collect();
                let timeout = p
                    .get("Timeout")
                    .or_else(|| globals.and_then(|g| g.get("Timeout")))
                    .and_then(|t| self.resolve(t))
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(3);
                let event_sources = p
                    .get("Events")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                    .filter_map(|(name, e)| self.event_source(id, name, e))
                    .collect();
                FunctionSpec {
                    logical_id: id.clone(),
                    binary,
                    environment,
                    routes,
                    timeout,
                    event_sources,
                }
            })
            .collect()
    }

    fn number<T: std::str::FromStr>(&self, v: Option<&Value>) -> Option<T> {
        v.and_then(|v| self.resolve(v)).and_then(|t| t.parse().ok())
    }

    fn event_source(&self, function: &str, name: &str, event: &Value) -> Option<EventSourceSpec> {
        let kind = event.get("Type").and_then(Value::as_str)?;
        let empty = Value::Null;
        let props = event.get("Properties").unwrap_or(&empty);
        let enabled = props.get("Enabled").and_then(text).as_deref() != Some("false");
        match kind {
            "DynamoDB" => {
                let Some(table) = props.get("Stream").and_then(target_of) else {
                    tracing::warn!(%function, event = %name, "DynamoDB event without !GetAtt Table.StreamArn; ignored");
                    return None;
                };
                // -1 means "no limit" for both.
                let retries: Option<i64> = self.number(props.get("MaximumRetryAttempts"));
                let age: Option<i64> = self.number(props.get("MaximumRecordAgeInSeconds"));
                let on_failure = props
                    .get("DestinationConfig")
                    .and_then(|d| d.get("OnFailure"))
                    .and_then(|o| {
                        let target = o.get("Destination").and_then(target_of)?;
                        let kind = o
                            .get("Type")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .or_else(|| match self.resource_type(&target)? {
                                "AWS::SNS::Topic" => Some("SNS".to_owned()),
                                "AWS::SQS::Queue" => Some("SQS".to_owned()),
                                _ => None,
                            })?;
                        Some(DestinationSpec { kind, target })
                    });
                Some(EventSourceSpec::DynamoDb(StreamSourceSpec {
                    name: name.to_owned(),
                    table,
                    batch_size: self.number(props.get("BatchSize")).unwrap_or(100),
                    starting_position: props
                        .get("StartingPosition")
                        .and_then(|v| self.resolve(v))
                        .unwrap_or_else(|| "LATEST".to_owned()),
                    filters: filter_patterns(props),
                    function_response_types: strings(props.get("FunctionResponseTypes")),
                    bisect_on_error: flag(props.get("BisectBatchOnFunctionError")),
                    maximum_retry_attempts: retries.and_then(|r| u32::try_from(r).ok()),
                    maximum_record_age_seconds: age.and_then(|a| u64::try_from(a).ok()),
                    on_failure,
                    enabled,
                }))
            }
            "SQS" => {
                let Some(queue) = props.get("Queue").and_then(target_of) else {
                    tracing::warn!(%function, event = %name, "SQS event without !GetAtt Queue.Arn; ignored");
                    return None;
                };
                Some(EventSourceSpec::Sqs(SqsSourceSpec {
                    name: name.to_owned(),
                    queue,
                    batch_size: self.number(props.get("BatchSize")).unwrap_or(10),
                    filters: filter_patterns(props),
                    function_response_types: strings(props.get("FunctionResponseTypes")),
                    enabled,
                }))
            }
            _ => None,
        }
    }

    fn of_type(&self, kind: &'static str) -> impl Iterator<Item = (&String, &Value)> {
        self.resources()
            .filter(move |(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
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
    use super::*;

    const SAMPLE: &str = r#"
Parameters:
  Level: { Type: String, Default: debug }
Globals:
  Function:
    Timeout: 9
    Environment:
      Variables:
        RUST_LOG: !Ref Level
Resources:
  EventsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{AttributeName: stream_id, KeyType: HASH}, {AttributeName: version, KeyType: RANGE}]
      AttributeDefinitions: [{AttributeName: stream_id, AttributeType: S}, {AttributeName: version, AttributeType: N}]
      StreamSpecification: { StreamViewType: NEW_IMAGE }
  Api:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: command-api } }
    Properties:
      Environment:
        Variables:
          EVENTS_TABLE: !Ref EventsTable
          ARN: !GetAtt EventsTable.Arn
          SUBBED: !Sub "${AWS::StackName}-x-${Level}"
      Events:
        Post: { Type: HttpApi, Properties: { Path: "/a/{b}", Method: post } }
"#;

    #[test]
    fn resolves_tables_functions_and_intrinsics() {
        let t = Template::parse(SAMPLE, "st", "us-east-1").expect("parses");
        let tables = t.tables();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].name, "st-EventsTable");
        assert_eq!(tables[0].stream_view_type.as_deref(), Some("NEW_IMAGE"));
        assert_eq!(
            tables[0].key[1],
            KeyPart {
                name: "version".into(),
                key_type: "RANGE".into()
            }
        );
        let f = &t.functions()[0];
        assert_eq!(f.binary, "command-api");
        assert_eq!(f.timeout, 9);
        assert_eq!(f.environment["EVENTS_TABLE"], "st-EventsTable");
        assert_eq!(f.environment["RUST_LOG"], "debug");
        assert_eq!(f.environment["SUBBED"], "st-x-debug");
        assert!(f.environment["ARN"].ends_with(":table/st-EventsTable"));
        assert_eq!(
            f.routes,
            vec![RouteSpec {
                method: "POST".into(),
                path: "/a/{b}".into()
            }]
        );
    }

    const FANOUT: &str = r#"
Resources:
  Events:
    Type: AWS::DynamoDB::Table
    Properties:
      KeySchema: [{AttributeName: id, KeyType: HASH}]
      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]
      StreamSpecification: { StreamViewType: NEW_IMAGE }
  Topic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "${AWS::StackName}-events.fifo"
      FifoTopic: true
      ContentBasedDeduplication: false
  Plain:
    Type: AWS::SNS::Topic
  Work:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "${AWS::StackName}-work.fifo"
      FifoQueue: true
      VisibilityTimeout: 60
      MessageRetentionPeriod: 345600
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt Dead.Arn
        maxReceiveCount: 5
  Dead:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
      MessageRetentionPeriod: 1209600
  Failures:
    Type: AWS::SQS::Queue
  Sub:
    Type: AWS::SNS::Subscription
    Properties:
      TopicArn: !Ref Topic
      Protocol: sqs
      Endpoint: !GetAtt Work.Arn
      RawMessageDelivery: true
      FilterPolicy: { event_type: [OrderPlaced] }
      FilterPolicyScope: MessageAttributes
  Publisher:
    Type: AWS::Serverless::Function
    Properties:
      Environment:
        Variables:
          TOPIC: !Ref Topic
          QUEUE: !Ref Work
          QUEUE_ARN: !GetAtt Work.Arn
      Events:
        S:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Events.StreamArn
            StartingPosition: TRIM_HORIZON
            BatchSize: 100
            FilterCriteria:
              Filters:
                - Pattern: '{"eventName": ["INSERT"]}'
            FunctionResponseTypes: [ReportBatchItemFailures]
            BisectBatchOnFunctionError: true
            MaximumRetryAttempts: 5
            MaximumRecordAgeInSeconds: 3600
            DestinationConfig:
              OnFailure: { Type: SQS, Destination: !GetAtt Failures.Arn }
  Consumer:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Q:
          Type: SQS
          Properties:
            Queue: !GetAtt Work.Arn
            BatchSize: 10
            FunctionResponseTypes: [ReportBatchItemFailures]
        Other:
          Type: SQS
          Properties:
            Queue: !GetAtt Failures.Arn
            MaximumRetryAttempts: -1
"#;

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

    #[test]
    fn refs_of_topics_and_queues_resolve_like_cloudformation() {
        let mut t = Template::parse(FANOUT, "st", "eu-west-1").expect("parses");
        let env = |t: &Template| {
            t.functions()
                .into_iter()
                .find(|f| f.logical_id == "Publisher")
                .expect("publisher")
                .environment
        };
        let e = env(&t);
        assert_eq!(
            e["TOPIC"],
            "arn:aws:sns:eu-west-1:123456789012:st-events.fifo"
        );
        assert_eq!(
            e["QUEUE"],
            "https://sqs.eu-west-1.amazonaws.com/123456789012/st-work.fifo"
        );
        assert_eq!(
            e["QUEUE_ARN"],
            "arn:aws:sqs:eu-west-1:123456789012:st-work.fifo"
        );
        // Once provisioned, the emulator's URL wins.
        t.set_runtime(
            "Work",
            "Ref",
            "http://127.0.0.1:1/123456789012/st-work.fifo",
        );
        assert_eq!(
            env(&t)["QUEUE"],
            "http://127.0.0.1:1/123456789012/st-work.fifo"
        );
        assert_eq!(
            t.queue_url("Work"),
            "http://127.0.0.1:1/123456789012/st-work.fifo"
        );
        // A stream ARN is only known from the emulator.
        let stream = serde_json::json!({"Fn::GetAtt": ["Events", "StreamArn"]});
        assert_eq!(t.resolve(&stream), None);
        t.set_runtime("Events", "StreamArn", "arn:stream");
        assert_eq!(t.resolve(&stream).as_deref(), Some("arn:stream"));
    }

    #[test]
    fn reads_function_event_sources() {
        let t = Template::parse(FANOUT, "st", "us-east-1").expect("parses");
        let functions = t.functions();
        let publisher = functions
            .iter()
            .find(|f| f.logical_id == "Publisher")
            .expect("publisher");
        assert_eq!(publisher.event_sources.len(), 1);
        let EventSourceSpec::DynamoDb(s) = &publisher.event_sources[0] else {
            panic!("a stream source: {:?}", publisher.event_sources[0]);
        };
        assert_eq!(s.name, "S");
        assert_eq!(s.table, "Events");
        assert_eq!(s.batch_size, 100);
        assert_eq!(s.starting_position, "TRIM_HORIZON");
        assert_eq!(
            s.filters,
            vec![serde_json::json!({"eventName": ["INSERT"]})]
        );
        assert!(publisher.event_sources[0].reports_batch_item_failures());
        assert!(s.bisect_on_error);
        assert_eq!(s.maximum_retry_attempts, Some(5));
        assert_eq!(s.maximum_record_age_seconds, Some(3600));
        assert_eq!(
            s.on_failure,
            Some(DestinationSpec {
                kind: "SQS".into(),
                target: "Failures".into()
            })
        );
        assert!(s.enabled);

        let consumer = functions
            .iter()
            .find(|f| f.logical_id == "Consumer")
            .expect("consumer");
        let mut sqs: Vec<&SqsSourceSpec> = consumer
            .event_sources
            .iter()
            .filter_map(|e| match e {
                EventSourceSpec::Sqs(s) => Some(s),
                EventSourceSpec::DynamoDb(_) => None,
            })
            .collect();
        sqs.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(sqs.len(), 2);
        assert_eq!(sqs[1].name, "Q");
        assert_eq!(sqs[1].queue, "Work");
        assert_eq!(sqs[1].batch_size, 10);
        assert_eq!(
            sqs[1].function_response_types,
            vec!["ReportBatchItemFailures"]
        );
        assert_eq!(sqs[0].queue, "Failures");
        assert!(
            !consumer
                .event_sources
                .iter()
                .any(|e| e.name() == "Other" && e.reports_batch_item_failures())
        );
    }

    #[test]
    fn the_project_template_wires_the_fan_out() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
        let t = Template::load(&path, "st", "us-east-1").expect("loads");
        let topic = t
            .topics()
            .into_iter()
            .find(|t| t.logical_id == "EventsTopic")
            .expect("EventsTopic");
        assert!(topic.fifo && !topic.content_based_deduplication);
        assert_eq!(topic.name, "st-events.fifo");
        let queues = t.queues();
        let projector = queues
            .iter()
            .find(|q| q.logical_id == "ProjectorQueue")
            .expect("ProjectorQueue");
        assert_eq!(projector.name, "st-projector.fifo");
        let redrive = projector.redrive.as_ref().expect("redrive");
        assert_eq!(redrive.dead_letter_queue, "ProjectorDeadLetterQueue");
        assert_eq!(redrive.max_receive_count, 5);
        let functions = t.functions();
        let function = |id: &str| {
            functions
                .iter()
                .find(|f| f.logical_id == id)
                .unwrap_or_else(|| panic!("{id}"))
        };
        // Visibility timeout >= 6 x the projector's timeout.
        let projector_fn = function("ProjectorFunction");
        assert!(u64::from(projector.visibility_timeout.expect("set")) >= 6 * projector_fn.timeout);
        assert_eq!(projector_fn.binary, "projector");
        assert!(matches!(
            &projector_fn.event_sources[..],
            [EventSourceSpec::Sqs(s)] if s.queue == "ProjectorQueue" && s.batch_size == 10
        ));
        let publisher = function("StreamPublisherFunction");
        assert_eq!(
            publisher.environment["EVENTS_TOPIC_ARN"],
            "arn:aws:sns:us-east-1:123456789012:st-events.fifo"
        );
        assert!(matches!(
            &publisher.event_sources[..],
            [EventSourceSpec::DynamoDb(s)] if s.table == "EventsTable"
                && s.on_failure.as_ref().is_some_and(|d| d.target == "StreamFailureQueue")
        ));
        let subs = t.subscriptions();
        assert!(subs.iter().any(|s| s.topic == "EventsTopic"
            && s.queue.as_deref() == Some("ProjectorQueue")
            && s.raw_message_delivery));
        let query = function("QueryApiFunction");
        assert_eq!(query.environment["READ_MODELS_TABLE"], "st-ReadModelsTable");
        assert!(
            query
                .routes
                .iter()
                .any(|r| r.method == "GET" && r.path == "/api/v1/events/queries/{view}")
        );
    }
}
