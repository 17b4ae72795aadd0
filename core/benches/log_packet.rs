//! The cost of `Capture::log_packet`, against the floor (the record copied into a
//! reused ring of the backlog's size, 4 MiB) and a baseline built as the Go original is
//! (one mutex, every output written under it).
//!
//! `cargo bench -p pcapcast-core --bench log_packet`
//!
//! Each drained case prints, on stderr, the share of the records its outputs lost: the
//! datapath outruns any reader here, and a record lost costs less than one kept.

use std::cell::RefCell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant, SystemTime};

use divan::Bencher;
use futures_lite::StreamExt;
use pcapcast_core::{Bpf, Capture, Meta, Options, Path, Subscription};

fn main() {
    divan::main();
}

const SIZES: [usize; 3] = [64, 1500, 9000];

/// Drains subscriptions on one thread, as an adapter would: timed hand-out, parking
/// until woken or due; `write` stands for the writer.
struct Drainer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

impl Drainer {
    /// Drains with plain `Stream` polls under `block_on`: no timer, woken by records;
    /// on CPU `cpu` if given.
    fn start_stream(mut output: Subscription, cpu: Option<usize>) -> Drainer {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::spawn(move || {
            if let Some(cpu) = cpu {
                pin_to(&[cpu]);
            }
            let mut bytes = 0u64;
            futures_lite::future::block_on(async {
                while let Some(b) = output.next().await {
                    bytes += black_box(b).len() as u64;
                }
            });
            bytes
        });
        Drainer {
            stop,
            thread: Some(thread),
        }
    }

    fn start(mut outputs: Vec<Subscription>, write: fn(&[u8])) -> Drainer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let waker = Waker::from(Arc::new(Unpark(thread::current())));
            let mut cx = Context::from_waker(&waker);
            let mut bytes = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                let mut due: Option<Instant> = None;
                for output in &mut outputs {
                    while let Poll::Ready(Some(b)) = output.poll_next_at(&mut cx, now) {
                        write(&b);
                        bytes += b.len() as u64;
                        while let Some(b) = output.next_ready() {
                            write(&b);
                            bytes += b.len() as u64;
                        }
                    }
                    due = match (due, output.poll_timeout()) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                let wait = due.map_or(Duration::from_millis(10), |d| {
                    d.saturating_duration_since(Instant::now())
                });
                thread::park_timeout(wait.min(Duration::from_millis(10)));
            }
            bytes
        });
        Drainer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Drainer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn discard(bytes: &[u8]) {
    black_box(bytes);
}

fn packet(size: usize) -> Vec<u8> {
    (0..size).map(|i| i as u8).collect()
}

/// Logs twice the backlog, so that the measurement sees the steady state of a running
/// daemon (buffers reused) rather than the first fill of the backlog (fresh pages).
fn warm_up(capture: &Capture, packet: &[u8]) {
    let when = SystemTime::now();
    for _ in 0..(8 << 20) / packet.len() {
        capture.log_packet(Path::FromPeer, when, packet);
    }
}

/// `log_packet` with 0, 1, 4 or 16 outputs drained by another thread.
#[divan::bench(consts = [0, 1, 4, 16], args = SIZES, threads = [1, 2], sample_count = 100, sample_size = 5000)]
fn capture<const OUTPUTS: usize>(bencher: Bencher, size: usize) {
    drained(bencher, OUTPUTS, size);
}

/// The datapath's rate with 256 outputs attached and drained, against one.
#[divan::bench(consts = [1, 256], args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn capture_many<const OUTPUTS: usize>(bencher: Bencher, size: usize) {
    drained(bencher, OUTPUTS, size);
}

/// One output drained by a thread polling it as a plain `Stream` under `block_on`.
#[divan::bench(args = SIZES, threads = [1, 2], sample_count = 100, sample_size = 5000)]
fn capture_stream(bencher: Bencher, size: usize) {
    let capture = Capture::new();
    let drainer = Drainer::start_stream(capture.subscribe(Options::default()), None);
    measure(bencher, &capture, size, "stream, 1 output");
    capture.close();
    drop(drainer);
}

/// Pins the calling thread to `cpus`.
fn pin_to(cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    if let Err(error) = rustix::thread::sched_setaffinity(None, &set) {
        eprintln!("could not pin to CPUs {cpus:?}: {error}");
    }
}

