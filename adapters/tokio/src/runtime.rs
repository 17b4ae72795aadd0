//! tokio as pcapcast's shared layer uses it: the current runtime's timer, reactor and
//! tasks.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::task::{ready, Context, Poll};

use hyper_util::rt::{TokioIo, TokioTimer};
use pcapcast_serve::{Runtime, Socket, StdStream};
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpStream, UnixStream};

/// The tokio runtime the caller is in: sockets, timers and tasks go to the current
/// runtime (`tokio::spawn`), so listeners are bound and servers run inside one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tokio;

/// A connection the capture endpoints accepted, over a Unix socket or TCP.
pub type Connection = Socket<TokioIo<UnixStream>, TokioIo<TcpStream>>;

impl Runtime for Tokio {
    type Stream = Connection;
    type Readiness = AsyncFd<OwnedFd>;
    type Timer = TokioTimer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        tokio::spawn(task);
    }

    fn readiness(&self, fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
        // tokio deprecated `new` for `register`, which is unsafe (and this workspace
        // forbids unsafe code) because an arbitrary `T` could change or close its
        // descriptor. An `OwnedFd` owned by the `AsyncFd` keeps it open and the same
        // for the `AsyncFd`'s whole life: the condition `register` asks of its caller.
        #[allow(deprecated)]
        AsyncFd::new(fd)
    }

    fn poll_readable(&self, fd: &AsyncFd<OwnedFd>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Cleared before the caller reads, so that a readiness that arrives after its
        // `WouldBlock` is not lost.
        ready!(fd.poll_read_ready(cx))?.clear_ready();
        Poll::Ready(Ok(()))
    }

    fn stream(&self, stream: StdStream) -> io::Result<Connection> {
        Ok(match stream {
            StdStream::Unix(s) => Socket::Unix(TokioIo::new(UnixStream::from_std(s)?)),
            StdStream::Tcp(s) => Socket::Tcp(TokioIo::new(TcpStream::from_std(s)?)),
        })
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<StdStream> {
        // `into_std` leaves it non-blocking, as `stream` wants it.
        Ok(StdStream::Tcp(TcpStream::connect(addr).await?.into_std()?))
    }
}
