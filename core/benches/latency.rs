//! Latency of `Capture::log_packet` beside an output that stops reading, against the
//! floor timed the same way: the median, p99 and p99.9 of single calls, what each
//! output lost, and how much the process's memory grew.
//!
//! `cargo bench -p pcapcast-core --bench latency`
//!
//! The datapath logs 1,000,000 packets of 1500 B (1.5 GB) at a fixed pace, one every
//! 2 µs, so that the eager reader is not outrun: what it loses, it loses to not being
//! scheduled for longer than its thread's ring holds (2 MiB, 2.8 ms at this pace), which
//! the table shows. In each run one output is drained by a reader thread (with
//! timed hand-out, as the adapters read, or as a plain `Stream`) and a second output
//! is attached and never read, so that the backlog fills and its oldest records are
//! evicted under it. The floor copies the same record (an 18-byte header and the
//! packet) into a reused 4 MiB ring, the backlog's size, with a thread spinning on the
//! other core, timed the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::StreamExt;
use pcapcast_core::{Capture, Options, OutputStats, Path, Subscription};

const CALLS: usize = 1_000_000;
const PACE: Duration = Duration::from_micros(2);
const SIZE: usize = 1500;

/// How the eager output is read.
#[derive(Clone, Copy, Debug)]
enum Reader {
    Timed,
    Stream,
}

struct Run {
    nanos: Vec<u64>,
    eager: Option<OutputStats>,
    stalled_lost: Option<u64>,
    rss_growth_kib: i64,
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn drain_timed(mut output: Subscription) -> OutputStats {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match output.poll_next_at(&mut cx, Instant::now()) {
            Poll::Ready(Some(bytes)) => {
                std::hint::black_box(bytes);
                while let Some(bytes) = output.next_ready() {
                    std::hint::black_box(bytes);
                }
            }
            Poll::Ready(None) => return output.stats(),
            Poll::Pending => {
                let due = output.poll_timeout().unwrap_or_else(Instant::now);
                thread::park_timeout(due.saturating_duration_since(Instant::now()));
            }
        }
    }
}

fn drain_stream(mut output: Subscription) -> OutputStats {
    futures_lite::future::block_on(async {
        while let Some(bytes) = output.next().await {
            std::hint::black_box(bytes);
        }
    });
    output.stats()
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Calls `call` CALLS times at the pace, timing each call alone.
fn paced(mut call: impl FnMut()) -> Vec<u64> {
    let mut nanos = Vec::with_capacity(CALLS);
    let start = Instant::now();
    for i in 0..CALLS {
        let due = start + PACE * i as u32;
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let before = Instant::now();
        call();
        nanos.push(before.elapsed().as_nanos() as u64);
    }
    nanos.sort_unstable();
    nanos
}

fn run_capture(reader: Reader) -> Run {
    let rss_before = rss_kib();
    let capture = Capture::new();
    let eager = capture.subscribe(Options::default());
    let reading = thread::spawn(move || match reader {
        Reader::Timed => drain_timed(eager),
        Reader::Stream => drain_stream(eager),
    });
    let stalled = capture.subscribe(Options::default());
    let packet = vec![0x45u8; SIZE];
    let nanos = paced(|| capture.log_packet(Path::FromPeer, SystemTime::UNIX_EPOCH, &packet));
    let rss_growth_kib = rss_kib() - rss_before;
    capture.close();
    let eager = reading.join().expect("reader");
    let mut stalled = stalled;
    futures_lite::future::block_on(async { while stalled.next().await.is_some() {} });
    Run {
        nanos,
        eager: Some(eager),
        stalled_lost: Some(stalled.stats().dropped),
        rss_growth_kib,
    }
}

fn run_floor() -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut spins = 0u64;
            while !stop.load(Ordering::Relaxed) {
                spins = std::hint::black_box(spins + 1);
            }
        })
    };
    let rss_before = rss_kib();
    let mut ring: Vec<u8> = vec![0; 4 << 20];
    ring.clear();
    let packet = vec![0x45u8; SIZE];
    let header = [0u8; 18];
    let nanos = paced(|| {
        if ring.capacity() - ring.len() < SIZE + 18 {
            ring.clear();
        }
        ring.extend_from_slice(&header);
        ring.extend_from_slice(std::hint::black_box(&packet));
        std::hint::black_box(ring.len());
    });
    let rss_growth_kib = rss_kib() - rss_before;
    stop.store(true, Ordering::Relaxed);
    busy.join().expect("busy thread");
    Run {
        nanos,
        eager: None,
        stalled_lost: None,
        rss_growth_kib,
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
        "clock overhead subtracted: {overhead} ns; {CALLS} calls of {SIZE} B, one every {PACE:?}"
    );
    println!("| case | median | p99 | p99.9 | p99 / floor | p99.9 / floor | eager output: records (lost) | stalled output lost | RSS growth |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut floor: Option<(u64, u64)> = None;
    let cases: [(&str, Option<Reader>); 6] = [
        ("floor: copy into a 4 MiB ring", None),
        ("log_packet, timed reader + stalled", Some(Reader::Timed)),
        ("log_packet, stream reader + stalled", Some(Reader::Stream)),
        ("floor: copy into a 4 MiB ring", None),
        ("log_packet, timed reader + stalled", Some(Reader::Timed)),
        ("log_packet, stream reader + stalled", Some(Reader::Stream)),
    ];
    for (name, reader) in cases {
        let run = match reader {
            None => run_floor(),
            Some(reader) => run_capture(reader),
        };
        let at = |p| percentile(&run.nanos, p).saturating_sub(overhead).max(1);
        let (p99, p999) = (at(0.99), at(0.999));
        if reader.is_none() {
            floor = Some((p99, p999));
        }
        let (f99, f999) = floor.unwrap_or((p99, p999));
        println!(
            "| {name} | {} ns | {p99} ns | {p999} ns | {:.2} | {:.2} | {} | {} | {} MiB |",
            at(0.5),
            p99 as f64 / f99 as f64,
            p999 as f64 / f999 as f64,
            run.eager
                .map_or("-".to_owned(), |e| format!("{} ({})", e.records, e.dropped)),
            run.stalled_lost
                .map_or("-".to_owned(), |lost| lost.to_string()),
            run.rss_growth_kib / 1024,
        );
    }
}