/// A plain `Stream` reader pinned to the datapath's CPU (0) or to another (1); the
/// datapath, the bench's thread, is pinned to CPU 0 and unpinned after.
#[divan::bench(consts = [0, 1], args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn capture_stream_pinned_reader_cpu<const CPU: usize>(bencher: Bencher, size: usize) {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    pin_to(&[0]);
    let capture = Capture::new();
    let reader = Drainer::start_stream(capture.subscribe(Options::default()), Some(CPU));
    let case = match CPU {
        0 => "stream, reader on the datapath's CPU",
        _ => "stream, reader on another CPU",
    };
    measure(bencher, &capture, size, case);
    capture.close();
    drop(reader);
    pin_to(&(0..cpus).collect::<Vec<_>>());
}

fn drained(bencher: Bencher, outputs: usize, size: usize) {
    let capture = Capture::new(); // `subscribe` takes any number of outputs
    let subscriptions = (0..outputs)
        .map(|_| capture.subscribe(Options::default()))
        .collect();
    let _drainer = Drainer::start(subscriptions, discard);
    measure(
        bencher,
        &capture,
        size,
        &format!("timed, {outputs} outputs"),
    );
}

fn measure(bencher: Bencher, capture: &Capture, size: usize, case: &str) {
    measure_with(bencher, capture, size, case, None);
}

/// Times `log_packet`, or `log_packet_with(meta)`, and tells the share lost.
fn measure_with(bencher: Bencher, capture: &Capture, size: usize, case: &str, meta: Option<Meta>) {
    let packet = packet(size);
    warm_up(capture, &packet);
    // The readers catch up, so that the losses of the warm-up are counted before.
    thread::sleep(Duration::from_millis(50));
    let before = capture.stats();
    let when = SystemTime::now();
    let bencher = bencher.counter(divan::counter::BytesCount::new(size));
    match meta {
        None => bencher.bench(|| capture.log_packet(Path::FromPeer, when, black_box(&packet))),
        Some(meta) => bencher
            .bench(|| capture.log_packet_with(Path::FromPeer, when, black_box(&packet), &meta)),
    }
    let after = capture.stats();
    let logged = after.logged - before.logged;
    if logged > 0 && after.outputs > 0 {
        let lost = (after.dropped - before.dropped) as f64 / after.outputs as f64;
        eprintln!(
            "  [{case}, {size} B: {logged} logged, {:.1}% lost per output]",
            100.0 * lost / logged as f64
        );
    }
}

/// A packet that went through SNAT (IPv4) and DNAT (IPv6), logged with its metadata:
/// against `capture::<1>` (the same output, the same reader), what the metadata costs
/// the datapath.
#[divan::bench(args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn capture_with_meta(bencher: Bencher, size: usize) {
    let capture = Capture::new();
    let _drainer = Drainer::start(vec![capture.subscribe(Options::default())], discard);
    let case = "timed, 1 output, with metadata";
    measure_with(bencher, &capture, size, case, Some(nat_meta()));
}

/// `tcpdump -ddd 'tcp port 80'` over a raw-IP file (tcpdump 4.99.3, libpcap 1.10.3).
const TCP_80: &str = "23,48 0 0 0,84 0 0 240,21 0 6 96,48 0 0 6,21 0 17 6,40 0 0 40,21 14 0 80,40 0 0 42,21 12 13 80,48 0 0 0,84 0 0 240,21 0 10 64,48 0 0 9,21 0 8 6,40 0 0 6,69 6 0 8191,177 0 0 0,72 0 0 0,21 2 0 80,72 0 0 2,21 0 1 80,6 0 0 65535,6 0 0 0";

/// One output filtered by `tcp port 80`: against `capture::<1>` (the same output
/// unfiltered, the same reader), what a filter costs the datapath, which never runs it.
/// The bench's packet (bytes 0, 1, 2, ...) is not IP: the reader runs the program over
/// every record (5 instructions) and keeps none.
#[divan::bench(args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn capture_filtered(bencher: Bencher, size: usize) {
    let capture = Capture::new();
    let tcp80 = Bpf::from_bytecode(TCP_80).unwrap();
    let output = capture.subscribe(Options::new().bpf(tcp80));
    let _drainer = Drainer::start(vec![output], discard);
    let case = "timed, 1 output, filtered by tcp port 80";
    measure_with(bencher, &capture, size, case, None);
}

