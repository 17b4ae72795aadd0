//! pcapcast on tokio: drive captures into tokio writers and serve them.
//!
//! This crate is glue: the formats, the backlog and the decisions of when to flush and
//! whom to answer live in [`pcapcast_core`]; here are the timers, writers and
//! listeners of tokio.
//!
//! # Examples
//!
//! A daemon's datapath logs packets; one output streams into a buffer, flushed on the
//! core's schedule:
//!
//! ```
//! use std::time::SystemTime;
//! use pcapcast_tokio::{stream_to, Capture, Options, Path};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let capture = Capture::new();
//! let output = capture.subscribe(Options::default());
//! let writer = tokio::spawn(stream_to(output, Vec::new()));
//! capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 20]);
//! capture.close();
//! let stats = writer.await.unwrap().expect("a Vec never fails");
//! assert_eq!(stats.records, 1);
//! # });
//! ```
//!
//! Serving the capture on a Unix socket, for `pcapcast capture` or curl:
//!
//! ```no_run
//! use pcapcast_tokio::{Capture, HttpServer, Listener};
//!
//! # async fn run() -> std::io::Result<()> {
//! let capture = Capture::new();
//! let listener = Listener::bind_unix("/run/mydaemon/capture.sock")?;
//! HttpServer::new(capture.clone()).serve(listener).await
//! # }
//! ```

mod runtime;

use hyper_util::rt::TokioIo;
use tokio::io::AsyncWrite;

pub use pcapcast_core::{
    self as core, Capture, Format, Options, OutputStats, Path, Subscription, WriteError,
};
pub use pcapcast_serve::serve_pcap_over_ip;
pub use runtime::{Connection, Tokio};

/// Serves a capture over HTTP/1.1 on a listener of its own ([`pcapcast_serve::HttpServer`]).
pub type HttpServer = pcapcast_serve::HttpServer<Tokio>;
/// The capture endpoint as a tower and hyper service, to mount in a daemon's own server
/// (axum: `Router::route_service`).
pub type CaptureService = pcapcast_serve::CaptureService<Tokio>;
/// The response body of a capture.
pub type CaptureBody = pcapcast_serve::CaptureBody<Tokio>;
/// A Unix-socket or TCP listener for the capture endpoints; bind it inside a tokio
/// runtime.
pub type Listener = pcapcast_serve::Listener<Tokio>;
/// A subscription with tokio's timer for its flush schedule.
pub type Timed = pcapcast_serve::Timed<Tokio>;

/// Writes one output into a tokio writer until the capture closes, flushed on the
/// core's schedule; then flushes and shuts it down ([`pcapcast_serve::stream_to`]).
///
/// # Errors
///
/// A [`WriteError`] when the writer fails; the output is detached, and the capture and
/// its other outputs go on.
pub async fn stream_to<W>(subscription: Subscription, writer: W) -> Result<OutputStats, WriteError>
where
    W: AsyncWrite + Unpin,
{
    pcapcast_serve::stream_to::<Tokio, _>(subscription, TokioIo::new(writer)).await
}
