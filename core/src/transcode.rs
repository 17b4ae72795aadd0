//! Classic pcap written from pcapng: a reader asks the daemon for pcapng, which reports
//! each output's losses (`epb_dropcount`), and writes the classic format it was asked
//! for itself, byte for byte what the daemon would have sent in that format.

use std::ops::Range;

use bytes::BytesMut;

use crate::framer::Unit;
use crate::pcap::PATH_LEN;
use crate::pcapng::{ENHANCED_PACKET, IF_NAME, INTERFACE_DESCRIPTION, OPT_COMMENT, OPT_END};
use crate::{Encoder, Error, Format, Meta, Options, Path, Timestamp};

/// Bytes of an enhanced packet block before its data: type, length, interface, the two
/// halves of the time, captured and original length.
const EPB_FIXED: usize = 28;
/// Bytes of an interface description block before its options.
const IDB_FIXED: usize = 16;

/// Turns a pcapng stream of pcapcast's into the classic format of `options`.
///
/// # Examples
///
/// ```
/// use std::time::UNIX_EPOCH;
/// use bytes::BytesMut;
/// use pcapcast_core::framer::Framer;
/// use pcapcast_core::transcode::Transcoder;
/// use pcapcast_core::{Encoder, Format, Options, Path};
///
/// let wanted = Options::new().format(Format::RawIp);
/// // What the daemon is asked for instead, and what it sends.
/// let daemon = Encoder::new(Transcoder::upstream(&wanted));
/// let mut stream = BytesMut::new();
/// daemon.put_header(&mut stream);
/// daemon.put_record(&mut stream, Path::FromPeer, UNIX_EPOCH, &[0x45; 20]);
///
/// let mut framer = Framer::new();
/// framer.push(&stream);
/// let mut transcoder = Transcoder::new(wanted.clone());
/// let mut file = BytesMut::new();
/// while let Some(unit) = framer.next_unit()? {
///     transcoder.put_unit(&unit, &mut file)?;
/// }
/// let mut direct = BytesMut::new();
/// let encoder = Encoder::new(wanted);
/// encoder.put_header(&mut direct);
/// encoder.put_record(&mut direct, Path::FromPeer, UNIX_EPOCH, &[0x45; 20]);
/// assert_eq!(file, direct);
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Transcoder {
    encoder: Encoder,
    /// The path kind of each interface of the section, by index.
    interfaces: Vec<Path>,
    header_written: bool,
}

/// What [`Transcoder::put_unit`] wrote for a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transcoded {
    /// The file header.
    Header,
    /// One record.
    Record,
    /// Nothing: a block the classic format has no place for.
    Nothing,
}

impl Transcoder {
    /// A transcoder that writes the format of `options` (its snaplen and resolution;
    /// the paths and the filter are the daemon's work, see [`Transcoder::upstream`]).
    pub fn new(options: Options) -> Transcoder {
        let local = Options::new()
            .format(options.get_format())
            .resolution(options.get_resolution());
        // The snaplen was valid in `options`, so it is valid here.
        let local = local
            .clone()
            .snaplen(options.get_snaplen())
            .unwrap_or(local);
        Transcoder {
            encoder: Encoder::new(local),
            interfaces: Vec::new(),
            header_written: false,
        }
    }

    /// The pcapng output to ask the daemon for, to write the format of `options`: the
    /// same snaplen, filter and history, and for raw IP only the paths raw IP holds, so
    /// that the losses it reports are those of a raw output. The same snaplen is
    /// enough: no classic format keeps more of a packet than pcapng does.
    pub fn upstream(options: &Options) -> Options {
        let mut upstream = options.clone().format(Format::Pcapng);
        if options.get_format() == Format::RawIp {
            let ip: Vec<Path> = Path::ALL_KINDS
                .into_iter()
                .filter(|path| path.carries_ip() && options.keeps(*path))
                .collect();
            // With no IP path asked for, the raw output holds nothing: the paths stay
            // as asked, and nothing they bring is written.
            if !ip.is_empty() {
                upstream = upstream.paths(ip);
            }
        }
        upstream
    }

