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

pub use pcapcast_core::{
    self as core, Capture, Format, Options, OutputStats, Path, Subscription, WriteError,
};
pub use pcapcast_serve::{serve_pcap_over_ip, serve_pcap_over_ip_with};
pub use runtime::{Connection, Tokio};

pcapcast_serve::runtime_glue!(Tokio, tokio::io::AsyncWrite, hyper_util::rt::TokioIo::new);
