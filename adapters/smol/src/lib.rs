//! pcapcast on smol: drive captures into `futures-io` writers and serve them.
//!
//! This crate is glue: the formats, the backlog and the decisions of when to flush and
//! whom to answer live in [`pcapcast_core`]; here are the timers, writers and
//! listeners of smol.
//!
//! # Examples
//!
//! A daemon's datapath logs packets; one output streams into a buffer, flushed on the
//! core's schedule:
//!
//! ```
//! use std::time::SystemTime;
//! use pcapcast_smol::{stream_to, Capture, Options, Path};
//!
//! smol::block_on(async {
//!     let capture = Capture::new();
//!     let output = capture.subscribe(Options::default());
//!     let writer = smol::spawn(stream_to(output, Vec::new()));
//!     capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 20]);
//!     capture.close();
//!     let stats = writer.await.expect("a Vec never fails");
//!     assert_eq!(stats.records, 1);
//! });
//! ```
//!
//! Serving the capture on a Unix socket, for `pcapcast capture` or curl:
//!
//! ```no_run
//! use pcapcast_smol::{Capture, HttpServer, Listener};
//!
//! smol::block_on(async {
//!     let capture = Capture::new();
//!     let listener = Listener::bind_unix("/run/mydaemon/capture.sock")?;
//!     HttpServer::new(capture.clone()).serve(listener).await
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod runtime;

use futures_lite::AsyncWrite;
use smol_hyper::rt::FuturesIo;

pub use pcapcast_core::{
    self as core, Capture, Format, Options, OutputStats, Path, Subscription, WriteError,
};
pub use pcapcast_serve::serve_pcap_over_ip;
pub use runtime::{Connection, Smol};

/// Serves a capture over HTTP/1.1 on a listener of its own ([`pcapcast_serve::HttpServer`]).
pub type HttpServer = pcapcast_serve::HttpServer<Smol>;
/// The capture endpoint as a tower and hyper service, to mount in a daemon's own server.
pub type CaptureService = pcapcast_serve::CaptureService<Smol>;
/// The response body of a capture.
pub type CaptureBody = pcapcast_serve::CaptureBody<Smol>;
/// A Unix-socket or TCP listener for the capture endpoints.
pub type Listener = pcapcast_serve::Listener<Smol>;
/// A subscription with async-io's timer for its flush schedule.
pub type Timed = pcapcast_serve::Timed<Smol>;

/// Writes one output into a `futures-io` writer until the capture closes, flushed on
/// the core's schedule; then flushes and closes it ([`pcapcast_serve::stream_to`]).
///
/// # Errors
///
/// A [`WriteError`] when the writer fails; the output is detached, and the capture and
/// its other outputs go on.
pub async fn stream_to<W>(subscription: Subscription, writer: W) -> Result<OutputStats, WriteError>
where
    W: AsyncWrite + Unpin,
{
    pcapcast_serve::stream_to::<Smol, _>(subscription, FuturesIo::new(writer)).await
}

/// The workspace README's examples, compiled as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
