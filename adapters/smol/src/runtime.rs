//! smol as pcapcast's shared layer uses it: async-io's timer and reactor, smol's
//! global executor.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::task::{Context, Poll};

use async_io::Async;
use pcapcast_serve::{Runtime, Socket, StdStream};
use smol_hyper::rt::{FuturesIo, SmolTimer};

/// The smol runtime: timers and readiness from async-io, tasks on smol's global
/// executor (`smol::spawn`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Smol;

/// A connection the capture endpoints accepted, over a Unix socket or TCP.
pub type Connection = Socket<FuturesIo<Async<UnixStream>>, FuturesIo<Async<TcpStream>>>;

impl Runtime for Smol {
    type Stream = Connection;
    type Readiness = Async<OwnedFd>;
    type Timer = SmolTimer;

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        smol::spawn(task).detach();
    }

    fn readiness(&self, fd: OwnedFd) -> io::Result<Async<OwnedFd>> {
        Async::new(fd)
    }

    fn poll_readable(
        &self,
        readiness: &Async<OwnedFd>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        readiness.poll_readable(cx)
    }

    fn stream(&self, stream: StdStream) -> io::Result<Connection> {
        Ok(match stream {
            StdStream::Unix(s) => Socket::Unix(FuturesIo::new(Async::new(s)?)),
            StdStream::Tcp(s) => Socket::Tcp(FuturesIo::new(Async::new(s)?)),
        })
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> io::Result<StdStream> {
        // Out of the reactor again: `stream` registers it, as for an accepted one.
        Async::<TcpStream>::connect(addr)
            .await?
            .into_inner()
            .map(StdStream::Tcp)
    }
}
