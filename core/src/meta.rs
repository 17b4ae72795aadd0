//! Per-packet metadata: the addresses a packet had before NAT rewrote them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::Error;

/// What the datapath knows about a packet beyond its bytes: the source it had before
/// SNAT and the destination it had before DNAT (Tailscale's `CaptureMeta`).
/// `Meta::default()` says nothing.
///
/// [`Format::Tailscale`](crate::Format::Tailscale) writes the original addresses (without
/// their ports) before each packet, pcapng writes them with their ports as the record's
/// comment, and the seed format and raw IP leave them out.
///
/// # Examples
///
/// ```
/// use std::net::SocketAddr;
/// use pcapcast_core::Meta;
///
/// let src: SocketAddr = "100.64.0.7:1000".parse()?;
/// let dst: SocketAddr = "[fd7a:115c:a1e0::9]:443".parse()?;
/// let meta = Meta::new().snat(src).dnat(dst);
/// assert_eq!(meta.original_src(), Some(src));
/// assert_eq!(meta.to_string(), "snat 100.64.0.7:1000 dnat [fd7a:115c:a1e0::9]:443");
/// assert!(Meta::default().is_empty());
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    original_src: Option<SocketAddr>,
    original_dst: Option<SocketAddr>,
}

/// The longest metadata block: flags, then two IPv6 addresses with their ports.
pub(crate) const MAX_BLOCK: usize = 1 + 2 * (16 + 2);

const SNAT: u8 = 0b0001;
const SNAT_V6: u8 = 0b0010;
const DNAT: u8 = 0b0100;
const DNAT_V6: u8 = 0b1000;

impl Meta {
    /// No metadata; the same as `Meta::default()`.
    pub const fn new() -> Meta {
        Meta {
            original_src: None,
            original_dst: None,
        }
    }

    /// The packet went through SNAT: `original_src` is its source before.
    #[must_use]
    pub const fn snat(mut self, original_src: SocketAddr) -> Meta {
        self.original_src = Some(original_src);
        self
    }

    /// The packet went through DNAT: `original_dst` is its destination before.
    #[must_use]
    pub const fn dnat(mut self, original_dst: SocketAddr) -> Meta {
        self.original_dst = Some(original_dst);
        self
    }

    /// The source before SNAT, if the packet went through SNAT.
    pub const fn original_src(&self) -> Option<SocketAddr> {
        self.original_src
    }

    /// The destination before DNAT, if the packet went through DNAT.
    pub const fn original_dst(&self) -> Option<SocketAddr> {
        self.original_dst
    }

    /// Whether it says nothing.
    pub const fn is_empty(&self) -> bool {
        self.original_src.is_none() && self.original_dst.is_none()
    }

    /// Writes the stored block (flags, then each address and its port) into `out`;
    /// returns its length, 0 for no metadata. No allocation: the datapath calls it.
    pub(crate) fn encode(&self, out: &mut [u8; MAX_BLOCK]) -> usize {
        if self.is_empty() {
            return 0;
        }
        let mut len = 1;
        let mut flags = 0;
        for (addr, (present, v6)) in [
            (self.original_src, (SNAT, SNAT_V6)),
            (self.original_dst, (DNAT, DNAT_V6)),
        ] {
            let Some(addr) = addr else { continue };
            flags |= present;
            match addr.ip() {
                IpAddr::V4(ip) => {
                    out[len..len + 4].copy_from_slice(&ip.octets());
                    len += 4;
                }
                IpAddr::V6(ip) => {
                    flags |= v6;
                    out[len..len + 16].copy_from_slice(&ip.octets());
                    len += 16;
                }
            }
            out[len..len + 2].copy_from_slice(&addr.port().to_le_bytes());
            len += 2;
        }
        out[0] = flags;
        len
    }

    /// Reads a block [`Meta::encode`] wrote; what it cannot read means no metadata.
    pub(crate) fn decode(block: &[u8]) -> Meta {
        let Some((&flags, mut rest)) = block.split_first() else {
            return Meta::new();
        };
        let mut take = |present: u8, v6: u8| -> Option<SocketAddr> {
            if flags & present == 0 {
                return None;
            }
            let addr_len = if flags & v6 != 0 { 16 } else { 4 };
            let (field, after) = rest.split_at_checked(addr_len + 2)?;
            rest = after;
            let (addr, port) = field.split_at(addr_len);
            let ip = match <[u8; 4]>::try_from(addr) {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(addr).ok()?)),
            };
            Some(SocketAddr::new(ip, u16::from_le_bytes([port[0], port[1]])))
        };
        let original_src = take(SNAT, SNAT_V6);
        let original_dst = take(DNAT, DNAT_V6);
        Meta {
            original_src,
            original_dst,
        }
    }
}

/// `snat ADDR:PORT dnat ADDR:PORT`, each part only when present: the pcapng comment.
impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if let Some(src) = self.original_src {
            write!(f, "snat {src}")?;
            sep = " ";
        }
        if let Some(dst) = self.original_dst {
            write!(f, "{sep}dnat {dst}")?;
        }
        Ok(())
    }
}

