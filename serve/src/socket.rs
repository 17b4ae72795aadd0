//! A connection over a Unix socket or TCP, in hyper's I/O traits, whichever the
//! runtime's own types are.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};

/// A Unix-socket or a TCP connection of one runtime: `U` and `T` are its stream types,
/// wrapped for hyper.
#[derive(Debug)]
pub enum Socket<U, T> {
    /// Over a Unix socket.
    Unix(U),
    /// Over TCP.
    Tcp(T),
}

macro_rules! either {
    ($self:expr, $s:ident => $body:expr) => {
        match $self.get_mut() {
            Socket::Unix($s) => $body,
            Socket::Tcp($s) => $body,
        }
    };
}

impl<U: Read + Unpin, T: Read + Unpin> Read for Socket<U, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl<U: Write + Unpin, T: Write + Unpin> Write for Socket<U, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        either!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    /// Sockets take `writev`: hyper then queues a response's chunks and writes them as
    /// they are, instead of copying every body chunk into one flat buffer first.
    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        either!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
