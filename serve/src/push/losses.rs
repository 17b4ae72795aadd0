//! Warnings about records lost while a collector is connected, rate-limited.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Losses go unwarned for at most this long while they go on, and are warned about no
/// more often.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(5);

/// How often a write that waits looks at what the output has lost meanwhile.
pub(super) const LOOK_EVERY: Duration = Duration::from_millis(250);

/// What was last warned about.
#[derive(Debug, Default)]
pub(super) struct LossWarnings {
    /// The lost count told last (by a warning or by the connect message).
    told: u64,
    /// When the last warning went out.
    at: Option<Instant>,
}

impl LossWarnings {
    /// The connect message told the losses up to `lost`.
    pub(super) fn told(&mut self, lost: u64) {
        self.told = lost;
    }

    /// Warns if records were lost since the last warning and none went out for
    /// [`WARN_EVERY`].
    pub(super) fn warn_if_due(&mut self, collector: SocketAddr, lost: u64, now: Instant) {
        if lost <= self.told || self.at.is_some_and(|at| now < at + WARN_EVERY) {
            return;
        }
        tracing::warn!(
            %collector,
            lost_since = lost - self.told,
            lost_in_all = lost,
            "records lost while connected: the PCAP-over-IP collector reads slower than the datapath logs"
        );
        self.told = lost;
        self.at = Some(now);
    }
}
