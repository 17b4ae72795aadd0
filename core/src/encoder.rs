//! Turns `(Path, time, packet)` into the records of one output's format.

use std::time::SystemTime;

use bytes::BytesMut;

use crate::pcap::{self, LINKTYPE_RAW, LINKTYPE_USER0, PATH_LEN};
use crate::pcapng::{self, PacketMeta};
use crate::{tailscale, Format, History, Meta, Options, Path, Timestamp};

/// Encodes records for one output, into buffers the caller owns. Pure: no clock, no I/O.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use bytes::BytesMut;
/// use pcapcast_core::{Encoder, Options, Path};
///
/// let encoder = Encoder::new(Options::default());
/// let mut out = BytesMut::new();
/// encoder.put_header(&mut out);
/// let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let n = encoder.put_record(&mut out, Path::FromLocal, when, &[0x45, 0, 0, 20]);
/// assert_eq!(n, 16 + 2 + 4);
/// assert_eq!(out.len(), 24 + n);
/// ```
#[derive(Clone, Debug)]
pub struct Encoder {
    options: Options,
    /// pcapng interface index of each path kind the output keeps.
    interfaces: [Option<u32>; Path::KINDS],
}

const APPLICATION: &str = concat!("pcapcast ", env!("CARGO_PKG_VERSION"));

/// The pcapng section comment of an output that starts with history, and of a snapshot.
const HISTORY_SECTION: &str = "starts with the capture's history: records logged before this output attached, as far as the capture retained them; the first record logged after the attach says so in its comment";
const SNAPSHOT_SECTION: &str =
    "a snapshot of the capture's history: records logged before this output attached, as far as the capture retained them";
/// The comment on an output's first record logged after its attach, when it asked for
/// history.
pub(crate) const LIVE_NOTE: &str =
    "the first record logged after this output attached: those before are the capture's history";

impl Encoder {
    /// An encoder for `options`.
    pub fn new(options: Options) -> Encoder {
        let mut interfaces = [None; Path::KINDS];
        let mut next = 0;
        for path in Path::ALL_KINDS {
            if keeps_kind(&options, path) {
                interfaces[path.kind_index()] = Some(next);
                next += 1;
            }
        }
        Encoder {
            options,
            interfaces,
        }
    }

    /// The options this encoder follows.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Appends the file header: the pcap file header, or the pcapng section header and
    /// one interface description per kept path kind.
    pub fn put_header(&self, out: &mut BytesMut) {
        let snaplen = self.options.get_snaplen();
        match self.options.get_format() {
            Format::Pcap | Format::Tailscale => {
                pcap::put_file_header(out, self.options.get_resolution(), snaplen, LINKTYPE_USER0)
            }
            Format::RawIp => {
                pcap::put_file_header(out, self.options.get_resolution(), snaplen, LINKTYPE_RAW)
            }
            Format::Pcapng => {
                let comment = match (self.options.get_history(), self.options.get_follow()) {
                    (History::None, _) => None,
                    (_, true) => Some(HISTORY_SECTION),
                    (_, false) => Some(SNAPSHOT_SECTION),
                };
                pcapng::put_section_header_with(out, APPLICATION, comment);
                for path in Path::ALL_KINDS {
                    if self.interfaces[path.kind_index()].is_some() {
                        let linktype = if path.carries_ip() {
                            LINKTYPE_RAW
                        } else {
                            LINKTYPE_USER0
                        };
                        pcapng::put_interface_description(
                            out,
                            linktype as u16,
                            snaplen,
                            path.name(),
                            describe(path),
                        );
                    }
                }
            }
        }
    }

    /// Appends one record for a packet logged at `when`; a time outside what the format
    /// holds saturates. Returns the bytes appended: none for a path this output does not
    /// write (see [`Encoder::writes`]).
    pub fn put_record(
        &self,
        out: &mut BytesMut,
        path: Path,
        when: SystemTime,
        packet: &[u8],
    ) -> usize {
        self.put_record_with(out, path, when, packet, &Meta::new())
    }

    /// [`Encoder::put_record`] for a packet with metadata, which the format writes if it
    /// holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::UNIX_EPOCH;
    /// use bytes::BytesMut;
    /// use pcapcast_core::{Encoder, Format, Meta, Options, Path};
    ///
    /// let encoder = Encoder::new(Options::new().format(Format::Tailscale));
    /// let meta = Meta::new().dnat("100.64.0.9:53".parse()?);
    /// let mut out = BytesMut::new();
    /// let n = encoder.put_record_with(&mut out, Path::FromPeer, UNIX_EPOCH, &[0x45; 20], &meta);
    /// assert_eq!(n, 16 + 2 + 1 + 1 + 4 + 20);
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn put_record_with(
        &self,
        out: &mut BytesMut,
        path: Path,
        when: SystemTime,
        packet: &[u8],
        meta: &Meta,
    ) -> usize {
        if !self.writes(path) {
            return 0;
        }
        let (ts, _) = Timestamp::from_system_time(when);
        let stored = Stored {
            path,
            ts,
            packet,
            orig_len: packet.len(),
            meta,
            note: None,
        };
        self.put_stored(out, &stored, 0)
    }

