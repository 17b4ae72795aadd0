//! Noticing that a PCAP-over-IP client left while its output had nothing to write.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll};

use rustix::io::Errno;
use rustix::net::RecvFlags;

use crate::wait::{readable, yield_now};
use crate::Runtime;

/// Resolves, with the reason, once the client at the other end of a connection has
/// closed it, shut down its sending side, or reset it. What the client sends before
/// that is read and thrown away.
///
/// A write finds a departed client only when there is something to write, so with a
/// quiet datapath its output would stay attached for good. (hyper watches its own
/// connections; this is for the streams nobody reads.) It watches a duplicate of the
/// socket's descriptor, so the stream itself stays free for writing.
pub(crate) struct HangUp(Option<Pin<Box<dyn Future<Output = io::Error> + Send>>>);

impl HangUp {
    /// Watches the connection `duplicate` is a second descriptor of. When there is no
    /// duplicate (descriptors ran out) the client is still served, and noticed leaving
    /// at the next failed write.
    pub(crate) fn watch<R: Runtime>(runtime: &R, duplicate: io::Result<OwnedFd>) -> HangUp {
        match duplicate.and_then(|fd| runtime.readiness(fd)) {
            Ok(readiness) => HangUp(Some(Box::pin(watch(runtime.clone(), readiness)))),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the client for leaving");
                HangUp(None)
            }
        }
    }
}

impl Future for HangUp {
    type Output = io::Error;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Error> {
        match &mut self.get_mut().0 {
            Some(watch) => watch.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Reads taken before the watch lets other tasks run: a peer that keeps sending does
/// not keep the executor thread to itself.
const READS_PER_TURN: usize = 16;

async fn watch<R: Runtime>(runtime: R, readiness: R::Readiness) -> io::Error {
    let mut scratch = [0u8; 512];
    let mut reads = 0;
    loop {
        match rustix::net::recv(readiness.as_fd(), &mut scratch[..], RecvFlags::DONTWAIT) {
            Ok((0, _)) => {
                return io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client closed its end of the connection",
                )
            }
            Ok(_) | Err(Errno::INTR) => {
                reads += 1;
                if reads % READS_PER_TURN == 0 {
                    yield_now().await;
                }
            }
            Err(Errno::AGAIN) => {
                if let Err(e) = readable(&runtime, &readiness).await {
                    return e;
                }
            }
            Err(e) => return e.into(),
        }
    }
}