    /// Writes what `unit` of the pcapng stream becomes in the classic format into `out`.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for a packet block of an interface that was not described,
    /// or a block too short for its kind.
    pub fn put_unit(&mut self, unit: &Unit, out: &mut BytesMut) -> Result<Transcoded, Error> {
        let (written, packet) = self.put_unit_head(unit, out)?;
        if let Unit::Packet { bytes, .. } = unit {
            out.extend_from_slice(&bytes[packet]);
        }
        Ok(written)
    }

    /// [`Transcoder::put_unit`] but for the packet bytes of a record: where they lie in
    /// the unit's bytes is returned instead, for the caller to write them from there
    /// right after what this wrote. An empty range for all but records.
    ///
    /// # Errors
    ///
    /// As [`Transcoder::put_unit`].
    pub fn put_unit_head(
        &mut self,
        unit: &Unit,
        out: &mut BytesMut,
    ) -> Result<(Transcoded, Range<usize>), Error> {
        match unit {
            Unit::Header(block) if block_type(block) == Some(INTERFACE_DESCRIPTION) => {
                self.interfaces.push(interface_kind(block)?);
                Ok((Transcoded::Nothing, 0..0))
            }
            Unit::Header(_) => {
                // A section header: a new section numbers its interfaces anew.
                self.interfaces.clear();
                if std::mem::replace(&mut self.header_written, true) {
                    return Ok((Transcoded::Nothing, 0..0));
                }
                self.encoder.put_header(out);
                Ok((Transcoded::Header, 0..0))
            }
            Unit::Packet { bytes, .. } if block_type(bytes) == Some(ENHANCED_PACKET) => {
                match self.put_packet_head(bytes, out)? {
                    Some(packet) => Ok((Transcoded::Record, packet)),
                    None => Ok((Transcoded::Nothing, 0..0)),
                }
            }
            Unit::Packet { .. } | Unit::Other(_) => Ok((Transcoded::Nothing, 0..0)),
        }
    }

    /// Writes the head of the record for an enhanced packet block; returns where the
    /// packet bytes that follow it lie in the block, `None` if no record is written.
    fn put_packet_head(
        &self,
        block: &[u8],
        out: &mut BytesMut,
    ) -> Result<Option<Range<usize>>, Error> {
        let fixed = block
            .get(..EPB_FIXED)
            .ok_or_else(|| malformed("a pcapng packet block too short for its fields"))?;
        let interface = le32(&fixed[8..12]) as usize;
        let nanos = u64::from(le32(&fixed[12..16])) << 32 | u64::from(le32(&fixed[16..20]));
        let captured = le32(&fixed[20..24]) as usize;
        let orig_len = le32(&fixed[24..28]) as usize;
        let kind = *self.interfaces.get(interface).ok_or_else(|| {
            malformed(&format!(
                "a packet of interface {interface}, which was not described"
            ))
        })?;
        let end = EPB_FIXED
            .checked_add(captured)
            .filter(|end| *end <= block.len().saturating_sub(4))
            .ok_or_else(|| malformed("a pcapng packet block shorter than its packet"))?;
        let data = &block[EPB_FIXED..end];
        let options = block
            .get(end.div_ceil(4) * 4..block.len() - 4)
            .unwrap_or(&[]);
        let (path, tag_len, orig_len) = if kind.carries_ip() {
            (kind, 0, orig_len)
        } else {
            // The tag leads the payload; cut by a tiny snaplen, what is left of it is
            // what the classic formats keep of it too.
            let tag_len = data.len().min(PATH_LEN);
            let path = match (kind, &data[..tag_len]) {
                (Path::Disco, _) => Path::Disco,
                (_, [low, high]) => Path::from(u16::from_le_bytes([*low, *high])),
                (_, [low]) => Path::Other(u16::from(*low)),
                _ => Path::Other(0),
            };
            (path, tag_len, orig_len.saturating_sub(PATH_LEN))
        };
        let ts = Timestamp::new(
            (nanos / 1_000_000_000).min(u64::from(u32::MAX)) as u32,
            (nanos % 1_000_000_000) as u32,
        );
        let meta = nat_comment(options).unwrap_or_default();
        let start = EPB_FIXED + tag_len;
        let head = self
            .encoder
            .put_packet_head(out, path, ts, end - start, orig_len, &meta);
        Ok(head.map(|body| start..start + body))
    }
}

