//! When buffered records must reach the writer. Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

/// Decides when buffered records are due: `interval` after the first unflushed one, or
/// at once when `batch_bytes` are buffered. Driven with simulated time in tests.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use pcapcast_core::FlushSchedule;
///
/// let start = Instant::now();
/// let mut schedule = FlushSchedule::new(Duration::from_millis(100), 64 * 1024);
/// schedule.handle_buffered(start, 1500);
/// assert_eq!(schedule.poll_timeout(), Some(start + Duration::from_millis(100)));
/// assert!(!schedule.is_due(start + Duration::from_millis(99)));
/// assert!(schedule.is_due(start + Duration::from_millis(100)));
/// schedule.handle_flushed();
/// assert_eq!(schedule.poll_timeout(), None);
/// ```
#[derive(Clone, Debug)]
pub struct FlushSchedule {
    interval: Duration,
    batch_bytes: usize,
    buffered: usize,
    /// When the first unflushed bytes were buffered.
    first: Option<Instant>,
}

impl FlushSchedule {
    /// A schedule that waits at most `interval`, or until `batch_bytes` are buffered.
    pub fn new(interval: Duration, batch_bytes: usize) -> FlushSchedule {
        FlushSchedule {
            interval,
            batch_bytes,
            buffered: 0,
            first: None,
        }
    }

    /// Records that `len` more bytes (possibly 0: "some records") were buffered at `now`.
    /// The first unflushed bytes start the clock.
    pub fn handle_buffered(&mut self, now: Instant, len: usize) {
        self.buffered = self.buffered.saturating_add(len);
        self.first.get_or_insert(now);
    }

    /// Records that everything buffered reached the writer.
    pub fn handle_flushed(&mut self) {
        self.buffered = 0;
        self.first = None;
    }

    /// Whether the buffered bytes must go now.
    pub fn is_due(&self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|due| now >= due)
    }

    /// When the buffered bytes will be due, if anything is buffered; the caller arms one
    /// timer for it.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let first = self.first?;
        if self.buffered >= self.batch_bytes {
            return Some(first);
        }
        Some(first.checked_add(self.interval).unwrap_or(first))
    }

    /// Bytes buffered since the last flush.
    pub fn buffered(&self) -> usize {
        self.buffered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_follows_first_unflushed_record() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut s = FlushSchedule::new(ms(100), 1 << 16);
        assert!(!s.is_due(t0));
        s.handle_buffered(t0 + ms(10), 100);
        s.handle_buffered(t0 + ms(60), 100); // a later record does not move the deadline
        assert_eq!(s.poll_timeout(), Some(t0 + ms(110)));
        assert!(!s.is_due(t0 + ms(109)));
        assert!(s.is_due(t0 + ms(110)));
        s.handle_flushed();
        assert!(!s.is_due(t0 + ms(1000)));
        s.handle_buffered(t0 + ms(1000), 0);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(1100)));
    }

    #[test]
    fn big_batches_are_due_at_once() {
        let t0 = Instant::now();
        let mut s = FlushSchedule::new(Duration::from_secs(5), 1000);
        s.handle_buffered(t0, 999);
        assert!(!s.is_due(t0));
        s.handle_buffered(t0, 1);
        assert!(s.is_due(t0));
    }
}
