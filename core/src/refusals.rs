//! Counting refusals so that a flood of them (token guesses, other users knocking on a
//! socket) leaves a few log lines with counts instead of one line each. Sans-IO: the
//! caller passes its clock's `now`.

use std::time::{Duration, Instant};

/// How long a refusal log stays quiet after a line, by default.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides which refusals get a log line: the first one, then at most one per interval,
/// which tells how many were refused since the previous line.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use pcapcast_core::refusals::RefusalLog;
///
/// let mut log = RefusalLog::new(Duration::from_secs(10));
/// let start = Instant::now();
/// assert_eq!(log.refused(start), Some(1));
/// assert_eq!(log.refused(start + Duration::from_secs(1)), None);
/// assert_eq!(log.refused(start + Duration::from_secs(2)), None);
/// // Three refused since the last line, this one included.
/// assert_eq!(log.refused(start + Duration::from_secs(11)), Some(3));
/// ```
#[derive(Clone, Debug)]
pub struct RefusalLog {
    interval: Duration,
    last_line: Option<Instant>,
    unlogged: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog::new(REFUSAL_LOG_INTERVAL)
    }
}

impl RefusalLog {
    /// A log that writes at most one line per `interval`.
    pub fn new(interval: Duration) -> RefusalLog {
        RefusalLog {
            interval,
            last_line: None,
            unlogged: 0,
        }
    }

    /// Counts a refusal at `now`. Returns `Some(count)` when a line is due, `count`
    /// being the refusals since the previous line, this one included.
    pub fn refused(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_refusals_in_a_burst_make_one_line() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        let lines: Vec<u64> = (0..1000)
            .filter_map(|i| log.refused(start + Duration::from_millis(i)))
            .collect();
        assert_eq!(lines, [1]);
        assert_eq!(log.refused(start + REFUSAL_LOG_INTERVAL), Some(1000));
    }

    #[test]
    fn a_clock_that_goes_back_does_not_log_more() {
        let mut log = RefusalLog::default();
        let start = Instant::now() + Duration::from_secs(60);
        assert_eq!(log.refused(start), Some(1));
        assert_eq!(log.refused(start - Duration::from_secs(30)), None);
    }
}
