//! Splits a pcap or pcapng byte stream, as it arrives, into whole units: the file
//! header, then records. Sans-IO: the caller pushes bytes and pops units. A reader that
//! stops between units leaves a file that every tool opens.

use bytes::{Buf, Bytes, BytesMut};

use crate::pcap::{FILE_HEADER_LEN, MAGIC_MICROS, MAGIC_NANOS, MAX_SNAPLEN, RECORD_HEADER_LEN};
use crate::pcapng::{BYTE_ORDER_MAGIC, ENHANCED_PACKET, INTERFACE_DESCRIPTION, SECTION_HEADER};
use crate::Error;

/// The largest pcapng block accepted: far above any packet block this crate writes.
const MAX_BLOCK: usize = 16 << 20;

/// One whole unit of a capture stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unit {
    /// File header, section header or interface description: needed before packets.
    Header(Bytes),
    /// One packet record, with the loss it reports (pcapng `epb_dropcount`).
    Packet {
        /// The record's bytes, header included.
        bytes: Bytes,
        /// Packets the writer lost before this one, as the record says (pcapng only).
        drops: u64,
    },
    /// Any other pcapng block (statistics, comments), passed on whole.
    Other(Bytes),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Unknown,
    Pcap { big_endian: bool },
    Pcapng { big_endian: bool },
}

/// What the bytes at the start of a buffer make.
enum Need {
    /// A whole unit of this many bytes, of this shape.
    Whole(usize, Shape),
    /// Not a whole unit: at least this many bytes are needed to tell more.
    AtLeast(usize),
}

#[derive(Clone, Copy)]
enum Shape {
    PcapFileHeader { big_endian: bool },
    PcapRecord,
    Block { big_endian: bool },
}

