//! What one output wants: format, snaplen, time resolution, paths, flush interval.

use std::str::FromStr;
use std::time::Duration;

use crate::pcap::{TsResolution, DEFAULT_SNAPLEN, MAX_SNAPLEN};
use crate::{Bpf, Error, History, Path};

/// The file format of an output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Format {
    /// The seed format: classic pcap, `LINKTYPE_USER0`, the path before each packet.
    /// Byte for byte what Tailscale's `wgengine/capture` writes.
    #[default]
    Pcap,
    /// Classic pcap, `LINKTYPE_RAW`: bare IP packets that open anywhere; the path is lost.
    /// Records of paths that do not carry IP (Disco, unnamed paths) are left out, as
    /// if the output did not keep those paths.
    RawIp,
    /// pcapng: one interface per path, direction flags and drop counts; a record's
    /// [`Meta`](crate::Meta) becomes its comment.
    Pcapng,
    /// Tailscale's current framing: the seed file header, then records whose payload is
    /// the path, the addresses before NAT and the packet (see [`crate::tailscale`]).
    /// What Tailscale's own dissector reads today.
    Tailscale,
}

impl Format {
    /// The name used in queries and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcap => "pcap",
            Self::RawIp => "raw",
            Self::Pcapng => "pcapng",
            Self::Tailscale => "tailscale",
        }
    }

    /// The media type of a stream in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Pcap | Self::RawIp | Self::Tailscale => "application/vnd.tcpdump.pcap",
            Self::Pcapng => "application/x-pcapng",
        }
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "pcap" => Ok(Self::Pcap),
            "raw" => Ok(Self::RawIp),
            "pcapng" => Ok(Self::Pcapng),
            "tailscale" => Ok(Self::Tailscale),
            other => Err(Error::UnknownFormat {
                name: other.to_owned(),
            }),
        }
    }
}

impl FromStr for TsResolution {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "us" => Ok(Self::Micros),
            "ns" => Ok(Self::Nanos),
            other => Err(Error::UnknownResolution {
                name: other.to_owned(),
            }),
        }
    }
}

/// What one output wants. `Options::default()` is the seed format of the Go original:
/// classic pcap, `LINKTYPE_USER0`, microseconds, snaplen 65535, every path, flushed
/// 100 ms after the first unflushed record.
///
/// # Examples
///
/// ```
/// use pcapcast_core::{Format, Options, Path};
///
/// let options = Options::new()
///     .format(Format::Pcapng)
///     .snaplen(128)?
///     .paths([Path::FromPeer, Path::FromLocal]);
/// assert!(options.keeps(Path::FromPeer));
/// assert!(!options.keeps(Path::Disco));
/// assert!(Options::new().snaplen(0).is_err());
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    format: Format,
    snaplen: u32,
    resolution: TsResolution,
    paths: Option<Vec<u16>>,
    flush_interval: Duration,
    bpf: Option<Bpf>,
    history: History,
    follow: bool,
}

/// The flush interval of the Go original.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

impl Default for Options {
    fn default() -> Self {
        Options {
            format: Format::Pcap,
            snaplen: DEFAULT_SNAPLEN,
            resolution: TsResolution::Micros,
            paths: None,
            flush_interval: DEFAULT_FLUSH_INTERVAL,
            bpf: None,
            history: History::None,
            follow: true,
        }
    }
}

impl Options {
    /// The seed format; the same as `Options::default()`.
    pub fn new() -> Options {
        Options::default()
    }

    /// Sets the file format.
    pub fn format(mut self, format: Format) -> Options {
        self.format = format;
        self
    }

    /// Sets the snaplen: records keep at most this many bytes (the path tag included in
    /// the seed format).
    ///
    /// # Errors
    ///
    /// [`Error::SnaplenOutOfRange`] unless `1 <= snaplen <= 262144`.
    pub fn snaplen(mut self, snaplen: u32) -> Result<Options, Error> {
        if !(1..=MAX_SNAPLEN).contains(&snaplen) {
            return Err(Error::SnaplenOutOfRange {
                snaplen: snaplen.into(),
            });
        }
        self.snaplen = snaplen;
        Ok(self)
    }

    /// Sets the timestamp resolution of classic pcap output; pcapng always uses
    /// nanoseconds.
    pub fn resolution(mut self, resolution: TsResolution) -> Options {
        self.resolution = resolution;
        self
    }

