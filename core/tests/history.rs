//! History: what a capture retained while nobody listened, handed out before what comes
//! after the attach, in every format, with no gap and no duplicate.

use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Format, History, Options, Path, Subscription};
use proptest::prelude::*;

mod support;

const EPOCH_SECS: u64 = 1_700_000_000;

/// A packet that says which one it is: its index in its first four bytes.
fn packet(index: u32, len: usize) -> Vec<u8> {
    let mut packet = vec![index as u8; len.max(4)];
    packet[..4].copy_from_slice(&index.to_le_bytes());
    packet
}

fn index_of(packet: &[u8]) -> u32 {
    u32::from_le_bytes(packet[..4].try_into().unwrap())
}

fn at(millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(EPOCH_SECS) + Duration::from_millis(millis)
}

/// Takes what the output has ready now, without waiting.
fn take_ready(output: &mut Subscription, file: &mut Vec<u8>) {
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(bytes)) = output.poll_next(&mut cx) {
        file.extend_from_slice(&bytes);
    }
}

fn drain(output: &mut Subscription) -> Vec<u8> {
    let mut file = Vec::new();
    while let Some(bytes) = block_on(output.next()) {
        file.extend_from_slice(&bytes);
    }
    file
}

fn parse(format: Format, file: &[u8]) -> support::File {
    let framing = match format {
        Format::Tailscale => support::Framing::Tailscale,
        _ => support::Framing::Seed,
    };
    support::parse_as(file, framing)
}

/// Which records a format holds: raw IP leaves out the paths that carry no IP.
fn holds(format: Format, path: Path) -> bool {
    format != Format::RawIp || path.carries_ip()
}

fn format() -> impl Strategy<Value = Format> {
    prop::sample::select(vec![
        Format::Pcap,
        Format::RawIp,
        Format::Pcapng,
        Format::Tailscale,
    ])
}

fn paths() -> impl Strategy<Value = Path> {
    prop::sample::select(vec![Path::FromLocal, Path::FromPeer, Path::Disco])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// History and live together are a suffix of what was logged before the attach (all
    /// of it if it fits the retention, else at least the retention's bytes of it), then
    /// everything logged after, in order; nothing evicted before the attach is a drop.
    #[test]
    fn history_then_live_is_a_suffix_then_everything(
        format in format(),
        retain in prop_oneof![Just(0usize), 1usize..200_000],
        before in prop::collection::vec((paths(), 0usize..1500), 0..400),
        after in prop::collection::vec((paths(), 0usize..1500), 0..40),
    ) {
        let capture = Capture::builder()
            .batch_bytes(4096)
            .backlog_bytes(0)
            .ring_bytes(0)
            .retain(retain)
            .build();
        let mut logged = Vec::new();
        for (path, len) in before.iter().chain(&after).copied() {
            logged.push((path, packet(logged.len() as u32, len)));
        }
        let (pre, post) = logged.split_at(before.len());
        for (i, (path, packet)) in pre.iter().enumerate() {
            capture.log_packet(*path, at(i as u64), packet);
        }
        let mut output = capture.subscribe(Options::new().format(format).history(History::All));
        let history_len = output.history_len();
        let mut file = Vec::new();
        take_ready(&mut output, &mut file);
        for (i, (path, packet)) in post.iter().enumerate() {
            capture.log_packet(*path, at((pre.len() + i) as u64), packet);
            take_ready(&mut output, &mut file);
        }
        capture.close();
        file.extend(drain(&mut output));

        let read: Vec<u32> = parse(format, &file).records.iter().map(|r| index_of(&r.packet)).collect();
        let expect_post: Vec<u32> = (pre.len()..logged.len())
            .filter(|&i| holds(format, logged[i].0))
            .map(|i| i as u32)
            .collect();
        let split = read.len() - expect_post.len();
        prop_assert_eq!(&read[split..], &expect_post[..], "live part");
        let history = &read[..split];
        // A suffix of the records before the attach that the format holds.
        let first = history.first().map_or(pre.len(), |&i| i as usize);
        let expect_history: Vec<u32> = (first..pre.len())
            .filter(|&i| holds(format, logged[i].0))
            .map(|i| i as u32)
            .collect();
        prop_assert_eq!(history, &expect_history[..], "history part");
        // As much as the retention asked for: stored bytes are a 16-byte header, the
        // path and the packet.
        // Records this format leaves out, just before the first one read, may have
        // been retained too.
        let mut retained_from = first;
        while retained_from > 0 && !holds(format, logged[retained_from - 1].0) {
            retained_from -= 1;
        }
        let stored = |i: usize| 18 + logged[i].1.len();
        let kept: usize = (retained_from..pre.len()).map(stored).sum();
        let all: usize = (0..pre.len()).map(stored).sum();
        prop_assert!(kept >= retain.min(all), "kept {} of {} bytes, retention {}", kept, all, retain);
        if retain == 0 {
            prop_assert!(history.is_empty());
        }
        let stats = output.stats();
        prop_assert_eq!(stats.dropped, 0);
        prop_assert_eq!(stats.history_records, history.len() as u64);
        prop_assert_eq!(history_len, history.len() as u64);
    }
}

