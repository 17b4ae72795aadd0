//! A small userspace datapath, as a VPN's would be: packets from the local host go to
//! the peer, packets from the peer go to the local host, and packets for the
//! datapath's own service address are answered by the datapath itself. Like a subnet
//! router's port forward, it DNATs the peer's packets for the local DNS service's
//! public address to the local host, and SNATs the answers back. Every packet is
//! logged where it passes, on the path a real datapath would use, with the addresses
//! it had before NAT.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::SystemTime;

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use pcapcast_core::disco::DiscoFrame;
use pcapcast_core::{Capture, Meta, Path};

/// Addresses of the demo network.
pub const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The peer's IPv4 address.
pub const PEER_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
/// The datapath's own service address (answers pings).
pub const SERVICE_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
/// The local host's IPv6 address.
pub const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 1);
/// The peer's IPv6 address.
pub const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 2);
/// The datapath's own IPv6 service address.
pub const SERVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);
/// Where the peer reaches the local host's DNS service: DNATed to [`LOCAL_V4`].
pub const DNS_VIP_V4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 53);
/// Where the peer reaches the local host's DNS service over IPv6: DNATed to
/// [`LOCAL_V6`].
pub const DNS_VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x35);
/// The forwarded port.
const DNS_PORT: u16 = 53;
/// The peer's public endpoint, where its direct disco frames come from.
const PEER_ENDPOINT_V4: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)), 41_641);
/// The peer's public IPv6 endpoint.
const PEER_ENDPOINT_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2)),
    41_641,
);
/// The local host's public endpoint, as the peer saw it (what a pong reports).
const LOCAL_ENDPOINT: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 41_641);
/// The DERP region the relayed frames come through, and that node's public key.
const DERP_REGION: u16 = 1;
const DERP_KEY: [u8; 32] = [0xDE; 32];
/// The peer's node key, which its pings carry.
const PEER_NODE_KEY: [u8; 32] = [0x2E; 32];

/// Where a packet leaving the datapath goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// To the local host.
    Local(Vec<u8>),
    /// To the peer.
    Peer(Vec<u8>),
}

/// The datapath: routes and answers, logging each packet on its path.
#[derive(Debug)]
pub struct Datapath {
    capture: Capture,
    clock: fn() -> SystemTime,
}

impl Datapath {
    /// A datapath that logs into `capture`, timestamping with `clock`.
    pub fn new(capture: Capture, clock: fn() -> SystemTime) -> Datapath {
        Datapath { capture, clock }
    }

    fn log(&self, path: Path, packet: &[u8]) {
        self.capture.log_packet(path, (self.clock)(), packet);
    }

    /// A packet the local host sent: answered here if it pings the service address,
    /// else forwarded to the peer; an answer of the forwarded DNS service leaves with
    /// its public address as the source.
    pub fn handle_from_local(&self, packet: Vec<u8>) -> Delivery {
        if let Some((packet, original_src)) = snat_dns_answer(&packet) {
            let meta = Meta::new().snat(original_src);
            self.capture
                .log_packet_with(Path::FromLocal, (self.clock)(), &packet, &meta);
            return Delivery::Peer(packet);
        }
        self.log(Path::FromLocal, &packet);
        match echo_reply_for_service(&packet) {
            Some(reply) => {
                self.log(Path::SynthesizedToLocal, &reply);
                Delivery::Local(reply)
            }
            None => Delivery::Peer(packet),
        }
    }

    /// A packet from the peer: answered here if it pings the service address, else
    /// delivered to the local host.
    pub fn handle_from_peer(&self, packet: Vec<u8>) -> Delivery {
        if let Some((packet, original_dst)) = dnat_dns_query(&packet) {
            let meta = Meta::new().dnat(original_dst);
            self.capture
                .log_packet_with(Path::FromPeer, (self.clock)(), &packet, &meta);
            return Delivery::Local(packet);
        }
        self.log(Path::FromPeer, &packet);
        match echo_reply_for_service(&packet) {
            Some(reply) => {
                self.log(Path::SynthesizedToPeer, &reply);
                Delivery::Peer(reply)
            }
            None => Delivery::Local(packet),
        }
    }

    /// The disco messages of round `n` that reach the datapath: a ping from the peer
    /// and the pong that answers the datapath's own ping, one of them directly from
    /// the peer's endpoint and the other through DERP. Returns the frames logged.
    pub fn disco_exchange(&self, n: u64) -> usize {
        let txid = disco_txid(n);
        let ping = disco_ping(&txid, &PEER_NODE_KEY);
        let pong = disco_pong(&disco_txid(n ^ u64::MAX), LOCAL_ENDPOINT);
        let derp_source = SocketAddr::new(pcapcast_core::disco::DERP_MAGIC_IP.into(), DERP_REGION);
        let (ping_frame, pong_frame) = if n % 8 == 0 {
            (
                DiscoFrame::new(PEER_ENDPOINT_V4, &ping),
                DiscoFrame::new(derp_source, &pong).via_derp(DERP_KEY),
            )
        } else {
            (
                DiscoFrame::new(derp_source, &ping).via_derp(DERP_KEY),
                DiscoFrame::new(PEER_ENDPOINT_V6, &pong),
            )
        };
        for frame in [ping_frame, pong_frame] {
            self.log(Path::Disco, &frame.to_vec());
        }
        2
    }
}

/// Disco message types.
const DISCO_PING: u8 = 1;
const DISCO_PONG: u8 = 2;
const DISCO_VERSION: u8 = 0;