/// Reads what [`Meta`]'s `Display` writes, the pcapng comment: `snat ADDR:PORT`, then
/// `dnat ADDR:PORT`, each only when present, at least one of them.
///
/// # Examples
///
/// ```
/// use pcapcast_core::Meta;
///
/// let meta: Meta = "snat 100.64.0.7:1000 dnat [fd7a:115c:a1e0::9]:443".parse()?;
/// assert_eq!(meta.original_dst(), Some("[fd7a:115c:a1e0::9]:443".parse().unwrap()));
/// assert!("the first record logged after this output attached".parse::<Meta>().is_err());
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
impl FromStr for Meta {
    type Err = Error;

    fn from_str(text: &str) -> Result<Meta, Error> {
        let not_nat = || Error::Malformed {
            reason: format!("{text:?} is not `snat ADDR:PORT dnat ADDR:PORT`"),
        };
        let mut words = text.split(' ');
        let mut meta = Meta::new();
        let mut next = words.next();
        if next == Some("snat") {
            let addr = words
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(not_nat)?;
            meta = meta.snat(addr);
            next = words.next();
        }
        if next == Some("dnat") {
            let addr = words
                .next()
                .and_then(|a| a.parse().ok())
                .ok_or_else(not_nat)?;
            meta = meta.dnat(addr);
            next = words.next();
        }
        match (next, meta.is_empty()) {
            (None, false) => Ok(meta),
            _ => Err(not_nat()),
        }
    }
}

/// The address bytes Tailscale's framing writes for an original address: 4 for IPv4,
/// 16 for IPv6 (a v4-mapped IPv6 address stays 16, as Go's `netip.Addr.AsSlice`).
pub(crate) fn address_bytes(addr: Option<SocketAddr>) -> ([u8; 16], usize) {
    let mut bytes = [0; 16];
    match addr.map(|a| a.ip()) {
        None => (bytes, 0),
        Some(IpAddr::V4(ip)) => {
            bytes[..4].copy_from_slice(&ip.octets());
            (bytes, 4)
        }
        Some(IpAddr::V6(ip)) => (ip.octets(), 16),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(meta: Meta) -> Meta {
        let mut block = [0; MAX_BLOCK];
        let len = meta.encode(&mut block);
        Meta::decode(&block[..len])
    }

    #[test]
    fn every_combination_reads_back() {
        let v4: SocketAddr = "100.64.0.7:1000".parse().unwrap();
        let v6: SocketAddr = "[fd7a:115c:a1e0::9]:65535".parse().unwrap();
        for src in [None, Some(v4), Some(v6)] {
            for dst in [None, Some(v4), Some(v6)] {
                let mut meta = Meta::new();
                if let Some(src) = src {
                    meta = meta.snat(src);
                }
                if let Some(dst) = dst {
                    meta = meta.dnat(dst);
                }
                assert_eq!(round_trip(meta), meta);
            }
        }
        let mut block = [0; MAX_BLOCK];
        assert_eq!(Meta::new().snat(v6).dnat(v6).encode(&mut block), MAX_BLOCK);
        assert_eq!(Meta::new().encode(&mut block), 0);
    }

    #[test]
    fn a_cut_block_reads_as_what_is_whole() {
        let meta = Meta::new()
            .snat("1.2.3.4:5".parse().unwrap())
            .dnat("[::1]:6".parse().unwrap());
        let mut block = [0; MAX_BLOCK];
        let len = meta.encode(&mut block);
        assert_eq!(
            Meta::decode(&block[..len - 1]),
            Meta::new().snat("1.2.3.4:5".parse().unwrap())
        );
        assert_eq!(Meta::decode(&[]), Meta::new());
        assert_eq!(Meta::decode(&[0xff]), Meta::new());
    }

    #[test]
    fn display_names_what_is_there() {
        let v4: SocketAddr = "100.64.0.9:53".parse().unwrap();
        assert_eq!(Meta::new().dnat(v4).to_string(), "dnat 100.64.0.9:53");
        assert_eq!(Meta::new().snat(v4).to_string(), "snat 100.64.0.9:53");
        assert_eq!(Meta::new().to_string(), "");
    }

    #[test]
    fn display_reads_back_and_nothing_else_does() {
        let v4: SocketAddr = "100.64.0.7:0".parse().unwrap();
        let v6: SocketAddr = "[::ffff:1.2.3.4]:65535".parse().unwrap();
        for meta in [
            Meta::new().snat(v4),
            Meta::new().dnat(v6),
            Meta::new().snat(v6).dnat(v4),
        ] {
            assert_eq!(meta.to_string().parse::<Meta>(), Ok(meta));
        }
        for text in [
            "",
            "snat",
            "dnat 1.2.3.4",
            "dnat 1.2.3.4:5 snat 1.2.3.4:5",
            "snat 1.2.3.4:5 dnat 1.2.3.4:5 more",
            "snat 1.2.3.4:5  dnat 1.2.3.4:5",
            crate::encoder::LIVE_NOTE,
        ] {
            assert!(text.parse::<Meta>().is_err(), "{text:?}");
        }
    }
}