#[test]
fn last_picks_by_the_callers_times() {
    let capture = Capture::builder().retain(1 << 20).build();
    // Times 0 to 99 s, with one late record logged early (95 s) and one early record
    // logged late (50 s).
    let mut times: Vec<u64> = (0..100).collect();
    times[10] = 95;
    times.push(50);
    for (i, &second) in times.iter().enumerate() {
        capture.log_packet(Path::FromPeer, at(second * 1000), &packet(i as u32, 20));
    }
    let mut output =
        capture.snapshot(Options::new().history(History::Last(Duration::from_secs(9))));
    let read: Vec<u32> = support::parse(&drain(&mut output))
        .records
        .iter()
        .map(|r| index_of(&r.packet))
        .collect();
    // Newest 99 s: from 90 s on, wherever it was logged.
    let expected: Vec<u32> = std::iter::once(10).chain(90..100).collect();
    assert_eq!(read, expected);
    assert_eq!(output.stats().history_records, 11);
    assert!(!capture.is_closed(), "a snapshot ends without close");
}

#[test]
fn follow_false_ends_without_close_and_none_holds_nothing() {
    let capture = Capture::builder().retain(1 << 20).build();
    capture.log_packet(Path::FromLocal, at(0), &packet(0, 40));
    let mut snapshot = capture.subscribe(Options::new().history(History::All).follow(false));
    capture.log_packet(Path::FromLocal, at(1), &packet(1, 40));
    let read = support::parse(&drain(&mut snapshot)).records;
    assert_eq!(
        read.len(),
        1,
        "the record logged after the attach is not in it"
    );
    assert_eq!(capture.num_outputs(), 0, "an ended snapshot detaches");

    // No history asked: a snapshot of nothing, the file header alone.
    let mut empty = capture.subscribe(Options::new().follow(false));
    assert_eq!(drain(&mut empty).len(), 24);
}

#[test]
fn retention_off_keeps_the_idle_capture_idle() {
    let capture = Capture::new();
    assert!(!capture.is_listening());
    capture.log_packet(Path::FromLocal, at(0), &packet(0, 40));
    let mut snapshot = capture.snapshot(Options::default());
    assert_eq!(drain(&mut snapshot).len(), 24, "nothing was kept");
    assert_eq!(capture.stats().logged, 0);
}

#[test]
fn retention_does_not_count_as_an_output() {
    let capture = Capture::builder().retain(1 << 16).max_outputs(1).build();
    assert_eq!(capture.num_outputs(), 0);
    let first = capture.try_subscribe(Options::default()).unwrap();
    assert_eq!(capture.num_outputs(), 1);
    assert!(capture.try_subscribe(Options::default()).is_err());
    drop(first);
    assert_eq!(capture.num_outputs(), 0);
    assert!(capture.is_listening());
    capture.close();
    assert!(!capture.is_listening());
}

