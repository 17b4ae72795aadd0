//! The whole path, measured: datapath -> Capture -> HTTP server (smol) -> Unix socket ->
//! `pcapcast capture -o FILE`, against the floor: the same bytes copied through a plain
//! Unix socket into a file.
//!
//! `cargo bench -p pcapcast-cli --bench whole_path` (`-- --paced [RATE...]`: the
//! sustained rate, records lost per 5 s trial at 1500 B with the default settings)
//!
//! For each size the datapath logs 400 MB of packets as fast as it can, then closes;
//! the time runs from the first packet until `pcapcast capture` has written the file
//! and exited. Two runs: with the default 2 MiB ring per datapath thread (the datapath
//! outruns the path, and the drops are reported), and with a ring that holds everything (no
//! drops: the rate the path sustains). Files are written to /dev/shm where it exists. A
//! last run writes to /dev/null: its "capture CPU/packet" is the client's own cost
//! (user + sys of the `pcapcast capture` process), without a file write behind it.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path as FsPath;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pcapcast_core::{Capture, Path};

const PCAPCAST: &str = env!("CARGO_BIN_EXE_pcapcast");

/// CPU seconds of this process and of its reaped children, from /proc/self/stat.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / ticks
    };
    // After the ")": state is 0, utime 11, stime 12, cutime 13, cstime 14.
    (field(11) + field(12), field(13) + field(14))
}

struct Run {
    packets: u64,
    written: u64,
    seconds: f64,
    daemon_cpu: f64,
    capture_cpu: f64,
    file_bytes: u64,
}

/// How the datapath logs: as fast as it can, or paced.
#[derive(Clone, Copy)]
enum Load {
    /// 400 MB of packets at once.
    Flat,
    /// `rate` packets a second, logged in 1 ms ticks, for `seconds`.
    Paced { rate: u64, seconds: u64 },
}

/// Where `pcapcast capture` writes in a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Into {
    /// A file in `dir`, counted afterwards.
    File,
    /// /dev/null: the client's own cost, without the file write; its count is read from
    /// the closing line it prints.
    Null,
}

