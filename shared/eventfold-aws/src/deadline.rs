//! When an invocation must answer: Lambda's deadline for it (the context's, in epoch
//! milliseconds) less the time kept back to write what is left (checkpoints, failure notes)
//! and answer with the batch's failures before Lambda stops the function. A consumer that
//! stops starting work by then reports what it did not do as per-item failures instead of
//! timing out, which would fail the whole batch, the done part with it.

use std::time::{Duration, Instant};

/// Time kept back from the invocation's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

/// The deadline `deadline_epoch_ms` (0 outside Lambda: none) less [`DEADLINE_MARGIN`], on
/// this process's monotonic clock.
pub fn answer_by(deadline_epoch_ms: u64) -> Option<Instant> {
    let deadline = i64::try_from(deadline_epoch_ms)
        .ok()
        .filter(|d| *d > 0)
        .and_then(chrono::DateTime::from_timestamp_millis)?;
    let left = (deadline - chrono::Utc::now()).to_std().unwrap_or_default();
    Some(Instant::now() + left.saturating_sub(DEADLINE_MARGIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_deadline_outside_lambda_and_the_margin_kept_within() {
        assert!(answer_by(0).is_none());
        let in_ten = chrono::Utc::now() + chrono::Duration::seconds(10);
        let by = answer_by(in_ten.timestamp_millis() as u64).expect("a deadline");
        let left = by - Instant::now();
        assert!(left <= Duration::from_millis(8500), "{left:?}");
        assert!(left >= Duration::from_millis(8000), "{left:?}");
        let past = chrono::Utc::now() - chrono::Duration::seconds(1);
        let by = answer_by(past.timestamp_millis() as u64).expect("a deadline");
        assert!(by <= Instant::now());
    }
}
