//! `pcapcast`: attach to a daemon's datapath capture and stream it to a file, stdout or
//! Wireshark; run a demo daemon; install the dissector and the extcap.

// A binary crate: `pub` marks what its modules share, nothing is exported.
#![allow(unreachable_pub)]

mod blocks;
mod capture;
mod client;
mod daemons;
mod demo;
mod dissector;
mod extcap;
mod filter;
mod gather;
mod merge;
mod merged;
mod outcome;
mod push;
mod recorder;
mod repoll;
mod sink;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use outcome::Outcome;
use pcapcast_core::{Format, History, Options, Path};

/// jemalloc, whose background thread gives freed memory back to the system (see
/// [`return_freed_memory`]): glibc's malloc kept, for good, the memory 256 stalled
/// readers of the demo had held.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Lets jemalloc purge freed pages from a thread of its own, about 10 s after they
/// were freed (its default decay), instead of only when the thread that freed them
/// allocates again: a daemon whose stalled readers left gets its memory back.
pub fn return_freed_memory() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "freed memory stays with the allocator");
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "pcapcast",
    version,
    about = "Live packet capture from the datapath of network daemons"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a demo daemon: a userspace datapath moving IPv4/IPv6 UDP, TCP and ICMP over
    /// all four paths, serving its capture on a Unix socket.
    Demo(demo::DemoArgs),
    /// Attach to a daemon's capture endpoint and stream to a file, stdout or Wireshark.
    Capture(capture::CaptureArgs),
    /// Print the Wireshark Lua dissector, or install it with --install.
    Dissector {
        /// Copy it where Wireshark loads personal plugins.
        #[arg(long)]
        install: bool,
    },
    /// Install pcapcast as a Wireshark extcap, so a running daemon shows up as an
    /// interface.
    Extcap {
        /// Link this program into Wireshark's extcap folder.
        #[arg(long)]
        install: bool,
        /// The extcap folder (default: the one `tshark -G folders` names).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// Which async runtime runs the I/O; the behaviour is the same on both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// smol (the default).
    #[default]
    Smol,
    /// tokio.
    Tokio,
}

/// The options that choose what a capture holds.
#[derive(Clone, Debug, Args)]
pub struct FormatArgs {
    /// File format: pcap (the default: the Go original's, with the path), tailscale
    /// (Tailscale's current framing: the path and the addresses before NAT), raw (bare
    /// IP) or pcapng (NAT addresses as comments; the format of a capture merged from
    /// several --connect).
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// Bytes kept of each packet (1 to 262144).
    #[arg(long, default_value_t = pcapcast_core::pcap::DEFAULT_SNAPLEN)]
    snaplen: u32,
    /// Paths to keep, comma-separated: from-local, from-peer, synth-to-local,
    /// synth-to-peer, disco, or numbers (default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_path)]
    paths: Vec<Path>,
    /// Keep only the packets this tcpdump expression matches, e.g. 'udp port 53'
    /// (compiled by libpcap for raw IP, run by the daemon on its readers' side).
    #[arg(
        short = 'f',
        long = "filter",
        value_name = "EXPR",
        conflicts_with = "bpf"
    )]
    filter: Option<String>,
    /// Keep only the packets this compiled BPF program accepts: what `tcpdump -ddd`
    /// prints, joined by commas (iptables' --bytecode form).
    #[arg(long, value_name = "BYTECODE")]
    bpf: Option<String>,
}

impl FormatArgs {
    /// The format asked for with --format, if any.
    pub fn format_given(&self) -> Option<Format> {
        self.format
    }

    /// The core's options for these arguments.
    ///
    /// # Errors
    ///
    /// What is wrong with an option, on one line.
    pub fn options(&self) -> Result<Options, String> {
        let options = Options::new()
            .format(self.format.unwrap_or(Format::Pcap))
            .snaplen(self.snaplen)
            .map_err(|e| e.to_string())?
            .paths(self.paths.iter().copied());
        let bpf = match (&self.filter, &self.bpf) {
            (Some(expression), _) => Some(filter::compile(expression)?),
            (None, Some(bytecode)) => {
                Some(pcapcast_core::Bpf::from_bytecode(bytecode).map_err(|e| e.to_string())?)
            }
            (None, None) => None,
        };
        Ok(match bpf {
            Some(bpf) => options.bpf(bpf),
            None => options,
        })
    }
}

/// Where a capture starts: with what the daemon retained from before the attach, or
/// now.
#[derive(Clone, Debug, Args)]
pub struct HistoryArgs {
    /// Start with the packets the daemon retained from before the attach: all, or those
    /// at most this long before its newest one (30s, 500ms, 2m), then follow live.
    #[arg(long, value_name = "all|DURATION", value_parser = parse_history)]
    history: Option<History>,
    /// With --history: stop once the history is written (a snapshot of what just
    /// happened), instead of following live.
    #[arg(long, requires = "history")]
    no_follow: bool,
}

impl HistoryArgs {
    /// `options` starting where these arguments say.
    pub fn apply(&self, options: Options) -> Options {
        options
            .history(self.history.unwrap_or_default())
            .follow(!self.no_follow)
    }
}

/// Parses a history as the endpoint's `history=` does: `all`, `none` or a duration.
pub fn parse_history(s: &str) -> Result<History, String> {
    s.parse().map_err(|e: pcapcast_core::Error| e.to_string())
}

/// When a capture stops by itself.
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    /// Stop after this many packets.
    #[arg(short = 'c', long = "count")]
    count: Option<u64>,
    /// Stop after this long, e.g. 10s, 500ms, 2m.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
}

fn parse_format(s: &str) -> Result<Format, String> {
    s.parse().map_err(|e: pcapcast_core::Error| e.to_string())
}

fn parse_path(s: &str) -> Result<Path, String> {
    s.parse().map_err(|e: pcapcast_core::Error| e.to_string())
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| s.split_at(i));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 10s, 500ms, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{s:?} is not a duration"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if extcap::is_extcap_call(&args) {
        return extcap::run(&args);
    }
    // Parsed in two steps, so that `capture` sees where each option stood.
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(e) => return Outcome::from_clap(&e),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => return Outcome::from_clap(&e),
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Capture(args) => {
            return capture::run(args, matches.subcommand_matches("capture")).exit()
        }
        Command::Dissector { install } => dissector::run(install),
        Command::Extcap { install, dir } => extcap::install(install, dir),
    };
    match result {
        Ok(code) => code,
        Err(message) => Outcome::Refused(message).exit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
