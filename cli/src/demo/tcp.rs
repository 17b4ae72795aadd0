//! Real TCP in the demo: two smoltcp stacks, the local host and the peer, joined by the
//! datapath. The local host's device is tapped, so every segment of their HTTP
//! exchanges is logged as the local host sent or received it: handshake, a GET and its
//! 200 answer, and both FINs, with the checksums and sequence numbers of a real stack.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Instant as StdInstant, SystemTime};

use pcapcast_core::{Capture, Tap};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::datapath::{LOCAL_V4, PEER_V4};

/// The peer's web server.
const HTTP_PORT: u16 = 80;
/// An exchange that has not ended after this many passes is given up.
const MAX_PASSES: usize = 64;
const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\nConnection: close\r\n\r\nhello, tunnel\n";

/// One end of the datapath's wire, as a smoltcp device: what the stack sends waits in
/// `sent` for the datapath to carry it; what the datapath delivers waits in `arrived`.
#[derive(Debug, Default)]
pub struct Wire {
    arrived: VecDeque<Vec<u8>>,
    sent: VecDeque<Vec<u8>>,
}

impl Device for Wire {
    type RxToken<'a> = Arrived;
    type TxToken<'a> = Send<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Arrived, Send<'_>)> {
        let packet = self.arrived.pop_front()?;
        Some((Arrived(packet), Send(&mut self.sent)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Send<'_>> {
        Some(Send(&mut self.sent))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = 1280;
        caps
    }
}

/// A packet the datapath delivered.
#[derive(Debug)]
pub struct Arrived(Vec<u8>);

impl phy::RxToken for Arrived {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for a packet the stack sends.
#[derive(Debug)]
pub struct Send<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for Send<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

/// The two stacks and the wire between them.
pub struct Hosts {
    local: Interface,
    local_device: Tap<Wire>,
    peer: Interface,
    peer_device: Wire,
    /// Each stack polls its own sockets: the local host's client, the peer's server.
    local_sockets: SocketSet<'static>,
    peer_sockets: SocketSet<'static>,
    started: StdInstant,
    /// Packets the local host sent or received so far: each was logged once.
    carried: usize,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosts").finish_non_exhaustive()
    }
}

impl Hosts {
    /// The local host at 100.64.0.1 and the peer at 100.64.0.2; what the local host sends
    /// and receives is logged into `capture`, timed by `clock`.
    pub fn new(capture: Capture, clock: fn() -> SystemTime) -> Hosts {
        let mut local_device =
            Tap::new(Wire::default(), capture, clock).expect("a Wire is Medium::Ip");
        let mut peer_device = Wire::default();
        let local = interface(&mut local_device, LOCAL_V4);
        let peer = interface(&mut peer_device, PEER_V4);
        Hosts {
            local,
            local_device,
            peer,
            peer_device,
            local_sockets: SocketSet::new(Vec::new()),
            peer_sockets: SocketSet::new(Vec::new()),
            started: StdInstant::now(),
            carried: 0,
        }
    }

    /// One HTTP exchange from the local host's `port` to the peer's web server: connect,
    /// GET, the 200 answer, both sides close. Returns the packets it logged.
    pub fn http_exchange(&mut self, port: u16) -> usize {
        let server = self.peer_sockets.add(socket());
        let client = self.local_sockets.add(socket());
        let carried_before = self.carried;
        let listening = self
            .peer_sockets
            .get_mut::<tcp::Socket>(server)
            .listen(HTTP_PORT);
        let connecting = self.local_sockets.get_mut::<tcp::Socket>(client).connect(
            self.local.context(),
            (IpAddress::from(PEER_V4), HTTP_PORT),
            port,
        );
        if listening.is_ok() && connecting.is_ok() {
            self.run(client, server);
        }
        self.local_sockets.remove(client);
        self.peer_sockets.remove(server);
        self.carried - carried_before
    }

    fn run(&mut self, client: SocketHandle, server: SocketHandle) {
        let (mut asked, mut answered) = (false, false);
        for _ in 0..MAX_PASSES {
            let now = Instant::from_micros(self.started.elapsed().as_micros() as i64);
            self.local
                .poll(now, &mut self.local_device, &mut self.local_sockets);
            self.carry();
            self.peer
                .poll(now, &mut self.peer_device, &mut self.peer_sockets);
            self.carry();
            let c = self.local_sockets.get_mut::<tcp::Socket>(client);
            if !asked && c.may_send() {
                asked = c
                    .send_slice(b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")
                    .is_ok();
            }
            if c.can_recv() {
                let _ = c.recv(|data| (data.len(), ()));
            }
            if !c.may_recv() && c.state() == tcp::State::CloseWait {
                c.close();
            }
            let s = self.peer_sockets.get_mut::<tcp::Socket>(server);
            if !answered && s.can_recv() {
                let _ = s.recv(|data| (data.len(), ()));
                answered = s.send_slice(ANSWER).is_ok();
                s.close();
            }
            let done = |state| matches!(state, tcp::State::Closed | tcp::State::TimeWait);
            let client_state = self.local_sockets.get::<tcp::Socket>(client).state();
            let server_state = self.peer_sockets.get::<tcp::Socket>(server).state();
            if answered && done(client_state) && done(server_state) && self.idle() {
                return;
            }
        }
    }

    /// The datapath carries what each stack sent to the other.
    fn carry(&mut self) {
        let local = self.local_device.get_mut();
        self.carried += local.sent.len() + self.peer_device.sent.len();

        self.peer_device.arrived.extend(local.sent.drain(..));
        local.arrived.extend(self.peer_device.sent.drain(..));
    }

    fn idle(&self) -> bool {
        let local = self.local_device.get_ref();
        local.sent.is_empty() && local.arrived.is_empty() && self.peer_device.arrived.is_empty()
    }
}

fn interface(device: &mut impl Device, addr: Ipv4Addr) -> Interface {
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), device, Instant::ZERO);
    // 100.64.0.0/10: the other host is on the link, no route needed.
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::from(addr), 10));
    });
    iface
}

