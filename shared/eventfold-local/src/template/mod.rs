//! Reads `infra/template.yaml` and resolves what the local stack needs from it: tables,
//! SNS topics, SQS queues (with redrive policies), subscriptions, and functions with their
//! environment, HTTP routes and event sources (DynamoDB streams, SQS queues, schedules). The template is
//! the only list of resources; nothing here names a table, a queue or a route.
//!
//! Intrinsics resolve as CloudFormation would: `!Ref` of a topic is its ARN, of a queue its
//! URL (the emulator's, once [`Template::set_runtime`] recorded it), of a table its name.

mod functions;
mod intrinsics;
mod parameters;
mod resources;
mod sources;

pub use functions::{FunctionSpec, RouteSpec};
pub use parameters::parse_parameter_overrides;
pub use resources::{
    IndexSpec, KeyPart, QueueSpec, RedriveSpec, SubscriptionSpec, TableSpec, TopicSpec,
};
pub use sources::{
    DestinationSpec, EventSourceSpec, ScheduleSourceSpec, SqsSourceSpec, StreamSourceSpec,
    rate_period,
};

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

/// Parses YAML (a template or its translation), short-form intrinsics turned into the long
/// JSON form.
pub fn parse_yaml(raw: &str) -> Result<Value> {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(raw).context("not YAML")?;
    normalize(yaml)
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

    /// Overrides a parameter value, unchecked ([`Self::override_parameter`] checks it against
    /// the declaration).
    pub fn set_parameter(&mut self, name: &str, value: &str) {
        self.parameters.insert(name.to_owned(), value.to_owned());
    }

    fn resource_type(&self, logical_id: &str) -> Option<&str> {
        self.root
            .get("Resources")?
            .get(logical_id)?
            .get("Type")?
            .as_str()
    }

    fn number<T: std::str::FromStr>(&self, v: Option<&Value>) -> Option<T> {
        v.and_then(|v| self.resolve(v)).and_then(|t| t.parse().ok())
    }

    fn of_type(&self, kind: &'static str) -> impl Iterator<Item = (&String, &Value)> {
        self.root
            .get("Resources")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(move |(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
    }
}

/// Templates the unit tests of the submodules share.
#[cfg(test)]
pub(crate) mod fixtures {
    /// Globals, a parameter, a table with a stream, a function with a route and intrinsics.
    pub(crate) const SAMPLE: &str = r#"
Parameters:
  Level: { Type: String, Default: debug }
Globals:
  Function:
    Timeout: 9
    MemorySize: 512
    Handler: bootstrap
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

    /// The fan-out shape: stream, FIFO topic and queues, DLQ, subscription, event sources.
    pub(crate) const FANOUT: &str = r#"
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
            ParallelizationFactor: 2
            MaximumBatchingWindowInSeconds: 1
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
            ScalingConfig: { MaximumConcurrency: 5 }
        Other:
          Type: SQS
          Properties:
            Queue: !GetAtt Failures.Arn
            MaximumRetryAttempts: -1
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
"#;
}
