//! Many datapath threads at once: each thread's order, nothing duplicated, nothing
//! missing but counted losses, time order across threads within a drain, outputs
//! attaching and detaching mid-run.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Format, Options, Path, Subscription};

mod support;

const THREADS: usize = 8;
const PER_THREAD: u32 = 30_000;

/// A record's packet names its thread and its number within the thread; the time
/// grows with the number, as a clock read at each packet would.
fn log(capture: &Capture, thread: usize, seq: u32) {
    let mut packet = vec![0x45u8; 12 + (seq as usize * 7 + thread * 13) % 700];
    packet[1] = thread as u8;
    packet[2..6].copy_from_slice(&seq.to_le_bytes());
    let when =
        UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_micros(u64::from(seq));
    let path = Path::from((thread % 4) as u16);
    capture.log_packet(path, when, &packet);
}

/// Checks one output's file: every record whole, each thread's records in order with
/// no record twice, and every record missing between two that arrived counted as lost.
/// Returns the records read and the records missing between them.
fn check(bytes: &[u8], lost: u64) -> (u64, u64) {
    let file = support::parse(bytes);
    let mut last = [None::<u32>; THREADS];
    let mut gaps = 0;
    for record in &file.records {
        let thread = record.packet[1] as usize;
        let seq = u32::from_le_bytes(record.packet[2..6].try_into().unwrap());
        if let Some(prev) = last[thread] {
            assert!(seq > prev, "thread {thread}: {seq} after {prev}");
            gaps += u64::from(seq - prev - 1);
        }
        last[thread] = Some(seq);
    }
    assert!(gaps <= lost, "{gaps} records missing, {lost} counted lost");
    (file.records.len() as u64, gaps)
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Reads an output to its end with timed hand-out, as the adapters do, parking until
/// woken or due; returns the bytes and the records it lost.
fn read_timed(mut output: Subscription) -> (Vec<u8>, u64) {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut bytes = Vec::new();
    loop {
        match output.poll_next_at(&mut cx, Instant::now()) {
            Poll::Ready(Some(b)) => bytes.extend_from_slice(&b),
            Poll::Ready(None) => break,
            Poll::Pending => {
                let due = output.poll_timeout().expect("a timer is always armed");
                thread::park_timeout(due.saturating_duration_since(Instant::now()));
            }
        }
    }
    (bytes, output.dropped())
}

fn read_stream(mut output: Subscription) -> (Vec<u8>, u64) {
    let mut bytes = Vec::new();
    while let Some(b) = block_on(output.next()) {
        bytes.extend_from_slice(&b);
    }
    (bytes, output.dropped())
}

#[test]
fn eight_threads_log_while_outputs_attach_and_detach() {
    // Small rings and a small backlog, so that rings fill, stalled outputs lose records
    // and the datapath drains rings itself.
    let capture = Capture::builder()
        .batch_bytes(8 << 10)
        .backlog_bytes(256 << 10)
        .ring_bytes(512 << 10)
        .build();
    // Attached before the first record and read to the end: each must account for
    // every record, read or counted lost.
    let whole: Vec<_> = [
        (Options::default(), true),
        (Options::new().format(Format::Pcapng), false),
        (
            Options::new()
                .format(Format::RawIp)
                .paths([Path::FromLocal, Path::FromPeer]),
            true,
        ),
    ]
    .into_iter()
    .map(|(options, timed)| {
        let output = capture.subscribe(options);
        thread::spawn(move || {
            if timed {
                read_timed(output)
            } else {
                read_stream(output)
            }
        })
    })
    .collect();
    // Attached, never read until the end.
    let stalled = capture.subscribe(Options::new().format(Format::Pcapng));
    let done = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..4)
        .map(|r| {
            let (capture, done) = (capture.clone(), Arc::clone(&done));
            thread::spawn(move || {
                let formats = [Format::Pcap, Format::Pcapng, Format::RawIp, Format::Pcap];
                let mut rounds = 0usize;
                while !done.load(Ordering::Relaxed) || rounds == 0 {
                    rounds += 1;
                    let mut output =
                        capture.subscribe(Options::new().format(formats[(r + rounds) % 4]));
                    let mut bytes = Vec::new();
                    for _ in 0..(20 + 17 * r) {
                        match block_on(output.next()) {
                            Some(b) => bytes.extend_from_slice(&b),
                            None => break,
                        }
                    }
                    let lost = output.dropped();
                    drop(output); // detached mid-stream
                    check(&bytes, lost);
                }
                rounds
            })
        })
        .collect();
    thread::scope(|scope| {
        for thread in 0..THREADS {
            let capture = &capture;
            scope.spawn(move || (0..PER_THREAD).for_each(|seq| log(capture, thread, seq)));
        }
    });
    done.store(true, Ordering::Relaxed);
    // Closing ends the streams of churning readers that wait for more.
    capture.close();
    for reader in churn {
        assert!(reader.join().expect("a churning reader's checks failed") > 0);
    }
    let total = THREADS as u64 * u64::from(PER_THREAD);
    let paths_kept = [total, total, total / 2];
    for (reader, expected) in whole.into_iter().zip(paths_kept) {
        let (bytes, lost) = reader.join().expect("a whole reader's checks failed");
        let (read, _) = check(&bytes, lost);
        assert_eq!(read + lost, expected, "{read} read, {lost} lost");
    }
    let (bytes, lost) = read_stream(stalled);
    let (read, _) = check(&bytes, lost);
    assert!(lost > 0, "the stalled output lost records");
    assert_eq!(read + lost, total);
    // pcapng shows each loss on the record after it; losses after the last record
    // have none to be shown on (they are in the counters).
    let file = support::parse(&bytes);
    let shown: u64 = file.records.iter().map(|r| r.drops).sum();
    assert!(shown <= lost && shown > 0, "{shown} shown of {lost} lost");
    assert_eq!(capture.stats().logged, total);
    assert_eq!(capture.num_outputs(), 0);
}