#[test]
fn pcapng_says_where_the_history_ends() {
    let capture = Capture::builder().retain(1 << 20).build();
    capture.log_packet(Path::FromLocal, at(0), &packet(0, 40));
    let options = Options::new().format(Format::Pcapng).history(History::All);
    let mut output = capture.subscribe(options);
    capture.log_packet(Path::FromPeer, at(1), &packet(1, 40));
    capture.log_packet(Path::FromPeer, at(2), &packet(2, 40));
    capture.close();
    let file = drain(&mut output);
    let read = support::parse(&file).records;
    let comments: Vec<Option<&str>> = read.iter().map(|r| r.comment.as_deref()).collect();
    assert_eq!(comments[0], None);
    assert!(
        comments[1].is_some_and(|c| c.contains("first record logged after this output attached"))
    );
    assert_eq!(comments[2], None);
    let section = String::from_utf8_lossy(&file[..200]);
    assert!(
        section.contains("starts with the capture's history"),
        "{section}"
    );
}

/// Records from several threads are kept, a thread that went quiet included.
#[test]
fn every_threads_records_are_in_the_history_a_quiet_ones_too() {
    let capture = Capture::builder().retain(8 << 20).build();
    let threads = 4u32;
    let per_thread = 2_000u32;
    let start = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|thread| {
            let capture = capture.clone();
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                // The last thread logs three records and goes quiet: they stay in its
                // ring until an output attaches.
                let count = if thread == threads - 1 { 3 } else { per_thread };
                for n in 0..count {
                    let index = thread * 1_000_000 + n;
                    capture.log_packet(Path::FromPeer, at(u64::from(n)), &packet(index, 100));
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let mut snapshot = capture.snapshot(Options::default());
    let read = support::parse(&drain(&mut snapshot)).records;
    assert_eq!(snapshot.dropped(), 0);
    let mut per_thread_seen = vec![Vec::new(); threads as usize];
    for record in &read {
        let index = index_of(&record.packet);
        per_thread_seen[(index / 1_000_000) as usize].push(index % 1_000_000);
    }
    for (thread, seen) in per_thread_seen.iter().enumerate() {
        let count = if thread as u32 == threads - 1 {
            3
        } else {
            per_thread
        };
        assert_eq!(*seen, (0..count).collect::<Vec<_>>(), "thread {thread}");
    }
}

/// A snapshot taken while the datapath keeps logging ends by itself and parses to its
/// end, holding exactly what the capture held when it was taken.
#[test]
fn a_snapshot_under_load_is_a_whole_file() {
    let capture = Capture::builder().retain(8 << 20).build();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loggers: Vec<_> = (0..2u32)
        .map(|thread| {
            let capture = capture.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    capture.log_packet(
                        Path::FromLocal,
                        at(u64::from(n)),
                        &packet(thread << 24 | n, 600),
                    );
                    n = n.wrapping_add(1);
                    // Busy, but leaving the test's reader a core now and then.
                    if n % 256 == 0 {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    for format in [
        Format::Pcap,
        Format::Pcapng,
        Format::Tailscale,
        Format::RawIp,
    ] {
        let mut snapshot = capture.snapshot(Options::new().format(format));
        let file = drain(&mut snapshot);
        let read = parse(format, &file).records;
        let stats = snapshot.stats();
        assert!(!read.is_empty(), "{format:?}");
        assert_eq!(read.len() as u64, stats.records);
        assert_eq!(stats.history_records, stats.records);
        // Exactly what the capture held at the attach; drops are the gaps the rings
        // left before it (records a thread could not store while the other moved its
        // ring into the backlog).
        assert_eq!(stats.records, snapshot.history_len(), "{format:?}");
        assert!(snapshot.is_finished());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for logger in loggers {
        logger.join().unwrap();
    }
    assert!(!capture.is_closed());
}