/// Splits a capture stream into [`Unit`]s. Bytes handed over as [`Bytes`] are framed
/// in place: the units are slices of them, and only a unit that straddles two chunks
/// is copied, once.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use pcapcast_core::framer::{Framer, Unit};
/// use pcapcast_core::{Encoder, Options, Path, Timestamp};
///
/// let encoder = Encoder::new(Options::default());
/// let mut file = BytesMut::new();
/// encoder.put_header(&mut file);
/// encoder.put_record(&mut file, Path::FromLocal, std::time::UNIX_EPOCH, &[0x45; 20]);
///
/// let mut framer = Framer::new();
/// framer.push(&file[..30]); // the header and part of a record
/// assert!(matches!(framer.next_unit()?, Some(Unit::Header(h)) if h.len() == 24));
/// assert_eq!(framer.next_unit()?, None); // the record is not whole yet
/// framer.push(&file[30..]);
/// assert!(matches!(framer.next_unit()?, Some(Unit::Packet { .. })));
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Framer {
    /// The start of a unit whose end is in a later chunk.
    carry: BytesMut,
    /// What is left of the latest chunk, framed in place.
    chunk: Bytes,
    kind: Kind,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

impl Framer {
    /// A framer that detects pcap or pcapng from the first bytes.
    pub fn new() -> Framer {
        Framer {
            carry: BytesMut::new(),
            chunk: Bytes::new(),
            kind: Kind::Unknown,
        }
    }

    /// Appends bytes as they arrive (copied; [`Framer::push_bytes`] takes them as they are).
    pub fn push(&mut self, data: &[u8]) {
        self.push_bytes(Bytes::copy_from_slice(data));
    }

    /// Appends a chunk as it arrived, without copying it: the units it holds whole are
    /// slices of it.
    pub fn push_bytes(&mut self, data: Bytes) {
        if !self.chunk.is_empty() {
            self.carry.extend_from_slice(&self.chunk);
        }
        self.chunk = data;
    }

    /// Bytes received but not yet part of a whole unit.
    pub fn buffered(&self) -> usize {
        self.carry.len() + self.chunk.len()
    }

    /// Pops the next whole unit, or `None` until more bytes arrive.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when the stream is not a capture or a length is impossible;
    /// the stream cannot go on after it.
    pub fn next_unit(&mut self) -> Result<Option<Unit>, Error> {
        loop {
            if self.carry.is_empty() {
                return match measure(self.kind, &self.chunk)? {
                    Need::Whole(len, shape) => {
                        let bytes = self.chunk.split_to(len);
                        Ok(Some(self.unit(bytes, shape)))
                    }
                    Need::AtLeast(_) => {
                        // Less than a unit: kept until the rest comes.
                        self.carry.extend_from_slice(&self.chunk);
                        self.chunk = Bytes::new();
                        Ok(None)
                    }
                };
            }
            match measure(self.kind, &self.carry)? {
                Need::Whole(len, shape) => {
                    let bytes = self.carry.split_to(len).freeze();
                    return Ok(Some(self.unit(bytes, shape)));
                }
                Need::AtLeast(_) if self.chunk.is_empty() => return Ok(None),
                Need::AtLeast(len) => {
                    // Only what completes what the carry needs: the rest stays in place.
                    let take = (len - self.carry.len()).min(self.chunk.len());
                    self.carry.extend_from_slice(&self.chunk.split_to(take));
                }
            }
        }
    }

    fn unit(&mut self, bytes: Bytes, shape: Shape) -> Unit {
        match shape {
            Shape::PcapFileHeader { big_endian } => {
                self.kind = Kind::Pcap { big_endian };
                Unit::Header(bytes)
            }
            Shape::PcapRecord => Unit::Packet { bytes, drops: 0 },
            Shape::Block { big_endian } => {
                self.kind = Kind::Pcapng { big_endian };
                match read_u32(&bytes[0..4], big_endian) {
                    SECTION_HEADER | INTERFACE_DESCRIPTION => Unit::Header(bytes),
                    ENHANCED_PACKET => {
                        let drops = epb_drops(&bytes, big_endian);
                        Unit::Packet { bytes, drops }
                    }
                    _ => Unit::Other(bytes),
                }
            }
        }
    }
}

/// What the bytes at the start of `buffer` make in a stream of `kind`.
fn measure(kind: Kind, buffer: &[u8]) -> Result<Need, Error> {
    match kind {
        Kind::Unknown => detect(buffer),
        Kind::Pcap { big_endian } => record(buffer, big_endian),
        Kind::Pcapng { big_endian } => block(buffer, big_endian),
    }
}

fn detect(buffer: &[u8]) -> Result<Need, Error> {
    let Some(magic) = buffer.get(..4) else {
        return Ok(Need::AtLeast(4));
    };
    let magic = [magic[0], magic[1], magic[2], magic[3]];
    if u32::from_le_bytes(magic) == SECTION_HEADER {
        let Some(bom) = buffer.get(8..12) else {
            return Ok(Need::AtLeast(12));
        };
        let bom = [bom[0], bom[1], bom[2], bom[3]];
        let big_endian = match (u32::from_le_bytes(bom), u32::from_be_bytes(bom)) {
            (BYTE_ORDER_MAGIC, _) => false,
            (_, BYTE_ORDER_MAGIC) => true,
            _ => {
                return Err(malformed(
                    "pcapng section header with a bad byte-order magic",
                ))
            }
        };
        return block(buffer, big_endian);
    }
    let big_endian = match (u32::from_le_bytes(magic), u32::from_be_bytes(magic)) {
        (MAGIC_MICROS | MAGIC_NANOS, _) => false,
        (_, MAGIC_MICROS | MAGIC_NANOS) => true,
        _ => {
            return Err(malformed(
                "not a pcap or pcapng stream (unknown magic number)",
            ))
        }
    };
    Ok(match buffer.len() >= FILE_HEADER_LEN {
        true => Need::Whole(FILE_HEADER_LEN, Shape::PcapFileHeader { big_endian }),
        false => Need::AtLeast(FILE_HEADER_LEN),
    })
}

fn record(buffer: &[u8], big_endian: bool) -> Result<Need, Error> {
    let Some(header) = buffer.get(..RECORD_HEADER_LEN) else {
        return Ok(Need::AtLeast(RECORD_HEADER_LEN));
    };
    let incl = read_u32(&header[8..12], big_endian) as usize;
    if incl > MAX_SNAPLEN as usize {
        return Err(malformed(&format!(
            "a record of {incl} bytes, above the limit of {MAX_SNAPLEN}"
        )));
    }
    let len = RECORD_HEADER_LEN + incl;
    Ok(match buffer.len() >= len {
        true => Need::Whole(len, Shape::PcapRecord),
        false => Need::AtLeast(len),
    })
}

fn block(buffer: &[u8], big_endian: bool) -> Result<Need, Error> {
    let Some(header) = buffer.get(..8) else {
        return Ok(Need::AtLeast(8));
    };
    let len = read_u32(&header[4..8], big_endian) as usize;
    if len < 12 || len % 4 != 0 || len > MAX_BLOCK {
        return Err(malformed(&format!(
            "a pcapng block of impossible length {len}"
        )));
    }
    if buffer.len() < len {
        return Ok(Need::AtLeast(len));
    }
    if read_u32(&buffer[len - 4..len], big_endian) as usize != len {
        return Err(malformed("a pcapng block whose two lengths differ"));
    }
    Ok(Need::Whole(len, Shape::Block { big_endian }))
}

/// Reads `epb_dropcount` from an enhanced packet block, 0 when absent or unreadable.
fn epb_drops(block: &[u8], big_endian: bool) -> u64 {
    const FIXED: usize = 28; // type, length, interface, time (2), captured, original
    let Some(fixed) = block.get(8..FIXED) else {
        return 0;
    };
    let captured = read_u32(&fixed[12..16], big_endian) as usize;
    // Checked: a captured length near u32::MAX would overflow a 32-bit usize.
    let Some(start) = captured
        .div_ceil(4)
        .checked_mul(4)
        .and_then(|padded| padded.checked_add(FIXED))
    else {
        return 0;
    };
    let mut options = block
        .get(start..block.len().saturating_sub(4))
        .unwrap_or(&[]);
    while options.len() >= 4 {
        let code = read_u16(&options[0..2], big_endian);
        let len = read_u16(&options[2..4], big_endian) as usize;
        let padded = len.div_ceil(4) * 4;
        let Some(value) = options.get(4..4 + len) else {
            return 0;
        };
        match (code, len) {
            (0, _) => return 0,
            (4, 8) => {
                let mut v = value;
                return if big_endian {
                    v.get_u64()
                } else {
                    v.get_u64_le()
                };
            }
            _ => {}
        }
        options = options.get(4 + padded..).unwrap_or(&[]);
    }
    0
}

fn read_u32(bytes: &[u8], big_endian: bool) -> u32 {
    let b = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

fn read_u16(bytes: &[u8], big_endian: bool) -> u16 {
    let b = [bytes[0], bytes[1]];
    if big_endian {
        u16::from_be_bytes(b)
    } else {
        u16::from_le_bytes(b)
    }
}

fn malformed(reason: &str) -> Error {
    Error::Malformed {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
#[path = "framer_tests.rs"]
mod tests;