fn whole_path(size: usize, ring: usize, dir: &FsPath, load: Load, into: Into) -> Run {
    // A socket of its own per run: earlier runs' servers are left serving.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = dir.join(format!("whole-{size}-{ring}-{run}.sock"));
    let file = match into {
        Into::File => dir.join(format!("whole-{size}.pcap")),
        Into::Null => "/dev/null".into(),
    };
    // Readers that drain slower than the datapath logs are not waited for: a burst is
    // kept whole if the datapath thread's ring holds it. The backlog is the default
    // (4 MiB): readers take from the rings no more than it holds.
    let capture = match ring {
        0 => Capture::new(),
        ring => Capture::builder().ring_bytes(ring).build(),
    };
    let server = {
        let capture = capture.clone();
        let socket = socket.clone();
        std::thread::spawn(move || {
            smol::block_on(async move {
                let listener = pcapcast_smol::Listener::bind_unix(&socket).expect("bind");
                let _ = pcapcast_smol::HttpServer::new(capture)
                    .serve(listener)
                    .await;
            })
        })
    };
    let waiting = Instant::now();
    while !socket.exists() {
        assert!(!server.is_finished(), "the server did not start");
        assert!(waiting.elapsed() < Duration::from_secs(30), "no socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (cpu_before, children_before) = cpu_seconds();
    let mut child = Command::new(PCAPCAST)
        .args(["capture", if into == Into::Null { "--stats" } else { "-q" }])
        // `-- tokio` runs the client on tokio (the server is smol's either way).
        .args(["--runtime", runtime()])
        .arg("--connect")
        .arg(format!("unix:{}", socket.display()))
        .arg("-o")
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("pcapcast capture");
    while capture.num_outputs() == 0 {
        if let Some(status) = child.try_wait().expect("pcapcast capture") {
            panic!("pcapcast capture ended before attaching: {status}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let packet = vec![0x45u8; size];
    let start = Instant::now();
    let packets = match load {
        Load::Flat => {
            let packets = (400_000_000 / (size + 18)) as u64;
            for _ in 0..packets {
                capture.log_packet(Path::FromPeer, SystemTime::now(), &packet);
            }
            packets
        }
        Load::Paced { rate, seconds } => paced(&capture, &packet, rate, seconds),
    };
    capture.close();
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    let status = child.wait().expect("capture ends");
    let seconds = start.elapsed().as_secs_f64();
    assert!(status.success(), "{said}");
    let (cpu_after, children_after) = cpu_seconds();
    drop(server); // the thread is left serving; the process ends soon
    let (written, file_bytes) = match into {
        Into::File => {
            let file_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&file);
            (
                (file_bytes.saturating_sub(24)) / (16 + 2 + size as u64),
                file_bytes,
            )
        }
        Into::Null => closing_counts(&said),
    };
    Run {
        packets,
        written,
        seconds,
        daemon_cpu: cpu_after - cpu_before,
        capture_cpu: children_after - children_before,
        file_bytes,
    }
}

/// Logs `rate` packets a second for `seconds`, a millisecond's share at each tick.
fn paced(capture: &Capture, packet: &[u8], rate: u64, seconds: u64) -> u64 {
    let start = Instant::now();
    let ticks = seconds * 1000;
    let mut logged = 0;
    for tick in 1..=ticks {
        let due = rate * tick / 1000;
        while logged < due {
            capture.log_packet(Path::FromPeer, SystemTime::now(), packet);
            logged += 1;
        }
        let next = start + Duration::from_millis(tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    logged
}

/// `--paced`: records lost per 5 s trial at 1500 B with the defaults, at each rate,
/// and the unpaced chain's rate (a ring that holds everything).
fn paced_table(dir: &FsPath) {
    let chain = whole_path(1500, 512 << 20, dir, Load::Flat, Into::File);
    let chain_rate = chain.written as f64 / chain.seconds;
    println!("unpaced chain, 1500 B: {chain_rate:.0} packets/s");
    println!("| rate | lost per trial (of 3, 5 s each) | rate / unpaced chain |");
    println!("|---:|---|---:|");
    let rates: Vec<u64> = std::env::args()
        .filter_map(|a| a.parse().ok())
        .filter(|r| *r >= 1000)
        .collect();
    let rates = match rates.is_empty() {
        true => vec![150_000, 200_000, 250_000, 300_000],
        false => rates,
    };
    for rate in rates {
        let lost: Vec<String> = (0..3)
            .map(|_| {
                let run = whole_path(1500, 0, dir, Load::Paced { rate, seconds: 5 }, Into::File);
                (run.packets - run.written).to_string()
            })
            .collect();
        println!(
            "| {rate}/s | {} | {:.2} |",
            lost.join(", "),
            rate as f64 / chain_rate
        );
    }
}

/// The client's runtime: tokio when `tokio` is among the arguments, else smol.
fn runtime() -> &'static str {
    match std::env::args().any(|a| a == "tokio") {
        true => "tokio",
        false => "smol",
    }
}

/// Packets and bytes from the closing line, "pcapcast: N packets, B bytes, D dropped".
fn closing_counts(said: &str) -> (u64, u64) {
    let line = said
        .lines()
        .rev()
        .find(|l| l.contains(" packets"))
        .unwrap_or("");
    let number = |unit: &str| {
        line.split(", ")
            .find_map(|part| part.trim_start_matches("pcapcast: ").strip_suffix(unit))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {unit} in the closing line {line:?}"))
    };
    (number(" packets"), number(" bytes"))
}

/// The floor: `bytes` bytes through a plain Unix socket into a file.
fn floor(bytes: u64, dir: &FsPath) -> f64 {
    let (mut tx, mut rx) = UnixStream::pair().unwrap();
    let path = dir.join("floor.bin");
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut file =
                std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&path).unwrap());
            let mut buffer = vec![0u8; 1 << 16];
            loop {
                match rx.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => file.write_all(&buffer[..n]).unwrap(),
                }
            }
            file.flush().unwrap();
        })
    };
    let chunk = vec![0x45u8; 1 << 16];
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tx.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    drop(tx);
    reader.join().unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    seconds
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks; there is nothing to list
    }
    // Files go to memory (tmpfs) where there is one, so that the disk's write-back
    // does not decide either side of the ratio.
    let base = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => shm.to_owned(),
        _ => std::env::temp_dir(),
    };
    let dir = base.join(format!("pcapcast-whole-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if std::env::args().any(|a| a == "--paced") {
        paced_table(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    println!("| size | ring | logged | written (drops) | whole path | floor, same bytes | ratio | daemon CPU/packet | capture CPU/packet |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (size, ring, into) in [
        (64usize, 2 << 20, Into::File),
        (64, 512 << 20, Into::File),
        (1500, 2 << 20, Into::File),
        (1500, 512 << 20, Into::File),
        (1500, 512 << 20, Into::Null),
    ] {
        // `-- 1500` runs the cases of that size only.
        let only: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
        if !only.is_empty() && !only.contains(&size) {
            continue;
        }
        // `-- null` runs the /dev/null case only.
        if std::env::args().any(|a| a == "null") && into != Into::Null {
            continue;
        }
        let run = whole_path(size, ring, &dir, Load::Flat, into);
        if ring >= 512 << 20 {
            assert_eq!(
                run.written, run.packets,
                "a ring that holds the burst loses nothing"
            );
        }
        // The floor's best of three: it is the reference, so give it every chance.
        let floor_seconds = (0..3)
            .map(|_| floor(run.file_bytes, &dir))
            .fold(f64::INFINITY, f64::min);
        let pps = run.written as f64 / run.seconds;
        let mbps = run.file_bytes as f64 / run.seconds / 1e6;
        let ring_text = match into {
            Into::File => format!("{} MiB", ring >> 20),
            Into::Null => format!("{} MiB, to /dev/null", ring >> 20),
        };
        println!(
            "| {size} B | {ring_text} | {} | {} ({}) | {:.0} packets/s, {:.0} MB/s | {:.0} MB/s | {:.2} | {:.0} ns | {:.0} ns |",
            run.packets,
            run.written,
            run.packets - run.written,
            pps,
            mbps,
            run.file_bytes as f64 / floor_seconds / 1e6,
            run.seconds / floor_seconds,
            run.daemon_cpu / run.packets as f64 * 1e9,
            run.capture_cpu / run.written.max(1) as f64 * 1e9,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
