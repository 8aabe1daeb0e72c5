//! Rate limiting of recurring warnings (an emulator that is down would flood the log).

use std::time::{Duration, Instant};

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
    fn warns_once_per_window() {
        let mut t = Throttle::new();
        assert!(t.ready());
        assert!(!t.ready());
        t.last = Instant::now().checked_sub(Duration::from_secs(11));
        assert!(t.ready());
    }
}
