//! `pcapcast demo --replay FILE`: a capture's IP packets, logged again as the datapath,
//! at the recorded pace or faster, so filters, dissectors and tools meet real traffic.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path as FsPath;
use std::time::Duration;

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError};
use pcapcast_core::{Meta, Path};

use crate::blocks::Resolution;

/// One packet to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// When it was seen, after the file's first packet.
    pub at: Duration,
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
}

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// The recorded pace, scaled: 2 is twice as fast.
    Times(f64),
    /// As fast as the datapath logs.
    Max,
}

/// Parses `--speed`: a factor above 0, or `max`.
pub fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(factor) if (MIN_FACTOR..=MAX_FACTOR).contains(&factor) => Ok(Speed::Times(factor)),
        _ => Err(format!(
            "{s:?} is not a speed: use a factor from {MIN_FACTOR} to {MAX_FACTOR} (1 is the recorded pace) or max"
        )),
    }
}

/// The slowest and the fastest pace a factor gives: a thousandth of the recorded one, a
/// million times it.
const MIN_FACTOR: f64 = 0.001;
const MAX_FACTOR: f64 = 1_000_000.0;

impl Speed {
    /// How long after the replay's start a packet recorded `at` is due; `Duration::MAX`
    /// past what a `Duration` holds.
    pub fn due(self, at: Duration) -> Duration {
        match self {
            Speed::Times(factor) => {
                Duration::try_from_secs_f64(at.as_secs_f64() / factor).unwrap_or(Duration::MAX)
            }
            Speed::Max => Duration::ZERO,
        }
    }
}

// Link types (LINKTYPE_* of the pcap and pcapng formats, and DLT_RAW where files kept it).
const NULL: i32 = 0;
const ETHERNET: i32 = 1;
const DLT_RAW: i32 = 12;
const DLT_RAW_OPENBSD: i32 = 14;
const RAW: i32 = 101;
const LOOP: i32 = 108;
const LINUX_SLL: i32 = 113;
const USER0: i32 = 147;
const IPV4: i32 = 228;
const IPV6: i32 = 229;
const LINUX_SLL2: i32 = 276;

