//! `pcapcast demo --replay FILE`: a capture's IP packets, logged again as the datapath,
//! at the recorded pace or faster, so filters, dissectors and tools meet real traffic.

use std::fs::File;
use std::path::Path as FsPath;
use std::time::Duration;

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError};
use pcapcast_core::{Meta, Path};

use crate::blocks::Resolution;

mod link;
mod pace;
use link::{extract, ETHERNET};
pub use pace::{parse_speed, Speed};

/// One packet to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// When it was seen, after the file's first packet.
    pub at: Duration,
    /// Its record's number in the file, from 1 (tshark's `frame.number`).
    pub record: u64,
    pub path: Path,
    pub packet: Vec<u8>,
    pub meta: Meta,
}

/// What a capture file holds for the replay.
#[derive(Debug, Default)]
pub struct Replay {
    pub packets: Vec<Recorded>,
    /// Records that held no IP packet (ARP, other link layers, empty records).
    pub skipped: u64,
    /// What the reader should know of the file: a record cut off at its end.
    pub warnings: Vec<String>,
}

/// Reads a pcap or pcapng file.
///
/// # Errors
///
/// What makes the file unreadable, with its name and the byte where it goes wrong; a
/// record cut off at the end is left out with a warning, as tshark does.
pub fn load(path: &FsPath) -> Result<Replay, String> {
    let name = path.display();
    let file = File::open(path).map_err(|e| format!("cannot open {name}: {e}"))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut reader =
        pcap_parser::create_reader(BUFFER, file).map_err(|e| not_a_capture(path, &e))?;
    let mut replay = Replay::default();
    // pcap: the link type and whether times are in ns; pcapng: each interface's.
    let mut legacy = (ETHERNET, false);
    // Each section's interfaces, and whether the section is big-endian.
    let mut interfaces: Vec<(i32, Resolution)> = Vec::new();
    let mut big_endian = false;
    let mut first: Option<u128> = None;
    let mut last = 0u128;
    let mut records = 0u64;
    let mut add = |replay: &mut Replay, ns: Option<u128>, linktype: i32, data: &[u8], flags| {
        records += 1;
        let ns = ns.unwrap_or(last);
        last = ns;
        let start = *first.get_or_insert(ns);
        let at = Duration::from_nanos(u64::try_from(ns.saturating_sub(start)).unwrap_or(u64::MAX));
        match extract(linktype, data, flags) {
            Some((path, packet, meta)) => replay.packets.push(Recorded {
                at,
                record: records,
                path,
                packet: packet.to_vec(),
                meta,
            }),
            None => replay.skipped += 1,
        }
    };
    loop {
        let at = reader.consumed();
        let stop = match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(header) => {
                        legacy = (header.network.0, header.is_nanosecond_precision());
                    }
                    PcapBlockOwned::Legacy(record) => {
                        let fraction = u128::from(record.ts_usec);
                        let ns = u128::from(record.ts_sec) * 1_000_000_000
                            + if legacy.1 { fraction } else { fraction * 1_000 };
                        let data = cut(record.data, record.caplen);
                        add(&mut replay, Some(ns), legacy.0, data, None);
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(shb)) => {
                        // Interface numbers start again in each section.
                        interfaces.clear();
                        big_endian = shb.big_endian();
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push((idb.linktype.0, resolution(idb.if_tsresol)));
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let Some(&(linktype, unit)) = interfaces.get(epb.if_id as usize) else {
                            return Err(format!(
                                "{name}: the packet at byte {at} names interface {}, which was never described",
                                epb.if_id
                            ));
                        };
                        let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let ns = unit.nanos(ticks);
                        let flags = epb
                            .options
                            .iter()
                            .find(|o| o.code.0 == 2 && o.value.len() >= 4)
                            .map(|o| {
                                let value = [o.value[0], o.value[1], o.value[2], o.value[3]];
                                match big_endian {
                                    true => u32::from_be_bytes(value),
                                    false => u32::from_le_bytes(value),
                                }
                            });
                        add(
                            &mut replay,
                            Some(ns),
                            linktype,
                            cut(epb.data, epb.caplen),
                            flags,
                        );
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        let linktype = interfaces.first().map_or(ETHERNET, |i| i.0);
                        add(&mut replay, None, linktype, spb.data, None);
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
                continue;
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => Stop::Incomplete,
            Err(PcapError::UnexpectedEof) => Stop::Incomplete,
            Err(PcapError::BufferTooSmall) => Stop::TooLong,
            Err(_) => Stop::Malformed,
        };
        match stop {
            Stop::Incomplete if !reader.reader_exhausted() => reader
                .refill()
                .map_err(|_| format!("reading {name} failed at byte {at}"))?,
            Stop::Incomplete => {
                replay.warnings.push(format!(
                    "{name} ends at byte {size} in the middle of a record (record {}, from byte {at}): \
                     the {records} whole records before it are replayed",
                    records + 1
                ));
                break;
            }
            Stop::TooLong => {
                return Err(format!(
                    "{name}: the record at byte {at} is longer than {} MiB: the file is damaged there",
                    BUFFER >> 20
                ))
            }
            Stop::Malformed => {
                return Err(format!(
                    "{name}: the record at byte {at} is malformed (its length or its block type is impossible)"
                ))
            }
        }
    }
    if replay.packets.is_empty() {
        return Err(format!(
            "{name} holds no IP packet to replay ({} records skipped)",
            replay.skipped
        ));
    }
    Ok(replay)
}

/// Why the reader stopped short of a block.
enum Stop {
    /// It needs more bytes: the file goes on, or it is cut.
    Incomplete,
    /// The block is longer than the buffer.
    TooLong,
    /// The block makes no sense.
    Malformed,
}

