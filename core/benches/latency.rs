//! Latency of `Capture::log_packet` while one output stops reading, against the same
//! run without it: the median, p99 and p99.9 of single calls, and what each output lost.
//!
//! `cargo bench -p pcapcast-core --bench latency`
//!
//! One output is drained by a reader thread as fast as it goes; in the second run of
//! each pair a second output is attached and never read, so the backlog fills and its
//! oldest records are evicted under it. The datapath logs 1500-byte packets at a fixed
//! pace (one every 2 µs), so that the fast reader is not outrun and its losses, if
//! any, come from the stalled output and nothing else.

use std::time::{Duration, Instant, SystemTime};

use futures_lite::StreamExt;
use pcapcast_core::{Capture, Options, Path};

const CALLS: usize = 500_000;
const PACE: Duration = Duration::from_micros(2);

struct Run {
    nanos: Vec<u64>,
    fast_lost: u64,
    fast_records: u64,
    stalled_lost: Option<u64>,
}

fn run(with_stalled: bool) -> Run {
    let capture = Capture::new();
    let fast = capture.subscribe(Options::default());
    let reader = std::thread::spawn(move || {
        let mut fast = fast;
        futures_lite::future::block_on(async {
            while let Some(bytes) = fast.next().await {
                std::hint::black_box(bytes);
            }
        });
        fast.stats()
    });
    let stalled = with_stalled.then(|| capture.subscribe(Options::default()));
    let packet = vec![0x45u8; 1500];
    let mut nanos = Vec::with_capacity(CALLS);
    let start = Instant::now();
    for i in 0..CALLS {
        let due = start + PACE * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let before = Instant::now();
        capture.log_packet(Path::FromPeer, SystemTime::UNIX_EPOCH, &packet);
        nanos.push(before.elapsed().as_nanos() as u64);
    }
    capture.close();
    let fast = reader.join().expect("reader");
    let stalled_lost = stalled.map(|mut s| {
        futures_lite::future::block_on(async { while s.next().await.is_some() {} });
        s.stats().dropped
    });
    nanos.sort_unstable();
    Run {
        nanos,
        fast_lost: fast.dropped,
        fast_records: fast.records,
        stalled_lost,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// What two `Instant::now()` calls cost with nothing between them, to subtract.
fn clock_overhead() -> u64 {
    let mut samples: Vec<u64> = (0..100_000)
        .map(|_| {
            let before = Instant::now();
            before.elapsed().as_nanos() as u64
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks; there is nothing to list
    }
    let overhead = clock_overhead();
    println!(
        "clock overhead subtracted: {overhead} ns; {CALLS} calls of 1500 B, one every {PACE:?}"
    );
    println!("| outputs | median | p99 | p99.9 | max | fast output: records (lost) | stalled output lost |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for round in 0..4 {
        let with_stalled = round % 2 == 1;
        let run = run(with_stalled);
        assert_eq!(run.fast_lost, 0, "the drained output lost records");
        let at = |p| percentile(&run.nanos, p).saturating_sub(overhead);
        println!(
            "| {} | {} ns | {} ns | {} ns | {} ns | {} ({}) | {} |",
            if with_stalled {
                "1 drained + 1 stalled"
            } else {
                "1 drained"
            },
            at(0.5),
            at(0.99),
            at(0.999),
            run.nanos
                .last()
                .copied()
                .unwrap_or(0)
                .saturating_sub(overhead),
            run.fast_records,
            run.fast_lost,
            run.stalled_lost
                .map_or("-".to_owned(), |lost| lost.to_string()),
        );
    }
}
