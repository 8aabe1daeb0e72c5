//! The event-source-mapping emulator: polls the DynamoDB streams and SQS queues the template
//! maps to functions and invokes the functions' handlers with the JSON payloads Lambda would
//! send, honouring batch size, filter criteria, partial batch failures
//! (`ReportBatchItemFailures`), retries, bisection, record age and on-failure destinations;
//! and runs the functions' `Schedule` events ([`schedule`]) at their rate (or at
//! [`EsmOptions::schedule_period`]).
//!
//! A handler is an [`EventHandler`]: Lambda event JSON in, the function's JSON response out,
//! `Err` when the function failed as a whole (error, panic or timeout). Pollers never stop on
//! a handler error; they stop when the [`Esm`] is dropped.

pub mod filter;
mod invoke;
mod options;
pub mod schedule;
pub mod sqs;
mod stats;
pub mod stream;
mod throttle;

pub use invoke::{EventHandler, FunctionError, HandlerError, Target, event_handler};
pub(crate) use invoke::{Outcome, outcome};
pub use options::{EsmOptions, HandlerFactory, SHARD_POLL, Tuning};
pub use stats::{Counters, SourceStats};
pub(crate) use throttle::Throttle;

use crate::template::{EventSourceSpec, Template};
use anyhow::Result;
use aws_config::SdkConfig;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// One running event source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Function logical id.
    pub function: String,
    /// The event's key under the function's `Events`.
    pub source: String,
    /// `DynamoDB`, `SQS` or `Schedule`.
    pub kind: &'static str,
    counters: Arc<Counters>,
}

/// The running pollers; dropping it stops them.
pub struct Esm {
    sources: Vec<SourceInfo>,
    tasks: Vec<JoinHandle<()>>,
    report: bool,
}

impl fmt::Debug for Esm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Esm")
            .field("sources", &self.sources)
            .finish()
    }
}

impl Esm {
    /// No pollers.
    pub fn none() -> Self {
        Self {
            sources: Vec::new(),
            tasks: Vec::new(),
            report: false,
        }
    }

    /// The running event sources.
    pub fn sources(&self) -> &[SourceInfo] {
        &self.sources
    }

    /// Counters per function logical id, summed over its event sources.
    pub fn stats(&self) -> BTreeMap<String, SourceStats> {
        stats_of(&self.sources)
    }

    /// Counters of one event source (`function`, event key).
    pub fn source_stats(&self, function: &str, source: &str) -> Option<SourceStats> {
        self.sources
            .iter()
            .find(|s| s.function == function && s.source == source)
            .map(|s| s.counters.snapshot())
    }

    /// Prints the counters of every function that saw records.
    pub fn print_stats(&self) {
        stats::print_stats(&self.stats());
    }

    /// Stops every poller (in-flight invocations are abandoned), printing the final counters
    /// when reporting is on.
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if self.report {
            self.report = false;
            self.print_stats();
        }
    }
}