#[test]
fn records_of_threads_merge_in_time_order_within_a_drain() {
    const PER: u32 = 5_000;
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::new().format(Format::Pcapng));
    // Thread t logs the times t, t + 4, t + 8, ... µs: together, every µs once.
    thread::scope(|scope| {
        for t in 0..4u32 {
            let capture = &capture;
            scope.spawn(move || {
                for i in 0..PER {
                    let micros = u64::from(i * 4 + t);
                    let when = UNIX_EPOCH + Duration::from_micros(micros);
                    capture.log_packet(Path::FromPeer, when, &(micros as u32).to_le_bytes());
                }
            });
        }
    });
    // Nothing was read while they logged: one drain takes all four rings.
    capture.close();
    let (bytes, lost) = {
        let mut bytes = Vec::new();
        while let Some(b) = block_on(output.next()) {
            bytes.extend_from_slice(&b);
        }
        (bytes, output.dropped())
    };
    assert_eq!(lost, 0);
    let times: Vec<u32> = support::parse(&bytes)
        .records
        .iter()
        .map(|r| r.nanos / 1_000)
        .collect();
    assert_eq!(times, (0..4 * PER).collect::<Vec<_>>());
}

#[test]
fn a_thread_that_ended_leaves_its_records_to_readers() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Some(header)) = output.poll_next(&mut cx) else {
        panic!("the header comes first");
    };
    let mut file = header.to_vec();
    for round in 0..3u8 {
        thread::scope(|scope| {
            scope.spawn(|| capture.log_packet(Path::FromLocal, UNIX_EPOCH, &[round; 30]));
        });
        let Poll::Ready(Some(bytes)) = output.poll_next(&mut cx) else {
            panic!("round {round}: the ended thread's record is not there");
        };
        file.extend_from_slice(&bytes);
    }
    let got: Vec<u8> = support::parse(&file)
        .records
        .iter()
        .map(|r| r.packet[0])
        .collect();
    assert_eq!(got, [0, 1, 2]);
}
