//! Unit tests of the merge: streams as a daemon writes them (the core's pcapng
//! encoder), fed in pieces, with the time passed in.

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;
use pcapcast_core::framer::{Framer, Unit};
use pcapcast_core::{Encoder, Format, Options, Path};

use super::*;

const WINDOW: Duration = Duration::from_millis(500);

fn encoder() -> Encoder {
    Encoder::new(
        Options::new()
            .format(Format::Pcapng)
            .paths([Path::FromLocal, Path::FromPeer]),
    )
}

/// A daemon's stream header: section and two interfaces (from-local, from-peer).
fn header() -> BytesMut {
    let mut out = BytesMut::new();
    encoder().put_header(&mut out);
    out
}

/// One packet block at `ms` milliseconds past the epoch, tagged with `tag`.
fn packet(path: Path, ms: u64, tag: u8) -> BytesMut {
    let mut out = BytesMut::new();
    encoder().put_record(
        &mut out,
        path,
        UNIX_EPOCH + Duration::from_millis(ms),
        &[0x45, tag],
    );
    out
}

fn merge(n: usize) -> Merge {
    let names = (0..n).map(|i| format!("daemon-{i}")).collect();
    Merge::new(names, WINDOW, "times from each daemon's clock")
}

/// Everything `pop` gives at `now`.
fn pop_all(merge: &mut Merge, now: Instant) -> Vec<Out> {
    std::iter::from_fn(|| merge.pop(now)).collect()
}

/// Reads a merged file back: (interface, description) per interface block, and
/// (interface, time in ns, tag) per packet.
fn read_back(outs: &[Out]) -> (Vec<String>, Vec<(u32, u64, u8)>) {
    let mut framer = Framer::new();
    for out in outs {
        match &out.unit {
            Unit::Header(b) | Unit::Packet { bytes: b, .. } | Unit::Other(b) => framer.push(b),
        }
    }
    let (mut descriptions, mut packets) = (Vec::new(), Vec::new());
    while let Some(unit) = framer.next_unit().expect("the merged file reads back") {
        match unit {
            Unit::Header(b) if blocks::block_type(&b) == Some(INTERFACE_DESCRIPTION) => {
                let text = String::from_utf8_lossy(&b);
                let name = ["daemon-0", "daemon-1", "daemon-2"]
                    .into_iter()
                    .find(|d| text.contains(d))
                    .expect("a daemon named");
                descriptions.push(name.to_owned());
            }
            Unit::Packet { bytes, .. } => {
                let (interface, ns) = blocks::packet_interface_and_time(&bytes).unwrap();
                packets.push((interface, ns / 1_000_000, bytes[28 + 1]));
            }
            _ => {}
        }
    }
    (descriptions, packets)
}

#[test]
fn two_streams_interleave_by_time_with_interfaces_of_their_own() {
    let mut m = merge(2);
    let t0 = Instant::now();
    m.push(0, &header(), t0).unwrap();
    m.push(1, &header(), t0).unwrap();
    // Each daemon's packets arrive in a batch, the second one's first.
    let mut a = BytesMut::new();
    for (ms, tag) in [(10, 1), (30, 3), (50, 5)] {
        a.extend_from_slice(&packet(Path::FromLocal, ms, tag));
    }
    let mut b = BytesMut::new();
    for (ms, tag) in [(20, 2), (40, 4)] {
        b.extend_from_slice(&packet(Path::FromPeer, ms, tag));
    }
    m.push(1, &b, t0 + Duration::from_millis(100)).unwrap();
    // Byte by byte: the framing is the merge's business.
    for byte in a.iter() {
        m.push(0, &[*byte], t0 + Duration::from_millis(150))
            .unwrap();
    }
    let early = pop_all(&mut m, t0 + Duration::from_millis(500));
    assert_eq!(
        early.len(),
        1 + 4,
        "the section header and the interfaces; packets wait"
    );
    let late = pop_all(&mut m, t0 + Duration::from_millis(650));
    let all: Vec<Out> = early.into_iter().chain(late).collect();
    let (descriptions, packets) = read_back(&all);
    assert_eq!(
        descriptions,
        ["daemon-0", "daemon-0", "daemon-1", "daemon-1"]
    );
    // from-local of daemon 0 is interface 0, from-peer of daemon 1 is interface 3.
    assert_eq!(
        packets,
        [(0, 10, 1), (3, 20, 2), (0, 30, 3), (3, 40, 4), (0, 50, 5)]
    );
    assert!(all.iter().all(|o| !o.late));
    assert!(m.pop(t0 + Duration::from_secs(60)).is_none());
}

