//! Event sources of functions: `DynamoDB` streams and `SQS` queues with their mapping
//! settings (batch size, filters, partial failures, retries, destinations), and `Schedule`
//! events (an EventBridge rule invoking the function at a rate).
//!
//! The scaling settings (`ParallelizationFactor`, `ScalingConfig.MaximumConcurrency`,
//! `MaximumBatchingWindowInSeconds`) are read so the local stack knows what the template
//! asks, but not emulated: the local pollers run one batch per source at a time
//! (`docs/capacity.md`).

use super::{Template, flag, target_of, text};
use serde_json::Value;
use std::time::Duration;

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
    /// `ParallelizationFactor`: batches of one shard processed at once in AWS (default 1;
    /// locally always 1).
    pub parallelization_factor: u32,
    /// `MaximumBatchingWindowInSeconds` (default 0; not waited for locally).
    pub maximum_batching_window_seconds: u32,
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
    /// `ScalingConfig.MaximumConcurrency`: the most invocations the source makes at once in
    /// AWS (`None`: up to the function's or account's concurrency); locally the pollers of
    /// `esm::sqs::pollers`.
    pub maximum_concurrency: Option<u32>,
    /// `MaximumBatchingWindowInSeconds` (default 0; not waited for locally).
    pub maximum_batching_window_seconds: u32,
    /// `Enabled` (default true).
    pub enabled: bool,
}

/// A function's `Schedule` event (an EventBridge rule with a schedule expression).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSourceSpec {
    /// The event's key under `Events`.
    pub name: String,
    /// `Schedule`, e.g. `rate(1 minute)`.
    pub expression: String,
    /// The period of a `rate(...)` expression; `None` for what the local runtime does not
    /// run (`cron(...)`, malformed).
    pub period: Option<Duration>,
    /// `Input`: the JSON the rule sends instead of the scheduled event, if set.
    pub input: Option<Value>,
    /// `Enabled` (default true; `State: DISABLED` also disables it).
    pub enabled: bool,
}

/// An event source of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventSourceSpec {
    /// A DynamoDB stream.
    DynamoDb(StreamSourceSpec),
    /// An SQS queue.
    Sqs(SqsSourceSpec),
    /// A schedule.
    Schedule(ScheduleSourceSpec),
}

/// The period of an EventBridge `rate(value unit)` expression (`minute[s]`, `hour[s]`,
/// `day[s]`; value a positive integer); `None` for anything else.
pub fn rate_period(expression: &str) -> Option<Duration> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (value, unit) = inner.trim().split_once(' ')?;
    let value: u64 = value.parse().ok().filter(|v| *v > 0)?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    value.checked_mul(seconds).map(Duration::from_secs)
}

impl EventSourceSpec {
    /// The event's key under the function's `Events`.
    pub fn name(&self) -> &str {
        match self {
            Self::DynamoDb(s) => &s.name,
            Self::Sqs(s) => &s.name,
            Self::Schedule(s) => &s.name,
        }
    }

    /// Whether the source is enabled.
    pub fn enabled(&self) -> bool {
        match self {
            Self::DynamoDb(s) => s.enabled,
            Self::Sqs(s) => s.enabled,
            Self::Schedule(s) => s.enabled,
        }
    }

