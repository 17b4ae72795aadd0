//! Pushing a capture to a PCAP-over-IP collector: the daemon connects out, for a
//! collector that listens (Arkime's `pcapReadMethod=pcap-over-ip-server`) and a daemon
//! behind NAT or a firewall. The counterpart of [`crate::serve_pcap_over_ip`].

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use hyper::rt::{Timer, Write};
use pcapcast_core::pcap::FILE_HEADER_LEN;
use pcapcast_core::{Capture, Encoder, Format, Options};

use crate::hang_up::HangUp;
use crate::net::duplicate;
use crate::outbox::Outbox;
use crate::wait::sleep_until;
use crate::{Runtime, StdStream, Timed};

/// The first wait before reconnecting; it doubles after each failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(5);
/// A connect that takes longer is given up (a collector whose host does not answer).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
/// classic pcap (the seed format by default; [`Format::RawIp`] for collectors without
/// pcapcast's dissector, such as Arkime), until the capture closes.
///
/// Every connection begins with a file header. When the collector goes away the push
/// keeps its output attached: records logged meanwhile wait in the capture's backlog
/// and go out once it is back, and what the backlog cannot hold is lost and counted
/// ([`PushStats::lost`], and a warning with the count at each reconnect). It retries
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
            stats: PushStats::default(),
            runtime: R::default(),
        }
    }

    /// What to send: a classic pcap format ([`Format::Pcap`], [`Format::Tailscale`] or
    /// [`Format::RawIp`]), snaplen, paths, filter.
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

    /// The push's counters, shared with it.
    pub fn stats(&self) -> PushStats {
        self.stats.clone()
    }

    /// Pushes until the capture closes.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for pcapng (collectors read classic pcap) or a backoff whose
    /// first wait is zero or above the longest; the capture's refusal of another output.
    /// A collector that cannot be reached is not an error: the push keeps trying.
    pub async fn run(self) -> io::Result<()> {
        if self.options.get_format() == Format::Pcapng {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "PCAP-over-IP collectors (Arkime among them) read classic pcap: push pcap, tailscale or raw, not pcapng",
            ));
        }
        if self.first_retry.is_zero() || self.first_retry > self.max_retry {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "backoff from {:?} to {:?}: the first wait must be above zero and at most the longest",
                    self.first_retry, self.max_retry
                ),
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
        };
        session.run().await
    }
}

/// A push at work: the output, and what waits for the next connection.
struct Session<'a, R: Runtime> {
    push: &'a Push<R>,
    timed: Timed<R>,
    outbox: Outbox,
    header: Bytes,
    skip: usize,
    sent: u64,
}