/// `tcpdump -ddd 'len >= 1'` over a raw-IP file: it keeps every packet, so the reader
/// runs it and encodes each record one by one (no batch passes unread).
const EVERY_PACKET: &str = "4,128 0 0 0,53 0 1 1,6 0 0 262144,6 0 0 0";

/// `capture_filtered` with a filter that keeps every packet.
#[divan::bench(args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn capture_filtered_keeping_all(bencher: Bencher, size: usize) {
    let capture = Capture::new();
    let all = Bpf::from_bytecode(EVERY_PACKET).unwrap();
    let output = capture.subscribe(Options::new().bpf(all));
    let _drainer = Drainer::start(vec![output], discard);
    let case = "timed, 1 output, filtered by len >= 1";
    measure_with(bencher, &capture, size, case, None);
}

fn nat_meta() -> Meta {
    Meta::new()
        .snat("100.64.0.7:1000".parse().unwrap())
        .dnat("[fd7a:115c:a1e0::9]:443".parse().unwrap())
}

/// `capture_idle_x16` for `log_packet_with`: nobody listens, the metadata is not read.
#[divan::bench]
fn capture_idle_with_meta_x16(bencher: Bencher) {
    let capture = Capture::new();
    let packet = packet(1500);
    let meta = nat_meta();
    let when = SystemTime::now();
    bencher
        .counter(divan::counter::ItemsCount::new(16usize))
        .bench(|| {
            let packet = black_box(&packet[..]);
            let meta = black_box(&meta);
            for _ in 0..16 {
                capture.log_packet_with(Path::FromPeer, when, packet, meta);
            }
        });
}

/// One output whose every write takes 1 ms: the datapath must not notice.
#[divan::bench(args = [1500])]
fn capture_with_1ms_writer(bencher: Bencher, size: usize) {
    let capture = Capture::new();
    let _drainer = Drainer::start(vec![capture.subscribe(Options::default())], |_| {
        thread::sleep(Duration::from_millis(1))
    });
    let packet = packet(size);
    warm_up(&capture, &packet);
    let when = SystemTime::now();
    bencher.bench(|| capture.log_packet(Path::FromPeer, when, black_box(&packet)));
}

/// The floor: the packet and an 18-byte header copied into a reused ring of the
/// backlog's size (4 MiB, the default), one per thread.
#[divan::bench(args = SIZES, threads = [1, 2], sample_count = 100, sample_size = 5000)]
fn floor_copy(bencher: Bencher, size: usize) {
    copy_into_ring(bencher, size, 4 << 20);
}

/// The retention's floor: the same copy into a reused ring of the retention's size
/// (16 MiB, the demo's).
#[divan::bench(args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn floor_copy_16mib(bencher: Bencher, size: usize) {
    copy_into_ring(bencher, size, RETAIN);
}

