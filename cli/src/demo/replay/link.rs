//! The IP packet in a record of each link type a replay reads, with the path and the
//! metadata pcapcast's and Tailscale's own framings carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pcapcast_core::{Meta, Path};

// Link types (LINKTYPE_* of the pcap and pcapng formats, and DLT_RAW where files kept it).
pub const NULL: i32 = 0;
pub const ETHERNET: i32 = 1;
pub const DLT_RAW: i32 = 12;
pub const DLT_RAW_OPENBSD: i32 = 14;
pub const RAW: i32 = 101;
pub const LOOP: i32 = 108;
pub const LINUX_SLL: i32 = 113;
pub const USER0: i32 = 147;
pub const IPV4: i32 = 228;
pub const IPV6: i32 = 229;
pub const LINUX_SLL2: i32 = 276;

/// The path, IP packet and metadata a record holds, if it holds one.
pub fn extract(linktype: i32, data: &[u8], flags: Option<u32>) -> Option<(Path, &[u8], Meta)> {
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
}
