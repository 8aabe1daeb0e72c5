//! The event-source-mapping emulator: polls the DynamoDB streams and SQS queues the template
//! maps to functions and invokes the functions' handlers with the JSON payloads Lambda would
//! send, honouring batch size, filter criteria, partial batch failures
//! (`ReportBatchItemFailures`), retries, bisection, record age and on-failure destinations.
//!
//! A handler is an [`EventHandler`]: Lambda event JSON in, the function's JSON response out,
//! `Err` when the function failed as a whole (error, panic or timeout). Pollers never stop on
//! a handler error; they stop when the [`Esm`] is dropped.

pub mod filter;
pub mod sqs;
pub mod stream;

use crate::template::{EventSourceSpec, Template};
use anyhow::Result;
use aws_config::SdkConfig;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// A function as an event source mapping invokes it: the Lambda event JSON in, the
/// function's JSON response out; `Err` means the function failed as a whole.
pub type EventHandler =
    Arc<dyn Fn(Value) -> Pin<Box<dyn Future<Output = Result<Value, String>> + Send>> + Send + Sync>;

/// Wraps an async closure as an [`EventHandler`].
pub fn event_handler<F, Fut>(f: F) -> EventHandler
where
    F: Fn(Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, String>> + Send + 'static,
{
    Arc::new(move |event| Box::pin(f(event)))
}

/// How the emulator runs.
#[derive(Clone)]
pub struct EsmOptions {
    /// Run the pollers at all (default true).
    pub enabled: bool,
    /// Only the event sources of these functions (logical ids); `None`: all of them.
    pub functions: Option<BTreeSet<String>>,
    /// Handlers to use instead of the functions' own, by function logical id (tests inject
    /// failing handlers this way).
    pub handler_overrides: HashMap<String, EventHandler>,
    /// Visibility timeout requested on every SQS receive instead of the queue's (tests use a
    /// short one so failed messages come back quickly).
    pub sqs_visibility_timeout: Option<Duration>,
    /// Pause of an idle poller between polls.
    pub idle_poll: Duration,
    /// First pause before retrying a failed stream batch; doubles per attempt (capped at 2 s).
    pub retry_backoff: Duration,
    /// Print the counters this often when they changed (and once on stop); `None`: never.
    pub report_every: Option<Duration>,
}

impl Default for EsmOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            functions: None,
            handler_overrides: HashMap::new(),
            sqs_visibility_timeout: None,
            idle_poll: Duration::from_millis(150),
            retry_backoff: Duration::from_millis(100),
            report_every: Some(Duration::from_secs(5)),
        }
    }
}

impl fmt::Debug for EsmOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EsmOptions")
            .field("enabled", &self.enabled)
            .field("functions", &self.functions)
            .field(
                "handler_overrides",
                &self.handler_overrides.keys().collect::<Vec<_>>(),
            )
            .field("sqs_visibility_timeout", &self.sqs_visibility_timeout)
            .field("idle_poll", &self.idle_poll)
            .field("retry_backoff", &self.retry_backoff)
            .field("report_every", &self.report_every)
            .finish()
    }
}

/// Live counters of one event source.
#[derive(Debug, Default)]
pub struct Counters {
    records_in: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    filtered: AtomicU64,
    invocations: AtomicU64,
    function_errors: AtomicU64,
    retried: AtomicU64,
    sent_to_on_failure: AtomicU64,
}

impl Counters {
    fn add(field: &AtomicU64, n: usize) {
        field.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A consistent-enough copy.
    pub fn snapshot(&self) -> SourceStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SourceStats {
            records_in: get(&self.records_in),
            ok: get(&self.ok),
            failed: get(&self.failed),
            filtered: get(&self.filtered),
            invocations: get(&self.invocations),
            function_errors: get(&self.function_errors),
            retried: get(&self.retried),
            sent_to_on_failure: get(&self.sent_to_on_failure),
        }
    }
}

/// Counters of an event source, or summed over a function's sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// Records read from the source that passed the filter (SQS: every receive, so a
    /// redelivered message counts again).
    pub records_in: u64,
    /// Records the function processed successfully (stream: checkpointed; SQS: deleted).
    pub ok: u64,
    /// Records that failed: stream records given up on (retries or age exhausted, described
    /// on the on-failure destination); SQS messages left for redelivery, per delivery.
    pub failed: u64,
    /// Records the filter criteria dropped (SQS: deleted, as Lambda does).
    pub filtered: u64,
    /// Invocations of the function.
    pub invocations: u64,
    /// Invocations that failed as a whole (error, panic, timeout).
    pub function_errors: u64,
    /// Stream records invoked again after a failure.
    pub retried: u64,
    /// Stream records described on the on-failure destination.
    pub sent_to_on_failure: u64,
}

