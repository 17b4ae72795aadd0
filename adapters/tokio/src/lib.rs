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
//! The core's names a daemon reaches for come from here too:
//!
//! ```
//! use pcapcast_tokio::{Bpf, Builder, Capture, CaptureStats, Error, Format, History, Meta, Options};
//!
//! let capture: Capture = Builder::default().retain(1 << 20).build();
//! let options = Options::new().format(Format::Pcapng).history(History::All);
//! let meta = Meta::new().snat("100.64.0.7:1000".parse().unwrap());
//! let bad: Result<Bpf, Error> = Bpf::from_bytecode("1,6 0 0 0,6 0 0 0");
//! assert!(bad.is_err());
//! let stats: CaptureStats = capture.stats();
//! assert_eq!(stats.logged, 0);
//! # let _ = (options, meta);
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

pub use runtime::{Connection, Tokio};

pcapcast_serve::runtime_glue!(Tokio, tokio::io::AsyncWrite, hyper_util::rt::TokioIo::new);
