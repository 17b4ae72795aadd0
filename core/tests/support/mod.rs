//! Reads captures back with two independent parsers, pcap-parser and pcap-file, into
//! one plain form that tests compare with what was logged. Shared with the end-to-end
//! tests crate through `#[path]`.
#![allow(dead_code, unreachable_pub)] // each test binary uses a different part

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError};

/// One record as a reader sees it, whatever the format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The path tag, where the format carries one.
    pub path: Option<u16>,
    /// Seconds since the epoch.
    pub secs: u32,
    /// Nanoseconds past `secs` (microsecond files give multiples of 1000).
    pub nanos: u32,
    /// The packet bytes kept, without the path tag.
    pub packet: Vec<u8>,
    /// Length of the packet as logged, without the path tag.
    pub orig_len: usize,
    /// Bytes the record holds after its header (the tag included), as written.
    pub incl_len: usize,
    /// pcapng only: the interface's name, `epb_flags` direction bits and `epb_dropcount`.
    pub interface: Option<String>,
    /// pcapng's direction bits: 1 inbound, 2 outbound.
    pub direction: Option<u32>,
    /// pcapng's `epb_dropcount`, 0 when absent.
    pub drops: u64,
    /// Tailscale's framing only: the address bytes before SNAT and before DNAT (empty
    /// when none), when the record holds its whole prefix.
    pub nat: Option<Nat>,
    /// pcapng's `opt_comment`.
    pub comment: Option<String>,
}

/// The address bytes before SNAT and before DNAT (empty when none).
pub type Nat = (Vec<u8>, Vec<u8>);

/// How the payload of a `LINKTYPE_USER0` record is laid out: the two framings share
/// their file header, so the reader has to be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// The path, then the packet.
    Seed,
    /// The path, `snat_len` and address, `dnat_len` and address, then the packet.
    Tailscale,
}

/// What a file says besides its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct File {
    /// Classic pcap's link type.
    pub linktype: Option<i32>,
    /// Classic pcap's snaplen.
    pub snaplen: Option<u32>,
    /// Whether classic pcap times are in nanoseconds.
    pub nanos: bool,
    /// The records, in file order.
    pub records: Vec<Record>,
}

const USER0: i32 = 147;

/// Parses a pcap or pcapng byte stream with pcap-parser; panics on any error, a cut
/// record included.
pub fn parse(bytes: &[u8]) -> File {
    parse_as(bytes, Framing::Seed)
}

/// [`parse`] with `USER0` records read in `framing`.
pub fn parse_as(bytes: &[u8], framing: Framing) -> File {
    let mut reader = pcap_parser::create_reader(1 << 20, bytes).expect("a capture header");
    let mut file = File::default();
    let mut interfaces: Vec<(i32, String)> = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        file.linktype = Some(h.network.0);
                        file.snaplen = Some(h.snaplen);
                        file.nanos = h.magic_number == 0xA1B2_3C4D;
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = if file.nanos {
                            b.ts_usec
                        } else {
                            b.ts_usec * 1000
                        };
                        let user0 = (file.linktype == Some(USER0)).then_some(framing);
                        file.records.push(record(
                            user0,
                            b.ts_sec,
                            frac,
                            &b.data[..b.caplen as usize],
                            b.origlen as usize,
                        ));
                    }
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        assert_eq!(idb.if_tsresol, 9, "interfaces use nanoseconds");
                        let name = idb
                            .options
                            .iter()
                            .find(|o| o.code.0 == 2)
                            .map(|o| {
                                String::from_utf8_lossy(&o.value[..o.len as usize]).into_owned()
                            })
                            .unwrap_or_default();
                        interfaces.push((idb.linktype.0, name));
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        let (linktype, name) = interfaces[epb.if_id as usize].clone();
                        let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let mut rec = record(
                            (linktype == USER0).then_some(Framing::Seed),
                            (ts / 1_000_000_000) as u32,
                            (ts % 1_000_000_000) as u32,
                            &epb.data[..epb.caplen as usize],
                            epb.origlen as usize,
                        );
                        rec.interface = Some(name);
                        for o in &epb.options {
                            let v = &o.value[..o.len as usize];
                            match o.code.0 {
                                2 => {
                                    rec.direction =
                                        Some(u32::from_le_bytes(v.try_into().unwrap()) & 3)
                                }
                                4 => rec.drops = u64::from_le_bytes(v.try_into().unwrap()),
                                1 => add_comment(&mut rec, String::from_utf8(v.to_vec()).unwrap()),
                                _ => {}
                            }
                        }
                        file.records.push(rec);
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => {}
                    PcapBlockOwned::NG(_) => panic!("unexpected pcapng block"),
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    assert!(reader.data().is_empty(), "the stream ends inside a record");
                    break;
                }
                reader.refill().expect("refill");
            }
            Err(e) => panic!("pcap-parser: {e:?}"),
        }
    }
    file
}

