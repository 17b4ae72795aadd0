//! The pcapng blocks a merged capture writes or rewrites: its own section header, each
//! daemon's interface descriptions with the daemon named in `if_description`, and
//! enhanced packet blocks moved to the merged file's interface numbers. Little-endian
//! sections only (pcapcast writes nothing else); options are walked with every length
//! checked, so a hostile block is refused, never read out of bounds.

use bytes::{Bytes, BytesMut};
use pcapcast_core::pcapng::{
    self, BYTE_ORDER_MAGIC, IF_DESCRIPTION, IF_TSRESOL, OPT_COMMENT, OPT_END,
};
/// Type and length before a block's body; the length again after it.
const FRAME: usize = 8;
/// An interface description's fixed part: link type, reserved, snaplen.
const IDB_FIXED: usize = FRAME + 8;
/// An enhanced packet block's fixed part: interface, time (2 words), lengths (2).
const EPB_FIXED: usize = FRAME + 20;

/// The unit of an interface's timestamps (`if_tsresol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// 10^-n seconds.
    Decimal(u8),
    /// 2^-n seconds.
    Binary(u8),
}

impl Resolution {
    /// Nanoseconds in `ticks` of this unit (0 for a unit too fine to count in).
    pub fn nanos(self, ticks: u64) -> u128 {
        let ticks = u128::from(ticks);
        match self {
            Resolution::Decimal(n) if n <= 9 => ticks * 10u128.pow(u32::from(9 - n)),
            Resolution::Decimal(n) => 10u128
                .checked_pow(u32::from(n - 9))
                .map_or(0, |unit| ticks / unit),
            Resolution::Binary(n) => (ticks * 1_000_000_000) >> n.min(127),
        }
    }
}

