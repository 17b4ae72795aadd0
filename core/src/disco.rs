//! Disco frames: how a daemon logs its peer-discovery messages on [`Path::Disco`]
//! (Tailscale's `disco/pcap.go` layout, which Tailscale's and pcapcast's dissectors
//! decode).
//!
//! | bytes         | field                                                      |
//! |---------------|------------------------------------------------------------|
//! | 1             | flags: bit 0 set when the frame came through DERP           |
//! | 32            | the DERP node's public key (zeros when not through DERP)   |
//! | 2             | the source port, `u16` little-endian                       |
//! | 2             | `addr_len`, `u16` little-endian: 4 or 16                   |
//! | `addr_len`    | the source address                                         |
//! | 2             | `payload_len`, `u16` little-endian                         |
//! | `payload_len` | the decrypted disco message: type, version, body           |
//!
//! [`Path::Disco`]: crate::Path::Disco

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Error;

/// The source address of a frame that came through DERP: DERP's magic address (the
/// port is the DERP region).
pub const DERP_MAGIC_IP: Ipv4Addr = Ipv4Addr::new(127, 3, 3, 40);

const VIA_DERP: u8 = 0b1;
const KEY_LEN: usize = 32;
/// Bytes of a frame besides the address and the message.
const FIXED_LEN: usize = 1 + KEY_LEN + 2 + 2 + 2;

/// One disco frame: where the message came from and the message itself.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use pcapcast_core::{disco::DiscoFrame, Capture, Path};
///
/// let ping = [1, 0, /* txid, node key, ... */];
/// let frame = DiscoFrame::new("192.0.2.7:41641".parse()?, &ping);
/// let mut buf = [0; 128];
/// let len = frame.write_to(&mut buf)?; // no allocation
/// assert_eq!(DiscoFrame::parse(&buf[..len])?, frame);
///
/// let capture = Capture::new();
/// capture.log_packet(Path::Disco, SystemTime::now(), &buf[..len]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscoFrame<'a> {
    /// Where the message came from; [`DERP_MAGIC_IP`] and the region for DERP.
    pub source: SocketAddr,
    /// The public key of the DERP node it came through, if it came through DERP.
    pub derp_key: Option<[u8; KEY_LEN]>,
    /// The decrypted disco message.
    pub message: &'a [u8],
}

impl<'a> DiscoFrame<'a> {
    /// A frame of `message`, received directly from `source`.
    pub fn new(source: SocketAddr, message: &'a [u8]) -> DiscoFrame<'a> {
        DiscoFrame {
            source,
            derp_key: None,
            message,
        }
    }

    /// The same frame, received through the DERP node whose public key is `key`: its
    /// source becomes DERP's magic address, [`DERP_MAGIC_IP`], the port (the DERP
    /// region) kept. The DERP flag is written from the source, as Tailscale's
    /// `ToPCAPFrame` does, so a frame from `DERP_MAGIC_IP` is flagged with or without a
    /// key.
    #[must_use]
    pub fn via_derp(mut self, key: [u8; KEY_LEN]) -> DiscoFrame<'a> {
        self.source.set_ip(DERP_MAGIC_IP.into());
        self.derp_key = Some(key);
        self
    }

    /// The frame's length in bytes.
    pub fn len(&self) -> usize {
        FIXED_LEN + address_len(self.source.ip()) + self.message.len()
    }

