//! Noticing that a PCAP-over-IP client left while its output had nothing to write.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncReadExt;

use crate::Connection;

/// Resolves, with the reason, once the client at the other end of a connection has
/// closed it, shut down its sending side, or reset it. What the client sends before
/// that is read and thrown away.
///
/// A write finds a departed client only when there is something to write, so with a
/// quiet datapath its output would stay attached for good. (hyper watches its own
/// connections; this is for the streams nobody reads.) It reads from a duplicate of the
/// socket's descriptor, so the stream itself stays free for writing.
pub(crate) struct HangUp(Option<Pin<Box<dyn Future<Output = io::Error> + Send>>>);

impl HangUp {
    /// Watches `connection`; call it inside a tokio runtime. When that fails (out of
    /// descriptors) the client is still served, and noticed leaving at the next failed
    /// write.
    pub(crate) fn watch(connection: &Connection) -> HangUp {
        match connection.duplicate() {
            Ok(socket) => HangUp(Some(Box::pin(watch(socket)))),
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

async fn watch(mut socket: Connection) -> io::Error {
    let mut scratch = [0u8; 512];
    loop {
        match socket.read(&mut scratch).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client closed its end of the connection",
                )
            }
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return e,
            Ok(_) | Err(_) => {}
        }
    }
}
