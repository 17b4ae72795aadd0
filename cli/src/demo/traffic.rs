//! The two hosts at the ends of the demo datapath, and the exchanges between them:
//! IPv4 and IPv6 UDP (some of it through NAT), HTTP over TCP between real stacks, ICMP echo to the
//! datapath's service address from both sides, and discovery frames.

use etherparse::PacketBuilder;

use super::datapath::{
    build, Datapath, Delivery, DNS_VIP_V4, DNS_VIP_V6, LOCAL_V4, LOCAL_V6, PEER_V4, PEER_V6,
    SERVICE_V4, SERVICE_V6,
};
use super::tcp::Hosts;

/// Runs one round of exchanges through `datapath`; returns the packets logged.
pub fn round(datapath: &Datapath, hosts: &mut Hosts, n: u64) -> usize {
    let mut logged = 0;
    let mut send = |from: Side, packet: Vec<u8>| {
        logged += 1;
        let delivered = match from {
            Side::Local => datapath.handle_from_local(packet),
            Side::Peer => datapath.handle_from_peer(packet),
        };
        // An answer from the datapath itself is one more packet.
        if matches!(
            (from, delivered),
            (Side::Local, Delivery::Local(_)) | (Side::Peer, Delivery::Peer(_))
        ) {
            logged += 1;
        }
    };
    let port = 40_000 + (n % 20_000) as u16;
    let seq = (n & 0xFFFF) as u16;
    let id = (n & 0xFFFF) as u16;
    let v4 = |from: [u8; 4], to: [u8; 4]| PacketBuilder::ipv4(from, to, 64);
    let v6 = |from: [u8; 16], to: [u8; 16]| PacketBuilder::ipv6(from, to, 64);
    let (local, peer, local6, peer6) = (
        LOCAL_V4.octets(),
        PEER_V4.octets(),
        LOCAL_V6.octets(),
        PEER_V6.octets(),
    );

    // DNS over IPv4 and IPv6 UDP: the local host asks, the peer answers.
    send(
        Side::Local,
        build(v4(local, peer).udp(port, 53), &dns_query(id)),
    );
    send(
        Side::Peer,
        build(v4(peer, local).udp(53, port), &dns_answer(id)),
    );
    send(
        Side::Local,
        build(v6(local6, peer6).udp(port, 53), &dns_query(id ^ 0x8000)),
    );
    send(
        Side::Peer,
        build(v6(peer6, local6).udp(53, port), &dns_answer(id ^ 0x8000)),
    );

    // The peer asks the local host's DNS service at its public address: the datapath
    // DNATs the query to the local host and SNATs the answer back.
    send(
        Side::Peer,
        build(
            v4(peer, DNS_VIP_V4.octets()).udp(port, 53),
            &dns_query(id ^ 0x4000),
        ),
    );
    send(
        Side::Local,
        build(v4(local, peer).udp(53, port), &dns_answer(id ^ 0x4000)),
    );
    if n % 2 == 1 {
        send(
            Side::Peer,
            build(
                v6(peer6, DNS_VIP_V6.octets()).udp(port, 53),
                &dns_query(id ^ 0xC000),
            ),
        );
        send(
            Side::Local,
            build(v6(local6, peer6).udp(53, port), &dns_answer(id ^ 0xC000)),
        );
    }

    // The local host pings the datapath's service address: the datapath answers.
    send(
        Side::Local,
        build(
            v4(local, SERVICE_V4.octets()).icmpv4_echo_request(7, seq),
            b"pcapcast ping",
        ),
    );

    // An HTTP exchange over TCP between the two hosts' smoltcp stacks.
    let over_tcp = hosts.http_exchange(port);

    // The peer pings the datapath's IPv6 service address: answered towards the peer.
    send(
        Side::Peer,
        build(
            v6(peer6, SERVICE_V6.octets()).icmpv6_echo_request(9, seq),
            b"pcapcast ping6",
        ),
    );

    if n % 4 == 0 {
        logged += datapath.disco_exchange(n);
    }
    logged + over_tcp
}

#[derive(Clone, Copy, Debug)]
enum Side {
    Local,
    Peer,
}

const DNS_NAME: &[u8] = b"\x07example\x02ts\x03net\x00";

/// A DNS query for the A record of example.ts.net.
fn dns_query(id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    m.extend_from_slice(DNS_NAME);
    m.extend_from_slice(&[0, 1, 0, 1]); // A, IN
    m
}

