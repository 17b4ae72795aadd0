//! Tailscale's current framing: the seed file header, then records whose payload is the
//! path, the addresses before NAT and the packet.
//!
//! Tailscale's capture has written this since March 2023 (`feature/capture/capture.go`):
//!
//! | bytes            | field                                         |
//! |------------------|-----------------------------------------------|
//! | 2                | path, `u16` little-endian                     |
//! | 1                | `snat_len`: 0, 4 or 16                        |
//! | `snat_len`       | the source address before SNAT                |
//! | 1                | `dnat_len`: 0, 4 or 16                        |
//! | `dnat_len`       | the destination address before DNAT           |
//! | the rest         | the packet (for [`Path::Disco`], a [disco frame](crate::disco)) |
//!
//! The ports of the original addresses are not written; there is no version marker. A
//! packet without NAT has `PP PP 00 00` before it.

use bytes::{BufMut, BytesMut};

use crate::meta::address_bytes;
use crate::pcap::{put_record_header, saturating_u32, TsResolution, RECORD_HEADER_LEN};
use crate::{Meta, Path, Timestamp};

/// Bytes every record's payload carries before the packet: the path and the two
/// address lengths.
pub const FIXED_PREFIX_LEN: usize = 4;
/// The longest prefix: the path and two IPv6 addresses with their lengths.
pub const MAX_PREFIX_LEN: usize = FIXED_PREFIX_LEN + 32;

/// The bytes Tailscale's framing puts before a packet of `path` with `meta`, in a
/// buffer of [`MAX_PREFIX_LEN`] and the length used.
///
/// # Examples
///
/// ```
/// use pcapcast_core::{tailscale, Meta, Path};
///
/// let (prefix, len) = tailscale::prefix(Path::FromPeer, &Meta::new());
/// assert_eq!(&prefix[..len], &[1, 0, 0, 0]);
/// let meta = Meta::new().dnat("100.64.0.9:53".parse()?);
/// let (prefix, len) = tailscale::prefix(Path::FromPeer, &meta);
/// assert_eq!(&prefix[..len], &[1, 0, 0, 4, 100, 64, 0, 9]);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn prefix(path: Path, meta: &Meta) -> ([u8; MAX_PREFIX_LEN], usize) {
    let mut out = [0; MAX_PREFIX_LEN];
    out[..2].copy_from_slice(&u16::from(path).to_le_bytes());
    let mut len = 2;
    for addr in [meta.original_src(), meta.original_dst()] {
        let (bytes, addr_len) = address_bytes(addr);
        out[len] = addr_len as u8;
        out[len + 1..len + 1 + addr_len].copy_from_slice(&bytes[..addr_len]);
        len += 1 + addr_len;
    }
    (out, len)
}

/// Appends one record in Tailscale's framing: the header, then the prefix and the
/// packet cut so that both fit in `snaplen`. `packet` may already be cut; `orig_len` is
/// the packet's length as it was. Returns the bytes appended.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use pcapcast_core::{pcap::TsResolution, tailscale, Meta, Path, Timestamp};
///
/// let mut out = BytesMut::new();
/// let packet = [0x45; 20];
/// let n = tailscale::put_record(&mut out, TsResolution::Micros, 65_535, Timestamp::new(1, 0),
///     Path::FromLocal, &Meta::new(), &packet, packet.len());
/// assert_eq!(n, 16 + 4 + 20);
/// assert_eq!(&out[8..16], &[24, 0, 0, 0, 24, 0, 0, 0]); // incl_len, orig_len
/// assert_eq!(&out[16..20], &[0, 0, 0, 0]); // path 0, no SNAT, no DNAT
/// ```
#[allow(clippy::too_many_arguments)] // the record's fields, as `pcap::put_seed_record`
pub fn put_record(
    out: &mut BytesMut,
    resolution: TsResolution,
    snaplen: u32,
    ts: Timestamp,
    path: Path,
    meta: &Meta,
    packet: &[u8],
    orig_len: usize,
) -> usize {
    let before = out.len();
    let body = put_head(
        out,
        resolution,
        snaplen,
        ts,
        path,
        meta,
        packet.len(),
        orig_len,
    );
    out.put_slice(&packet[..body]);
    out.len() - before
}

/// The first part of [`put_record`]: the header and the prefix, for a packet of which
/// `kept` bytes are at hand. Returns how many of them follow.
#[allow(clippy::too_many_arguments)] // as `put_record`
pub fn put_head(
    out: &mut BytesMut,
    resolution: TsResolution,
    snaplen: u32,
    ts: Timestamp,
    path: Path,
    meta: &Meta,
    kept: usize,
    orig_len: usize,
) -> usize {
    let (prefix, prefix_len) = prefix(path, meta);
    let orig = saturating_u32(orig_len.saturating_add(prefix_len));
    let incl = (prefix_len + kept).min(snaplen as usize);
    out.reserve(RECORD_HEADER_LEN + incl);
    put_record_header(out, resolution, ts, incl as u32, orig);
    let kept_prefix = incl.min(prefix_len);
    out.put_slice(&prefix[..kept_prefix]);
    incl - kept_prefix
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lengths_for_every_family() {
        let v4 = "1.2.3.4:1".parse().unwrap();
        let v6 = "[::1]:1".parse().unwrap();
        for (src, dst, len) in [
            (None, None, 4),
            (Some(v4), None, 8),
            (None, Some(v6), 20),
            (Some(v6), Some(v4), 24),
            (Some(v6), Some(v6), MAX_PREFIX_LEN),
        ] {
            let mut meta = Meta::new();
            if let Some(src) = src {
                meta = meta.snat(src);
            }
            if let Some(dst) = dst {
                meta = meta.dnat(dst);
            }
            assert_eq!(prefix(Path::Disco, &meta).1, len, "{meta}");
        }
    }

    #[test]
    fn a_small_snaplen_cuts_the_prefix_too() {
        let meta = Meta::new().snat("[::1]:1".parse().unwrap());
        let mut out = BytesMut::new();
        let n = put_record(
            &mut out,
            TsResolution::Micros,
            3,
            Timestamp::MIN,
            Path::FromPeer,
            &meta,
            &[0x60; 40],
            40,
        );
        assert_eq!(n, RECORD_HEADER_LEN + 3);
        assert_eq!(&out[12..16], &(40u32 + 20).to_le_bytes());
        assert_eq!(&out[16..], &[1, 0, 16]);
    }
}
