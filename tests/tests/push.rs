//! Pushing to a PCAP-over-IP collector, on both runtimes: the collector is a plain
//! `TcpListener` here, read back with pcap-parser and tshark.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path as FsPath;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use pcapcast_core::{Capture, Format, Options, Path};
use pcapcast_tests::{accept_within, read, temp_dir, wait_until, Runtime};

const LINKTYPE_RAW: i32 = 101;

/// An IPv4 UDP packet whose payload (`size` bytes) begins with `seq`.
fn packet(seq: u32, size: usize) -> Vec<u8> {
    let mut payload = vec![0u8; size];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    let builder = etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1000, 2000);
    let mut out = Vec::with_capacity(builder.size(size));
    builder.write(&mut out, &payload).unwrap();
    out
}

fn log(capture: &Capture, seqs: std::ops::Range<u32>, size: usize) {
    for seq in seqs {
        capture.log_packet(Path::FromPeer, SystemTime::now(), &packet(seq, size));
    }
}

/// The sequence numbers of a raw-IP stream's records (after the 28-byte IP and UDP
/// headers).
fn seqs(file: &read::File) -> Vec<u32> {
    file.records
        .iter()
        .map(|r| u32::from_be_bytes(r.packet[28..32].try_into().unwrap()))
        .collect()
}

/// Reads exactly `len` bytes.
fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    stream.read_exact(&mut bytes).unwrap();
    bytes
}

/// Saves `bytes` and has tshark read the file; returns the source address of each
/// frame.
fn tshark_reads(bytes: &[u8], dir: &FsPath, name: &str) -> Vec<String> {
    let file = dir.join(name);
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "ip.src"])
        .output()
        .expect("tshark is installed (CI installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn raw() -> Options {
    Options::new().format(Format::RawIp)
}

fn a_collector_receives_a_stream<R: Runtime>() {
    let dir = temp_dir("push");
    let capture = Capture::new();
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = collector.local_addr().unwrap();
    let push = R::push(
        capture.clone(),
        addr,
        raw(),
        (Duration::from_millis(50), Duration::from_secs(1)),
    );
    let mut stream = accept_within(&collector, Duration::from_secs(20));
    log(&capture, 0..50, 100);
    capture.close();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    push.thread
        .join()
        .unwrap()
        .expect("the push ends when the capture closes");
    let file = read::parse(&bytes);
    assert_eq!(file.linktype, Some(LINKTYPE_RAW), "{}", R::NAME);
    assert_eq!(seqs(&file), (0..50).collect::<Vec<_>>(), "{}", R::NAME);
    assert_eq!(
        (
            push.stats.connections(),
            push.stats.sent(),
            push.stats.lost()
        ),
        (1, 50, 0)
    );
    let sources = tshark_reads(&bytes, &dir, "collected.pcap");
    assert_eq!(sources.len(), 50);
    assert!(sources.iter().all(|s| s == "10.0.0.1"), "{sources:?}");
}

/// The collector goes away while the datapath logs more than the capture can keep,
/// then comes back on the same port: the new connection is a whole stream of its own,
/// ending on the last packet, and what it lacks is exactly what the push counts lost.
fn a_restarted_collector_gets_a_fresh_stream_and_the_loss_is_counted<R: Runtime>() {
    const SIZE: usize = 1400; // 1428-byte packets, 1444-byte records
    const RECORD: usize = 16 + 28 + SIZE;
    const AWAY: u32 = 1500; // 2.1 MB: more than a 512 KiB ring and a 64 KiB backlog
    let dir = temp_dir("push-restart");
    let capture = Capture::builder()
        .batch_bytes(16 << 10)
        .backlog_bytes(64 << 10)
        .ring_bytes(512 << 10)
        .build();
    let first = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = first.local_addr().unwrap();
    let push = R::push(
        capture.clone(),
        addr,
        raw(),
        (Duration::from_millis(50), Duration::from_millis(400)),
    );
    let mut stream = accept_within(&first, Duration::from_secs(20));
    log(&capture, 0..20, SIZE);
    let before = read_exactly(&mut stream, 24 + 20 * RECORD);
    assert_eq!(seqs(&read::parse(&before)), (0..20).collect::<Vec<_>>());
    drop((stream, first));
    assert!(
        wait_until(Duration::from_secs(10), || !push.stats.is_connected()),
        "{}: the push sees the collector leave",
        R::NAME
    );
    log(&capture, 20..20 + AWAY, SIZE);
    let second = TcpListener::bind(addr).expect("the port is free again");
    let mut stream = accept_within(&second, Duration::from_secs(20));
    log(&capture, 20 + AWAY..30 + AWAY, SIZE);
    capture.close();
    let mut after = Vec::new();
    stream.read_to_end(&mut after).unwrap();
    push.thread
        .join()
        .unwrap()
        .expect("the push ends when the capture closes");

    let file = read::parse(&after);
    assert_eq!(file.linktype, Some(LINKTYPE_RAW), "a fresh file header");
    let got = seqs(&file);
    let lost = push.stats.lost();
    eprintln!(
        "{}: {} records after the restart, {lost} lost",
        R::NAME,
        got.len()
    );
    assert!(lost > 0, "{}: the backlog could not hold it all", R::NAME);
    assert_eq!(
        got.len() as u64 + lost,
        u64::from(AWAY) + 10,
        "{}: what did not arrive is what was counted lost",
        R::NAME
    );
    // The newest records are the ones kept, in order, up to the last one logged.
    let first_kept = 30 + AWAY - got.len() as u32;
    assert_eq!(
        got,
        (first_kept..30 + AWAY).collect::<Vec<_>>(),
        "{}",
        R::NAME
    );
    assert_eq!(push.stats.connections(), 2);
    assert_eq!(push.stats.sent(), 20 + got.len() as u64);
    assert_eq!(tshark_reads(&after, &dir, "after.pcap").len(), got.len());
}

