//! Unit tests of the framer: streams of every format, fed byte by byte and in chunks.

use super::*;
use crate::encoder::Stored;
use crate::{Encoder, Format, Meta, Options, Path, Timestamp};

fn stream(format: Format, drops: u64) -> BytesMut {
    let encoder = Encoder::new(Options::new().format(format));
    let mut out = BytesMut::new();
    encoder.put_header(&mut out);
    for i in 0..5u8 {
        let d = if i == 3 { drops } else { 0 };
        let stored = Stored {
            path: Path::from(u16::from(i)),
            ts: Timestamp::new(1, 2),
            packet: &[i; 33],
            orig_len: 33,
            meta: &Meta::new(),
            note: None,
        };
        encoder.put_stored(&mut out, &stored, d);
    }
    out
}

#[test]
fn byte_by_byte_gives_whole_units() {
    for format in [
        Format::Pcap,
        Format::RawIp,
        Format::Pcapng,
        Format::Tailscale,
    ] {
        let bytes = stream(format, 7);
        let mut framer = Framer::new();
        let mut units = Vec::new();
        for b in bytes.iter() {
            framer.push(&[*b]);
            while let Some(unit) = framer.next_unit().unwrap() {
                units.push(unit);
            }
        }
        let packets: Vec<u64> = units
            .iter()
            .filter_map(|u| match u {
                Unit::Packet { drops, .. } => Some(*drops),
                _ => None,
            })
            .collect();
        assert_eq!(packets.len(), 5, "{format:?}");
        let joined: Vec<u8> = units
            .iter()
            .flat_map(|u| match u {
                Unit::Header(b) | Unit::Other(b) | Unit::Packet { bytes: b, .. } => b.to_vec(),
            })
            .collect();
        assert_eq!(joined, bytes.to_vec());
        if format == Format::Pcapng {
            assert_eq!(packets, [0, 0, 0, 7, 0]);
        }
        assert_eq!(framer.buffered(), 0);
    }
}

#[test]
fn units_whole_in_a_chunk_are_slices_of_it() {
    let bytes = stream(Format::Pcapng, 0).freeze();
    // Cut in the middle of the third record's block.
    let cut = bytes.len() - 100;
    let (first, second) = (bytes.slice(..cut), bytes.slice(cut..));
    let mut framer = Framer::new();
    framer.push_bytes(first.clone());
    let mut in_place = 0;
    let mut joined = Vec::new();
    for chunk in [first.clone(), second.clone()] {
        if chunk.as_ptr() != first.as_ptr() {
            framer.push_bytes(chunk.clone());
        }
        while let Some(unit) = framer.next_unit().unwrap() {
            let (Unit::Header(b) | Unit::Other(b) | Unit::Packet { bytes: b, .. }) = unit;
            let inside = |c: &Bytes| {
                let (start, end) = (c.as_ptr() as usize, c.as_ptr() as usize + c.len());
                (start..=end).contains(&(b.as_ptr() as usize))
            };
            in_place += usize::from(inside(&first) || inside(&second));
            joined.extend_from_slice(&b);
        }
    }
    assert_eq!(joined, bytes.to_vec());
    // Every unit but the one cut in two is read in place.
    let units = 1 + 6 + 5; // section, an interface for each path kind, records
    assert_eq!(in_place, units - 1);
}

#[test]
fn garbage_is_refused() {
    let mut framer = Framer::new();
    framer.push(b"HTTP/1.1 200 OK\r\n");
    assert!(matches!(framer.next_unit(), Err(Error::Malformed { .. })));

    let mut framer = Framer::new();
    let mut bytes = stream(Format::Pcap, 0);
    bytes[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    framer.push(&bytes);
    assert!(framer.next_unit().unwrap().is_some());
    assert!(framer.next_unit().is_err());
}