impl SourceStats {
    fn plus(self, o: Self) -> Self {
        Self {
            records_in: self.records_in + o.records_in,
            ok: self.ok + o.ok,
            failed: self.failed + o.failed,
            filtered: self.filtered + o.filtered,
            invocations: self.invocations + o.invocations,
            function_errors: self.function_errors + o.function_errors,
            retried: self.retried + o.retried,
            sent_to_on_failure: self.sent_to_on_failure + o.sent_to_on_failure,
        }
    }
}

impl fmt::Display for SourceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in {}, ok {}, failed {} (invocations {}, function errors {}, filtered {}, retried {}, to on-failure {})",
            self.records_in,
            self.ok,
            self.failed,
            self.invocations,
            self.function_errors,
            self.filtered,
            self.retried,
            self.sent_to_on_failure
        )
    }
}

/// Pauses and limits shared by the pollers.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Pause of an idle poller.
    pub idle_poll: Duration,
    /// First retry pause of a failed stream batch.
    pub retry_backoff: Duration,
    /// Visibility timeout requested on SQS receives.
    pub sqs_visibility_timeout: Option<Duration>,
}

impl Tuning {
    fn retry_pause(&self, attempt: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(2))
    }
}

/// One running event source.
#[derive(Debug, Clone)]
pub struct SourceInfo {
    /// Function logical id.
    pub function: String,
    /// The event's key under the function's `Events`.
    pub source: String,
    /// `DynamoDB` or `SQS`.
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
        print_stats(&self.stats());
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
    let mut out: BTreeMap<String, SourceStats> = BTreeMap::new();
    for s in sources {
        let entry = out.entry(s.function.clone()).or_default();
        *entry = entry.plus(s.counters.snapshot());
    }
    out
}

fn print_stats(stats: &BTreeMap<String, SourceStats>) {
    for (function, s) in stats {
        if s.records_in > 0 || s.filtered > 0 {
            println!("[event sources] {function}: {s}");
        }
    }
}

/// Starts a poller for every enabled event source of every function in `template` that has a
/// handler (`handlers` by function logical id, overridden by `options.handler_overrides`).
/// The template must be provisioned (stream ARNs and queue URLs known).
pub fn start(
    sdk: &SdkConfig,
    template: &Template,
    handlers: &HashMap<String, EventHandler>,
    options: &EsmOptions,
) -> Result<Esm> {
    if !options.enabled {
        return Ok(Esm::none());
    }
    let tuning = Tuning {
        idle_poll: options.idle_poll,
        retry_backoff: options.retry_backoff,
        sqs_visibility_timeout: options.sqs_visibility_timeout,
    };
    let queues = template.queues();
    let mut esm = Esm::none();
    for function in template.functions() {
        if function.event_sources.is_empty()
            || options
                .functions
                .as_ref()
                .is_some_and(|only| !only.contains(&function.logical_id))
        {
            continue;
        }
        let Some(handler) = options
            .handler_overrides
            .get(&function.logical_id)
            .or_else(|| handlers.get(&function.logical_id))
            .cloned()
        else {
            tracing::warn!(function = %function.logical_id, binary = %function.binary, "no local handler; its event sources are not polled");
            continue;
        };
        let timeout = Duration::from_secs(function.timeout.max(1));
        let function_arn = template
            .arn(&function.logical_id)
            .unwrap_or_else(|| function.logical_id.clone());
        for source in &function.event_sources {
            let enabled = match source {
                EventSourceSpec::DynamoDb(s) => s.enabled,
                EventSourceSpec::Sqs(s) => s.enabled,
            };
            if !enabled {
                continue;
            }
            let counters = Arc::new(Counters::default());
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
                        stream::StreamSource {
                            function: function.logical_id.clone(),
                            function_arn: function_arn.clone(),
                            stream_arn,
                            report_failures: source.reports_batch_item_failures(),
                            spec: spec.clone(),
                            on_failure,
                            handler: handler.clone(),
                            timeout,
                            counters: counters.clone(),
                            tuning,
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
                            function: function.logical_id.clone(),
                            queue_url: template.queue_url(&spec.queue),
                            queue_arn,
                            fifo,
                            report_failures: source.reports_batch_item_failures(),
                            spec: spec.clone(),
                            region: template.region.clone(),
                            handler: handler.clone(),
                            timeout,
                            counters: counters.clone(),
                            tuning,
                        },
                    ))
                }
            };
            esm.tasks.push(task);
            esm.sources.push(SourceInfo {
                function: function.logical_id.clone(),
                source: source.name().to_owned(),
                kind: match source {
                    EventSourceSpec::DynamoDb(_) => "DynamoDB",
                    EventSourceSpec::Sqs(_) => "SQS",
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
                    print_stats(&now);
                    last = now;
                }
            }
        }));
    }
    Ok(esm)
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every record succeeded.
    Success,
    /// `batchItemFailures` named these records (indexes into the batch, ascending).
    Partial(Vec<usize>),
    /// The function failed as a whole (or answered with an unusable failure list).
    Error(String),
}