fn pcapng_is_refused<R: Runtime>() {
    let capture = Capture::new();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let options = Options::new().format(Format::Pcapng);
    let push = R::push(
        capture,
        addr,
        options,
        (Duration::from_millis(50), Duration::from_secs(1)),
    );
    let error = push.thread.join().unwrap().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("classic pcap"), "{error}");
}

/// Everything the tests' pushes log, from all threads (one subscriber for the binary).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        struct Into(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Into {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || Into(Arc::clone(&sink)))
            .init();
        logs
    })
}

/// Lines logged so far that name `collector` and contain `text`.
fn logged(collector: SocketAddr, text: &str) -> usize {
    let logs = logs().lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter(|line| line.contains(&collector.to_string()) && line.contains(text))
        .count()
}

/// A collector that accepts and never reads, while the datapath logs fast: losses are
/// counted and warned about while it is still connected, and once no write went
/// through for the stall limit the push reconnects.
fn a_collector_that_stops_reading_is_warned_about_and_left<R: Runtime>() {
    logs();
    let capture = Capture::builder().backlog_bytes(256 << 10).build();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let limit = Duration::from_millis(1500);
    let backoff = (Duration::from_millis(50), Duration::from_millis(200));
    let push = R::push_with_stall_limit(capture.clone(), addr, raw(), backoff, limit);
    let stalled = accept_within(&listener, Duration::from_secs(20)); // kept, never read
    let stop = Arc::new(AtomicBool::new(false));
    let datapath = {
        let (capture, stop) = (capture.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                log(&capture, seq..seq + 100, 1000);
                seq += 100;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let start = Instant::now();
    let warned_while_connected = wait_until(limit, || {
        let connected = push.stats.is_connected() && push.stats.connections() == 1;
        connected && push.stats.lost() > 0 && logged(addr, "records lost while connected") > 0
    });
    assert!(
        warned_while_connected,
        "lost {} while connected, no warning",
        push.stats.lost()
    );
    let again = accept_within(&listener, limit + Duration::from_secs(5));
    let after = start.elapsed();
    assert!(
        after >= limit / 2,
        "reconnected after {after:?}, before the limit"
    );
    assert_eq!(logged(addr, "no write went through"), 1);
    stop.store(true, Ordering::Relaxed);
    datapath.join().unwrap();
    drop((stalled, again, listener));
    capture.close();
    push.thread.join().unwrap().unwrap();
    assert!(push.stats.connections() >= 2);
}

macro_rules! push_tests {
    ($name:ident, $runtime:ty) => {
        mod $name {
            #[test]
            fn a_collector_receives_a_stream() {
                pcapcast_tests::checked(super::a_collector_receives_a_stream::<$runtime>);
            }
            #[test]
            fn a_restarted_collector_gets_a_fresh_stream_and_the_loss_is_counted() {
                pcapcast_tests::checked(
                    super::a_restarted_collector_gets_a_fresh_stream_and_the_loss_is_counted::<
                        $runtime,
                    >,
                );
            }
            #[test]
            fn a_collector_that_stops_reading_is_warned_about_and_left() {
                pcapcast_tests::checked(
                    super::a_collector_that_stops_reading_is_warned_about_and_left::<$runtime>,
                );
            }
            #[test]
            fn pcapng_is_refused() {
                pcapcast_tests::checked(super::pcapng_is_refused::<$runtime>);
            }
        }
    };
}

push_tests!(smol, pcapcast_tests::Smol);
push_tests!(tokio, pcapcast_tests::Tokio);
