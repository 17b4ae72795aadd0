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

/// The first thread to log while someone listens takes the ring the attach made and
/// faulted in: the datapath allocates none. A second thread makes its own; the next
/// attach then makes a spare again, which a third thread takes.
#[test]
fn the_first_thread_logs_into_a_ring_made_at_the_attach() {
    let capture = Capture::new();
    assert_eq!(capture.stats().rings_made, 0, "nobody listened yet");
    let mut output = capture.subscribe(Options::default());
    assert_eq!(capture.stats().rings_made, 1);
    log_numbered(&capture, 0);
    let mut file = read_available(&mut output);
    assert_eq!(numbers(&file), [0]);
    assert_eq!(capture.stats().rings_made_on_datapath, 0);
    let log_in_a_thread = |number| {
        let capture = capture.clone();
        std::thread::spawn(move || log_numbered(&capture, number))
            .join()
            .unwrap();
    };
    log_in_a_thread(1);
    let stats = capture.stats();
    assert_eq!((stats.rings_made, stats.rings_made_on_datapath), (2, 1));
    file.extend(read_available(&mut output));
    assert_eq!(numbers(&file), [0, 1]);
    drop(output);
    let mut output = capture.subscribe(Options::default());
    assert_eq!(capture.stats().rings_made, 3, "a spare for the next thread");
    log_in_a_thread(2);
    assert_eq!(capture.stats().rings_made_on_datapath, 1);
    let _unused = capture.subscribe(Options::default());
    assert_eq!(
        capture.stats().rings_made,
        3,
        "no thread made its own since"
    );
    assert_eq!(numbers(&read_available(&mut output)), [2]);
}

/// Outputs come and go while datapath threads live: each thread keeps its ring, so
/// rings are made per thread, not per output, and every output gets exactly the
/// records logged while it was attached, none twice, none lost.
#[test]
fn rings_are_reused_across_many_attaches_with_nothing_lost_or_repeated() {
    use std::sync::{Arc, Barrier};
    const THREADS: u32 = 4;
    const CYCLES: u32 = 60;
    const PER_CYCLE: u32 = 150;
    let capture = Capture::builder().ring_bytes(512 << 10).build();
    // Four meetings a cycle: the output is attached; the threads have logged; it is
    // detached; the threads have logged with nobody listening.
    let meet = || Arc::new(Barrier::new(THREADS as usize + 1));
    let (attached, logged, detached, unheard) = (meet(), meet(), meet(), meet());
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (capture, attached, logged, detached, unheard) = (
                capture.clone(),
                Arc::clone(&attached),
                Arc::clone(&logged),
                Arc::clone(&detached),
                Arc::clone(&unheard),
            );
            std::thread::spawn(move || {
                for cycle in 0..CYCLES {
                    attached.wait();
                    for i in 0..PER_CYCLE {
                        log_numbered(&capture, (thread << 24) | (cycle << 12) | i);
                    }
                    logged.wait();
                    detached.wait();
                    // Logged between outputs: nobody sees these.
                    log_numbered(&capture, u32::MAX);
                    unheard.wait();
                }
            })
        })
        .collect();
    for cycle in 0..CYCLES {
        let mut output = capture.subscribe(Options::default());
        attached.wait();
        logged.wait();
        let mut got = numbers(&read_available(&mut output));
        assert_eq!(output.dropped(), 0, "cycle {cycle}");
        drop(output);
        detached.wait();
        unheard.wait();
        got.sort_unstable();
        let mut expected: Vec<u32> = (0..THREADS)
            .flat_map(|t| (0..PER_CYCLE).map(move |i| (t << 24) | (cycle << 12) | i))
            .collect();
        expected.sort_unstable();
        let missing: Vec<_> = expected.iter().filter(|n| !got.contains(n)).collect();
        let extra: Vec<_> = got.iter().filter(|n| !expected.contains(n)).collect();
        assert_eq!(
            got, expected,
            "cycle {cycle}: missing {missing:?}, extra {extra:?}"
        );
    }
    for thread in threads {
        thread.join().unwrap();
    }
    let stats = capture.stats();
    // A ring per thread and a spare; without reuse, one per thread and output.
    assert!(
        stats.rings_made <= u64::from(THREADS) + 1,
        "{} rings made",
        stats.rings_made
    );
}