fn u32_at(block: &[u8], at: usize) -> Option<u32> {
    let b = block.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A block's type.
pub fn block_type(block: &[u8]) -> Option<u32> {
    u32_at(block, 0)
}

/// Whether a section header is little-endian.
pub fn is_little_endian(section_header: &[u8]) -> bool {
    u32_at(section_header, 8) == Some(BYTE_ORDER_MAGIC)
}

/// The options of a block from `start` to its trailing length, up to `opt_end`; `None`
/// when one runs past the block.
fn options(block: &[u8], start: usize) -> Option<Vec<(u16, &[u8])>> {
    let mut region = block.get(start..block.len().checked_sub(4)?)?;
    let mut found = Vec::new();
    while region.len() >= 4 {
        let code = u16::from_le_bytes([region[0], region[1]]);
        let len = usize::from(u16::from_le_bytes([region[2], region[3]]));
        if code == OPT_END {
            break;
        }
        found.push((code, region.get(4..4 + len)?));
        region = region.get(4 + len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Some(found)
}

/// Writes the options and the end of a block begun at `start` with `options`.
fn finish_block(out: &mut BytesMut, start: usize, options: &[(u16, &[u8])]) {
    for (code, value) in options {
        pcapng::put_option(out, *code, value);
    }
    if !options.is_empty() {
        pcapng::put_option(out, OPT_END, &[]);
    }
    pcapng::end_block(out, start);
}

/// A section header naming the application, with `comment` (`shb_comment`).
pub fn section_header(application: &str, comment: &str) -> Bytes {
    let mut out = BytesMut::new();
    pcapng::put_section_header_with(&mut out, application, Some(comment));
    out.freeze()
}

/// An interface description with `description` as its `if_description`, every other
/// option kept; and its time unit (microseconds when it names none).
///
/// # Errors
///
/// A block too short for an interface description, or with an option that runs past it.
pub fn describe_interface(block: &[u8], description: &str) -> Result<(Bytes, Resolution), String> {
    let bad = || "an interface description block that is cut or malformed".to_owned();
    let fixed = block.get(FRAME..IDB_FIXED).ok_or_else(bad)?;
    let mut kept = options(block, IDB_FIXED).ok_or_else(bad)?;
    let resolution = match kept
        .iter()
        .find(|(code, v)| *code == IF_TSRESOL && v.len() == 1)
    {
        Some((_, [v])) if v & 0x80 != 0 => Resolution::Binary(v & 0x7f),
        Some((_, [v])) => Resolution::Decimal(*v),
        _ => Resolution::Decimal(6),
    };
    kept.retain(|(code, _)| *code != IF_DESCRIPTION);
    kept.push((IF_DESCRIPTION, description.as_bytes()));
    let mut out = BytesMut::with_capacity(block.len() + description.len() + 8);
    out.extend_from_slice(&block[..FRAME]);
    out.extend_from_slice(fixed);
    finish_block(&mut out, 0, &kept);
    Ok((out.freeze(), resolution))
}

/// An enhanced packet block's interface number and time, in its interface's units.
pub fn packet_interface_and_time(block: &[u8]) -> Option<(u32, u64)> {
    let interface = u32_at(block, 8)?;
    let high = u64::from(u32_at(block, 12)?);
    let low = u64::from(u32_at(block, 16)?);
    Some((interface, high << 32 | low))
}

/// A copy of an enhanced packet block on interface `interface`, with `comment` added
/// to its options when given. A block whose options cannot be read keeps them as they
/// are, without the comment.
pub fn renumber_packet(block: &[u8], interface: u32, comment: Option<&str>) -> Bytes {
    let captured = u32_at(block, 20).map_or(0, |c| c as usize);
    let options_at = EPB_FIXED.saturating_add(captured.div_ceil(4).saturating_mul(4));
    let mut out = match (comment, options(block, options_at)) {
        (Some(comment), Some(mut kept)) if options_at <= block.len() => {
            kept.push((OPT_COMMENT, comment.as_bytes()));
            let mut out = BytesMut::with_capacity(block.len() + comment.len() + 12);
            out.extend_from_slice(&block[..options_at]);
            finish_block(&mut out, 0, &kept);
            out
        }
        _ => BytesMut::from(block),
    };
    if out.len() >= 12 {
        out[8..12].copy_from_slice(&interface.to_le_bytes());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use pcapcast_core::framer::{Framer, Unit};
    use pcapcast_core::pcapng::{self, PacketMeta, SECTION_HEADER, SHB_USERAPPL};
    use pcapcast_core::{Direction, Timestamp};

    use super::*;

    /// The units of `bytes` as a reader sees them after a section header (which a
    /// section header of its own replaces).
    fn units(bytes: &[u8]) -> Vec<Unit> {
        let mut framer = Framer::new();
        if block_type(bytes) != Some(SECTION_HEADER) {
            framer.push(&section_header("test", ""));
            framer.next_unit().unwrap();
        }
        framer.push(bytes);
        std::iter::from_fn(|| framer.next_unit().unwrap()).collect()
    }

    #[test]
    fn the_section_header_reads_back_with_its_comment() {
        let shb = section_header("pcapcast test", "times: each daemon's own clock");
        assert!(is_little_endian(&shb));
        let parsed = units(&shb);
        assert!(matches!(&parsed[..], [Unit::Header(b)] if b.len() == shb.len()));
        let opts = options(&shb, 24).unwrap();
        assert_eq!(
            opts[0],
            (OPT_COMMENT, &b"times: each daemon's own clock"[..])
        );
        assert_eq!(opts[1], (SHB_USERAPPL, &b"pcapcast test"[..]));
    }

    #[test]
    fn an_interface_is_described_anew_and_keeps_the_rest() {
        let mut idb = BytesMut::new();
        pcapng::put_interface_description(
            &mut idb,
            101,
            65_535,
            "from-peer",
            "packets from the peer",
        );
        let (renamed, resolution) = describe_interface(&idb, "unix:/run/left.sock").unwrap();
        assert_eq!(resolution, Resolution::Decimal(9));
        assert_eq!(&renamed[FRAME..IDB_FIXED], &idb[FRAME..IDB_FIXED]);
        let opts = options(&renamed, IDB_FIXED).unwrap();
        assert!(opts.contains(&(2, &b"from-peer"[..])));
        assert!(opts.contains(&(IF_DESCRIPTION, &b"unix:/run/left.sock"[..])));
        assert_eq!(opts.iter().filter(|(c, _)| *c == IF_DESCRIPTION).count(), 1);
        assert_eq!(units(&renamed).len(), 1, "a whole block, lengths agreeing");
    }

    #[test]
    fn a_malformed_interface_is_refused() {
        let mut idb = BytesMut::new();
        pcapng::put_interface_description(&mut idb, 101, 65_535, "from-peer", "x");
        let mut bad = idb.to_vec();
        bad[IDB_FIXED + 2..IDB_FIXED + 4].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(describe_interface(&bad, "d").is_err());
        assert!(describe_interface(&idb[..12], "d").is_err());
    }

    #[test]
    fn a_packet_moves_interface_and_takes_a_comment() {
        let mut epb = BytesMut::new();
        let meta = PacketMeta {
            interface: 1,
            ts: Timestamp::new(7, 5),
            orig_len: 3,
            direction: Some(Direction::Inbound),
            drops: 4,
            nat: pcapcast_core::Meta::new(),
            note: None,
        };
        pcapng::put_enhanced_packet(&mut epb, &meta, &[&[0x45, 1, 2]]);
        assert_eq!(packet_interface_and_time(&epb), Some((1, 7_000_000_005)));
        let moved = renumber_packet(&epb, 9, None);
        assert_eq!(packet_interface_and_time(&moved), Some((9, 7_000_000_005)));
        assert_eq!(&moved[12..], &epb[12..]);
        let commented = renumber_packet(&epb, 9, Some("late"));
        let parsed = units(&commented);
        assert!(
            matches!(&parsed[..], [Unit::Packet { drops: 4, .. }]),
            "{parsed:?}"
        );
        let opts = options(&commented, EPB_FIXED + 4).unwrap();
        assert_eq!(opts.last(), Some(&(OPT_COMMENT, &b"late"[..])));
    }

    #[test]
    fn resolutions_in_nanoseconds() {
        assert_eq!(Resolution::Decimal(6).nanos(3), 3_000);
        assert_eq!(Resolution::Decimal(9).nanos(3), 3);
        assert_eq!(Resolution::Decimal(12).nanos(3_000), 3);
        assert_eq!(Resolution::Binary(10).nanos(1024), 1_000_000_000);
        assert_eq!(Resolution::Decimal(127).nanos(u64::MAX), 0);
    }
}