/// The reader's buffer: more than any record a capture holds (262144 bytes at most).
const BUFFER: usize = 1 << 20;

/// Why a file did not open as a capture, read from its first bytes.
fn not_a_capture(path: &FsPath, error: &PcapError<&[u8]>) -> String {
    let name = path.display();
    let start = std::fs::read(path).unwrap_or_default();
    let start = &start[..start.len().min(24)];
    match error {
        PcapError::Eof => format!("{name} is empty: a pcap or pcapng file starts with its file header"),
        PcapError::Incomplete(_) | PcapError::UnexpectedEof => format!(
            "{name} ends at byte {} inside its file header (a pcap file header is 24 bytes, a pcapng section header at least 28)",
            start.len()
        ),
        _ => format!(
            "{name} is not a pcap or pcapng file: byte 0 starts {}, not a pcap or pcapng magic number",
            start.iter().take(4).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
        ),
    }
}

fn cut(data: &[u8], caplen: u32) -> &[u8] {
    &data[..data.len().min(caplen as usize)]
}

/// `if_tsresol`: 10^-n (high bit clear) or 2^-n.
fn resolution(tsresol: u8) -> Resolution {
    match tsresol & 0x80 {
        0 => Resolution::Decimal(tsresol),
        _ => Resolution::Binary(tsresol & 0x7f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPV4_PACKET: [u8; 20] = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];

    /// A raw IP pcap file of one packet at each of these times (seconds since 1970).
    fn pcap_at(seconds: &[u64]) -> Vec<u8> {
        use pcapcast_core::{Encoder, Format, Options};
        let encoder = Encoder::new(Options::new().format(Format::RawIp));
        let mut file = bytes::BytesMut::new();
        encoder.put_header(&mut file);
        for &s in seconds {
            let when = std::time::UNIX_EPOCH + Duration::from_secs(s);
            encoder.put_record(&mut file, Path::FromPeer, when, &IPV4_PACKET);
        }
        file.to_vec()
    }

    fn load_bytes(name: &str, bytes: &[u8]) -> Result<Replay, String> {
        let file = pcapcast_tests::temp_dir("replay-load").join(name);
        std::fs::write(&file, bytes).unwrap();
        load(&file)
    }

    #[test]
    fn a_file_cut_mid_record_is_replayed_to_its_last_whole_record() {
        let mut file = pcap_at(&[1, 2, 3]);
        file.truncate(file.len() - 5);
        let replay = load_bytes("cut.pcap", &file).unwrap();
        assert_eq!(replay.packets.len(), 2);
        assert_eq!(replay.warnings.len(), 1);
        let record = 16 + IPV4_PACKET.len();
        let expected = format!(
            "ends at byte {} in the middle of a record (record 3, from byte {}): the 2 whole records",
            file.len(),
            24 + 2 * record
        );
        assert!(
            replay.warnings[0].contains(&expected),
            "{:?}",
            replay.warnings
        );
    }

    #[test]
    fn unreadable_files_say_what_is_wrong_and_where() {
        let whole = pcap_at(&[1]);
        // A record header that claims 2 MiB, in a file longer than the reader's buffer.
        let mut huge = whole[..24].to_vec();
        for field in [1u32, 0, 2 << 20, 2 << 20] {
            huge.extend_from_slice(&field.to_le_bytes());
        }
        huge.resize(BUFFER + 4096, 0x45);
        let cases: [(&str, &[u8], &str); 4] = [
            ("empty.pcap", b"", "is empty"),
            (
                "short.pcap",
                &whole[..10],
                "ends at byte 10 inside its file header",
            ),
            (
                "garbage.pcap",
                b"hello, this is no capture file at all",
                "is not a pcap or pcapng file: byte 0 starts 68 65 6c 6c",
            ),
            (
                "huge.pcap",
                &huge,
                "the record at byte 24 is longer than 1 MiB",
            ),
        ];
        for (name, bytes, says) in cases {
            let error = load_bytes(name, bytes).unwrap_err();
            assert!(error.contains(says), "{name}: {error}");
            assert!(error.contains(name), "names the file: {error}");
            for raw in ["Eof", "Incomplete", "HeaderNotRecognized", "BufferTooSmall"] {
                assert!(!error.contains(raw), "{name}: {error}");
            }
        }
    }

    #[test]
    fn a_jump_in_time_waits_at_most_max_wait() {
        let mut replay = load_bytes(
            "jump.pcap",
            &pcap_at(&[0, 1, u64::from(u32::MAX), u64::from(u32::MAX)]),
        )
        .unwrap();
        assert_eq!(replay.cap_waits(Speed::Max), None);
        let warning = replay.cap_waits(Speed::Times(1.0)).expect("a warning");
        assert!(
            warning.starts_with("record 3 comes 4294967294.000s after"),
            "{warning}"
        );
        assert!(warning.contains("cut to 1s"), "{warning}");
        let times: Vec<Duration> = replay.packets.iter().map(|p| p.at).collect();
        let s = Duration::from_secs;
        assert_eq!(times, [s(0), s(1), s(2), s(2)]);
        // Twice as fast: the recorded gap allowed is twice as long.
        let mut replay = load_bytes("jumps.pcap", &pcap_at(&[0, 10, 20])).unwrap();
        let warning = replay.cap_waits(Speed::Times(2.0)).unwrap();
        assert!(warning.contains("(and 1 later wait)"), "{warning}");
        let times: Vec<Duration> = replay.packets.iter().map(|p| p.at).collect();
        assert_eq!(times, [s(0), s(2), s(4)]);
    }

    #[test]
    fn time_resolutions() {
        assert_eq!(resolution(9).nanos(5), 5);
        assert_eq!(resolution(6).nanos(5), 5_000);
        assert_eq!(resolution(0x80 | 10).nanos(1024), 1_000_000_000);
    }
}
