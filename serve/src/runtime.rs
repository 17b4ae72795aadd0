//! What the shared layer needs of an async runtime: a timer, a way to spawn, readiness
//! of a socket, and sockets that hyper can drive.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll};

/// A connected socket, before the runtime takes it: accepted by a [`crate::Listener`],
/// already non-blocking.
#[derive(Debug)]
pub enum StdStream {
    /// A Unix-socket connection.
    Unix(std::os::unix::net::UnixStream),
    /// A TCP connection.
    Tcp(std::net::TcpStream),
}

/// An async runtime, as pcapcast's shared layer uses it: a zero-sized marker (the layer
/// makes its values with `Default`, so a runtime carries no state of its own; the
/// current runtime or the global executor is where its tasks go). The glue crates implement it
/// for smol (`pcapcast_smol::Smol`) and tokio (`pcapcast_tokio::Tokio`) in a few lines
/// each; everything else — the writer loop, flush timing, the HTTP endpoint,
/// PCAP-over-IP, the accept loop and the hang-up watch — is written once, over it.
pub trait Runtime: Clone + Default + Debug + Send + Sync + Unpin + 'static {
    /// A connection the runtime drives, in hyper's I/O traits.
    type Stream: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static;
    /// A descriptor registered with the runtime's reactor, to wait until it is readable.
    type Readiness: AsFd + Debug + Send + Sync + Unpin + 'static;
    /// The runtime's timer, in hyper's trait.
    type Timer: hyper::rt::Timer + Clone + Debug + Default + Send + Sync + Unpin + 'static;

    /// Runs `task` to its end in the background.
    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F);

    /// Registers a non-blocking descriptor (a listener, or a duplicate of a connection)
    /// for read readiness.
    ///
    /// # Errors
    ///
    /// The reactor's error.
    fn readiness(&self, fd: OwnedFd) -> io::Result<Self::Readiness>;

    /// Ready once the descriptor may be readable. A spurious wake-up is fine: the caller
    /// then gets `WouldBlock` and polls again.
    fn poll_readable(
        &self,
        readiness: &Self::Readiness,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>;

    /// Takes an accepted connection into the runtime.
    ///
    /// # Errors
    ///
    /// The reactor's error.
    fn stream(&self, stream: StdStream) -> io::Result<Self::Stream>;

    /// Connects out over TCP, for pushing to a collector ([`crate::Push`]); the stream
    /// comes back non-blocking, as [`Runtime::stream`] takes it.
    ///
    /// # Errors
    ///
    /// The connect's error.
    fn connect_tcp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<StdStream>> + Send;
}
