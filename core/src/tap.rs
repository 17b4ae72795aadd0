//! A capture around a smoltcp device: every packet the stack receives or sends is
//! logged, as the device sees it.

use std::time::SystemTime;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::{Capture, Error, Path};

/// Wraps a smoltcp [`Device`] of [`Medium::Ip`] and logs what goes through it: each
/// received packet as [`Path::FromPeer`], each transmitted one as [`Path::FromLocal`],
/// timed by `clock` (the core reads no clock of its own: pass `SystemTime::now`, or a
/// simulated one). It is `phy::PcapWriter`'s place in a stack, with no file, no flush per
/// packet and no panic: one copy per packet while someone listens, one atomic load and
/// no allocation while nobody does.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use smoltcp::phy::{Loopback, Medium};
/// use pcapcast_core::{Capture, Tap};
///
/// let capture = Capture::new();
/// let device = Tap::new(Loopback::new(Medium::Ip), capture.clone(), SystemTime::now)?;
/// // An `Interface` polled over `device` now shows its traffic in every output.
/// # drop(device);
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Tap<D, C = fn() -> SystemTime> {
    device: D,
    capture: Capture,
    clock: C,
}

impl<D: Device, C: Fn() -> SystemTime> Tap<D, C> {
    /// Taps `device`, logging into `capture` with times from `clock`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] when the device's medium is not IP: its frames would not
    /// read as the IP packets every format holds.
    pub fn new(device: D, capture: Capture, clock: C) -> Result<Tap<D, C>, Error> {
        let medium = device.capabilities().medium;
        if medium != Medium::Ip {
            return Err(Error::InvalidOption {
                name: "medium".to_owned(),
                reason: format!("a tap needs a device of Medium::Ip, not {medium:?}"),
            });
        }
        Ok(Tap {
            device,
            capture,
            clock,
        })
    }

    /// The device inside.
    pub fn get_ref(&self) -> &D {
        &self.device
    }

    /// The device inside, to move packets in and out of it.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.device
    }
}

impl<D: Device, C: Fn() -> SystemTime> Device for Tap<D, C> {
    type RxToken<'a>
        = RxToken<'a, D::RxToken<'a>>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (rx, tx) = self.device.receive(timestamp)?;
        let logged = Logged {
            capture: &self.capture,
            clock: &self.clock,
        };
        Some((RxToken { inner: rx, logged }, TxToken { inner: tx, logged }))
    }

    fn transmit(&mut self, timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let inner = self.device.transmit(timestamp)?;
        let logged = Logged {
            capture: &self.capture,
            clock: &self.clock,
        };
        Some(TxToken { inner, logged })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

/// Where a token logs its packet, and the clock it reads only then, and only when an
/// output listens: an idle tap costs the capture's one atomic load per packet.
struct Logged<'a> {
    capture: &'a Capture,
    clock: &'a dyn Fn() -> SystemTime,
}

impl Clone for Logged<'_> {
    fn clone(&self) -> Self {
        *self
    }
}

impl Copy for Logged<'_> {}

impl std::fmt::Debug for Logged<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logged")
            .field("capture", self.capture)
            .finish()
    }
}

impl Logged<'_> {
    fn log(&self, path: Path, packet: &[u8]) {
        if self.capture.is_listening() {
            self.capture.log_packet(path, (self.clock)(), packet);
        }
    }
}

/// A received packet, logged as it is consumed.
#[derive(Debug)]
pub struct RxToken<'a, T> {
    inner: T,
    logged: Logged<'a>,
}

impl<T: phy::RxToken> phy::RxToken for RxToken<'_, T> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let logged = self.logged;
        self.inner.consume(|packet| {
            logged.log(Path::FromPeer, packet);
            f(packet)
        })
    }

    fn meta(&self) -> PacketMeta {
        self.inner.meta()
    }
}

/// A packet to send, logged once the stack has written it.
#[derive(Debug)]
pub struct TxToken<'a, T> {
    inner: T,
    logged: Logged<'a>,
}

impl<T: phy::TxToken> phy::TxToken for TxToken<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let logged = self.logged;
        self.inner.consume(len, |packet| {
            let result = f(packet);
            logged.log(Path::FromLocal, packet);
            result
        })
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.inner.set_meta(meta);
    }
}
