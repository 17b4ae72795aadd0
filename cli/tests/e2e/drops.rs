//! A reader that lags loses packets, and says how many in every format: the CLI's count
//! of drops is the daemon's, and with the records in the file it accounts for all the
//! daemon handed out.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use pcapcast_tests::{temp_dir, wait_until};

use super::{exit_within, signal, PCAPCAST};

/// What the daemon logged when the capture's output went (`capture detached ...
/// dropped=D`) and when its connection ended (`capture delivered records=N bytes=B`:
/// what the socket took).
#[derive(Debug, PartialEq, Eq)]
struct Detached {
    records: u64,
    dropped: u64,
}

fn detached(log: &str) -> Detached {
    let field = |event: &str, name: &str| -> u64 {
        let line = log
            .lines()
            .find(|line| line.contains(event))
            .unwrap_or_else(|| panic!("the daemon logs {event:?}:\n{log}"));
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(name)?.strip_prefix('='))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line:?}"))
    };
    Detached {
        records: field("capture delivered", "records"),
        dropped: field("capture detached", "dropped"),
    }
}

/// Packets and drops of the CLI's closing line, "pcapcast: N packets, B bytes, D dropped".
fn closing(said: &str) -> (u64, u64) {
    let line = said
        .lines()
        .rev()
        .find(|line| line.starts_with("pcapcast: ") && line.ends_with(" dropped"))
        .unwrap_or_else(|| panic!("the CLI prints its counts:\n{said}"));
    let number = |unit: &str| -> u64 {
        line.trim_start_matches("pcapcast: ")
            .split(", ")
            .find_map(|part| part.strip_suffix(unit))
            .and_then(|n| n.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {unit} in {line:?}"))
    };
    (number(" packets"), number(" dropped"))
}

/// The packets in `file`, as capinfos counts them.
fn capinfos_packets(file: &Path) -> u64 {
    let out = Command::new("capinfos")
        .args(["-M", "-c"])
        .arg(file)
        .output()
        .expect("capinfos runs");
    assert!(out.status.success(), "capinfos: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Number of packets:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("capinfos counts packets: {text}"))
}

/// A demo with a tiny backlog and no retention (a reader lagging behind would read
/// from it and lose nothing), a capture piped into a reader that sleeps 3 s, then the
/// demo stopped: the capture reads its stream to the end.
fn lagging_capture(runtime: &str, format: &str) {
    // One at a time: eight demos at 3000 rounds a second and their captures at once
    // starve a 2-core machine, and a demo stopped then outlasts its drain time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = temp_dir(&format!("drops-{format}"));
    let socket = dir.join("demo.sock");
    let log = dir.join("demo.log");
    let mut demo = Command::new(PCAPCAST)
        .args([
            "demo",
            "--runtime",
            runtime,
            "--rate",
            "3000",
            "--retain",
            "0",
        ])
        .args(["--backlog", "16384"])
        .arg("--socket")
        .arg(&socket)
        // The server's debug lines too (a connection that ends in error says why), for
        // the message of a failure.
        .env("RUST_LOG", "info,pcapcast_serve=debug")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("pcapcast demo starts");
    assert!(wait_until(Duration::from_secs(20), || socket.exists()));
    let (file, said, status) = (dir.join("lag.out"), dir.join("said"), dir.join("status"));
    let script = format!(
        "{{ {PCAPCAST} capture --runtime {runtime} --connect unix:{} --format {format} --stats -o - 2> {}; echo $? > {}; }} | (sleep 3; cat > {})",
        socket.display(),
        said.display(),
        status.display(),
        file.display()
    );
    let mut capture = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    signal(&demo, rustix::process::Signal::TERM);
    assert!(exit_within(&mut capture, Duration::from_secs(30)).success());
    assert!(exit_within(&mut demo, Duration::from_secs(30)).success());
    let status = std::fs::read_to_string(&status).unwrap();
    let said = std::fs::read_to_string(&said).unwrap();
    assert_eq!(status.trim(), "0", "{runtime} {format}: {said}");
    let daemon = detached(&std::fs::read_to_string(&log).unwrap());
    let (packets, dropped) = closing(&said);
    assert!(
        daemon.dropped > 0,
        "{runtime} {format}: the reader lagged: {daemon:?}"
    );
    assert_eq!(
        dropped, daemon.dropped,
        "{runtime} {format}: the CLI says what the daemon lost"
    );
    assert_eq!(
        packets, daemon.records,
        "{runtime} {format}: the CLI wrote all it was handed"
    );
    assert_eq!(capinfos_packets(&file), packets, "{runtime} {format}");
}

pub(super) fn a_lagging_capture_counts_the_daemons_drops_in_pcap(runtime: &str) {
    lagging_capture(runtime, "pcap");
}

pub(super) fn a_lagging_capture_counts_the_daemons_drops_in_raw(runtime: &str) {
    lagging_capture(runtime, "raw");
}

pub(super) fn a_lagging_capture_counts_the_daemons_drops_in_tailscale(runtime: &str) {
    lagging_capture(runtime, "tailscale");
}

pub(super) fn a_lagging_capture_counts_the_daemons_drops_in_pcapng(runtime: &str) {
    lagging_capture(runtime, "pcapng");
}