/// A transaction id for round `n`.
fn disco_txid(n: u64) -> [u8; 12] {
    let mut txid = [0; 12];
    txid[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    txid[8..].copy_from_slice(b"ping");
    txid
}

/// A ping: type, version, transaction id, the sender's node key.
fn disco_ping(txid: &[u8; 12], node_key: &[u8; 32]) -> Vec<u8> {
    [&[DISCO_PING, DISCO_VERSION][..], txid, node_key].concat()
}

/// A pong: type, version, the ping's transaction id, and where the ping came from as
/// a 16-byte IPv6 address (IPv4 mapped) and a big-endian port.
fn disco_pong(txid: &[u8; 12], src: SocketAddr) -> Vec<u8> {
    let ip = match src.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    [
        &[DISCO_PONG, DISCO_VERSION][..],
        txid,
        &ip.octets(),
        &src.port().to_be_bytes(),
    ]
    .concat()
}

/// The peer's UDP packet for the DNS service's public address, DNATed to the local
/// host, and the destination it had.
fn dnat_dns_query(packet: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    let (src, dst, payload) = udp_parts(packet)?;
    let local = match dst.ip() {
        IpAddr::V4(ip) if ip == DNS_VIP_V4 => IpAddr::V4(LOCAL_V4),
        IpAddr::V6(ip) if ip == DNS_VIP_V6 => IpAddr::V6(LOCAL_V6),
        _ => return None,
    };
    if dst.port() != DNS_PORT {
        return None;
    }
    let rewritten = udp_packet(src, SocketAddr::new(local, DNS_PORT), payload)?;
    Some((rewritten, dst))
}

/// The local DNS service's answer to the peer, SNATed back to the public address, and
/// the source it had.
fn snat_dns_answer(packet: &[u8]) -> Option<(Vec<u8>, SocketAddr)> {
    let (src, dst, payload) = udp_parts(packet)?;
    let public = match src.ip() {
        IpAddr::V4(ip) if ip == LOCAL_V4 => IpAddr::V4(DNS_VIP_V4),
        IpAddr::V6(ip) if ip == LOCAL_V6 => IpAddr::V6(DNS_VIP_V6),
        _ => return None,
    };
    if src.port() != DNS_PORT {
        return None;
    }
    let rewritten = udp_packet(SocketAddr::new(public, DNS_PORT), dst, payload)?;
    Some((rewritten, src))
}

/// A UDP packet's source, destination and payload.
fn udp_parts(packet: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    let Some(TransportSlice::Udp(udp)) = sliced.transport else {
        return None;
    };
    let (src, dst): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(ip) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return None,
    };
    Some((
        SocketAddr::new(src, udp.source_port()),
        SocketAddr::new(dst, udp.destination_port()),
        udp.payload(),
    ))
}

/// A UDP packet with good checksums; `None` for mixed address families.
fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => return None,
    };
    Some(build(builder.udp(src.port(), dst.port()), payload))
}

/// The echo reply the datapath owes for an echo request to its service address.
fn echo_reply_for_service(packet: &[u8]) -> Option<Vec<u8>> {
    let sliced = SlicedPacket::from_ip(packet).ok()?;
    match (sliced.net?, sliced.transport?) {
        (NetSlice::Ipv4(ip), TransportSlice::Icmpv4(icmp)) => {
            let header = ip.header();
            if header.destination_addr() != SERVICE_V4 {
                return None;
            }
            let Icmpv4Type::EchoRequest(echo) = icmp.icmp_type() else {
                return None;
            };
            let builder = PacketBuilder::ipv4(SERVICE_V4.octets(), header.source(), 64)
                .icmpv4_echo_reply(echo.id, echo.seq);
            Some(build(builder, icmp.payload()))
        }
        (NetSlice::Ipv6(ip), TransportSlice::Icmpv6(icmp)) => {
            let header = ip.header();
            if header.destination_addr() != SERVICE_V6 {
                return None;
            }
            let Icmpv6Type::EchoRequest(echo) = icmp.icmp_type() else {
                return None;
            };
            let builder = PacketBuilder::ipv6(SERVICE_V6.octets(), header.source(), 64)
                .icmpv6_echo_reply(echo.id, echo.seq);
            Some(build(builder, icmp.payload()))
        }
        _ => None,
    }
}

/// Writes a packet from a builder; writing into a `Vec` cannot fail.
pub fn build<B: Writable>(builder: B, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(builder.size_of(payload.len()));
    builder.write_into(&mut packet, payload);
    packet
}

/// The last step of an etherparse packet builder.
pub trait Writable {
    /// Bytes the packet will take.
    fn size_of(&self, payload: usize) -> usize;
    /// Writes the packet.
    fn write_into(self, out: &mut Vec<u8>, payload: &[u8]);
}

macro_rules! writable {
    ($($header:ty),*) => {$(
        impl Writable for etherparse::PacketBuilderStep<$header> {
            fn size_of(&self, payload: usize) -> usize {
                self.size(payload)
            }
            fn write_into(self, out: &mut Vec<u8>, payload: &[u8]) {
                // A Vec grows as needed, and the builders fail only on a payload too
                // large for IP, which the demo never makes.
                let _ = self.write(out, payload);
            }
        }
    )*};
}

writable!(
    etherparse::UdpHeader,
    etherparse::TcpHeader,
    etherparse::Icmpv4Header,
    etherparse::Icmpv6Header
);
