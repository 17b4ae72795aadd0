//! What a 16 MiB retention costs in memory, and how fast its history reaches a reader,
//! each against a floor measured in the same run.
//!
//! `cargo bench -p pcapcast-core --bench history`
//!
//! - Memory: resident memory before a retaining capture is made and after 1.5 GB of
//!   1500-byte packets were logged into it with nobody attached (the target: at most
//!   24 MiB more for 16 MiB retained).
//! - Speed: a snapshot of the whole retention (`History::All`, no follow) written into
//!   a Unix socket and read to its end on another thread, against 16 MiB of plain bytes
//!   sent the same way in 64 KiB writes (the target: at most 2 times as long).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Options, Path};

const RETAIN: usize = 16 << 20;
const PACKET: usize = 1500;
const LOGGED: usize = 1_500_000_000;
const RUNS: usize = 9;

fn main() {
    memory();
    delivery();
}

/// Resident memory of this process, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn memory() {
    let packet = vec![0x45u8; PACKET];
    let before = resident_bytes();
    let capture = Capture::builder().retain(RETAIN).build();
    let when = SystemTime::now();
    for _ in 0..LOGGED / PACKET {
        capture.log_packet(Path::FromPeer, when, &packet);
    }
    let after = resident_bytes();
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "memory: {} MiB retained, {:.1} GB logged: resident {:.1} -> {:.1} MiB, {:.1} MiB more (target at most 24)",
        RETAIN >> 20,
        LOGGED as f64 / 1e9,
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
    );
    drop(capture);
}

/// Sends what `write` writes through a Unix socket to a reader thread; the time until
/// the reader has read the last byte, and the bytes it read.
fn through_socket(write: impl FnOnce(&mut UnixStream)) -> (Duration, u64) {
    let (mut ours, mut theirs) = UnixStream::pair().expect("a socket pair");
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut buffer = vec![0u8; 64 << 10];
        let mut total = 0u64;
        loop {
            match theirs.read(&mut buffer) {
                Ok(0) | Err(_) => return (start.elapsed(), total),
                Ok(n) => total += n as u64,
            }
        }
    });
    write(&mut ours);
    drop(ours);
    reader.join().expect("the reader")
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn delivery() {
    let capture = Capture::builder().retain(RETAIN).build();
    let packet = vec![0x45u8; PACKET];
    for _ in 0..2 * RETAIN / PACKET {
        capture.log_packet(Path::FromPeer, SystemTime::now(), &packet);
    }
    let mut history_bytes = 0;
    let history: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let (time, bytes) = through_socket(|socket| {
                let mut snapshot = capture.snapshot(Options::default());
                while let Some(bytes) = block_on(snapshot.next()) {
                    socket.write_all(&bytes).expect("the reader reads");
                }
            });
            history_bytes = bytes;
            time
        })
        .collect();
    let plain_bytes = vec![0u8; history_bytes as usize];
    let plain: Vec<Duration> = (0..RUNS)
        .map(|_| {
            through_socket(|socket| {
                for chunk in plain_bytes.chunks(64 << 10) {
                    socket.write_all(chunk).expect("the reader reads");
                }
            })
            .0
        })
        .collect();
    let (history, plain) = (median(history), median(plain));
    println!(
        "delivery: history of {:.1} MiB in {:.2} ms, the same bytes plain in {:.2} ms: {:.2} times (target at most 2), medians of {RUNS}",
        history_bytes as f64 / f64::from(1 << 20),
        history.as_secs_f64() * 1e3,
        plain.as_secs_f64() * 1e3,
        history.as_secs_f64() / plain.as_secs_f64(),
    );
}
