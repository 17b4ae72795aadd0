//! Packet times as the capture formats can hold them.

use std::time::{SystemTime, UNIX_EPOCH};

/// A packet time since the Unix epoch, within the range a classic pcap record holds
/// (seconds in a `u32`).
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pcapcast_core::Timestamp;
///
/// let (ts, clamped) = Timestamp::from_system_time(UNIX_EPOCH + Duration::from_nanos(1_500));
/// assert_eq!((ts.secs(), ts.nanos(), ts.micros()), (0, 1_500, 1));
/// assert!(!clamped);
///
/// // Before 1970 saturates to the epoch; the flag says it happened.
/// let (ts, clamped) = Timestamp::from_system_time(UNIX_EPOCH - Duration::from_secs(1));
/// assert_eq!(ts, Timestamp::MIN);
/// assert!(clamped);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    secs: u32,
    nanos: u32,
}

impl Timestamp {
    /// The Unix epoch.
    pub const MIN: Timestamp = Timestamp { secs: 0, nanos: 0 };
    /// The last nanosecond of `u32::MAX` seconds (February 2106).
    pub const MAX: Timestamp = Timestamp {
        secs: u32::MAX,
        nanos: 999_999_999,
    };

    /// Makes a timestamp from seconds and nanoseconds; nanoseconds past a second are
    /// carried into the seconds, saturating at [`Timestamp::MAX`].
    pub fn new(secs: u32, nanos: u32) -> Timestamp {
        let carry = nanos / 1_000_000_000;
        match secs.checked_add(carry) {
            Some(secs) => Timestamp {
                secs,
                nanos: nanos % 1_000_000_000,
            },
            None => Timestamp::MAX,
        }
    }

    /// Converts a `SystemTime`, saturating to [`Timestamp::MIN`] or [`Timestamp::MAX`];
    /// the flag is `true` when it had to.
    pub fn from_system_time(when: SystemTime) -> (Timestamp, bool) {
        match when.duration_since(UNIX_EPOCH) {
            Err(_) => (Timestamp::MIN, true),
            Ok(since) => match u32::try_from(since.as_secs()) {
                Ok(secs) => (
                    Timestamp {
                        secs,
                        nanos: since.subsec_nanos(),
                    },
                    false,
                ),
                Err(_) => (Timestamp::MAX, true),
            },
        }
    }

    /// Whole seconds since the epoch.
    pub fn secs(self) -> u32 {
        self.secs
    }

    /// Nanoseconds past [`Timestamp::secs`], below one billion.
    pub fn nanos(self) -> u32 {
        self.nanos
    }

    /// Microseconds past [`Timestamp::secs`], truncated as the Go original does.
    pub fn micros(self) -> u32 {
        self.nanos / 1_000
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> u64 {
        u64::from(self.secs) * 1_000_000_000 + u64::from(self.nanos)
    }

    /// The time `span` earlier, or [`Timestamp::MIN`] if that is before the epoch.
    pub fn saturating_sub(self, span: std::time::Duration) -> Timestamp {
        let span = u64::try_from(span.as_nanos()).unwrap_or(u64::MAX);
        let nanos = self.as_nanos().saturating_sub(span);
        // At most `self`, so the seconds fit.
        Timestamp::new(
            (nanos / 1_000_000_000) as u32,
            (nanos % 1_000_000_000) as u32,
        )
    }
}