/// The NAT addresses of a packet block's comments; other comments (a history note) are
/// not NAT and are passed over.
fn nat_comment(mut options: &[u8]) -> Option<Meta> {
    while let [c0, c1, l0, l1, rest @ ..] = options {
        let code = u16::from_le_bytes([*c0, *c1]);
        let len = usize::from(u16::from_le_bytes([*l0, *l1]));
        let value = rest.get(..len)?;
        match code {
            OPT_END => return None,
            OPT_COMMENT => {
                let meta = std::str::from_utf8(value).ok().and_then(|t| t.parse().ok());
                if meta.is_some() {
                    return meta;
                }
            }
            _ => {}
        }
        options = rest.get(len.div_ceil(4) * 4..)?;
    }
    None
}

/// The path kind an interface description names in its `if_name`.
fn interface_kind(block: &[u8]) -> Result<Path, Error> {
    let mut options = block
        .get(IDB_FIXED..block.len().saturating_sub(4))
        .ok_or_else(|| malformed("a pcapng interface description too short"))?;
    while let [c0, c1, l0, l1, rest @ ..] = options {
        let code = u16::from_le_bytes([*c0, *c1]);
        let len = usize::from(u16::from_le_bytes([*l0, *l1]));
        let Some(value) = rest.get(..len) else { break };
        if code == IF_NAME {
            return Path::ALL_KINDS
                .into_iter()
                .find(|path| path.name().as_bytes() == value)
                .ok_or_else(|| {
                    malformed(&format!(
                        "an interface named {:?}, not a pcapcast path",
                        String::from_utf8_lossy(value)
                    ))
                });
        }
        if code == OPT_END {
            break;
        }
        options = rest.get(len.div_ceil(4) * 4..).unwrap_or(&[]);
    }
    Err(malformed("an interface description without if_name"))
}

fn block_type(block: &[u8]) -> Option<u32> {
    block.get(..4).map(le32)
}

fn le32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

fn malformed(reason: &str) -> Error {
    Error::Malformed {
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::pcapng::{begin_block, end_block, put_enhanced_packet, PacketMeta};

    fn packet_block(interface: u32, data: &[u8]) -> Unit {
        let mut out = BytesMut::new();
        let meta = PacketMeta {
            interface,
            orig_len: data.len(),
            ..PacketMeta::default()
        };
        put_enhanced_packet(&mut out, &meta, &[data]);
        Unit::Packet {
            bytes: out.freeze(),
            drops: 0,
        }
    }

    #[test]
    fn hostile_blocks_are_errors_not_panics() {
        let mut transcoder = Transcoder::new(Options::new());
        let mut out = BytesMut::new();
        // A packet of an interface never described.
        let undescribed = transcoder.put_unit(&packet_block(3, &[0x45; 20]), &mut out);
        assert!(matches!(undescribed, Err(Error::Malformed { .. })));
        // An interface description that names no path, and one too short for its fields.
        let mut idb = BytesMut::new();
        let start = begin_block(&mut idb, INTERFACE_DESCRIPTION);
        idb.extend_from_slice(&[0; 8]);
        end_block(&mut idb, start);
        let nameless = Unit::Header(idb.freeze());
        assert!(transcoder.put_unit(&nameless, &mut out).is_err());
        let short = Unit::Header(Bytes::from_static(&[1, 0, 0, 0, 12, 0, 0, 0, 12, 0, 0, 0]));
        assert!(transcoder.put_unit(&short, &mut out).is_err());
        // A packet block whose captured length runs past its end.
        let mut lying = BytesMut::from(&packet_block(0, &[0x45; 8]).clone_bytes()[..]);
        lying[20..24].copy_from_slice(&1000u32.to_le_bytes());
        transcoder.interfaces.push(Path::FromPeer);
        let lying = Unit::Packet {
            bytes: lying.freeze(),
            drops: 0,
        };
        assert!(transcoder.put_unit(&lying, &mut out).is_err());
        assert!(out.is_empty(), "nothing written for what cannot be read");
    }

    impl Unit {
        fn clone_bytes(&self) -> Bytes {
            match self {
                Unit::Header(b) | Unit::Other(b) | Unit::Packet { bytes: b, .. } => b.clone(),
            }
        }
    }
}