/// A socket that acknowledges at once and does not hold small writes back, so that an
/// exchange over a wire with no delay takes no timer.
fn socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    socket.set_ack_delay(None);
    socket.set_nagle_enabled(false);
    socket
}

#[cfg(test)]
mod tests {
    use futures_lite::{future::block_on, StreamExt};
    use pcapcast_core::framer::{Framer, Unit};
    use pcapcast_core::Options;

    use super::*;

    /// The path and TCP flags of every packet `exchanges` logged.
    fn logged(exchanges: u16) -> Vec<(u8, u8)> {
        let capture = Capture::new();
        let mut output = capture.subscribe(Options::default());
        let mut hosts = Hosts::new(capture.clone(), SystemTime::now);
        let carried: usize = (0..exchanges)
            .map(|i| hosts.http_exchange(40_000 + i))
            .sum();
        capture.close();
        let mut framer = Framer::new();
        while let Some(bytes) = block_on(output.next()) {
            framer.push(&bytes);
        }
        let mut packets = Vec::new();
        while let Some(unit) = framer.next_unit().unwrap() {
            if let Unit::Packet { bytes, .. } = unit {
                // Record header 16, path 2, IPv4 header 20: the flags are TCP's byte 13.
                packets.push((bytes[16], bytes[18 + 20 + 13]));
            }
        }
        assert_eq!(packets.len(), carried);
        packets
    }

    #[test]
    fn an_exchange_is_a_whole_tcp_conversation() {
        const SYN: u8 = 0x02;
        const ACK: u8 = 0x10;
        const PSH: u8 = 0x08;
        const FIN: u8 = 0x01;
        let (local, peer) = (0, 1);
        let expected = [
            (local, SYN),
            (peer, SYN | ACK),
            (local, ACK),
            (local, PSH | ACK), // the GET
            (peer, ACK),
            (peer, FIN | ACK), // the 200 answer, and the server closes
            (local, ACK),
            (local, FIN | ACK),
            (peer, ACK),
        ];
        assert_eq!(logged(1), expected);
        // Sockets are removed after each exchange: the next ones are the same.
        assert_eq!(logged(3), expected.repeat(3));
    }
}
