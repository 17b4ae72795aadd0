//! pcapng: section header, interface descriptions and enhanced packet blocks,
//! little-endian, every block and option padded to 32 bits.

use bytes::{BufMut, BytesMut};

use crate::pcap::saturating_u32;
use crate::{Direction, Meta, Timestamp};

/// Block type of a section header block.
pub const SECTION_HEADER: u32 = 0x0A0D_0D0A;
/// Block type of an interface description block.
pub const INTERFACE_DESCRIPTION: u32 = 0x0000_0001;
/// Block type of an enhanced packet block.
pub const ENHANCED_PACKET: u32 = 0x0000_0006;
/// The byte-order magic of a section header.
pub const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;

/// Option code: the end of a block's options.
pub const OPT_END: u16 = 0;
/// Option code: a comment, in any block.
pub const OPT_COMMENT: u16 = 1;
/// Section header option: the application that wrote the section.
pub const SHB_USERAPPL: u16 = 4;
/// Interface description option: the interface's name.
pub const IF_NAME: u16 = 2;
/// Interface description option: the interface's description.
pub const IF_DESCRIPTION: u16 = 3;
/// Interface description option: the unit of its timestamps.
pub const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
const EPB_DROPCOUNT: u16 = 4;

/// `if_tsresol` value for nanoseconds (10^-9).
pub const TSRESOL_NANOS: u8 = 9;

/// Appends a section header block of unknown section length, naming `application`.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use pcapcast_core::pcapng;
///
/// let mut out = BytesMut::new();
/// pcapng::put_section_header(&mut out, "pcapcast");
/// assert_eq!(&out[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
/// assert_eq!(out.len() % 4, 0);
/// ```
pub fn put_section_header(out: &mut BytesMut, application: &str) {
    put_section_header_with(out, application, None);
}

/// [`put_section_header`] with a `shb_comment`, when given.
pub fn put_section_header_with(out: &mut BytesMut, application: &str, comment: Option<&str>) {
    let start = begin_block(out, SECTION_HEADER);
    out.put_u32_le(BYTE_ORDER_MAGIC);
    out.put_u16_le(1); // major version
    out.put_u16_le(0); // minor version
    out.put_i64_le(-1); // section length: not known while streaming
    if let Some(comment) = comment {
        put_option(out, OPT_COMMENT, comment.as_bytes());
    }
    put_option(out, SHB_USERAPPL, application.as_bytes());
    put_option(out, OPT_END, &[]);
    end_block(out, start);
}

/// Appends an interface description block with nanosecond timestamps.
pub fn put_interface_description(
    out: &mut BytesMut,
    linktype: u16,
    snaplen: u32,
    name: &str,
    description: &str,
) {
    let start = begin_block(out, INTERFACE_DESCRIPTION);
    out.put_u16_le(linktype);
    out.put_u16_le(0); // reserved
    out.put_u32_le(snaplen);
    put_option(out, IF_NAME, name.as_bytes());
    put_option(out, IF_DESCRIPTION, description.as_bytes());
    put_option(out, IF_TSRESOL, &[TSRESOL_NANOS]);
    put_option(out, OPT_END, &[]);
    end_block(out, start);
}

/// What an enhanced packet block says besides the packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Index of the interface description the packet belongs to.
    pub interface: u32,
    /// The packet's time.
    pub ts: Timestamp,
    /// Length of the packet as it was, before any cut.
    pub orig_len: usize,
    /// Which way it went, written as `epb_flags` when known.
    pub direction: Option<Direction>,
    /// Packets this output lost since its previous record, written as `epb_dropcount`
    /// when not zero.
    pub drops: u64,
    /// The addresses before NAT, written as `opt_comment` (`snat ADDR:PORT dnat
    /// ADDR:PORT`) when any.
    pub nat: Meta,
    /// A further `opt_comment`, after the NAT one, when given.
    pub note: Option<&'static str>,
}

/// Appends an enhanced packet block holding `data` (already cut to the snaplen), with
/// nanosecond time. Returns the bytes appended.
pub fn put_enhanced_packet(out: &mut BytesMut, meta: &PacketMeta, data: &[&[u8]]) -> usize {
    let before = out.len();
    let start = begin_block(out, ENHANCED_PACKET);
    let captured: usize = data.iter().map(|part| part.len()).sum();
    let nanos = meta.ts.as_nanos();
    out.put_u32_le(meta.interface);
    out.put_u32_le((nanos >> 32) as u32);
    out.put_u32_le(nanos as u32);
    out.put_u32_le(saturating_u32(captured));
    out.put_u32_le(saturating_u32(meta.orig_len));
    for part in data {
        out.extend_from_slice(part);
    }
    out.put_bytes(0, padding(captured));
    if let Some(direction) = meta.direction {
        let flags: u32 = match direction {
            Direction::Inbound => 0b01,
            Direction::Outbound => 0b10,
        };
        put_option(out, EPB_FLAGS, &flags.to_le_bytes());
    }
    if meta.drops > 0 {
        put_option(out, EPB_DROPCOUNT, &meta.drops.to_le_bytes());
    }
    if !meta.nat.is_empty() {
        put_comment(out, &meta.nat);
    }
    if let Some(note) = meta.note {
        put_option(out, OPT_COMMENT, note.as_bytes());
    }
    if meta.direction.is_some() || meta.drops > 0 || !meta.nat.is_empty() || meta.note.is_some() {
        put_option(out, OPT_END, &[]);
    }
    end_block(out, start);
    out.len() - before
}

