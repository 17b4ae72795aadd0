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

// The core's names (`Capture`, `Options`, `Meta`, `Bpf`, `Error`...) come with the glue.

pub use runtime::{Connection, Smol};

pcapcast_serve::runtime_glue!(
    Smol,
    futures_lite::AsyncWrite,
    smol_hyper::rt::FuturesIo::new
);

/// The workspace README's examples, compiled as doctests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