    /// Whether the function reports partial batch failures (`ReportBatchItemFailures`).
    pub fn reports_batch_item_failures(&self) -> bool {
        let types = match self {
            Self::DynamoDb(s) => &s.function_response_types,
            Self::Sqs(s) => &s.function_response_types,
            Self::Schedule(_) => return false,
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
                    parallelization_factor: self
                        .number(props.get("ParallelizationFactor"))
                        .unwrap_or(1),
                    maximum_batching_window_seconds: self
                        .number(props.get("MaximumBatchingWindowInSeconds"))
                        .unwrap_or(0),
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
                    maximum_concurrency: self.number(
                        props
                            .get("ScalingConfig")
                            .and_then(|c| c.get("MaximumConcurrency")),
                    ),
                    maximum_batching_window_seconds: self
                        .number(props.get("MaximumBatchingWindowInSeconds"))
                        .unwrap_or(0),
                    enabled,
                }))
            }
            "Schedule" => {
                let Some(expression) = props.get("Schedule").and_then(|v| self.resolve(v)) else {
                    tracing::warn!(%function, event = %name, "Schedule event without a Schedule expression; ignored");
                    return None;
                };
                let period = rate_period(&expression);
                if period.is_none() {
                    tracing::warn!(%function, event = %name, %expression, "schedule expression not run locally (only rate(...) is)");
                }
                let input = props.get("Input").and_then(|v| self.resolve(v)).and_then(|t| {
                    serde_json::from_str(&t)
                        .inspect_err(|e| tracing::warn!(%function, event = %name, error = %e, "schedule Input is not JSON; ignored"))
                        .ok()
                });
                let state_enabled = props
                    .get("State")
                    .and_then(|v| self.resolve(v))
                    .is_none_or(|s| !s.eq_ignore_ascii_case("DISABLED"));
                Some(EventSourceSpec::Schedule(ScheduleSourceSpec {
                    name: name.to_owned(),
                    expression,
                    period,
                    input,
                    enabled: enabled && state_enabled,
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
        let publisher = t.function("Publisher").expect("publisher");
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
        assert_eq!(
            (s.parallelization_factor, s.maximum_batching_window_seconds),
            (2, 1)
        );
        assert!(s.enabled);

        let consumer = t.function("Consumer").expect("consumer");
        let mut sqs: Vec<&SqsSourceSpec> = consumer
            .event_sources
            .iter()
            .filter_map(|e| match e {
                EventSourceSpec::Sqs(s) => Some(s),
                _ => None,
            })
            .collect();
        sqs.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(sqs.len(), 2);
        let schedules: Vec<&ScheduleSourceSpec> = consumer
            .event_sources
            .iter()
            .filter_map(|e| match e {
                EventSourceSpec::Schedule(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(
            schedules,
            [&ScheduleSourceSpec {
                name: "Tick".into(),
                expression: "rate(5 minutes)".into(),
                period: Some(Duration::from_secs(300)),
                input: None,
                enabled: true,
            }]
        );
        assert!(
            !consumer
                .event_sources
                .iter()
                .any(|e| e.name() == "Tick" && e.reports_batch_item_failures())
        );
        assert_eq!(sqs[1].name, "Q");
        assert_eq!(sqs[1].queue, "Work");
        assert_eq!(sqs[1].batch_size, 10);
        assert_eq!(
            sqs[1].function_response_types,
            vec!["ReportBatchItemFailures"]
        );
        assert_eq!(sqs[1].maximum_concurrency, Some(5));
        assert_eq!(sqs[1].maximum_batching_window_seconds, 0);
        assert_eq!(sqs[0].queue, "Failures");
        assert_eq!(sqs[0].maximum_concurrency, None, "no ScalingConfig");
        assert!(
            !consumer
                .event_sources
                .iter()
                .any(|e| e.name() == "Other" && e.reports_batch_item_failures())
        );
    }
}

#[cfg(test)]
mod schedule_tests {
    use super::*;

    #[test]
    fn rates_read_as_periods_and_the_rest_is_not_run() {
        for (expression, seconds) in [
            ("rate(1 minute)", 60),
            ("rate(5 minutes)", 300),
            ("rate(2 hours)", 7200),
            ("rate(1 day)", 86_400),
            (" rate( 3 minutes ) ", 180),
        ] {
            assert_eq!(
                rate_period(expression),
                Some(Duration::from_secs(seconds)),
                "{expression}"
            );
        }
        for expression in [
            "cron(0 12 * * ? *)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(1 second)",
            "rate(minutes)",
            "rate(1 fortnight)",
            "every minute",
        ] {
            assert_eq!(rate_period(expression), None, "{expression}");
        }
    }

    #[test]
    fn schedules_keep_their_input_and_state() {
        let raw = r#"
Resources:
  F:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Off:
          Type: Schedule
          Properties: { Schedule: rate(1 hour), Enabled: false }
        Stopped:
          Type: Schedule
          Properties: { Schedule: rate(1 hour), State: DISABLED }
        WithInput:
          Type: Schedule
          Properties: { Schedule: "cron(0 * * * ? *)", Input: '{"job": "sweep"}' }
"#;
        let t = Template::parse(raw, "st", "us-east-1").expect("parses");
        let f = &t.functions()[0];
        let by_name = |n: &str| match f.event_sources.iter().find(|e| e.name() == n) {
            Some(EventSourceSpec::Schedule(s)) => s.clone(),
            other => panic!("{n}: {other:?}"),
        };
        assert!(!by_name("Off").enabled);
        assert!(!by_name("Stopped").enabled);
        let with_input = by_name("WithInput");
        assert!(with_input.enabled);
        assert_eq!(with_input.period, None, "cron is not run locally");
        assert_eq!(with_input.input, Some(serde_json::json!({"job": "sweep"})));
    }
}
