//! The pause between retries of a conditional append that lost a race.

use std::time::Duration;

/// Shortest and longest pause between conflict retries.
const PAUSE_FLOOR: Duration = Duration::from_millis(5);
const PAUSE_CEILING: Duration = Duration::from_millis(250);
/// A bound on attempts even within a retry budget (with no backoff they would spin).
pub(crate) const MAX_BUDGETED_ATTEMPTS: u32 = 10_000;

/// The next pause after `previous` ("decorrelated jitter": random between the floor and three
/// times the last pause, capped), which spreads contending writers apart better than a fixed
/// exponential schedule. Public so that every writer that retries a conditional append
/// (the executor, streaming's publish) spreads out the same way.
pub fn decorrelated_jitter(previous: Duration) -> Duration {
    let floor = PAUSE_FLOOR.as_micros() as u64;
    let upper = (previous.as_micros() as u64).saturating_mul(3).max(floor);
    let pause = Duration::from_micros(rand::random_range(floor..=upper));
    pause.min(PAUSE_CEILING)
}
