//! Reads `infra/template.yaml` and resolves what the local stack needs from it: tables,
//! functions with their environment, and HTTP routes. The template is the only list of
//! resources; nothing here names a table or a route.

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
        let name = self.physical_name(res);
        match (self.resource_type(res)?, attr) {
            ("AWS::DynamoDB::Table", "Arn") => Some(format!(
                "arn:aws:dynamodb:{}:{LOCAL_ACCOUNT}:table/{name}",
                self.region
            )),
            ("AWS::SQS::Queue", "Arn") => Some(format!(
                "arn:aws:sqs:{}:{LOCAL_ACCOUNT}:{name}",
                self.region
            )),
            ("AWS::SQS::Queue", "QueueName") => Some(name),
            ("AWS::SNS::Topic", "TopicName") => Some(name),
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
                let kind = self.resource_type(name)?;
                Some(match kind {
                    // Ref of a queue is its URL in CloudFormation; locally the name is what
                    // the emulator resolves, and the fan-out code takes either.
                    "AWS::SNS::Topic" => format!(
                        "arn:aws:sns:{}:{LOCAL_ACCOUNT}:{}",
                        self.region,
                        self.physical_name(name)
                    ),
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
                FunctionSpec {
                    logical_id: id.clone(),
                    binary,
                    environment,
                    routes,
                    timeout,
                }
            })
            .collect()
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
}
