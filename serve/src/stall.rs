//! Writers that stall: a write that makes no progress for too long ends, and an output
//! evicted at the output limit ends its writer even while a write is pending.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pcapcast_core::OutputWatch;

use crate::delivery::{self, DeliveryCell};
use crate::wait::Deadline;
use crate::Runtime;

/// How long a write may make no progress, while its output lags, before the output is
/// detached (or a push's connection is ended), by default.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// What a stall past the limit does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnStall {
    /// Detach the output, if it lags: a reader that stopped reading.
    DetachIfLagging,
    /// End the connection, output or not: a push reconnects.
    EndConnection,
}

/// The output a connection streams, once its request attached one: shared between the
/// HTTP service, which attaches it, and the connection's [`Stalling`] I/O.
pub(crate) type WatchCell = Arc<Mutex<Option<OutputWatch>>>;

/// A writer (and, for HTTP connections, the reader too) that fails its write once the
/// output is evicted, or once a write has made no progress for the stall limit.
#[derive(Debug)]
pub(crate) struct Stalling<R: Runtime, W> {
    inner: W,
    watch: WatchCell,
    limit: Duration,
    on_stall: OnStall,
    /// When the pending write began waiting, if one waits.
    pending_since: Option<Instant>,
    deadline: Deadline<R::Timer>,
    /// HTTP connections: what the socket takes is read back, to log what was delivered.
    delivery: Option<DeliveryCell>,
}

impl<R: Runtime, W> Stalling<R, W> {
    pub(crate) fn new(inner: W, watch: WatchCell, limit: Duration, on_stall: OnStall) -> Self {
        Stalling {
            inner,
            watch,
            limit,
            on_stall,
            pending_since: None,
            deadline: Deadline::new(),
            delivery: None,
        }
    }

    /// Reads what the socket takes back into `delivery` (see [`delivery`]).
    pub(crate) fn with_delivery(mut self, delivery: DeliveryCell) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// What the socket took of `bufs`, for the delivery count.
    fn took(&self, bufs: &[IoSlice<'_>], written: &Poll<io::Result<usize>>) {
        if let (Some(cell), Poll::Ready(Ok(n))) = (&self.delivery, written) {
            delivery::took(cell, bufs, *n);
        }
    }

    fn watch(&self) -> Option<OutputWatch> {
        crate::lock(&self.watch).clone()
    }

    /// Checks a write's outcome: progress clears the stall, a pending write checks the
    /// eviction and the limit.
    fn check(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let watch = self.watch();
        if watch.as_ref().is_some_and(OutputWatch::is_evicted) {
            return Poll::Ready(Err(evicted()));
        }
        if written.is_ready() {
            self.pending_since = None;
            return written;
        }
        if let Some(watch) = &watch {
            if watch.poll_evicted(cx).is_ready() {
                return Poll::Ready(Err(evicted()));
            }
        }
        let now = Instant::now();
        let since = *self.pending_since.get_or_insert(now);
        let mut check_at = since + self.limit;
        if now >= check_at {
            match (self.on_stall, &watch) {
                (OnStall::EndConnection, _) => return Poll::Ready(Err(self.stalled())),
                (OnStall::DetachIfLagging, Some(watch)) if watch.is_lagging() => {
                    watch.detach_stalled();
                    tracing::warn!(
                        limit = ?self.limit,
                        "capture detached: its reader read nothing while the output lagged"
                    );
                    return Poll::Ready(Err(self.stalled()));
                }
                // Stalled but losing nothing yet: looked at again later.
                _ => check_at = now + self.limit.min(Duration::from_secs(1)),
            }
        }
        while self.deadline.poll_at(check_at, cx).is_ready() {
            check_at = Instant::now() + Duration::from_millis(10);
        }
        Poll::Pending
    }

    fn stalled(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no write went through for {:?}", self.limit),
        )
    }
}

/// The error of a writer whose output was evicted.
pub(crate) fn evicted() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "the output lagged most and gave way to a new one at the output limit",
    )
}

impl<R: Runtime, W: hyper::rt::Write + Unpin> hyper::rt::Write for Stalling<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        let written = this.check(cx, written);
        this.took(&[IoSlice::new(buf)], &written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let written = this.check(cx, written);
        this.took(bufs, &written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<R: Runtime, W: hyper::rt::Read + Unpin> hyper::rt::Read for Stalling<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}
