//! The smoltcp tap: a real TCP connection over smoltcp's loopback device, every packet
//! of it logged once as sent and once as received.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Error, Options, Tap};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

mod support;

/// Runs a TCP exchange (connect, a request, an answer, both sides close) over `device`.
fn exchange(device: &mut Tap<Loopback>) {
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), device, Instant::ZERO);
    iface.update_ip_addrs(|addrs| {
        addrs
            .push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8))
            .unwrap();
    });
    let socket = || {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 4096]),
            tcp::SocketBuffer::new(vec![0; 4096]),
        )
    };
    let mut sockets = SocketSet::new(vec![]);
    let server = sockets.add(socket());
    let client = sockets.add(socket());
    sockets.get_mut::<tcp::Socket>(server).listen(80).unwrap();
    let remote = (IpAddress::v4(127, 0, 0, 1), 80);
    sockets
        .get_mut::<tcp::Socket>(client)
        .connect(iface.context(), remote, 49_152)
        .unwrap();
    let mut now = Instant::ZERO;
    let (mut asked, mut answered) = (false, false);
    for _ in 0..200 {
        iface.poll(now, device, &mut sockets);
        let c = sockets.get_mut::<tcp::Socket>(client);
        if c.may_send() && !asked {
            c.send_slice(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            asked = true;
        }
        let s = sockets.get_mut::<tcp::Socket>(server);
        if s.can_recv() && !answered {
            s.recv(|data| (data.len(), ())).unwrap();
            s.send_slice(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
            s.close();
            answered = true;
        }
        let c = sockets.get_mut::<tcp::Socket>(client);
        if c.can_recv() {
            c.recv(|data| (data.len(), ())).unwrap();
            c.close();
        }
        now += smoltcp::time::Duration::from_millis(1);
    }
    assert!(asked && answered);
}

#[test]
fn every_packet_shows_as_sent_then_received() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    let mut device = Tap::new(
        Loopback::new(Medium::Ip),
        capture.clone(),
        SystemTime::now as fn() -> SystemTime,
    )
    .unwrap();
    exchange(&mut device);
    capture.close();
    let mut bytes = Vec::new();
    while let Some(chunk) = block_on(output.next()) {
        bytes.extend_from_slice(&chunk);
    }
    let records = support::parse(&bytes).records;
    // Over a loopback, each packet leaves (FromLocal) and comes back (FromPeer).
    assert!(
        records.len() >= 14,
        "handshake, request, answer, FINs: {}",
        records.len()
    );
    for pair in records.chunks(2) {
        assert_eq!(pair[0].path, Some(0), "sent first");
        assert_eq!(pair[1].path, Some(1), "then received");
        assert_eq!(pair[0].packet, pair[1].packet);
        assert_eq!(pair[0].packet[0] >> 4, 4, "an IPv4 packet");
        assert_eq!(pair[0].packet[9], 6, "TCP");
    }
    let flags: Vec<u8> = records.iter().step_by(2).map(|r| r.packet[33]).collect();
    assert!(flags.iter().any(|f| f & 0x02 != 0), "a SYN");
    assert!(flags.iter().any(|f| f & 0x01 != 0), "a FIN");
}

static CLOCK_READS: AtomicUsize = AtomicUsize::new(0);

fn counted_clock() -> SystemTime {
    CLOCK_READS.fetch_add(1, Ordering::Relaxed);
    SystemTime::now()
}

#[test]
fn nobody_listening_logs_nothing_and_ethernet_is_refused() {
    let capture = Capture::new();
    let clock = counted_clock as fn() -> SystemTime;
    let mut device = Tap::new(Loopback::new(Medium::Ip), capture.clone(), clock).unwrap();
    exchange(&mut device);
    assert_eq!(
        CLOCK_READS.load(Ordering::Relaxed),
        0,
        "an idle tap reads no clock"
    );
    assert_eq!(capture.stats().logged, 0);
    let ethernet = Tap::new(Loopback::new(Medium::Ethernet), capture, SystemTime::now);
    assert!(matches!(ethernet, Err(Error::InvalidOption { .. })));
}