fn copy_into_ring(bencher: Bencher, size: usize, ring_bytes: usize) {
    thread_local! {
        static RING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let packet = packet(size);
    bencher.bench(|| {
        RING.with_borrow_mut(|ring| {
            if ring.capacity() != ring_bytes {
                // Touched once up front, so that the ring is reused memory, not fresh
                // pages.
                *ring = vec![0u8; ring_bytes];
                ring.clear();
            }
            if ring.capacity() - ring.len() < size + 18 {
                ring.clear();
            }
            ring.extend_from_slice(&[0u8; 18]);
            ring.extend_from_slice(black_box(&packet));
            black_box(ring.len());
        })
    });
}

/// The retention of the demo: 16 MiB.
const RETAIN: usize = 16 << 20;

/// Retention on, nobody attached: every packet is kept for a later history. Against
/// `floor_copy_16mib` and `capture::<1>` (one output drained).
#[divan::bench(args = [64, 1500], sample_count = 100, sample_size = 5000)]
fn capture_retaining_idle(bencher: Bencher, size: usize) {
    let capture = Capture::builder().retain(RETAIN).build();
    let packet = packet(size);
    // Twice the retention, so that its buffers are reused, as in a running daemon.
    for _ in 0..2 * RETAIN / packet.len() {
        capture.log_packet(Path::FromPeer, SystemTime::now(), &packet);
    }
    let when = SystemTime::now();
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench(|| capture.log_packet(Path::FromPeer, when, black_box(&packet)));
}

/// The Go original's structure: one mutex; under it every output gets the record,
/// formatted and written synchronously (here, into in-memory buffers).
/// An output of the baseline: a synchronous writer.
type GoOutput = Box<dyn FnMut(&[u8]) + Send>;

struct GoLike {
    outputs: Mutex<Vec<GoOutput>>,
}

impl GoLike {
    fn new(outputs: Vec<GoOutput>) -> GoLike {
        GoLike {
            outputs: Mutex::new(outputs),
        }
    }

    fn log_packet(&self, path: Path, when: SystemTime, packet: &[u8]) {
        let mut outputs = self.outputs.lock().unwrap();
        if outputs.is_empty() {
            return;
        }
        let since = when
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        for output in outputs.iter_mut() {
            // As `binary.Write` does: the header fields, then the path and the packet.
            let mut record = Vec::with_capacity(18 + packet.len());
            record.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
            record.extend_from_slice(&since.subsec_micros().to_le_bytes());
            record.extend_from_slice(&((packet.len() + 2) as u32).to_le_bytes());
            record.extend_from_slice(&((packet.len() + 2) as u32).to_le_bytes());
            record.extend_from_slice(&u16::from(path).to_le_bytes());
            record.extend_from_slice(packet);
            output(&record);
        }
    }
}

fn memory_output() -> GoOutput {
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    Box::new(move |record| {
        if buffer.capacity() - buffer.len() < record.len() {
            buffer.clear();
        }
        buffer.extend_from_slice(record);
    })
}

/// The baseline with 1, 4 or 16 in-memory outputs.
#[divan::bench(consts = [1, 4, 16], args = SIZES, threads = [1, 2])]
fn go_like<const OUTPUTS: usize>(bencher: Bencher, size: usize) {
    let go = GoLike::new((0..OUTPUTS).map(|_| memory_output()).collect());
    let packet = packet(size);
    let when = SystemTime::now();
    bencher.bench(|| go.log_packet(Path::FromPeer, when, black_box(&packet)));
}

/// The baseline with one output whose every write takes 1 ms.
#[divan::bench(args = [1500], sample_count = 10, sample_size = 1)]
fn go_like_with_1ms_writer(bencher: Bencher, size: usize) {
    let go = GoLike::new(vec![Box::new(|_: &[u8]| {
        thread::sleep(Duration::from_millis(1))
    })]);
    let packet = packet(size);
    let when = SystemTime::now();
    bencher.bench(|| go.log_packet(Path::FromPeer, when, black_box(&packet)));
}

/// One output that never reads.
#[divan::bench(args = SIZES, threads = [1, 2], sample_count = 100, sample_size = 5000)]
fn capture_unread(bencher: Bencher, size: usize) {
    let capture = Capture::new();
    let _output = capture.subscribe(Options::default());
    let packet = packet(size);
    warm_up(&capture, &packet);
    let when = SystemTime::now();
    bencher.bench(|| capture.log_packet(Path::FromPeer, when, black_box(&packet)));
}

/// The idle call the way a datapath writes it, clock included: sixteen calls with no
/// output attached, each reading the time as `log_packet(path, SystemTime::now(), ..)`
/// would, against `log_packet_now`, which reads it only when it keeps the packet (the
/// time per call is the figure / 16).
#[divan::bench(args = ["log_packet(now())", "log_packet_now"])]
fn capture_idle_with_clock_x16(bencher: Bencher, call: &str) {
    let capture = Capture::new();
    let packet = packet(1500);
    let now = call == "log_packet_now";
    bencher
        .counter(divan::counter::ItemsCount::new(16usize))
        .bench(|| {
            let packet = black_box(&packet[..]);
            for _ in 0..16 {
                if now {
                    capture.log_packet_now(Path::FromPeer, packet);
                } else {
                    capture.log_packet(Path::FromPeer, SystemTime::now(), packet);
                }
            }
        });
}

/// Sixteen calls with no output attached per iteration, so that divan's own cost per
/// iteration is spread over them: the time per call is this figure / 16.
#[divan::bench]
fn capture_idle_x16(bencher: Bencher) {
    let capture = Capture::new();
    let packet = packet(1500);
    let when = SystemTime::now();
    bencher
        .counter(divan::counter::ItemsCount::new(16usize))
        .bench(|| {
            // One opaque packet per iteration: the 16 calls pay for the check alone.
            let packet = black_box(&packet[..]);
            for _ in 0..16 {
                capture.log_packet(Path::FromPeer, when, packet);
            }
        });
}