    /// Never: a frame has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the frame at the start of `out`; returns its length.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the message is longer than 65535 bytes or `out` is
    /// shorter than [`DiscoFrame::len`].
    pub fn write_to(&self, out: &mut [u8]) -> Result<usize, Error> {
        let invalid = |reason: String| Error::InvalidOption {
            name: "disco frame".to_owned(),
            reason,
        };
        let payload_len = u16::try_from(self.message.len()).map_err(|_| {
            invalid(format!(
                "a message of {} bytes; a frame holds at most 65535",
                self.message.len()
            ))
        })?;
        let len = self.len();
        let Some(out) = out.get_mut(..len) else {
            return Err(invalid(format!(
                "a buffer of {} bytes for a frame of {len}",
                out.len()
            )));
        };
        let flags = if self.source.ip() == DERP_MAGIC_IP {
            VIA_DERP
        } else {
            0
        };
        let key = self.derp_key.unwrap_or([0; KEY_LEN]);
        out[0] = flags;
        out[1..1 + KEY_LEN].copy_from_slice(&key);
        let mut at = 1 + KEY_LEN;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.source.port().to_le_bytes());
        match self.source.ip() {
            IpAddr::V4(ip) => {
                put(&4u16.to_le_bytes());
                put(&ip.octets());
            }
            IpAddr::V6(ip) => {
                put(&16u16.to_le_bytes());
                put(&ip.octets());
            }
        }
        put(&payload_len.to_le_bytes());
        put(self.message);
        Ok(len)
    }

    /// The frame as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        // A message too long for a frame is cut to what the frame can say.
        let cut = DiscoFrame {
            message: &self.message[..self.message.len().min(usize::from(u16::MAX))],
            ..*self
        };
        let mut out = vec![0; cut.len()];
        let _ = cut.write_to(&mut out);
        out
    }

    /// Reads a frame.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] when a field runs past the end or the address length is
    /// neither 4 nor 16.
    pub fn parse(frame: &'a [u8]) -> Result<DiscoFrame<'a>, Error> {
        let malformed = |reason: &str| Error::Malformed {
            reason: format!("disco frame: {reason}"),
        };
        let fixed = frame
            .get(..1 + KEY_LEN + 4)
            .ok_or_else(|| malformed("shorter than its fixed fields"))?;
        let u16_at = |bytes: &[u8], at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let key: [u8; KEY_LEN] = fixed[1..1 + KEY_LEN].try_into().expect("32 bytes");
        let port = u16_at(fixed, 1 + KEY_LEN);
        let addr_len = usize::from(u16_at(fixed, 3 + KEY_LEN));
        let rest = &frame[fixed.len()..];
        let ip = match (addr_len, rest.get(..addr_len)) {
            (4, Some(a)) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).expect("4"))),
            (16, Some(a)) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).expect("16"))),
            (4 | 16, None) => return Err(malformed("the address runs past the end")),
            _ => return Err(malformed(&format!("an address of {addr_len} bytes"))),
        };
        let rest = &rest[addr_len..];
        let payload_len = match rest {
            [lo, hi, ..] => usize::from(u16::from_le_bytes([*lo, *hi])),
            _ => return Err(malformed("no message length")),
        };
        let message = rest[2..]
            .get(..payload_len)
            .ok_or_else(|| malformed("the message runs past the end"))?;
        Ok(DiscoFrame {
            source: SocketAddr::new(ip, port),
            derp_key: (fixed[0] & VIA_DERP != 0).then_some(key),
            message,
        })
    }
}

fn address_len(ip: IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => 4,
        IpAddr::V6(_) => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_field_by_field() {
        let frame = DiscoFrame::new(SocketAddr::new(DERP_MAGIC_IP.into(), 7), &[2, 0, 9])
            .via_derp([0xAB; 32]);
        let bytes = frame.to_vec();
        assert_eq!(bytes.len(), FIXED_LEN + 4 + 3);
        assert_eq!(bytes[0], 1);
        assert_eq!(&bytes[1..33], &[0xAB; 32]);
        assert_eq!(&bytes[33..37], &[7, 0, 4, 0]);
        assert_eq!(&bytes[37..41], &[127, 3, 3, 40]);
        assert_eq!(&bytes[41..], &[3, 0, 2, 0, 9]);
        assert_eq!(DiscoFrame::parse(&bytes).unwrap(), frame);
    }

    #[test]
    fn the_derp_flag_follows_the_source() {
        let direct = DiscoFrame::new("192.0.2.1:41641".parse().unwrap(), &[1, 0]);
        let relayed = direct.via_derp([7; 32]);
        assert_eq!(relayed.source, SocketAddr::new(DERP_MAGIC_IP.into(), 41641));
        assert_eq!(relayed.to_vec()[0], 1);
        assert_eq!(direct.to_vec()[0], 0);
        let magic_without_key = DiscoFrame::new(SocketAddr::new(DERP_MAGIC_IP.into(), 2), &[2, 0]);
        assert_eq!(magic_without_key.to_vec()[0], 1);
    }

    #[test]
    fn every_cut_is_an_error_not_a_panic() {
        let frame = DiscoFrame::new("[fd7a::1]:41641".parse().unwrap(), &[1, 0, 5, 5]);
        let bytes = frame.to_vec();
        assert_eq!(DiscoFrame::parse(&bytes).unwrap(), frame);
        for cut in 0..bytes.len() {
            assert!(DiscoFrame::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut odd = bytes.clone();
        odd[35] = 5; // an address of 5 bytes
        assert!(DiscoFrame::parse(&odd).is_err());
    }

    #[test]
    fn write_to_refuses_what_does_not_fit() {
        let long = vec![0; 70_000];
        let frame = DiscoFrame::new("1.2.3.4:5".parse().unwrap(), &long);
        assert!(frame.write_to(&mut vec![0; 80_000]).is_err());
        assert_eq!(frame.to_vec().len(), FIXED_LEN + 4 + 65_535);
        let short = DiscoFrame::new("1.2.3.4:5".parse().unwrap(), &[1]);
        assert!(short.write_to(&mut [0; 10]).is_err());
    }
}
