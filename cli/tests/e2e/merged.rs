//! Several daemons in one capture, and the demo pushing to a collector.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcapcast_core::framer::{Framer, Unit};
use pcapcast_tests::{accept_within, temp_dir, wait_until};

use super::{exit_within, pcapcast, signal, stop, tshark_fields, Demo, PCAPCAST};

const PATHS: [&str; 5] = [
    "from-local",
    "from-peer",
    "synth-to-local",
    "synth-to-peer",
    "disco",
];

/// (seconds, nanoseconds) of tshark's `frame.time_epoch`, exact.
fn epoch(text: &str) -> (u64, u32) {
    let (secs, frac) = text.split_once('.').unwrap_or((text, "0"));
    let nanos = format!("{frac:0<9}");
    (secs.parse().unwrap(), nanos[..9].parse().unwrap())
}

/// Rows of (time, interface id, interface name, interface description); checks that
/// the times never go back and that each interface keeps one name and description.
fn merged_rows(file: &Path) -> Vec<((u64, u32), String, String, String)> {
    let fields = [
        "frame.time_epoch",
        "frame.interface_id",
        "frame.interface_name",
        "frame.interface_description",
    ];
    let rows: Vec<_> = tshark_fields(file, &fields)
        .into_iter()
        .map(|r| (epoch(&r[0]), r[1].clone(), r[2].clone(), r[3].clone()))
        .collect();
    for pair in rows.windows(2) {
        assert!(
            pair[0].0 <= pair[1].0,
            "time order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    for row in &rows {
        assert!(
            PATHS.contains(&row.2.as_str()),
            "interface named by its path: {row:?}"
        );
        let same_id = rows.iter().filter(|r| r.1 == row.1);
        assert!(
            same_id.clone().all(|r| r.2 == row.2 && r.3 == row.3),
            "interface {}",
            row.1
        );
    }
    rows
}

pub(super) fn two_demos_merge_in_time_order(runtime: &str) {
    let (dir_a, dir_b) = (temp_dir("merge-a"), temp_dir("merge-b"));
    let a = Demo::start(runtime, &dir_a, &[]);
    let b = Demo::start(runtime, &dir_b, &[]);
    let file = dir_a.join("both.pcapng");
    let out = pcapcast(&[
        "capture",
        "--runtime",
        runtime,
        "--connect",
        &a.connect(),
        "--name",
        "left",
        "--connect",
        &b.connect(),
        "-c",
        "400",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = merged_rows(&file);
    assert_eq!(rows.len(), 400, "{runtime}");
    let from = |name: &str| rows.iter().filter(|r| r.3 == name).count();
    let (left, right) = (from("left"), from(&b.connect()));
    assert_eq!(left + right, 400, "every packet names its daemon");
    assert!(
        left >= 40 && right >= 40,
        "{runtime}: both daemons present: {left} and {right}"
    );
    // Each daemon's paths are interfaces of their own.
    let ids = |name: &str| {
        let mut ids: Vec<&str> = rows
            .iter()
            .filter(|r| r.3 == name)
            .map(|r| r.1.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    assert!(ids("left").iter().all(|id| !ids(&b.connect()).contains(id)));
    let capinfos = Command::new("capinfos").arg(&file).output().unwrap();
    let info = String::from_utf8_lossy(&capinfos.stdout);
    assert!(
        info.contains("own daemon's clock"),
        "the section comment: {info}"
    );
}

pub(super) fn a_merged_capture_outlives_a_daemon(runtime: &str) {
    let (dir_a, dir_b) = (temp_dir("outlive-a"), temp_dir("outlive-b"));
    let a = Demo::start(runtime, &dir_a, &[]);
    let mut b = Demo::start(runtime, &dir_b, &[]);
    let file = dir_a.join("outlive.pcapng");
    let mut capture = Command::new(PCAPCAST)
        .args([
            "capture",
            "--runtime",
            runtime,
            "--connect",
            &a.connect(),
            "--connect",
            &b.connect(),
            "-o",
        ])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || std::fs::metadata(
        &file
    )
    .is_ok_and(|m| m.len() > 30_000)));
    stop(&mut b.child);
    let stopped = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_millis(2000));
    signal(&capture, rustix::process::Signal::INT);
    assert!(
        exit_within(&mut capture, Duration::from_secs(30)).success(),
        "{runtime}"
    );
    let mut said = String::new();
    capture
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert!(
        said.contains(&format!("{}: the daemon", b.connect())) && said.contains("the others go on"),
        "{runtime}: a message for the daemon that left: {said}"
    );
    let rows = merged_rows(&file);
    let last_b = rows
        .iter()
        .filter(|r| r.3 == b.connect())
        .map(|r| r.0)
        .max()
        .expect("b's packets");
    assert!(last_b.0 <= stopped + 1, "b's part ended when it stopped");
    let a_after = rows
        .iter()
        .filter(|r| r.3 == a.connect() && r.0 > (last_b.0 + 1, last_b.1))
        .count();
    assert!(
        a_after >= 100,
        "{runtime}: the other daemon's packets kept coming: {a_after}"
    );
}

/// `pcapcast demo --push`: the collector gets raw IP that tshark reads; after it drops
/// the connection, the demo comes back with a new file header.
pub(super) fn the_demo_pushes_to_a_collector(runtime: &str) {
    let collector = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", collector.local_addr().unwrap());
    let dir = temp_dir("push-demo");
    let _demo = Demo::start(runtime, &dir, &["--push", &target]);
    let mut stream = accept_within(&collector, Duration::from_secs(20));
    let mut received = vec![0; 40_000];
    stream.read_exact(&mut received).unwrap();
    // The whole units of what came, as a collector would have saved them.
    let mut framer = Framer::new();
    framer.push(&received);
    let mut saved = Vec::new();
    while let Some(unit) = framer.next_unit().unwrap() {
        let (Unit::Header(bytes) | Unit::Packet { bytes, .. } | Unit::Other(bytes)) = unit;
        saved.extend_from_slice(&bytes);
    }
    let file = dir.join("collected.pcap");
    std::fs::write(&file, &saved).unwrap();
    let rows = tshark_fields(&file, &["frame.encap_type", "ip.src", "ipv6.src"]);
    assert!(rows.len() > 100, "{runtime}: {} packets", rows.len());
    assert!(rows.iter().all(|r| r[0] == "7"), "raw IP frames");
    assert!(rows.iter().any(|r| r[1] == "100.64.0.1") && rows.iter().any(|r| !r[2].is_empty()));
    drop(stream);
    let mut again = accept_within(&collector, Duration::from_secs(20));
    let mut header = [0u8; 24];
    again.read_exact(&mut header).unwrap();
    assert_eq!(
        &header[..4],
        &0xA1B2_C3D4u32.to_le_bytes(),
        "{runtime}: a fresh file header"
    );
    assert_eq!(&header[20..], &101u32.to_le_bytes(), "LINKTYPE_RAW");
}
