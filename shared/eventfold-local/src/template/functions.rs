//! Serverless functions: binary, environment (Globals merged, intrinsics resolved), HTTP
//! routes, timeout and event sources.

use super::{EventSourceSpec, Template};
use serde_json::Value;
use std::collections::BTreeMap;

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
    /// Memory in MB (`MemorySize`, Lambda's default 128).
    pub memory_size: u64,
    /// `Handler` (the runtime's `_HANDLER`), if the template names one.
    pub handler: Option<String>,
    /// Event sources (`DynamoDB` streams and `SQS` queues) the function is mapped to.
    pub event_sources: Vec<EventSourceSpec>,
}

impl FunctionSpec {
    /// An environment variable of the function, as the Lambda runtime would see it.
    pub fn env(&self, key: &str) -> Option<String> {
        self.environment.get(key).cloned()
    }
}

impl RouteSpec {
    /// The route key API Gateway sends for this route: `METHOD /path/{param}`.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

impl Template {
    /// The route keys of the function that runs `binary`, sorted (empty when no function
    /// runs it): what a function's own route table must equal.
    pub fn route_keys(&self, binary: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .functions()
            .iter()
            .filter(|f| f.binary == binary)
            .flat_map(|f| f.routes.iter().map(RouteSpec::route_key))
            .collect();
        keys.sort();
        keys
    }

    /// The function that runs the binary `name`, or whose logical id is `name`.
    pub fn function(&self, name: &str) -> Option<FunctionSpec> {
        self.functions()
            .into_iter()
            .find(|f| f.binary == name || f.logical_id == name)
    }

    /// Every serverless function, with Globals merged in.
    pub fn functions(&self) -> Vec<FunctionSpec> {
        let globals = self.root.get("Globals").and_then(|g| g.get("Function"));
        self.of_type("AWS::Serverless::Function")
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
                let setting = |key: &str| {
                    p.get(key)
                        .or_else(|| globals.and_then(|g| g.get(key)))
                        .and_then(|v| self.resolve(v))
                };
                let memory_size = setting("MemorySize")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(128);
                let handler = setting("Handler");
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
                    memory_size,
                    handler,
                    event_sources,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::KeyPart;
    use super::super::fixtures::SAMPLE;
    use super::*;

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
        assert_eq!(
            (f.memory_size, f.handler.as_deref()),
            (512, Some("bootstrap"))
        );
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
