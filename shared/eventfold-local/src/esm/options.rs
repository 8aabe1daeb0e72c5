//! How the pollers run: which functions, handler overrides, pauses, reporting.

use super::EventHandler;
use aws_config::SdkConfig;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Lambda's base rate of reads of a stream shard: four a second.
pub const SHARD_POLL: Duration = Duration::from_millis(250);

/// Builds a handler from the function's own SDK configuration: its identity, checked by IAM
/// when the stack enforces it.
pub type HandlerFactory = Arc<dyn Fn(&SdkConfig) -> EventHandler + Send + Sync>;

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
    /// Handlers built from the function's own SDK configuration instead of its own handler,
    /// by function logical id: a test's variant of a function that still calls AWS as the
    /// function (so IAM checks it). An override of the same function wins.
    pub handler_factories: HashMap<String, HandlerFactory>,
    /// Visibility timeout requested on every SQS receive instead of the queue's (tests use a
    /// short one so failed messages come back quickly).
    pub sqs_visibility_timeout: Option<Duration>,
    /// Pause of an idle queue poller between polls.
    pub idle_poll: Duration,
    /// Least time between two reads (`GetRecords`) of one stream shard. Lambda reads a
    /// shard at a base rate of four times a second and invokes as soon as a read found
    /// records, so what a shard gains between two reads goes in one batch.
    pub shard_poll: Duration,
    /// First pause before retrying a failed stream batch; doubles per attempt (capped at 2 s).
    pub retry_backoff: Duration,
    /// Print the counters this often when they changed (and once on stop); `None`: never.
    pub report_every: Option<Duration>,
    /// Period of every `Schedule` event instead of its `rate(...)` (tests run a
    /// `rate(1 minute)` in milliseconds); `None`: the template's.
    pub schedule_period: Option<Duration>,
}

impl Default for EsmOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            functions: None,
            handler_overrides: HashMap::new(),
            handler_factories: HashMap::new(),
            sqs_visibility_timeout: None,
            idle_poll: Duration::from_millis(150),
            shard_poll: SHARD_POLL,
            retry_backoff: Duration::from_millis(100),
            report_every: Some(Duration::from_secs(5)),
            schedule_period: None,
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
            .field(
                "handler_factories",
                &self.handler_factories.keys().collect::<Vec<_>>(),
            )
            .field("sqs_visibility_timeout", &self.sqs_visibility_timeout)
            .field("idle_poll", &self.idle_poll)
            .field("shard_poll", &self.shard_poll)
            .field("retry_backoff", &self.retry_backoff)
            .field("report_every", &self.report_every)
            .field("schedule_period", &self.schedule_period)
            .finish()
    }
}

impl EsmOptions {
    /// Whether the pollers need `function`'s own handler: they run, poll its sources, and no
    /// override replaces it.
    pub fn needs_handler(&self, function: &str) -> bool {
        self.enabled
            && !self.handler_overrides.contains_key(function)
            && !self.handler_factories.contains_key(function)
            && self.polls(function)
    }

    /// Whether `function`'s event sources are polled (given a handler).
    pub fn polls(&self, function: &str) -> bool {
        self.functions
            .as_ref()
            .is_none_or(|only| only.contains(function))
    }

    pub(crate) fn tuning(&self) -> Tuning {
        Tuning {
            idle_poll: self.idle_poll,
            shard_poll: self.shard_poll,
            retry_backoff: self.retry_backoff,
            sqs_visibility_timeout: self.sqs_visibility_timeout,
        }
    }
}

/// Pauses and limits shared by the pollers.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Pause of an idle queue poller.
    pub idle_poll: Duration,
    /// Least time between two reads of one stream shard.
    pub shard_poll: Duration,
    /// First retry pause of a failed stream batch.
    pub retry_backoff: Duration,
    /// Visibility timeout requested on SQS receives.
    pub sqs_visibility_timeout: Option<Duration>,
}

impl Tuning {
    pub(crate) fn retry_pause(&self, attempt: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(10))
            .min(Duration::from_secs(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_pauses_grow_and_are_capped() {
        let t = Tuning {
            idle_poll: Duration::from_millis(1),
            shard_poll: Duration::from_millis(1),
            retry_backoff: Duration::from_millis(100),
            sqs_visibility_timeout: None,
        };
        assert_eq!(t.retry_pause(1), Duration::from_millis(100));
        assert_eq!(t.retry_pause(2), Duration::from_millis(200));
        assert_eq!(t.retry_pause(3), Duration::from_millis(400));
        assert_eq!(t.retry_pause(30), Duration::from_secs(2));
    }

    #[test]
    fn overridden_and_filtered_functions_need_no_handler_of_their_own() {
        let mut o = EsmOptions {
            functions: Some(["A".to_owned(), "B".to_owned()].into()),
            ..EsmOptions::default()
        };
        o.handler_overrides.insert(
            "B".to_owned(),
            super::super::event_handler(|e| async move { Ok::<_, super::super::HandlerError>(e) }),
        );
        assert!(o.needs_handler("A"));
        assert!(!o.needs_handler("B") && o.polls("B"));
        assert!(!o.needs_handler("C") && !o.polls("C"));
        o.enabled = false;
        assert!(!o.needs_handler("A"));
    }
}