/// Reads a pcap or pcapng file.
///
/// # Errors
///
/// What makes the file unreadable, with its name; records past a cut at the end are
/// left out, as tshark does.
pub fn load(path: &FsPath) -> Result<Replay, String> {
    let name = path.display();
    let file = File::open(path).map_err(|e| format!("cannot open {name}: {e}"))?;
    let mut reader = pcap_parser::create_reader(1 << 20, file)
        .map_err(|e| format!("{name} is not a pcap or pcapng file: {e:?}"))?;
    let mut replay = Replay::default();
    // pcap: the link type and whether times are in ns; pcapng: each interface's.
    let mut legacy = (ETHERNET, false);
    // Each section's interfaces, and whether the section is big-endian.
    let mut interfaces: Vec<(i32, Resolution)> = Vec::new();
    let mut big_endian = false;
    let mut first: Option<u128> = None;
    let mut last = 0u128;
    let mut add = |replay: &mut Replay, ns: Option<u128>, linktype: i32, data: &[u8], flags| {
        let ns = ns.unwrap_or(last);
        last = ns;
        let start = *first.get_or_insert(ns);
        let at = Duration::from_nanos(u64::try_from(ns.saturating_sub(start)).unwrap_or(u64::MAX));
        match extract(linktype, data, flags) {
            Some((path, packet, meta)) => replay.packets.push(Recorded {
                at,
                path,
                packet: packet.to_vec(),
                meta,
            }),
            None => replay.skipped += 1,
        }
    };
    loop {
        match reader.next() {
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
                                "{name}: a packet of interface {} that was never described",
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
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    break; // a record cut at the end
                }
                reader
                    .refill()
                    .map_err(|e| format!("reading {name} failed: {e:?}"))?;
            }
            Err(e) => return Err(format!("{name} is not a readable capture: {e:?}")),
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

/// The path, IP packet and metadata a record holds, if it holds one.
fn extract(linktype: i32, data: &[u8], flags: Option<u32>) -> Option<(Path, &[u8], Meta)> {
    // pcapng's direction: inbound came from a peer, outbound left the local host.
    let path = match flags.map(|f| f & 0b11) {
        Some(0b10) => Path::FromLocal,
        _ => Path::FromPeer,
    };
    let packet = match linktype {
        USER0 => return user0(data),
        ETHERNET => ethernet(data)?,
        LINUX_SLL => ethertype_payload(
            u16::from_be_bytes([*data.get(14)?, *data.get(15)?]),
            data.get(16..)?,
        )?,
        LINUX_SLL2 => ethertype_payload(
            u16::from_be_bytes([*data.first()?, *data.get(1)?]),
            data.get(20..)?,
        )?,
        NULL | LOOP => {
            let family = data.get(..4)?;
            let family = [family[0], family[1], family[2], family[3]];
            // NULL is in the writer's byte order, LOOP in network order.
            let family = u32::from_le_bytes(family).min(u32::from_be_bytes(family));
            match family {
                2 | 10 | 24 | 28 | 30 => data.get(4..)?,
                _ => return None,
            }
        }
        RAW | DLT_RAW | DLT_RAW_OPENBSD | IPV4 | IPV6 => data,
        _ => return None,
    };
    is_ip(packet).then_some((path, packet, Meta::new()))
}

fn is_ip(packet: &[u8]) -> bool {
    matches!(packet.first().map(|b| b >> 4), Some(4 | 6))
}

/// An Ethernet frame's IP packet, under any number of VLAN tags.
fn ethernet(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 12;
    loop {
        let ethertype = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match ethertype {
            0x8100 | 0x88a8 | 0x9100 => at += 4,
            _ => return ethertype_payload(ethertype, frame.get(at + 2..)?),
        }
    }
}

fn ethertype_payload(ethertype: u16, payload: &[u8]) -> Option<&[u8]> {
    matches!(ethertype, 0x0800 | 0x86dd).then_some(payload)
}

/// A pcapcast or Tailscale record: the path it names, and what follows the framing.
/// The two framings are told apart as the dissector does: after the path the seed
/// framing starts an IP packet (or, on Disco, a frame), Tailscale's the address lengths.
fn user0(data: &[u8]) -> Option<(Path, &[u8], Meta)> {
    let path = Path::from(u16::from_le_bytes([*data.first()?, *data.get(1)?]));
    let payload = data.get(2..).filter(|p| !p.is_empty())?;
    let seed = match path {
        Path::Disco => {
            let tailscale = payload.starts_with(&[0, 0])
                && pcapcast_core::disco::DiscoFrame::parse(&payload[2..]).is_ok();
            !tailscale
        }
        _ => is_ip(payload) || !path.carries_ip(),
    };
    if seed {
        return Some((path, payload, Meta::new()));
    }
    let (src, rest) = original_address(payload)?;
    let (dst, packet) = original_address(rest)?;
    let mut meta = Meta::new();
    if let Some(src) = src {
        meta = meta.snat(src);
    }
    if let Some(dst) = dst {
        meta = meta.dnat(dst);
    }
    (!packet.is_empty()).then_some((path, packet, meta))
}

/// One address of Tailscale's prefix (its port is not written: 0 here) and the rest.
fn original_address(bytes: &[u8]) -> Option<(Option<SocketAddr>, &[u8])> {
    let (&len, rest) = bytes.split_first()?;
    let (addr, rest) = rest.split_at_checked(usize::from(len))?;
    let ip = match len {
        0 => return Some((None, rest)),
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(addr).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?)),
        _ => return None,
    };
    Some((Some(SocketAddr::new(ip, 0)), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IPV4_PACKET: [u8; 20] = [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
    ];

    #[test]
    fn link_layers_give_their_ip_packet() {
        let mut frame = vec![0xff; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0, 5, 0x88, 0xa8, 0, 6, 0x08, 0x00]);
        frame.extend_from_slice(&IPV4_PACKET);
        assert_eq!(ethernet(&frame), Some(&IPV4_PACKET[..]));
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06, 0, 1]);
        assert_eq!(extract(ETHERNET, &arp, None), None);

        let mut sll = vec![0; 14];
        sll.extend_from_slice(&[0x08, 0x00]);
        sll.extend_from_slice(&IPV4_PACKET);
        assert_eq!(
            extract(LINUX_SLL, &sll, None).map(|e| e.1),
            Some(&IPV4_PACKET[..])
        );
        let mut sll2 = vec![0x86, 0xdd];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&[0x60; 40]);
        assert_eq!(
            extract(LINUX_SLL2, &sll2, None).map(|e| e.1.len()),
            Some(40)
        );

        for family in [2u32.to_le_bytes(), 30u32.to_be_bytes()] {
            let mut null = family.to_vec();
            null.extend_from_slice(&IPV4_PACKET);
            assert!(extract(NULL, &null, None).is_some());
        }
        assert!(extract(RAW, &[0x12; 20], None).is_none(), "not IP");
        assert_eq!(
            extract(RAW, &IPV4_PACKET, Some(0b10)).map(|e| e.0),
            Some(Path::FromLocal)
        );
    }

    #[test]
    fn both_user0_framings_keep_their_path_and_metadata() {
        let mut seed = vec![3, 0];
        seed.extend_from_slice(&IPV4_PACKET);
        assert_eq!(
            user0(&seed),
            Some((Path::SynthesizedToPeer, &IPV4_PACKET[..], Meta::new()))
        );
        let mut tailscale = vec![1, 0, 0, 4, 100, 64, 0, 9];
        tailscale.extend_from_slice(&IPV4_PACKET);
        let dnat = Meta::new().dnat("100.64.0.9:0".parse().unwrap());
        assert_eq!(
            user0(&tailscale),
            Some((Path::FromPeer, &IPV4_PACKET[..], dnat))
        );

        let frame =
            pcapcast_core::disco::DiscoFrame::new("1.2.3.4:5".parse().unwrap(), &[1, 0]).to_vec();
        let seed_disco = [&[254, 0][..], &frame].concat();
        let tailscale_disco = [&[254, 0, 0, 0][..], &frame].concat();
        assert_eq!(user0(&seed_disco).map(|r| r.1), Some(&frame[..]));
        assert_eq!(user0(&tailscale_disco).map(|r| r.1), Some(&frame[..]));
        assert_eq!(user0(&[0, 0]), None);
        assert_eq!(user0(&[0, 0, 5, 1]), None, "a bad address length");
    }

    #[test]
    fn speeds() {
        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("2"), Ok(Speed::Times(2.0)));
        for bad in ["0", "-1", "fast", "1e-300", "1e300", "NaN", "inf"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert_eq!(Speed::Times(0.001).due(Duration::MAX), Duration::MAX);
        assert_eq!(
            Speed::Times(2.0).due(Duration::from_secs(3)),
            Duration::from_millis(1500)
        );
        assert_eq!(resolution(9).nanos(5), 5);
        assert_eq!(resolution(6).nanos(5), 5_000);
        assert_eq!(resolution(0x80 | 10).nanos(1024), 1_000_000_000);
    }
}