/// The answer: example.ts.net is the peer, 100.64.0.2.
fn dns_answer(id: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(48);
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]); // response, RD RA; 1 question, 1 answer
    m.extend_from_slice(DNS_NAME);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]); // name pointer, A, IN, TTL 60
    m.extend_from_slice(&PEER_V4.octets());
    m
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use futures_lite::{future::block_on, StreamExt};
    use pcapcast_core::disco::DiscoFrame;
    use pcapcast_core::framer::{Framer, Unit};
    use pcapcast_core::{Capture, Format, Options};

    use super::*;

    #[test]
    fn a_round_uses_every_path_with_valid_packets() {
        let capture = Capture::new();
        let mut output = capture.subscribe(Options::default());
        let datapath = Datapath::new(capture.clone(), SystemTime::now);
        let mut hosts = Hosts::new(capture.clone(), SystemTime::now);
        let logged = round(&datapath, &mut hosts, 0);
        capture.close();
        let mut framer = Framer::new();
        while let Some(bytes) = block_on(output.next()) {
            framer.push(&bytes);
        }
        let mut paths = std::collections::BTreeMap::new();
        let mut packets = 0;
        while let Some(unit) = framer.next_unit().unwrap() {
            if let pcapcast_core::framer::Unit::Packet { bytes, .. } = unit {
                packets += 1;
                let path = u16::from_le_bytes([bytes[16], bytes[17]]);
                *paths.entry(path).or_insert(0) += 1;
                if path != 254 {
                    etherparse::SlicedPacket::from_ip(&bytes[18..]).expect("a valid IP packet");
                }
            }
        }
        assert_eq!(packets, logged);
        assert_eq!(paths.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3, 254]);
    }

    /// The Tailscale-framed records of rounds `0..rounds`: path, the prefix after the
    /// path, and the payload.
    fn tailscale_records(rounds: u64) -> Vec<(u16, Vec<u8>, Vec<u8>)> {
        let capture = Capture::new();
        let mut output = capture.subscribe(Options::new().format(Format::Tailscale));
        let datapath = Datapath::new(capture.clone(), SystemTime::now);
        let mut hosts = Hosts::new(capture.clone(), SystemTime::now);
        for n in 0..rounds {
            round(&datapath, &mut hosts, n);
        }
        capture.close();
        let mut framer = Framer::new();
        while let Some(bytes) = block_on(output.next()) {
            framer.push(&bytes);
        }
        let mut records = Vec::new();
        while let Some(unit) = framer.next_unit().unwrap() {
            if let Unit::Packet { bytes, .. } = unit {
                let path = u16::from_le_bytes([bytes[16], bytes[17]]);
                let snat = usize::from(bytes[18]);
                let dnat = usize::from(bytes[19 + snat]);
                let end = 20 + snat + dnat;
                records.push((path, bytes[18..end].to_vec(), bytes[end..].to_vec()));
            }
        }
        records
    }

    #[test]
    fn nat_flows_log_the_addresses_before_nat() {
        let records = tailscale_records(2);
        let vip4 = [&[0, 4][..], &DNS_VIP_V4.octets()].concat();
        let vip6 = [&[0, 16][..], &DNS_VIP_V6.octets()].concat();
        let local4 = [&[4][..], &LOCAL_V4.octets(), &[0]].concat();
        let local6 = [&[16][..], &LOCAL_V6.octets(), &[0]].concat();
        for (path, prefix) in [(1, &vip4), (1, &vip6), (0, &local4), (0, &local6)] {
            let (_, _, packet) = records
                .iter()
                .find(|(p, pre, _)| *p == path && pre == prefix)
                .unwrap_or_else(|| panic!("path {path} with {prefix:?}"));
            // What the datapath logs is the packet after NAT, with good checksums.
            let sliced = etherparse::SlicedPacket::from_ip(packet).expect("an IP packet");
            let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
                panic!("UDP");
            };
            let ports = (udp.source_port(), udp.destination_port());
            assert!(ports.0 == 53 || ports.1 == 53, "{ports:?}");
        }
        let plain = records.iter().filter(|(_, pre, _)| pre == &[0, 0]).count();
        assert!(plain > records.len() / 2, "most packets go through no NAT");
    }

    #[test]
    fn disco_frames_carry_pings_and_pongs_direct_and_through_derp() {
        let frames: Vec<_> = tailscale_records(8)
            .into_iter()
            .filter(|(path, _, _)| *path == 254)
            .map(|(_, prefix, frame)| {
                assert_eq!(prefix, [0, 0]);
                frame
            })
            .collect();
        let parsed: Vec<_> = frames
            .iter()
            .map(|f| DiscoFrame::parse(f).expect("a disco frame"))
            .collect();
        let kinds: Vec<(u8, bool)> = parsed
            .iter()
            .map(|f| (f.message[0], f.derp_key.is_some()))
            .collect();
        assert_eq!(kinds, [(1, false), (2, true), (1, true), (2, false)]);
        for frame in &parsed {
            let len = if frame.message[0] == 1 {
                2 + 12 + 32
            } else {
                2 + 12 + 18
            };
            assert_eq!(frame.message.len(), len);
            assert_eq!(
                frame.source.ip() == pcapcast_core::disco::DERP_MAGIC_IP,
                frame.derp_key.is_some()
            );
        }
    }
}
