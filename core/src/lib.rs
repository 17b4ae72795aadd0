//! Sans-IO packet capture for the datapath of network daemons.
//!
//! The datapath calls [`Capture::log_packet`] at each point it wants to see; any number
//! of outputs, each a [`Subscription`], receive the packets as a pcap or pcapng byte
//! stream. With no output attached the call reads one atomic word. A slow output never
//! slows the datapath: it loses its oldest records and counts them. The default format
//! is byte for byte that of Tailscale's `wgengine/capture`: classic pcap,
//! `LINKTYPE_USER0`, a 2-byte [`Path`] before each IP packet.
//!
//! A packet that went through NAT is logged with [`Capture::log_packet_with`] and a
//! [`Meta`] naming its addresses from before; [`Format::Tailscale`] writes them as
//! Tailscale's capture does today, pcapng as each record's comment. [`disco`] builds the
//! frames a daemon logs on [`Path::Disco`].
//!
//! This crate does no I/O and reads no clock: times come from the caller. The
//! `pcapcast-smol` and `pcapcast-tokio` crates drive subscriptions into writers and
//! serve them over HTTP and PCAP-over-IP.
//!
//! # Examples
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use futures_lite::{future::block_on, StreamExt};
//! use pcapcast_core::{Capture, Format, Meta, Options, Path};
//!
//! let capture = Capture::new();
//! // Nobody listens: this costs one atomic load and is not recorded.
//! capture.log_packet(Path::FromLocal, UNIX_EPOCH, &[0x45; 20]);
//!
//! let mut seed = capture.subscribe(Options::default());
//! let mut ng = capture.subscribe(Options::new().format(Format::Pcapng));
//! let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! capture.log_packet(Path::FromPeer, when, &[0x45; 20]);
//! capture.close();
//!
//! let collect = |output: &mut pcapcast_core::Subscription| {
//!     let mut file = Vec::new();
//!     while let Some(bytes) = block_on(output.next()) {
//!         file.extend_from_slice(&bytes);
//!     }
//!     file
//! };
//! let seed_file = collect(&mut seed);
//! assert_eq!(&seed_file[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
//! assert_eq!(seed_file.len(), 24 + 16 + 2 + 20);
//! assert_eq!(&collect(&mut ng)[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
//! assert_eq!(capture.num_outputs(), 0);
//!
//! // A packet DNATed from 100.64.0.9:53, in Tailscale's framing.
//! let capture = Capture::new();
//! let mut ts = capture.subscribe(Options::new().format(Format::Tailscale));
//! let meta = Meta::new().dnat("100.64.0.9:53".parse().unwrap());
//! capture.log_packet_with(Path::FromPeer, when, &[0x45; 20], &meta);
//! capture.close();
//! let file = collect(&mut ts);
//! // The path, no SNAT, a 4-byte DNAT original, then the packet.
//! assert_eq!(&file[24 + 16..24 + 16 + 8], &[1, 0, 0, 4, 100, 64, 0, 9]);
//! ```

mod access;
pub mod bpf;
mod capture;
pub mod delivered;
pub mod disco;
mod encoder;
pub mod endpoint;
mod error;
mod flush;
pub mod framer;
mod history;
mod log;
mod meta;
mod options;
mod outputs;
mod path;
pub mod pcap;
pub mod pcapng;
pub mod refusals;
mod ring;
mod signal;
mod spare;
mod subscription;
pub mod tailscale;
#[cfg(feature = "smoltcp")]
mod tap;
mod time;
pub mod transcode;
mod waiters;

pub use bpf::Bpf;
pub use capture::{Builder, Capture, CaptureStats};
pub use encoder::Encoder;
pub use error::{Error, WriteError};
pub use flush::FlushSchedule;
pub use history::History;
pub use meta::Meta;
pub use options::{Format, Options, DEFAULT_FLUSH_INTERVAL};
pub use outputs::OutputWatch;
pub use path::{Direction, Path};
pub use pcap::TsResolution;
pub use subscription::{OutputStats, Subscription, STREAM_WAKE_DEADLINE};
#[cfg(feature = "smoltcp")]
pub use tap::{RxToken, Tap, TxToken};
pub use time::Timestamp;

/// The crate README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