fn record(user0: Option<Framing>, secs: u32, nanos: u32, data: &[u8], orig: usize) -> Record {
    let mut nat = None;
    let (path, packet, orig_len) = match user0 {
        None => (None, data.to_vec(), orig),
        Some(framing) => {
            let path = (data.len() >= 2).then(|| u16::from_le_bytes([data[0], data[1]]));
            let mut rest = data.get(2..).unwrap_or(&[]);
            let mut orig_len = orig.saturating_sub(2);
            if framing == Framing::Tailscale {
                if let Some((addresses, after)) = tailscale_prefix(rest) {
                    orig_len = orig_len.saturating_sub(rest.len() - after.len());
                    rest = after;
                    nat = Some(addresses);
                }
            }
            (path, rest.to_vec(), orig_len)
        }
    };
    Record {
        path,
        secs,
        nanos,
        packet,
        orig_len,
        incl_len: data.len(),
        interface: None,
        direction: None,
        drops: 0,
        nat,
        comment: None,
    }
}

/// The two addresses of Tailscale's prefix and what follows it, if all of it is there.
fn tailscale_prefix(bytes: &[u8]) -> Option<(Nat, &[u8])> {
    let (&snat_len, rest) = bytes.split_first()?;
    let (snat, rest) = rest.split_at_checked(usize::from(snat_len))?;
    let (&dnat_len, rest) = rest.split_first()?;
    let (dnat, rest) = rest.split_at_checked(usize::from(dnat_len))?;
    Some(((snat.to_vec(), dnat.to_vec()), rest))
}

/// Parses with pcap-file, the second, independent reader; returns the same form.
pub fn parse_with_pcap_file(bytes: &[u8]) -> File {
    parse_with_pcap_file_as(bytes, Framing::Seed)
}

/// [`parse_with_pcap_file`] with `USER0` records read in `framing`.
pub fn parse_with_pcap_file_as(bytes: &[u8], framing: Framing) -> File {
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        return parse_ng_with_pcap_file(bytes);
    }
    let mut reader = pcap_file::pcap::PcapReader::new(bytes).expect("pcap header");
    let header = reader.header();
    let nanos = header.ts_resolution == pcap_file::TsResolution::NanoSecond;
    let user0 = (header.datalink == pcap_file::DataLink::USER0).then_some(framing);
    let mut file = File {
        linktype: Some(if user0.is_some() { USER0 } else { 101 }),
        snaplen: Some(header.snaplen),
        nanos,
        records: Vec::new(),
    };
    while let Some(packet) = reader.next_raw_packet() {
        let p = packet.expect("pcap-file reads every record");
        let frac = if nanos { p.ts_frac } else { p.ts_frac * 1000 };
        file.records
            .push(record(user0, p.ts_sec, frac, &p.data, p.orig_len as usize));
    }
    file
}

fn parse_ng_with_pcap_file(bytes: &[u8]) -> File {
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::Block as B;
    let mut reader = pcap_file::pcapng::PcapNgReader::new(bytes).expect("section header");
    let mut file = File::default();
    let mut interfaces = Vec::new();
    while let Some(block) = reader.next_block() {
        match block.expect("pcap-file reads every block") {
            B::InterfaceDescription(idb) => {
                let name = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                });
                interfaces.push((
                    (idb.linktype == pcap_file::DataLink::USER0).then_some(Framing::Seed),
                    name.unwrap_or_default(),
                ));
            }
            B::EnhancedPacket(epb) => {
                let (user0, name) = interfaces[epb.interface_id as usize].clone();
                let ns = epb.timestamp.as_nanos();
                let mut rec = record(
                    user0,
                    (ns / 1_000_000_000) as u32,
                    (ns % 1_000_000_000) as u32,
                    &epb.data,
                    epb.original_len as usize,
                );
                rec.interface = Some(name);
                for o in &epb.options {
                    match o {
                        EnhancedPacketOption::Flags(f) => rec.direction = Some(f & 3),
                        EnhancedPacketOption::DropCount(d) => rec.drops = *d,
                        EnhancedPacketOption::Comment(c) => add_comment(&mut rec, c.to_string()),
                        _ => {}
                    }
                }
                file.records.push(rec);
            }
            _ => {}
        }
    }
    file
}

/// A record's comments, joined by newlines when it has several.
fn add_comment(record: &mut Record, comment: String) {
    record.comment = Some(match record.comment.take() {
        Some(before) => format!("{before}\n{comment}"),
        None => comment,
    });
}
