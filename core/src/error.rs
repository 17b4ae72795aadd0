//! The one error type of the core.

use std::fmt;

/// What went wrong, with the numbers that explain it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A snaplen outside `1..=262144`.
    SnaplenOutOfRange {
        /// The snaplen asked for.
        snaplen: u64,
    },
    /// A path that is neither a known name nor a number from 0 to 65535.
    UnknownPath {
        /// What was given.
        name: String,
    },
    /// A format other than `pcap`, `raw`, `pcapng` or `tailscale`.
    UnknownFormat {
        /// What was given.
        name: String,
    },
    /// A timestamp resolution other than `us` or `ns`.
    UnknownResolution {
        /// What was given.
        name: String,
    },
    /// The capture already has as many outputs as it allows.
    TooManyOutputs {
        /// The configured limit.
        limit: usize,
    },
    /// The capture was closed.
    Closed,
    /// The capture is switched off in this daemon
    /// ([`Capture::set_enabled`](crate::Capture::set_enabled)).
    Disabled,
    /// A capture option that could not be used.
    InvalidOption {
        /// The option's name.
        name: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A capture stream that cannot be read.
    Malformed {
        /// What is wrong with it.
        reason: String,
    },
    /// A BPF program that cannot be read or would not be safe to run.
    InvalidBpf {
        /// The instruction at fault, counted from 0 as `tcpdump -d` numbers them.
        instruction: Option<usize>,
        /// What is wrong.
        reason: String,
    },
    /// A TCP listener off loopback without a bearer token.
    TokenRequired {
        /// The address it would listen on.
        addr: std::net::SocketAddr,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SnaplenOutOfRange { snaplen } => write!(
                f,
                "snaplen {snaplen} is out of range: it must be from 1 to {}",
                crate::pcap::MAX_SNAPLEN
            ),
            Self::UnknownPath { name } => write!(
                f,
                "unknown path {name:?}: use from-local, from-peer, synth-to-local, synth-to-peer, disco or a number from 0 to 65535"
            ),
            Self::UnknownFormat { name } => {
                write!(f, "unknown format {name:?}: use pcap, raw, pcapng or tailscale")
            }
            Self::UnknownResolution { name } => {
                write!(f, "unknown timestamp resolution {name:?}: use us or ns")
            }
            Self::TooManyOutputs { limit } => {
                write!(f, "the capture already has its limit of {limit} outputs")
            }
            Self::Closed => f.write_str("the capture is closed"),
            Self::Disabled => f.write_str("capture is disabled in this daemon"),
            Self::InvalidOption { name, reason } => write!(f, "option {name:?}: {reason}"),
            Self::Malformed { reason } => write!(f, "malformed capture stream: {reason}"),
            Self::InvalidBpf {
                instruction: Some(index),
                reason,
            } => write!(f, "bad BPF program at instruction {index}: {reason}"),
            Self::InvalidBpf {
                instruction: None,
                reason,
            } => write!(f, "bad BPF program: {reason}"),
            Self::TokenRequired { addr } => write!(
                f,
                "{addr} is not a loopback address: serving a capture there needs a bearer token"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A writer failed while an output streamed into it; the output was detached.
#[derive(Debug)]
pub struct WriteError {
    /// What the output had written before the failure.
    pub stats: crate::OutputStats,
    /// The writer's error.
    pub source: std::io::Error,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the writer failed after {} records: {}",
            self.stats.records, self.source
        )
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