    /// Keeps only the given paths. An empty list keeps every path.
    pub fn paths(mut self, paths: impl IntoIterator<Item = Path>) -> Options {
        let mut values: Vec<u16> = paths.into_iter().map(u16::from).collect();
        values.sort_unstable();
        values.dedup();
        self.paths = if values.is_empty() {
            None
        } else {
            Some(values)
        };
        self
    }

    /// Sets how long a record may wait before it is handed out; a full batch goes at once.
    pub fn flush_interval(mut self, interval: Duration) -> Options {
        self.flush_interval = interval;
        self
    }

    /// Keeps only the packets `filter` accepts. It runs on the reader's side, over the
    /// IP packet as stored (before the snaplen cut), `len` being the packet's length;
    /// after the path selection, whatever the format. Packets it rejects are not drops.
    ///
    /// # Examples
    ///
    /// ```
    /// use pcapcast_core::{Bpf, Options};
    ///
    /// // `tcpdump -ddd 'ip6'` over raw IP: the version nibble is 6.
    /// let ip6 = Bpf::from_bytecode("5,48 0 0 0,84 0 0 240,21 0 1 96,6 0 0 65535,6 0 0 0")?;
    /// let options = Options::new().bpf(ip6);
    /// assert!(options.get_bpf().is_some_and(|f| f.matches(&[0x60; 40])));
    /// # Ok::<(), pcapcast_core::Error>(())
    /// ```
    pub fn bpf(mut self, filter: Bpf) -> Options {
        self.bpf = Some(filter);
        self
    }

    /// Starts the output with records from before its attach, as far as the capture
    /// retained them ([`Builder::retain`](crate::Builder::retain)); then it goes on live
    /// unless [`Options::follow`] is off.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use futures_lite::{future::block_on, StreamExt};
    /// use pcapcast_core::{Capture, History, Options, Path};
    ///
    /// let capture = Capture::builder().retain(1 << 20).build();
    /// // Nobody listens, yet the capture keeps these.
    /// for second in 0..10 {
    ///     let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + second);
    ///     capture.log_packet(Path::FromPeer, when, &[0x45; 20]);
    /// }
    /// // The last 3 seconds before the newest record, and nothing after.
    /// let options = Options::new().history(History::Last(Duration::from_secs(3))).follow(false);
    /// let mut output = capture.subscribe(options);
    /// let mut file = Vec::new();
    /// while let Some(bytes) = block_on(output.next()) {
    ///     file.extend_from_slice(&bytes);
    /// }
    /// assert_eq!(file.len(), 24 + 4 * (16 + 2 + 20));
    /// assert_eq!(output.stats().history_records, 4);
    /// ```
    pub fn history(mut self, history: History) -> Options {
        self.history = history;
        self
    }

    /// Whether the output goes on with what is logged after it attached (the default),
    /// or ends once it has handed out its history: a snapshot, which ends without
    /// [`Capture::close`](crate::Capture::close).
    pub fn follow(mut self, follow: bool) -> Options {
        self.follow = follow;
        self
    }

    /// The records from before the attach this output starts with.
    pub fn get_history(&self) -> History {
        self.history
    }

    /// Whether the output follows the capture after its history.
    pub fn get_follow(&self) -> bool {
        self.follow
    }

    /// The filter, if any.
    pub fn get_bpf(&self) -> Option<&Bpf> {
        self.bpf.as_ref()
    }

    /// The file format.
    pub fn get_format(&self) -> Format {
        self.format
    }

    /// The snaplen.
    pub fn get_snaplen(&self) -> u32 {
        self.snaplen
    }

    /// The timestamp resolution.
    pub fn get_resolution(&self) -> TsResolution {
        self.resolution
    }

    /// The flush interval.
    pub fn get_flush_interval(&self) -> Duration {
        self.flush_interval
    }

    /// Whether records on `path` are kept.
    pub fn keeps(&self, path: Path) -> bool {
        match &self.paths {
            None => true,
            Some(values) => values.binary_search(&u16::from(path)).is_ok(),
        }
    }

    /// Whether every path is kept.
    pub fn keeps_all(&self) -> bool {
        self.paths.is_none()
    }

    /// The kept paths, or `None` for all.
    pub fn kept_paths(&self) -> Option<impl Iterator<Item = Path> + '_> {
        self.paths
            .as_ref()
            .map(|v| v.iter().map(|&p| Path::from(p)))
    }

    /// Whether this output's records are the stored seed records unchanged, which lets
    /// the capture hand them out without copying.
    pub(crate) fn is_seed_micros(&self) -> bool {
        self.format == Format::Pcap && self.resolution == TsResolution::Micros
    }
}
