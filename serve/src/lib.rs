//! pcapcast's async layer, written once for every runtime.
//!
//! Everything between a [`Subscription`](pcapcast_core::Subscription) and a socket that
//! is not a runtime's own lives here: the writer loop with the core's flush timing
//! ([`stream_to`], [`Timed`]), the HTTP endpoint on a listener of its own
//! ([`HttpServer`]) or mounted in the daemon's server ([`CaptureService`], a tower and a
//! hyper `Service`), PCAP-over-IP ([`serve_pcap_over_ip`]), the accept loop that rides
//! out transient errors, and the watch that notices a client leaving a quiet stream.
//!
//! It is generic over [`Runtime`]: a timer, a way to spawn, read readiness of a
//! descriptor, and sockets in hyper's I/O traits. `pcapcast-smol` and `pcapcast-tokio`
//! implement it in a few dozen lines each and name the types for their users
//! (`pcapcast_smol::HttpServer` is `HttpServer<Smol>`), as quinn's runtime module does.
//!
//! # Examples
//!
//! A runtime takes about this much (here over smol's crates, as `pcapcast-smol` does):
//!
//! ```ignore
//! impl Runtime for Smol {
//!     type Stream = Socket<FuturesIo<Async<UnixStream>>, FuturesIo<Async<TcpStream>>>;
//!     type Readiness = Async<OwnedFd>;
//!     type Timer = SmolTimer;
//!     fn timer(&self) -> SmolTimer { SmolTimer::new() }
//!     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) { smol::spawn(task).detach() }
//!     fn readiness(&self, fd: OwnedFd) -> io::Result<Async<OwnedFd>> { Async::new(fd) }
//!     fn poll_readable(&self, r: &Async<OwnedFd>, cx: &mut Context<'_>) -> Poll<io::Result<()>> { r.poll_readable(cx) }
//!     fn stream(&self, stream: StdStream) -> io::Result<Self::Stream> { /* Async::new */ }
//! }
//! ```

mod hang_up;
mod http;
mod net;
mod pcap_over_ip;
mod runtime;
mod socket;
mod timed;
mod wait;
mod write;

pub use http::{CaptureBody, CaptureService, HttpServer, ResponseBody};
pub use net::Listener;
pub use pcap_over_ip::serve_pcap_over_ip;
pub use runtime::{Runtime, StdStream};
pub use socket::Socket;
pub use timed::Timed;
pub use write::stream_to;