#[test]
fn a_packet_waits_its_window_and_an_earlier_one_overtakes_it() {
    let mut m = merge(2);
    let t0 = Instant::now();
    m.push(0, &header(), t0).unwrap();
    m.push(1, &header(), t0).unwrap();
    pop_all(&mut m, t0);
    m.push(0, &packet(Path::FromLocal, 200, 1), t0).unwrap();
    assert_eq!(m.next_due(), Some(t0 + WINDOW));
    assert!(m.pop(t0 + WINDOW - Duration::from_millis(1)).is_none());
    // Logged earlier on the other daemon, arrived 400 ms later: still in time.
    m.push(
        1,
        &packet(Path::FromPeer, 100, 2),
        t0 + Duration::from_millis(400),
    )
    .unwrap();
    // When the first packet's window ends, both go, earliest time first: the earlier
    // one, not yet due itself, does not hold the first back.
    let out = pop_all(&mut m, t0 + WINDOW);
    assert_eq!(read_back(&header_and(out)).1, [(3, 100, 2), (0, 200, 1)]);
    assert_eq!(m.next_due(), None);
}

#[test]
fn a_daemon_behind_holds_nobody_past_the_window() {
    let mut m = merge(2);
    let t0 = Instant::now();
    m.push(0, &header(), t0).unwrap();
    m.push(1, &header(), t0).unwrap();
    pop_all(&mut m, t0);
    // Daemon 1's clock is 10 s behind: its packets carry earlier times and keep coming.
    // Daemon 0's packet must not wait for them past its own window.
    const AHEAD: u64 = 10_000_000_000;
    m.push(0, &packet(Path::FromLocal, AHEAD, 1), t0).unwrap();
    let mut written = Vec::new();
    let mut late = 0;
    for i in 1..=8u64 {
        let at = t0 + Duration::from_millis(100 * i);
        m.push(1, &packet(Path::FromPeer, 100 * i, 2), at).unwrap();
        let out = pop_all(&mut m, at);
        late += out.iter().filter(|o| o.late).count();
        let times: Vec<u64> = read_back(&header_and(out)).1.iter().map(|p| p.1).collect();
        if at < t0 + WINDOW {
            assert!(times.is_empty(), "{i}: {times:?}");
        }
        written.extend(times);
    }
    // At the window's end: daemon 1's five packets so far, then daemon 0's; the three
    // after come at once, marked late.
    assert_eq!(written, [100, 200, 300, 400, 500, AHEAD, 600, 700, 800]);
    assert_eq!(late, 3);
}

/// The blocks of a merge of two headers, then `outs`: something to read back.
fn header_and(outs: Vec<Out>) -> Vec<Out> {
    let mut m = merge(2);
    let t0 = Instant::now();
    m.push(0, &header(), t0).unwrap();
    m.push(1, &header(), t0).unwrap();
    pop_all(&mut m, t0).into_iter().chain(outs).collect()
}