impl Drop for Esm {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn stats_of(sources: &[SourceInfo]) -> BTreeMap<String, SourceStats> {
    stats::sum_by_function(sources.iter().map(|s| (s.function.as_str(), &*s.counters)))
}

/// Starts a poller for every enabled event source of every function in `template` that has a
/// handler (`handlers` by function logical id, overridden by `options.handler_overrides`).
/// The template must be provisioned (stream ARNs and queue URLs known). Each function's
/// pollers call AWS with `sdk_of(function logical id)`, as Lambda's pollers use the
/// function's role; what Lambda's service reports itself (a stream mapping's `IteratorAge`
/// metric) goes through `service`.
pub fn start(
    sdk_of: &dyn Fn(&str) -> SdkConfig,
    service: &SdkConfig,
    template: &Template,
    handlers: &HashMap<String, EventHandler>,
    options: &EsmOptions,
) -> Result<Esm> {
    if !options.enabled {
        return Ok(Esm::none());
    }
    let tuning = options.tuning();
    let queues = template.queues();
    let mut esm = Esm::none();
    for function in template.functions() {
        if function.event_sources.is_empty() || !options.polls(&function.logical_id) {
            continue;
        }
        let sdk = sdk_of(&function.logical_id);
        let Some(handler) = options
            .handler_overrides
            .get(&function.logical_id)
            .cloned()
            .or_else(|| {
                options
                    .handler_factories
                    .get(&function.logical_id)
                    .map(|factory| factory(&sdk))
            })
            .or_else(|| handlers.get(&function.logical_id).cloned())
        else {
            tracing::warn!(function = %function.logical_id, binary = %function.binary, "no local handler; its event sources are not polled");
            continue;
        };
        let timeout = Duration::from_secs(function.timeout.max(1));
        let function_arn = template
            .arn(&function.logical_id)
            .unwrap_or_else(|| function.logical_id.clone());
        for source in &function.event_sources {
            if !source.enabled() {
                continue;
            }
            let counters = Arc::new(Counters::default());
            let target = Target {
                function: function.logical_id.clone(),
                handler: handler.clone(),
                timeout,
                counters: counters.clone(),
                tuning,
            };
            let task = match source {
                EventSourceSpec::DynamoDb(spec) => {
                    let Some(stream_arn) =
                        template.resolve(&json!({"Fn::GetAtt": [spec.table, "StreamArn"]}))
                    else {
                        tracing::warn!(function = %function.logical_id, table = %spec.table, "table has no stream; event source skipped");
                        continue;
                    };
                    let on_failure = spec.on_failure.as_ref().and_then(|d| match d.kind.as_str() {
                        "SQS" => Some(stream::Destination::Sqs {
                            url: template.queue_url(&d.target),
                        }),
                        "SNS" => template
                            .resolve(&json!({"Ref": d.target}))
                            .map(|arn| stream::Destination::Sns { arn }),
                        other => {
                            tracing::warn!(kind = %other, "on-failure destination type not emulated");
                            None
                        }
                    });
                    tokio::spawn(stream::run(
                        sdk.clone(),
                        service.clone(),
                        stream::StreamSource {
                            function_arn: function_arn.clone(),
                            stream_arn,
                            report_failures: source.reports_batch_item_failures(),
                            spec: spec.clone(),
                            on_failure,
                            target,
                        },
                    ))
                }
                EventSourceSpec::Sqs(spec) => {
                    let queue_arn = template
                        .resolve(&json!({"Fn::GetAtt": [spec.queue, "Arn"]}))
                        .unwrap_or_default();
                    let fifo = queues.iter().any(|q| q.logical_id == spec.queue && q.fifo);
                    tokio::spawn(sqs::run(
                        sdk.clone(),
                        sqs::SqsSource {
                            queue_url: template.queue_url(&spec.queue),
                            queue_arn,
                            fifo,
                            report_failures: source.reports_batch_item_failures(),
                            spec: spec.clone(),
                            region: template.region.clone(),
                            target,
                        },
                    ))
                }
                EventSourceSpec::Schedule(spec) => {
                    let Some(period) = options.schedule_period.or(spec.period) else {
                        tracing::warn!(function = %function.logical_id, event = %spec.name, expression = %spec.expression, "schedule not run locally");
                        continue;
                    };
                    tokio::spawn(schedule::run(schedule::ScheduleSource {
                        rule_arn: schedule::rule_arn(
                            &template.region,
                            &template.stack,
                            &function.logical_id,
                            &spec.name,
                        ),
                        region: template.region.clone(),
                        period,
                        input: spec.input.clone(),
                        target,
                    }))
                }
            };
            esm.tasks.push(task);
            esm.sources.push(SourceInfo {
                function: function.logical_id.clone(),
                source: source.name().to_owned(),
                kind: match source {
                    EventSourceSpec::DynamoDb(_) => "DynamoDB",
                    EventSourceSpec::Sqs(_) => "SQS",
                    EventSourceSpec::Schedule(_) => "Schedule",
                },
                counters,
            });
        }
    }
    if let Some(every) = options.report_every
        && !esm.sources.is_empty()
    {
        esm.report = true;
        let sources = esm.sources.clone();
        esm.tasks.push(tokio::spawn(async move {
            let mut last = stats_of(&sources);
            loop {
                tokio::time::sleep(every).await;
                let now = stats_of(&sources);
                if now != last {
                    stats::print_stats(&now);
                    last = now;
                }
            }
        }));
    }
    Ok(esm)
}
