//! Pushing a capture to a PCAP-over-IP collector: the daemon connects out, for a
//! collector that listens (Arkime's `pcapReadMethod=pcap-over-ip-server`) and a daemon
//! behind NAT or a firewall. The counterpart of [`crate::serve_pcap_over_ip`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use pcapcast_core::pcap::FILE_HEADER_LEN;
use pcapcast_core::{Capture, Encoder, Options};

use crate::outbox::Outbox;
use crate::stall::STALL_LIMIT;
use crate::{Runtime, Timed};

mod losses;
mod session;

use losses::LossWarnings;
use session::Session;

/// The first wait before reconnecting; it doubles after each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(5);
/// A connect that takes longer is given up (a collector whose host does not answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The connect tried after the capture closed, for what the backlog still holds: short,
/// so that a daemon stopping does not wait on a collector that is gone.
const LAST_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    sent: AtomicU64,
    /// Records cut by a failing connection, or left unsent when the capture closed
    /// while the collector was away.
    cut: AtomicU64,
    /// The output's drops: what the backlog could not keep while the collector was
    /// away or slow.
    dropped: AtomicU64,
    connected: AtomicBool,
}

/// Counters of a [`Push`], readable while it runs (they are shared: clone freely).
#[derive(Clone, Debug, Default)]
pub struct PushStats(Arc<Counters>);

impl PushStats {
    /// Connections made to the collector so far.
    pub fn connections(&self) -> u64 {
        self.0.connections.load(Ordering::Relaxed)
    }

    /// Records written whole into a connection. (Those still in the kernel's buffers
    /// when a collector vanishes are counted here, not as lost: nobody can know them.)
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// Records lost: logged while the collector was away (or too slow) and gone from
    /// the backlog before a connection could take them, cut mid-way by a failing
    /// connection, or never sent because the capture closed while it was away.
    pub fn lost(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed) + self.0.cut.load(Ordering::Relaxed)
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.0.connected.load(Ordering::Relaxed)
    }
}

/// Streams a capture to a PCAP-over-IP collector that listens at `collector`, in
/// classic pcap (the seed format by default; [`Format::RawIp`](pcapcast_core::Format::RawIp) for collectors without
/// pcapcast's dissector, such as Arkime), until the capture closes.
///
/// Every connection begins with a file header. When the collector goes away the push
/// keeps its output attached: records logged meanwhile wait in the capture's backlog
/// and go out once it is back, and what the backlog cannot hold is lost and counted
/// ([`PushStats::lost`], and a warning with the count at each reconnect). While
/// connected, losses are warned about at most every few seconds and at least that often
/// while they go on (a stalled collector); a write that makes no progress for the stall
/// limit ([`Push::stall_limit`], 30 s by default) ends the connection, and the push
/// reconnects. TCP keepalive is on, so a collector whose host vanished is noticed. It retries
/// after [`FIRST_RETRY`], doubling the wait after each failed attempt up to
/// [`MAX_RETRY`]; a connection that lasted `MAX_RETRY` or more starts that over.
/// Dropping the future stops it; so does [`Capture::close`], once what the backlog
/// holds has gone out.
///
/// # Examples
///
/// ```no_run
/// use pcapcast_core::{Capture, Format, Options};
/// use pcapcast_serve::{Push, Runtime};
///
/// // `R` is `pcapcast_smol::Smol` or `pcapcast_tokio::Tokio` (their `Push` names it).
/// async fn push_to_arkime<R: Runtime>(capture: Capture) -> std::io::Result<()> {
///     let push = Push::<R>::new(capture, "192.0.2.7:57012".parse().unwrap())
///         .options(Options::new().format(Format::RawIp));
///     let stats = push.stats();
///     push.run().await?; // until the capture closes
///     println!("{} records sent, {} lost", stats.sent(), stats.lost());
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Push<R: Runtime> {
    capture: Capture,
    collector: SocketAddr,
    options: Options,
    first_retry: Duration,
    max_retry: Duration,
    stall_limit: Duration,
    stats: PushStats,
    runtime: R,
}

impl<R: Runtime> Push<R> {
    /// A push of `capture` to the collector at `collector`, in the seed format.
    pub fn new(capture: Capture, collector: SocketAddr) -> Push<R> {
        Push {
            capture,
            collector,
            options: Options::default(),
            first_retry: FIRST_RETRY,
            max_retry: MAX_RETRY,
            stall_limit: STALL_LIMIT,
            stats: PushStats::default(),
            runtime: R::default(),
        }
    }

    /// What to send: a classic pcap format ([`Format::Pcap`](pcapcast_core::Format::Pcap), [`Format::Tailscale`](pcapcast_core::Format::Tailscale) or
    /// [`Format::RawIp`](pcapcast_core::Format::RawIp)), snaplen, paths, filter.
    pub fn options(mut self, options: Options) -> Push<R> {
        self.options = options;
        self
    }

    /// The first wait before reconnecting and the longest one.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Push<R> {
        self.first_retry = first;
        self.max_retry = max;
        self
    }

    /// How long a write to the collector may make no progress (a collector that stopped
    /// reading) before the connection is ended and made again; 30 s by default.
    pub fn stall_limit(mut self, limit: Duration) -> Push<R> {
        self.stall_limit = limit;
        self
    }

    /// The push's counters, shared with it.
    pub fn stats(&self) -> PushStats {
        self.stats.clone()
    }

    /// Pushes until the capture closes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for pcapng (collectors read classic pcap), a backoff whose
    /// first wait is zero or above the longest, or a stall limit of zero; the capture's refusal of another output.
    /// A collector that cannot be reached is not an error: the push keeps trying.
    pub async fn run(self) -> io::Result<()> {
        crate::pcap_over_ip::classic_pcap_only(&self.options)?;
        if self.first_retry.is_zero() || self.first_retry > self.max_retry {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backoff from {:?} to {:?}: the first wait must be above zero and at most the longest",
                    self.first_retry, self.max_retry
                ),
            ));
        }
        if self.stall_limit.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the stall limit must be above zero",
            ));
        }
        let mut header = BytesMut::new();
        Encoder::new(self.options.clone()).put_header(&mut header);
        let subscription = self
            .capture
            .try_subscribe(self.options.clone())
            .map_err(io::Error::other)?;
        let mut session = Session {
            push: &self,
            timed: Timed::new(subscription),
            outbox: Outbox::default(),
            header: header.freeze(),
            // The subscription's own header: each connection gets a copy of `header`.
            skip: FILE_HEADER_LEN,
            sent: 0,
            losses: LossWarnings::default(),
        };
        session.run().await
    }
}
