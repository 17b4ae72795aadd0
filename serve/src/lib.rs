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
//! ```text
//! impl Runtime for Smol {
//!     type Stream = Socket<FuturesIo<Async<UnixStream>>, FuturesIo<Async<TcpStream>>>;
//!     type Readiness = Async<OwnedFd>;
//!     type Timer = SmolTimer; // hyper's Timer trait, and Default
//!     fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) { smol::spawn(task).detach() }
//!     fn readiness(&self, fd: OwnedFd) -> io::Result<Async<OwnedFd>> { Async::new(fd) }
//!     fn poll_readable(&self, r: &Async<OwnedFd>, cx: &mut Context<'_>) -> Poll<io::Result<()>> { r.poll_readable(cx) }
//!     fn stream(&self, stream: StdStream) -> io::Result<Self::Stream> { /* Async::new */ }
//!     fn connect_tcp(&self, addr: SocketAddr) -> impl Future<Output = io::Result<StdStream>> + Send { /* Async::connect */ }
//! }
//! ```

mod body;
mod delivery;
mod hang_up;
mod http;
mod net;
mod outbox;
mod pcap_over_ip;
mod push;
mod runtime;
mod service;
mod socket;
mod stall;
mod switch;
#[cfg(test)]
mod test_writer;
mod timed;
mod wait;
mod write;

pub use body::CaptureBody;
pub use http::HttpServer;
pub use net::Listener;
pub use pcap_over_ip::{serve_pcap_over_ip, serve_pcap_over_ip_with};
pub use push::{Push, PushStats, FIRST_RETRY, MAX_RETRY};
pub use runtime::{Runtime, StdStream};
pub use service::{CaptureService, PeerFrom, ResponseBody};
pub use socket::Socket;
pub use stall::STALL_LIMIT;
pub use switch::{enabled_by_environment, DISABLE_VARIABLE};
pub use timed::Timed;
pub use write::stream_to;

#[doc(hidden)]
pub use pcapcast_core;

/// The `tracing` target of the HTTP endpoint's attach, detach and refusal lines, the
/// same from the server, the service and the body, so that a filter names one place.
const LOG_TARGET: &str = "pcapcast_serve::http";

/// Locks a mutex that no panic can leave half-written (it holds one handle), so a
/// poisoned lock is still usable.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Names the shared layer's types for one runtime and writes its `stream_to`, as a glue
/// crate exports them: `runtime_glue!(Smol, futures_lite::AsyncWrite, FuturesIo::new)`
/// gives `HttpServer` (= `HttpServer<Smol>`), `CaptureService`, `CaptureBody`,
/// `Listener`, `Timed`, `Push`, `PushStats`, `STALL_LIMIT`, and `stream_to` over the runtime's own
/// writer trait, wrapped into hyper's I/O traits by the third argument; and re-exports
/// the core's names a daemon reaches for (`Capture`, `Builder`, `Options`, `Format`,
/// `Path`, `Meta`, `Bpf`, `History`, `Error`, ...), so that one `use` of the glue crate
/// is enough.
#[macro_export]
macro_rules! runtime_glue {
    ($runtime:ty, $write:path, $wrap:path) => {
        /// Serves a capture over HTTP/1.1 on a listener of its own.
        pub type HttpServer = $crate::HttpServer<$runtime>;
        /// The capture endpoint as a tower and hyper service, to mount in a daemon's own
        /// server (axum: `Router::route_service`).
        pub type CaptureService = $crate::CaptureService<$runtime>;
        /// The response body of a capture.
        pub type CaptureBody = $crate::CaptureBody<$runtime>;
        /// A Unix-socket or TCP listener for the capture endpoints.
        pub type Listener = $crate::Listener<$runtime>;
        /// A subscription with the runtime's timer for its flush schedule.
        pub type Timed = $crate::Timed<$runtime>;
        /// A push to a PCAP-over-IP collector that listens (the daemon connects out).
        pub type Push = $crate::Push<$runtime>;
        pub use $crate::pcapcast_core::{
            self as core, Bpf, Builder, Capture, CaptureStats, Encoder, Error, Format, History,
            Meta, Options, OutputStats, OutputWatch, Path, Subscription, Timestamp, TsResolution,
            WriteError,
        };
        pub use $crate::{
            serve_pcap_over_ip, serve_pcap_over_ip_with, PeerFrom, PushStats, STALL_LIMIT,
        };

        /// Writes one output into `writer` until the capture closes, flushed on the
        /// core's schedule; then flushes and shuts it down.
        ///
        /// # Errors
        ///
        /// A [`WriteError`]($crate::pcapcast_core::WriteError) when the writer fails; the output
        /// is detached, and the capture and its other outputs go on.
        pub async fn stream_to<W: $write + Unpin>(
            subscription: $crate::pcapcast_core::Subscription,
            writer: W,
        ) -> Result<$crate::pcapcast_core::OutputStats, $crate::pcapcast_core::WriteError> {
            $crate::stream_to::<$runtime, _>(subscription, $wrap(writer)).await
        }
    };
}