#[test]
fn a_packet_after_the_window_is_written_at_once_marked_late() {
    let mut m = merge(2);
    let t0 = Instant::now();
    m.push(0, &header(), t0).unwrap();
    m.push(1, &header(), t0).unwrap();
    m.push(0, &packet(Path::FromLocal, 200, 1), t0).unwrap();
    let first = pop_all(&mut m, t0 + WINDOW);
    m.push(
        1,
        &packet(Path::FromPeer, 100, 2),
        t0 + Duration::from_secs(1),
    )
    .unwrap();
    let out = m.pop(t0 + Duration::from_secs(1)).expect("written at once");
    assert!(out.late);
    assert_eq!(out.source, Some(1));
    let Unit::Packet { bytes, .. } = &out.unit else {
        panic!("a packet");
    };
    assert!(
        String::from_utf8_lossy(bytes)
            .contains("out of order, 100ms earlier than the packet before it"),
        "the comment says why it is out of order"
    );
    let (_, packets) = read_back(&first.into_iter().chain([out]).collect::<Vec<_>>());
    assert_eq!(packets, [(0, 200, 1), (3, 100, 2)]);
}

#[test]
fn held_bytes_are_bounded() {
    let mut m = merge(1).max_held_bytes(200);
    let t0 = Instant::now();
    m.push(0, &header(), t0).unwrap();
    for i in 0..10 {
        m.push(0, &packet(Path::FromPeer, i, i as u8), t0).unwrap();
    }
    let early = pop_all(&mut m, t0);
    let released = early
        .iter()
        .filter(|o| matches!(o.unit, Unit::Packet { .. }))
        .count();
    assert!(
        (1..10).contains(&released),
        "past the cap, packets go before their window ends: {released}"
    );
    assert!(m.held_bytes <= 200);
    let rest: Vec<Out> = std::iter::from_fn(|| m.drain()).collect();
    let (_, packets) = read_back(&early.into_iter().chain(rest).collect::<Vec<_>>());
    let tags: Vec<u8> = packets.iter().map(|p| p.2).collect();
    assert_eq!(tags, (0..10).collect::<Vec<u8>>(), "in order, none lost");
}

#[test]
fn streams_a_merge_cannot_take_are_refused_alone() {
    let mut m = merge(3);
    let t0 = Instant::now();
    let mut classic = BytesMut::new();
    Encoder::new(Options::default()).put_header(&mut classic);
    let said = m.push(0, &classic, t0).unwrap_err();
    assert!(said.contains("not pcapng"), "{said}");
    // A big-endian section header with no options: 28 bytes.
    let mut big_endian = Vec::new();
    big_endian.extend_from_slice(&SECTION_HEADER.to_be_bytes());
    big_endian.extend_from_slice(&28u32.to_be_bytes());
    big_endian.extend_from_slice(&0x1A2B_3C4Du32.to_be_bytes());
    big_endian.extend_from_slice(&[0, 1, 0, 0]); // version 1.0
    big_endian.extend_from_slice(&(-1i64).to_be_bytes());
    big_endian.extend_from_slice(&28u32.to_be_bytes());
    let said = m.push(1, &big_endian, t0).unwrap_err();
    assert!(said.contains("big-endian"), "{said}");
    // A packet on an interface its stream never described.
    let mut stream = BytesMut::new();
    pcapcast_core::pcapng::put_section_header(&mut stream, "x");
    stream.extend_from_slice(&packet(Path::FromLocal, 1, 1));
    let said = m.push(2, &stream, t0).unwrap_err();
    assert!(
        said.contains("interface 0, which the stream never described"),
        "{said}"
    );
    assert!(m.push(7, &[], t0).is_err(), "no such stream");
}

#[test]
fn the_section_header_comes_first_and_says_whose_clocks() {
    let mut m = merge(1);
    let out = m.pop(Instant::now()).expect("the section header");
    assert_eq!(out.source, None);
    let Unit::Header(bytes) = out.unit else {
        panic!("a header");
    };
    assert_eq!(blocks::block_type(&bytes), Some(SECTION_HEADER));
    assert!(String::from_utf8_lossy(&bytes).contains("times from each daemon's clock"));
}
