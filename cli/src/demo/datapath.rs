//! A small userspace datapath, as a VPN's would be: packets from the local host go to
//! the peer, packets from the peer go to the local host, and packets for the
//! datapath's own service address are answered by the datapath itself. Every packet
//! is logged where it passes, on the path a real datapath would use.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::SystemTime;

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use pcapcast_core::{Capture, Path};

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
    /// else forwarded to the peer.
    pub fn handle_from_local(&self, packet: Vec<u8>) -> Delivery {
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
        self.log(Path::FromPeer, &packet);
        match echo_reply_for_service(&packet) {
            Some(reply) => {
                self.log(Path::SynthesizedToPeer, &reply);
                Delivery::Peer(reply)
            }
            None => Delivery::Local(packet),
        }
    }

    /// A discovery frame the datapath sends to find a path to the peer.
    pub fn disco_ping(&self, round: u64) {
        let mut frame = b"pcapcast-disco ping ".to_vec();
        frame.extend_from_slice(&round.to_be_bytes());
        self.log(Path::Disco, &frame);
    }
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
