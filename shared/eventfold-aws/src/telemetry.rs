//! CloudWatch metrics in the Embedded Metric Format (EMF), through the `metrics` facade.
//!
//! Each function's `main.rs` calls [`init_metrics`] once at cold start: the
//! `metrics_cloudwatch_embedded` recorder is installed with the one namespace [`NAMESPACE`]
//! and the dimension `function`, and a cold start is counted. [`Telemetry::invocation`] wraps
//! every invocation: it records its duration and flushes what the invocation recorded as EMF
//! lines on stdout, which CloudWatch Logs turns into metrics (no API call, no agent).
//!
//! The metric names and their few labels (each label becomes a dimension) live here, so that
//! every function reports the same way: `consumer` (projector, saga), `command_type` (only
//! types the registry parsed, never raw input) and `outcome`; the executor's snapshot sizes
//! ([`eventfold::executor::SNAPSHOT_BYTES`]) carry `category`, the aggregate's. The streaming API's metrics
//! carry no label: topics and groups are caller input, never dimensions. Without [`init_metrics`] (unit
//! tests, the in-process local stack) the facade's calls do nothing.

use eventfold::EventEnvelope;
use metrics::Unit;
use std::future::Future;
use std::io::Write;
use std::time::Instant;

/// The CloudWatch namespace of every Eventfold metric.
pub const NAMESPACE: &str = "Eventfold";
/// The dimension naming the function (its binary name), on every metric.
pub const FUNCTION_DIMENSION: &str = "function";

/// Invocations that started a new execution environment (counted once per process).
pub const COLD_STARTS: &str = "cold_starts";
/// Milliseconds one invocation took, from the event in to the response out.
pub const PROCESSING_DURATION: &str = "processing_duration";
/// Events the stream publisher handed to SNS.
pub const EVENTS_PUBLISHED: &str = "events_published";
/// Notifications a consumer applied (label `consumer`); duplicates are not counted.
pub const EVENTS_CONSUMED: &str = "events_consumed";
/// Milliseconds from an applied event's `occurred_at` to its application (label `consumer`).
pub const CONSUMER_LAG: &str = "consumer_lag";
/// Versions a consumer had not seen when a notification made it catch up (label `consumer`;
/// recorded only when it was behind).
pub const VERSIONS_BEHIND: &str = "versions_behind";
/// Commands handled by the command API (labels `command_type`, `outcome`).
pub const COMMANDS: &str = "commands";
/// Lost optimistic-concurrency races (a conditional append that found a newer version).
pub const CONFLICTS: &str = "conflicts";
/// Attempts after the first that a command needed to win its race.
pub const RETRIES: &str = "retries";
/// Messages that reached a dead-letter destination (label `source`).
pub const DEAD_LETTERS: &str = "dead_letters";
/// Records the streaming API appended to topic partitions.
pub const RECORDS_PUBLISHED: &str = "records_published";
/// Consume calls the streaming API answered.
pub const CONSUMES: &str = "consumes";
/// Records the streaming API's consume calls returned.
pub const RECORDS_CONSUMED: &str = "records_consumed";

/// The `consumer` label of the projector.
pub const PROJECTOR: &str = "projector";
/// The `consumer` label of the saga.
pub const SAGA: &str = "saga";

/// Every metric's unit, for the EMF `Unit` of its definition.
fn describe() {
    for name in [
        COLD_STARTS,
        EVENTS_PUBLISHED,
        EVENTS_CONSUMED,
        VERSIONS_BEHIND,
        COMMANDS,
        CONFLICTS,
        RETRIES,
        DEAD_LETTERS,
        RECORDS_PUBLISHED,
        CONSUMES,
        RECORDS_CONSUMED,
    ] {
        metrics::describe_counter!(name, Unit::Count, "");
    }
    for name in [PROCESSING_DURATION, CONSUMER_LAG] {
        metrics::describe_histogram!(name, Unit::Milliseconds, "");
    }
    // Recorded by the executor on each snapshot it takes (label `category`).
    metrics::describe_histogram!(eventfold::executor::SNAPSHOT_BYTES, Unit::Bytes, "");
}

/// The metrics of one function process: flushes per invocation.
#[derive(Clone, Copy)]
pub struct Telemetry {
    collector: Option<&'static metrics_cloudwatch_embedded::Collector>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("recording", &self.collector.is_some())
            .finish()
    }
}

