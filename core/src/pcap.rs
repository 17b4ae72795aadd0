//! Classic pcap: the file header and the record header, little-endian.
//!
//! The seed format is classic pcap with [`LINKTYPE_USER0`] whose records carry the path
//! as a `u16` before the packet; [`LINKTYPE_RAW`] records carry the IP packet alone.

use bytes::{BufMut, BytesMut};

use crate::{Path, Timestamp};

/// `LINKTYPE_USER0`: the seed format, a 2-byte path before each packet.
pub const LINKTYPE_USER0: u32 = 147;
/// `LINKTYPE_RAW`: each record is a bare IPv4 or IPv6 packet.
pub const LINKTYPE_RAW: u32 = 101;
/// Magic number of a file with microsecond timestamps.
pub const MAGIC_MICROS: u32 = 0xA1B2_C3D4;
/// Magic number of a file with nanosecond timestamps.
pub const MAGIC_NANOS: u32 = 0xA1B2_3C4D;
/// Length of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 16;
/// Length of the path tag that seed-format records carry before the packet.
pub const PATH_LEN: usize = 2;
/// The largest snaplen libpcap readers accept (their `MAXIMUM_SNAPLEN`).
pub const MAX_SNAPLEN: u32 = 262_144;
/// The snaplen the Go original wrote.
pub const DEFAULT_SNAPLEN: u32 = 65_535;

/// Byte ranges of the fields of a record header.
pub mod record_field {
    use std::ops::Range;
    /// Seconds since the epoch.
    pub const TS_SEC: Range<usize> = 0..4;
    /// Microseconds or nanoseconds past `TS_SEC`.
    pub const TS_FRAC: Range<usize> = 4..8;
    /// Bytes of the record that follow its header.
    pub const INCL_LEN: Range<usize> = 8..12;
    /// Length of the packet as it was, before any cut.
    pub const ORIG_LEN: Range<usize> = 12..16;
}

/// Timestamp resolution of a classic pcap file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TsResolution {
    /// Microseconds (magic `0xA1B2C3D4`), as the Go original wrote.
    #[default]
    Micros,
    /// Nanoseconds (magic `0xA1B23C4D`).
    Nanos,
}

impl TsResolution {
    /// The magic number that announces this resolution.
    pub fn magic(self) -> u32 {
        match self {
            Self::Micros => MAGIC_MICROS,
            Self::Nanos => MAGIC_NANOS,
        }
    }

    /// The fraction of a second a record header holds for `ts`.
    pub fn fraction(self, ts: Timestamp) -> u32 {
        match self {
            Self::Micros => ts.micros(),
            Self::Nanos => ts.nanos(),
        }
    }
}

/// Appends a classic pcap file header.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use pcapcast_core::pcap::{self, TsResolution};
///
/// let mut out = BytesMut::new();
/// pcap::put_file_header(&mut out, TsResolution::Micros, 65_535, pcap::LINKTYPE_USER0);
/// assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
/// assert_eq!(out.len(), pcap::FILE_HEADER_LEN);
/// ```
pub fn put_file_header(out: &mut BytesMut, resolution: TsResolution, snaplen: u32, linktype: u32) {
    out.reserve(FILE_HEADER_LEN);
    out.put_u32_le(resolution.magic());
    out.put_u16_le(2);
    out.put_u16_le(4);
    out.put_i32_le(0); // thiszone: times are UTC
    out.put_u32_le(0); // sigfigs
    out.put_u32_le(snaplen);
    out.put_u32_le(linktype);
}

/// Appends a record header for a packet of `orig_len` bytes of which `incl_len` follow.
pub fn put_record_header(
    out: &mut BytesMut,
    resolution: TsResolution,
    ts: Timestamp,
    incl_len: u32,
    orig_len: u32,
) {
    out.reserve(RECORD_HEADER_LEN);
    out.put_u32_le(ts.secs());
    out.put_u32_le(resolution.fraction(ts));
    out.put_u32_le(incl_len);
    out.put_u32_le(orig_len);
}

