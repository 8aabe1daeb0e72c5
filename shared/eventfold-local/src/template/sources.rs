//! Event sources of functions: `DynamoDB` streams and `SQS` queues with their mapping
//! settings (batch size, filters, partial failures, retries, destinations).

use super::{Template, flag, target_of, text};
use serde_json::Value;

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

impl Template {
    pub(super) fn event_source(
        &self,
        function: &str,
        name: &str,
        event: &Value,
    ) -> Option<EventSourceSpec> {
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
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::FANOUT;
    use super::*;

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
}