/// Begins a block of `block_type` (its total length left to [`end_block`]); returns
/// where it starts.
pub fn begin_block(out: &mut BytesMut, block_type: u32) -> usize {
    let start = out.len();
    out.put_u32_le(block_type);
    out.put_u32_le(0); // total length, patched by `end_block`
    start
}

/// Ends the block begun at `start`: its total length, at both ends.
pub fn end_block(out: &mut BytesMut, start: usize) {
    let total = saturating_u32(out.len() - start + 4);
    out.put_u32_le(total);
    out[start + 4..start + 8].copy_from_slice(&total.to_le_bytes());
}

/// Appends one option, padded to 32 bits; a value longer than an option holds (64 KiB)
/// is cut.
pub fn put_option(out: &mut BytesMut, code: u16, value: &[u8]) {
    let value = &value[..value.len().min(usize::from(u16::MAX))];
    out.put_u16_le(code);
    out.put_u16_le(value.len() as u16);
    out.extend_from_slice(value);
    out.put_bytes(0, padding(value.len()));
}

/// Writes `text` as an `opt_comment` straight into `out`: no string in between.
fn put_comment(out: &mut BytesMut, text: &dyn std::fmt::Display) {
    use std::fmt::Write;
    let start = out.len();
    out.put_u16_le(OPT_COMMENT);
    out.put_u16_le(0); // length, patched below
                       // Writing into a `BytesMut` cannot fail.
    let _ = write!(out, "{text}");
    let len = out.len() - start - 4;
    out[start + 2..start + 4].copy_from_slice(&(len as u16).to_le_bytes());
    out.put_bytes(0, padding(len));
}

fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An enhanced packet block for a 5-byte inbound packet lost after 2 drops, as the
    /// pcapng specification lays it out.
    const EPB_BYTES: [u8; 64] = [
        0x06, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, // type, total length 64
        0x01, 0x00, 0x00, 0x00, // interface 1
        0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, // time: 5 ns
        0x05, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, // captured 5, original 9
        0x45, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, // data, padded
        0x02, 0x00, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00, // epb_flags: inbound
        0x04, 0x00, 0x08, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // dropcount 2
        0x00, 0x00, 0x00, 0x00, // end of options
        0x40, 0x00, 0x00, 0x00, // total length again
    ];

    #[test]
    fn enhanced_packet_block_layout() {
        let mut out = BytesMut::new();
        let meta = PacketMeta {
            interface: 1,
            ts: Timestamp::new(0, 5),
            orig_len: 9,
            direction: Some(Direction::Inbound),
            drops: 2,
            nat: Meta::new(),
            note: None,
        };
        let n = put_enhanced_packet(&mut out, &meta, &[&[0x45], &[1, 2, 3, 4]]);
        assert_eq!(n, EPB_BYTES.len());
        assert_eq!(&out[..], &EPB_BYTES[..]);
    }

    #[test]
    fn nat_is_a_padded_comment() {
        let mut out = BytesMut::new();
        let meta = PacketMeta {
            nat: Meta::new().dnat("100.64.0.9:53".parse().unwrap()),
            ..PacketMeta::default()
        };
        let n = put_enhanced_packet(&mut out, &meta, &[&[0x45]]);
        let comment = b"dnat 100.64.0.9:53"; // 18 bytes, padded to 20
        assert_eq!(&out[32..36], &[1, 0, 18, 0]);
        assert_eq!(&out[36..54], comment);
        assert_eq!(&out[54..56], &[0, 0]);
        assert_eq!(&out[56..60], &[0, 0, 0, 0]); // end of options
        assert_eq!(n, 64);
    }

    #[test]
    fn interface_description_is_padded() {
        let mut out = BytesMut::new();
        put_interface_description(&mut out, 101, 65_535, "from-peer", "x");
        assert_eq!(out.len() % 4, 0);
        let total = u32::from_le_bytes(out[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, out.len());
        assert_eq!(&out[total - 4..], &out[4..8]);
    }
}