/// Appends one seed-format record: the header, then the path and the packet cut so that
/// both together fit in `snaplen`. `packet` may already be cut; `orig_len` is the length
/// of the packet as it was. Returns the bytes appended.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use pcapcast_core::{pcap, Path, Timestamp};
///
/// let mut out = BytesMut::new();
/// let packet = [0x45; 10];
/// let n = pcap::put_seed_record(&mut out, pcap::TsResolution::Micros, 8, Timestamp::new(1, 0),
///     Path::FromPeer, &packet, packet.len());
/// assert_eq!(n, 16 + 8);
/// assert_eq!(&out[8..16], &[8, 0, 0, 0, 12, 0, 0, 0]); // incl_len 8, orig_len 12
/// assert_eq!(&out[16..18], &[1, 0]); // the path
/// ```
pub fn put_seed_record(
    out: &mut BytesMut,
    resolution: TsResolution,
    snaplen: u32,
    ts: Timestamp,
    path: Path,
    packet: &[u8],
    orig_len: usize,
) -> usize {
    let before = out.len();
    let body = put_seed_head(out, resolution, snaplen, ts, path, packet.len(), orig_len);
    out.extend_from_slice(&packet[..body]);
    out.len() - before
}

/// The first part of [`put_seed_record`]: the header and the path, for a packet of
/// which `kept` bytes are at hand. Returns how many of them follow.
pub fn put_seed_head(
    out: &mut BytesMut,
    resolution: TsResolution,
    snaplen: u32,
    ts: Timestamp,
    path: Path,
    kept: usize,
    orig_len: usize,
) -> usize {
    let tag = u16::from(path).to_le_bytes();
    let orig = saturating_u32(orig_len.saturating_add(PATH_LEN));
    let incl = (PATH_LEN + kept).min(snaplen as usize);
    put_record_header(out, resolution, ts, incl as u32, orig);
    let tag_len = incl.min(PATH_LEN);
    out.extend_from_slice(&tag[..tag_len]);
    incl - tag_len
}

/// Appends one raw-IP record: the header and the packet cut to `snaplen`. Returns the
/// bytes appended.
pub fn put_raw_record(
    out: &mut BytesMut,
    resolution: TsResolution,
    snaplen: u32,
    ts: Timestamp,
    packet: &[u8],
    orig_len: usize,
) -> usize {
    let body = put_raw_head(out, resolution, snaplen, ts, packet.len(), orig_len);
    out.extend_from_slice(&packet[..body]);
    RECORD_HEADER_LEN + body
}

/// The first part of [`put_raw_record`]: the header, for a packet of which `kept`
/// bytes are at hand. Returns how many of them follow.
pub fn put_raw_head(
    out: &mut BytesMut,
    resolution: TsResolution,
    snaplen: u32,
    ts: Timestamp,
    kept: usize,
    orig_len: usize,
) -> usize {
    let incl = kept.min(snaplen as usize);
    put_record_header(out, resolution, ts, incl as u32, saturating_u32(orig_len));
    incl
}

pub(crate) fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first record of `core/tests/golden/seed-basic.pcap`, byte for byte.
    const SEED_RECORD: [u8; 46] = [
        0x00, 0xf1, 0x53, 0x65, 0x40, 0xe2, 0x01, 0x00, 0x1e, 0x00, 0x00, 0x00, 0x1e, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x60, 0x1a,
        0x64, 0x40, 0x00, 0x01, 0x64, 0x40, 0x00, 0x02, 0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00,
        0x00,
    ];

    #[test]
    fn seed_record_matches_the_original() {
        let packet = &SEED_RECORD[18..];
        let mut out = BytesMut::new();
        let ts = Timestamp::new(1_700_000_000, 123_456_789);
        let n = put_seed_record(
            &mut out,
            TsResolution::Micros,
            DEFAULT_SNAPLEN,
            ts,
            Path::FromLocal,
            packet,
            packet.len(),
        );
        assert_eq!(n, SEED_RECORD.len());
        assert_eq!(&out[..], &SEED_RECORD[..]);
    }

    #[test]
    fn snaplen_cuts_incl_len_only() {
        let mut out = BytesMut::new();
        let packet = [7u8; 100];
        let n = put_raw_record(
            &mut out,
            TsResolution::Nanos,
            60,
            Timestamp::new(3, 999),
            &packet,
            100,
        );
        assert_eq!(n, 16 + 60);
        assert_eq!(&out[record_field::TS_FRAC], &999u32.to_le_bytes());
        assert_eq!(&out[record_field::INCL_LEN], &60u32.to_le_bytes());
        assert_eq!(&out[record_field::ORIG_LEN], &100u32.to_le_bytes());
    }

    #[test]
    fn snaplen_of_one_keeps_half_the_path() {
        let mut out = BytesMut::new();
        let n = put_seed_record(
            &mut out,
            TsResolution::Micros,
            1,
            Timestamp::MIN,
            Path::Other(0xABCD),
            &[1, 2],
            2,
        );
        assert_eq!(n, 17);
        assert_eq!(out[16], 0xCD);
    }
}