    /// Appends one record of a packet of which `packet` was kept of `orig_len` bytes,
    /// at `ts`: a record read back from another output (see
    /// [`Transcoder`](crate::transcode::Transcoder)). The snaplen cuts it further.
    /// Returns the bytes appended, none for a path this output does not write.
    ///
    /// # Examples
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use pcapcast_core::{Encoder, Meta, Options, Path, Timestamp};
    ///
    /// let encoder = Encoder::new(Options::new().snaplen(10)?);
    /// let mut out = BytesMut::new();
    /// let ts = Timestamp::new(1, 1_999); // the seed format keeps 1 µs of it
    /// let n = encoder.put_packet(&mut out, Path::FromPeer, ts, &[0x45; 20], 1500, &Meta::new());
    /// assert_eq!(n, 16 + 10);
    /// assert_eq!(&out[4..16], &[1, 0, 0, 0, 10, 0, 0, 0, 0xde, 5, 0, 0]); // µs, incl, orig
    /// # Ok::<(), pcapcast_core::Error>(())
    /// ```
    pub fn put_packet(
        &self,
        out: &mut BytesMut,
        path: Path,
        ts: Timestamp,
        packet: &[u8],
        orig_len: usize,
        meta: &Meta,
    ) -> usize {
        let before = out.len();
        match self.put_packet_head(out, path, ts, packet.len(), orig_len, meta) {
            Some(body) => out.extend_from_slice(&packet[..body]),
            None if self.writes(path) => {
                let stored = Stored {
                    path,
                    ts,
                    packet,
                    orig_len,
                    meta,
                    note: None,
                };
                self.put_stored(out, &stored, 0);
            }
            None => {}
        }
        out.len() - before
    }

    /// The first part of [`Encoder::put_packet`] in a classic format, whose records end
    /// with the packet: the record header and what comes before the packet, for a
    /// packet of which `kept` bytes are at hand. Returns how many of them follow, to be
    /// written by the caller (from where they lie, without a copy here); `None` for a
    /// path this output does not write, and for pcapng.
    pub fn put_packet_head(
        &self,
        out: &mut BytesMut,
        path: Path,
        ts: Timestamp,
        kept: usize,
        orig_len: usize,
        meta: &Meta,
    ) -> Option<usize> {
        if !self.writes(path) {
            return None;
        }
        let snaplen = self.options.get_snaplen();
        let resolution = self.options.get_resolution();
        Some(match self.options.get_format() {
            Format::Pcap => pcap::put_seed_head(out, resolution, snaplen, ts, path, kept, orig_len),
            Format::Tailscale => {
                tailscale::put_head(out, resolution, snaplen, ts, path, meta, kept, orig_len)
            }
            Format::RawIp => pcap::put_raw_head(out, resolution, snaplen, ts, kept, orig_len),
            Format::Pcapng => return None,
        })
    }

    /// Whether this output writes records of `path`: a path its options keep, and for
    /// [`Format::RawIp`] only a path that carries IP (a Disco frame or an unnamed
    /// path's payload would read as a malformed IP packet there).
    pub fn writes(&self, path: Path) -> bool {
        self.options.keeps(path) && self.format_holds(path)
    }

    /// Whether this output writes records of some path of `kind`'s kind.
    pub(crate) fn writes_kind(&self, kind: Path) -> bool {
        keeps_kind(&self.options, kind) && self.format_holds(kind)
    }

    fn format_holds(&self, path: Path) -> bool {
        self.options.get_format() != Format::RawIp || path.carries_ip()
    }

    /// Appends one record of a stored packet, after `drops` records this output lost.
    /// Returns the bytes appended.
    pub(crate) fn put_stored(&self, out: &mut BytesMut, stored: &Stored<'_>, drops: u64) -> usize {
        let snaplen = self.options.get_snaplen();
        let resolution = self.options.get_resolution();
        let Stored {
            path,
            ts,
            packet,
            orig_len,
            meta,
            note,
        } = *stored;
        match self.options.get_format() {
            Format::Pcap => {
                pcap::put_seed_record(out, resolution, snaplen, ts, path, packet, orig_len)
            }
            Format::Tailscale => {
                tailscale::put_record(out, resolution, snaplen, ts, path, meta, packet, orig_len)
            }
            Format::RawIp => pcap::put_raw_record(out, resolution, snaplen, ts, packet, orig_len),
            Format::Pcapng => {
                let interface = self.interfaces[path.kind_index()].unwrap_or(0);
                let snaplen = snaplen as usize;
                let tag = u16::from(path).to_le_bytes();
                let (prefix, orig_len): (&[u8], usize) = if path.carries_ip() {
                    (&[], orig_len)
                } else {
                    (&tag, orig_len.saturating_add(PATH_LEN))
                };
                let prefix = &prefix[..prefix.len().min(snaplen)];
                let body = &packet[..packet.len().min(snaplen - prefix.len())];
                let meta = PacketMeta {
                    interface,
                    ts,
                    orig_len,
                    direction: path.direction(),
                    drops,
                    nat: *meta,
                    note,
                };
                pcapng::put_enhanced_packet(out, &meta, &[prefix, body])
            }
        }
    }
}

/// A packet as the log keeps it: `packet` is what was kept of `orig_len` bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stored<'a> {
    pub(crate) path: Path,
    pub(crate) ts: Timestamp,
    pub(crate) packet: &'a [u8],
    pub(crate) orig_len: usize,
    pub(crate) meta: &'a Meta,
    /// A comment for formats that hold one (pcapng), besides the metadata's.
    pub(crate) note: Option<&'static str>,
}

fn keeps_kind(options: &Options, kind: Path) -> bool {
    match options.kept_paths() {
        None => true,
        Some(mut kept) => kept.any(|p| p.kind_index() == kind.kind_index()),
    }
}

fn describe(path: Path) -> &'static str {
    match path {
        Path::FromLocal => "IP packets sent by the local host towards a peer",
        Path::FromPeer => "IP packets received from a peer for the local host",
        Path::SynthesizedToLocal => "IP packets made by the datapath for the local host",
        Path::SynthesizedToPeer => "IP packets made by the datapath for a peer",
        Path::Disco => "discovery frames: a 2-byte path, then the frame",
        Path::Other(_) => "other paths: a 2-byte path, then the payload",
    }
}
