//! Counters per event source, summed per function, and their printing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one event source.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) records_in: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) invocations: AtomicU64,
    pub(crate) function_errors: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) sent_to_on_failure: AtomicU64,
}

impl Counters {
    pub(crate) fn add(field: &AtomicU64, n: usize) {
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
    /// redelivered message counts again; schedules: every tick).
    pub records_in: u64,
    /// Records the function processed successfully (stream: checkpointed; SQS: deleted;
    /// schedules: ticks whose invocation succeeded, after retries or not).
    pub ok: u64,
    /// Records that failed: stream records given up on (retries or age exhausted, described
    /// on the on-failure destination); SQS messages left for redelivery, per delivery;
    /// schedule ticks given up on after the retries.
    pub failed: u64,
    /// Records the filter criteria dropped (SQS: deleted, as Lambda does).
    pub filtered: u64,
    /// Invocations of the function.
    pub invocations: u64,
    /// Invocations that failed as a whole (error, panic, timeout).
    pub function_errors: u64,
    /// Stream records (or schedule ticks) invoked again after a failure.
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

/// Counters per function (by name), summed over its event sources.
pub(crate) fn sum_by_function<'a>(
    sources: impl IntoIterator<Item = (&'a str, &'a Counters)>,
) -> BTreeMap<String, SourceStats> {
    let mut out: BTreeMap<String, SourceStats> = BTreeMap::new();
    for (function, counters) in sources {
        let entry = out.entry(function.to_owned()).or_default();
        *entry = entry.plus(counters.snapshot());
    }
    out
}

pub(crate) fn print_stats(stats: &BTreeMap<String, SourceStats>) {
    for (function, s) in stats {
        if s.records_in > 0 || s.filtered > 0 {
            println!("[event sources] {function}: {s}");
        }
    }
}