/// Installs the EMF recorder for `function` (its binary name, the `function` dimension) and
/// counts the cold start. A second call in one process (tests) keeps the first recorder; the
/// [`Telemetry`] it returns then flushes nothing.
pub fn init_metrics(function: &'static str) -> Telemetry {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension(FUNCTION_DIMENSION, function)
        .init();
    let collector = match collector {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    };
    describe();
    metrics::counter!(COLD_STARTS).increment(1);
    Telemetry { collector }
}

impl Telemetry {
    /// Telemetry that records and flushes nothing.
    pub fn disabled() -> Self {
        Self { collector: None }
    }

    /// Runs one invocation: records its [`PROCESSING_DURATION`] and flushes every metric it
    /// recorded (the cold start's too, on the first).
    pub async fn invocation<F: Future>(&self, invocation: F) -> F::Output {
        let started = Instant::now();
        let out = invocation.await;
        metrics::histogram!(PROCESSING_DURATION).record(started.elapsed().as_secs_f64() * 1e3);
        self.flush();
        out
    }

    /// Writes the metrics recorded since the last flush as EMF lines on stdout.
    pub fn flush(&self) {
        let Some(collector) = self.collector else {
            return;
        };
        // One write of whole lines: a log line of another thread must not land inside one.
        let mut lines = Vec::new();
        if let Err(e) = collector.flush(&mut lines) {
            tracing::warn!(error = %e, "metrics not serialized");
            return;
        }
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout.write_all(&lines).and_then(|()| stdout.flush()) {
            tracing::warn!(error = %e, "metrics not written");
        }
    }
}

/// Counts `n` events handed to SNS.
pub fn events_published(n: usize) {
    if n > 0 {
        metrics::counter!(EVENTS_PUBLISHED).increment(n as u64);
    }
}

/// Records a notification `consumer` applied: one [`EVENTS_CONSUMED`], the [`CONSUMER_LAG`] of
/// `event` (when the notification carried it) and, when the consumer was behind, how far.
pub fn event_consumed(consumer: &'static str, event: Option<&EventEnvelope>, behind: u64) {
    metrics::counter!(EVENTS_CONSUMED, "consumer" => consumer).increment(1);
    if let Some(e) = event {
        let lag = (chrono::Utc::now() - e.occurred_at)
            .num_milliseconds()
            .max(0);
        metrics::histogram!(CONSUMER_LAG, "consumer" => consumer).record(lag as f64);
    }
    if behind > 0 {
        metrics::counter!(VERSIONS_BEHIND, "consumer" => consumer).increment(behind);
    }
}

/// Records a command of `command_type` (a type the registry knows, or `-`) that ended with
/// `outcome`, after `retries` lost races it recovered from; `conflicted` when it ended in a
/// lost race (409).
pub fn command_handled(command_type: &str, outcome: &'static str, retries: u32, conflicted: bool) {
    metrics::counter!(COMMANDS, "command_type" => command_type.to_owned(), "outcome" => outcome)
        .increment(1);
    let conflicts = u64::from(retries) + u64::from(conflicted);
    if conflicts > 0 {
        metrics::counter!(CONFLICTS).increment(conflicts);
    }
    if retries > 0 {
        metrics::counter!(RETRIES).increment(u64::from(retries));
    }
}

/// Counts `n` messages of `source` (a queue's or stream's short name) that reached a
/// dead-letter destination.
pub fn dead_letters(source: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(DEAD_LETTERS, "source" => source).increment(n);
    }
}

/// Counts `n` records a publish appended to topic partitions.
pub fn records_published(n: usize) {
    if n > 0 {
        metrics::counter!(RECORDS_PUBLISHED).increment(n as u64);
    }
}

/// Counts one answered consume call and the `records` it returned.
pub fn consumed(records: usize) {
    metrics::counter!(CONSUMES).increment(1);
    if records > 0 {
        metrics::counter!(RECORDS_CONSUMED).increment(records as u64);
    }
}

/// Records `lost` optimistic-concurrency races, `retried` of which were followed by another
/// attempt (the others ended in a conflict): each lost race is a [`CONFLICTS`], each retry a
/// [`RETRIES`], as for commands.
pub fn contention(lost: u64, retried: u64) {
    if lost > 0 {
        metrics::counter!(CONFLICTS).increment(lost);
    }
    if retried > 0 {
        metrics::counter!(RETRIES).increment(retried);
    }
}
