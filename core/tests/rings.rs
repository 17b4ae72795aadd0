//! The datapath threads' rings against the backlog: what a full ring may spill into,
//! and rings kept for the next output.

use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use futures_core::Stream;
use pcapcast_core::{Capture, Options, Path, Subscription};

mod support;

/// Polls `output` until it has nothing more now; returns the bytes it handed out.
fn read_available(output: &mut Subscription) -> Vec<u8> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut file = Vec::new();
    while let Poll::Ready(Some(bytes)) = std::pin::Pin::new(&mut *output).poll_next(&mut cx) {
        file.extend_from_slice(&bytes);
    }
    file
}

fn log_numbered(capture: &Capture, number: u32) {
    let mut packet = [0u8; 1000];
    packet[..4].copy_from_slice(&number.to_le_bytes());
    capture.log_packet(
        Path::FromPeer,
        UNIX_EPOCH + Duration::from_micros(u64::from(number)),
        &packet,
    );
}

fn numbers(file: &[u8]) -> Vec<u32> {
    support::parse(file)
        .records
        .iter()
        .map(|r| u32::from_le_bytes([r.packet[0], r.packet[1], r.packet[2], r.packet[3]]))
        .collect()
}

/// A reader that has read everything leaves the whole backlog as slack: the next burst,
/// bigger than the ring, spills from the full ring into the backlog instead of being
/// lost. (Counting read batches as if they filled the backlog lost most of it.)
#[test]
fn a_full_ring_spills_into_a_backlog_whose_batches_were_read() {
    let capture = Capture::builder()
        .ring_bytes(512 << 10)
        .backlog_bytes(4 << 20)
        .build();
    let mut output = capture.subscribe(Options::default());
    let mut file = read_available(&mut output);
    let mut logged = 0;
    // Fill the backlog with batches the reader reads as they come.
    for _ in 0..14 {
        for _ in 0..350 {
            log_numbered(&capture, logged);
            logged += 1;
        }
        file.extend(read_available(&mut output));
    }
    // A burst of 2 MiB while the reader looks away: four rings' worth.
    for _ in 0..2000 {
        log_numbered(&capture, logged);
        logged += 1;
    }
    capture.close();
    file.extend(read_available(&mut output));
    assert_eq!(output.dropped(), 0);
    assert_eq!(numbers(&file), (0..logged).collect::<Vec<_>>());
}
