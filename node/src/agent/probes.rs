//! Counting probe results: a probe trips after `failureThreshold` failures in a row, and one
//! pass resets the count (as Kubernetes' probes do), so that one slow answer under load takes
//! nothing out of routing and replaces nothing.

/// Failures in a row of one probe.
#[derive(Debug, Clone, Copy)]
pub struct Streak {
    threshold: u32,
    failures: u32,
}

impl Streak {
    /// A streak that trips at `threshold` failures in a row (at least 1).
    pub fn new(threshold: u32) -> Self {
        Streak { threshold: threshold.max(1), failures: 0 }
    }

    /// Counts one result; true when the failures in a row reached the threshold.
    pub fn record(&mut self, passed: bool) -> bool {
        self.failures = if passed { 0 } else { self.failures.saturating_add(1) };
        self.failures >= self.threshold
    }

    /// The failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_trips_at_its_threshold_and_a_pass_resets_it() {
        let mut streak = Streak::new(3);
        assert!(!streak.record(false));
        assert!(!streak.record(false));
        assert!(!streak.record(true), "a pass resets");
        assert!(!streak.record(false));
        assert!(!streak.record(false));
        assert!(streak.record(false));
        assert_eq!(streak.failures(), 3);
        assert!(Streak::new(0).record(false), "a threshold of 0 counts as 1");
    }
}