impl<R: Runtime> Session<'_, R> {
    async fn run(&mut self) -> io::Result<()> {
        let push = self.push;
        let collector = push.collector;
        let counters = &push.stats.0;
        let mut wait = push.first_retry;
        let mut failures = 0u64;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    let began = Instant::now();
                    failures = 0;
                    let lost_before = push.stats.lost();
                    let reconnect = counters.connections.fetch_add(1, Ordering::Relaxed) > 0;
                    counters.connected.store(true, Ordering::Relaxed);
                    let ended = self.stream(stream, reconnect.then_some(lost_before)).await;
                    counters.connected.store(false, Ordering::Relaxed);
                    let cut = self.outbox.cut(&mut self.sent);
                    counters.cut.fetch_add(cut, Ordering::Relaxed);
                    counters.sent.store(self.sent, Ordering::Relaxed);
                    match ended {
                        Ok(()) => return Ok(()),
                        Err(e) => {
                            tracing::warn!(%collector, error = %e, cut, "PCAP-over-IP collector went away; reconnecting")
                        }
                    }
                    if began.elapsed() >= self.push.max_retry {
                        wait = self.push.first_retry;
                    }
                }
                Err(e) if failures == 0 => {
                    failures += 1;
                    tracing::warn!(%collector, error = %e, "cannot reach the PCAP-over-IP collector; retrying");
                }
                Err(e) => {
                    failures += 1;
                    tracing::debug!(%collector, error = %e, failures, "PCAP-over-IP collector still unreachable");
                }
            }
            if self.push.capture.is_closed() {
                return self.give_up().await;
            }
            let until = Instant::now() + wait;
            // In steps, so that a capture closed meanwhile ends the push soon.
            while Instant::now() < until && !self.push.capture.is_closed() {
                sleep_until::<R>(until.min(Instant::now() + FIRST_RETRY)).await;
            }
            wait = (wait * 2).min(self.push.max_retry);
        }
    }

    async fn connect(&self) -> io::Result<StdStream> {
        let mut connect = pin!(self.push.runtime.connect_tcp(self.push.collector));
        let mut timeout = R::Timer::default().sleep(CONNECT_TIMEOUT);
        poll_fn(|cx| match connect.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => timeout.as_mut().poll(cx).map(|()| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                ))
            }),
        })
        .await
    }

    /// One connection: the header, what the last one left, then the output as it
    /// comes. `Ok` once the capture closed and everything went out.
    async fn stream(&mut self, stream: StdStream, lost_before: Option<u64>) -> io::Result<()> {
        let collector = self.push.collector;
        let hang_up = HangUp::watch(&self.push.runtime, duplicate(&stream));
        let mut hang_up = pin!(hang_up);
        let mut io = self.push.runtime.stream(stream)?;
        // A first look before anything else: what the backlog lost while the collector
        // was away is counted then, for the reconnect's message.
        let mut ended = match poll_fn(|cx| Poll::Ready(self.timed.poll_due(cx))).await {
            Poll::Ready(Some(bytes)) => {
                self.take(bytes);
                false
            }
            Poll::Ready(None) => true,
            Poll::Pending => false,
        };
        self.note_drops();
        match lost_before {
            Some(before) => {
                let lost = self.push.stats.lost();
                tracing::warn!(%collector, lost_while_away = lost.saturating_sub(before), lost_in_all = lost, "PCAP-over-IP collector reconnected");
            }
            None => tracing::info!(%collector, "PCAP-over-IP collector connected"),
        }
        write_all(&mut io, &self.header).await?;
        loop {
            self.outbox.write_to(&mut io, &mut self.sent).await?;
            poll_fn(|cx| Pin::new(&mut io).poll_flush(cx)).await?;
            self.push.stats.0.sent.store(self.sent, Ordering::Relaxed);
            if ended {
                return poll_fn(|cx| Pin::new(&mut io).poll_shutdown(cx)).await;
            }
            // The watch is polled only while nothing is due, as `stream_to` does.
            let next = poll_fn(|cx| match self.timed.poll_due(cx) {
                Poll::Ready(due) => Poll::Ready(Ok(due)),
                Poll::Pending => hang_up.as_mut().poll(cx).map(Err),
            })
            .await?;
            match next {
                Some(bytes) => self.take(bytes),
                None => ended = true,
            }
            self.note_drops();
        }
    }

    /// Queues what the output handed out, and what it has ready besides, without the
    /// subscription's own file header.
    fn take(&mut self, mut bytes: Bytes) {
        loop {
            let skipped = self.skip.min(bytes.len());
            bytes.advance(skipped);
            self.skip -= skipped;
            self.outbox.push(bytes);
            match self.timed.subscription().next_ready() {
                Some(more) => bytes = more,
                None => return,
            }
        }
    }

    fn note_drops(&mut self) {
        let dropped = self.timed.subscription().dropped();
        self.push.stats.0.dropped.store(dropped, Ordering::Relaxed);
    }

    /// The capture closed while the collector was away: what is left is counted as
    /// lost.
    async fn give_up(&mut self) -> io::Result<()> {
        let mut left = self.outbox.records();
        self.outbox = Outbox::default();
        while let Some(bytes) = poll_fn(|cx| self.timed.poll_due(cx)).await {
            self.take(bytes);
            left += self.outbox.records();
            self.outbox = Outbox::default();
        }
        self.note_drops();
        self.push.stats.0.cut.fetch_add(left, Ordering::Relaxed);
        tracing::warn!(collector = %self.push.collector, unsent = left, lost_in_all = self.push.stats.lost(), "the capture closed while the PCAP-over-IP collector was away");
        Ok(())
    }
}

/// Writes all of `bytes`.
async fn write_all<W: Write + Unpin>(writer: &mut W, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *writer).poll_write(cx, bytes)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
    }
    Ok(())
}