/// Runs `handler` once on `event` as Lambda would: in its own task (a panic is a function
/// error) and within the function's timeout.
pub(crate) async fn invoke(
    handler: &EventHandler,
    event: Value,
    timeout: Duration,
) -> Result<Value, String> {
    let mut task = tokio::spawn(handler(event));
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(format!("the function crashed: {e}")),
        Err(_) => {
            task.abort();
            Err(format!(
                "Task timed out after {:.2} seconds",
                timeout.as_secs_f64()
            ))
        }
    }
}

/// Reads a function response against the batch's item identifiers, as Lambda does: no
/// `batchItemFailures` (or an empty list) is success; an entry without a known, non-empty
/// `itemIdentifier` makes the whole batch a failure. Without `ReportBatchItemFailures` the
/// response is ignored.
pub(crate) fn outcome(
    result: Result<Value, String>,
    ids: &[&str],
    report_failures: bool,
) -> Outcome {
    let response = match result {
        Err(e) => return Outcome::Error(e),
        Ok(r) => r,
    };
    if !report_failures {
        return Outcome::Success;
    }
    let failures = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return Outcome::Success,
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Outcome::Error(format!("batchItemFailures is not a list: {other}"));
        }
    };
    let mut failed = Vec::with_capacity(failures.len());
    for f in failures {
        let id = f
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .unwrap_or("");
        match ids.iter().position(|i| !id.is_empty() && *i == id) {
            Some(index) => failed.push(index),
            None => {
                return Outcome::Error(format!("batchItemFailures names an unknown item: {f}"));
            }
        }
    }
    if failed.is_empty() {
        return Outcome::Success;
    }
    failed.sort_unstable();
    failed.dedup();
    Outcome::Partial(failed)
}

/// Logs a recurring warning at most every few seconds.
#[derive(Debug)]
pub(crate) struct Throttle {
    last: Option<Instant>,
}

impl Throttle {
    pub(crate) fn new() -> Self {
        Self { last: None }
    }

    pub(crate) fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < Duration::from_secs(10))
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_responses_like_lambda() {
        let ids = ["1", "2", "3"];
        assert_eq!(outcome(Ok(json!({})), &ids, true), Outcome::Success);
        assert_eq!(outcome(Ok(Value::Null), &ids, true), Outcome::Success);
        assert_eq!(
            outcome(Ok(json!({"batchItemFailures": []})), &ids, true),
            Outcome::Success
        );
        assert_eq!(
            outcome(
                Ok(
                    json!({"batchItemFailures": [{"itemIdentifier": "3"}, {"itemIdentifier": "2"}]})
                ),
                &ids,
                true
            ),
            Outcome::Partial(vec![1, 2])
        );
        // Ignored without ReportBatchItemFailures.
        assert_eq!(
            outcome(
                Ok(json!({"batchItemFailures": [{"itemIdentifier": "3"}]})),
                &ids,
                false
            ),
            Outcome::Success
        );
        for bad in [
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"id": "1"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": "9"}]}),
            json!({"batchItemFailures": "1"}),
        ] {
            assert!(
                matches!(outcome(Ok(bad.clone()), &ids, true), Outcome::Error(_)),
                "{bad}"
            );
        }
        assert!(matches!(
            outcome(Err("boom".into()), &ids, true),
            Outcome::Error(e) if e == "boom"
        ));
    }

    #[tokio::test]
    async fn invoke_turns_panics_and_timeouts_into_function_errors() {
        let ok = event_handler(|e| async move { Ok(json!({"echo": e})) });
        assert_eq!(
            invoke(&ok, json!(1), Duration::from_secs(1)).await,
            Ok(json!({"echo": 1}))
        );
        let panics = event_handler(|_| async move {
            if true {
                panic!("boom");
            }
            Ok(Value::Null)
        });
        assert!(
            invoke(&panics, json!(1), Duration::from_secs(1))
                .await
                .is_err()
        );
        let slow = event_handler(|_| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Value::Null)
        });
        let err = invoke(&slow, json!(1), Duration::from_millis(20))
            .await
            .expect_err("times out");
        assert!(err.contains("timed out"), "{err}");
    }

    #[test]
    fn retry_pauses_grow_and_are_capped() {
        let t = Tuning {
            idle_poll: Duration::from_millis(1),
            retry_backoff: Duration::from_millis(100),
            sqs_visibility_timeout: None,
        };
        assert_eq!(t.retry_pause(1), Duration::from_millis(100));
        assert_eq!(t.retry_pause(2), Duration::from_millis(200));
        assert_eq!(t.retry_pause(3), Duration::from_millis(400));
        assert_eq!(t.retry_pause(30), Duration::from_secs(2));
    }
}
