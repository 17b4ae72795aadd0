//! The demo's history: captures that start before their attach, spans, snapshots on
//! SIGUSR1, and the extcap's history field.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcapcast_tests::{temp_dir, wait_until};

use super::{capture_into, exit_within, pcapcast, signal, stop, tshark_fields, Demo, PCAPCAST};

/// Seconds since the epoch of each packet, as tshark reads them.
fn times(file: &Path) -> Vec<f64> {
    tshark_fields(file, &["frame.time_epoch"])
        .iter()
        .map(|row| row[0].parse().unwrap())
        .collect()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `--history all --no-follow` ends by itself, holding what happened before it started.
pub(super) fn a_history_capture_holds_the_past_and_ends(runtime: &str) {
    let dir = temp_dir("history-all");
    let demo = Demo::start(runtime, &dir, &["--rate", "50"]);
    std::thread::sleep(Duration::from_millis(2_500));
    let started = now();
    let file = dir.join("before.pcapng");
    let connect = demo.connect();
    let out = pcapcast(&[
        "capture",
        "--runtime",
        runtime,
        "--connect",
        &connect,
        "--history",
        "all",
        "--no-follow",
        "--format",
        "pcapng",
        "--stats",
        "-o",
        file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{runtime}: {said}");
    let times = times(&file);
    assert!(times.len() > 100, "{runtime}: {} packets", times.len());
    // The closing line says how many came from before the attach: all of them.
    let summary = format!(
        "{} packets ({} from before the attach)",
        times.len(),
        times.len()
    );
    assert!(
        said.lines().last().is_some_and(|l| l.contains(&summary)),
        "{runtime}: {said}"
    );
    assert!(
        times[0] < started - 1.5,
        "{runtime}: the first packet is from before the attach"
    );
    assert!(
        times.iter().all(|&t| t <= started + 0.5),
        "{runtime}: nothing after the attach"
    );
}

/// `--history 1s` keeps the last second before the newest packet, no more.
pub(super) fn a_history_span_keeps_only_that_span(runtime: &str) {
    let dir = temp_dir("history-span");
    let demo = Demo::start(runtime, &dir, &["--rate", "50"]);
    std::thread::sleep(Duration::from_millis(2_500));
    let file = dir.join("last.pcap");
    capture_into(runtime, &demo, &["--history", "1s", "--no-follow"], &file);
    let times = times(&file);
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(span <= 1.0 + 1e-6, "{runtime}: {span} s");
    assert!(
        span >= 0.8,
        "{runtime}: at 50 rounds a second, nearly a whole second: {span} s"
    );
    assert!(times.len() > 100, "{runtime}: {} packets", times.len());
}

/// SIGUSR1 writes a pcapng snapshot into the demo's folder; tshark reads it whole.
pub(super) fn sigusr1_writes_a_snapshot(runtime: &str) {
    let dir = temp_dir("snapshot-signal");
    let socket = dir.join("demo.sock");
    let mut demo = Command::new(PCAPCAST)
        .args([
            "demo",
            "-q",
            "--rate",
            "50",
            "--runtime",
            runtime,
            "--socket",
        ])
        .arg(&socket)
        .current_dir(&dir)
        .stderr(Stdio::null())
        .spawn()
        .expect("pcapcast demo starts");
    assert!(wait_until(Duration::from_secs(20), || socket.exists()));
    std::thread::sleep(Duration::from_millis(1_500));
    signal(&demo, rustix::process::Signal::USR1);
    let snapshot = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("pcapcast-snapshot-") && n.ends_with(".pcapng"))
            })
    };
    assert!(
        wait_until(Duration::from_secs(10), || snapshot().is_some()),
        "{runtime}: no snapshot"
    );
    // Written whole before it is named in the log; give the write its moment.
    std::thread::sleep(Duration::from_millis(300));
    let file = snapshot().unwrap();
    let interfaces = tshark_fields(&file, &["frame.interface_name"]);
    assert!(
        interfaces.len() > 100,
        "{runtime}: {} packets",
        interfaces.len()
    );
    assert!(interfaces.iter().any(|r| r[0] == "from-peer"));
    let info = Command::new("capinfos")
        .arg(&file)
        .output()
        .expect("capinfos is installed");
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(
        info.contains("a snapshot of the capture's history"),
        "{info}"
    );
    assert!(
        demo.try_wait().unwrap().is_none(),
        "{runtime}: the demo goes on"
    );
    stop(&mut demo);
}

/// The extcap offers the history in Wireshark's dialog and starts with it when asked.
pub(super) fn the_extcap_captures_with_history(runtime: &str) {
    let config = pcapcast(&["--extcap-config", "--extcap-interface", "pcapcast"]);
    let config = String::from_utf8_lossy(&config.stdout);
    assert!(config.contains("{call=--history}"), "{config}");
    let dir = temp_dir("extcap-history");
    let demo = Demo::start(runtime, &dir, &["--rate", "50"]);
    std::thread::sleep(Duration::from_millis(2_000));
    let started = now();
    // A plain file stands in for Wireshark's fifo.
    let fifo = dir.join("fifo.pcap");
    std::fs::write(&fifo, b"").unwrap();
    let connect = demo.connect();
    let mut extcap = Command::new(PCAPCAST)
        .args(["--capture", "--extcap-interface", "pcapcast", "--fifo"])
        .arg(&fifo)
        .args(["--connect", &connect, "--history", "all"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    signal(&extcap, rustix::process::Signal::TERM);
    let status = exit_within(&mut extcap, Duration::from_secs(10));
    assert!(status.success(), "{runtime}: {status}");
    let times = times(&fifo);
    assert!(
        times[0] < started - 1.0,
        "{runtime}: starts before the attach"
    );
    assert!(*times.last().unwrap() > started, "{runtime}: then follows");
    let bad = pcapcast(&[
        "--capture",
        "--extcap-interface",
        "pcapcast",
        "--fifo",
        fifo.to_str().unwrap(),
        "--connect",
        &connect,
        "--history",
        "soon",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("history"));
}

/// `PCAPCAST_DISABLE=1` switches the demo's capture off: an attach is refused with the
/// reason, exit 1, and the output file is not made.
pub(super) fn the_environment_switches_the_capture_off(runtime: &str) {
    let dir = temp_dir("disabled");
    let socket = dir.join("demo.sock");
    let mut demo = Command::new(PCAPCAST)
        .args(["demo", "-q", "--runtime", runtime, "--socket"])
        .arg(&socket)
        .env("PCAPCAST_DISABLE", "1")
        .stderr(Stdio::null())
        .spawn()
        .expect("pcapcast demo starts");
    assert!(wait_until(Duration::from_secs(20), || socket.exists()));
    let file = dir.join("never.pcap");
    let connect = format!("unix:{}", socket.display());
    let out = pcapcast(&[
        "capture",
        "--runtime",
        runtime,
        "--connect",
        &connect,
        "-c",
        "1",
        "-o",
        file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{runtime}: {said}");
    assert!(
        said.contains("403") && said.contains("capture is disabled in this daemon"),
        "{said}"
    );
    assert!(!file.exists(), "{runtime}: no file for a refused capture");
    stop(&mut demo);
}
