//! `pcapcast demo --replay` of damaged files: cut mid-record, a jump in time, a header
//! cut short, no capture at all.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::BytesMut;
use pcapcast_core::{Encoder, Options};
use pcapcast_tests::temp_dir;

use super::robust::{capinfos_count, stderr};
use super::PCAPCAST;

/// A raw IP pcap of one packet at each of these times (seconds since 1970).
fn pcap_at(seconds: &[u64]) -> Vec<u8> {
    let encoder = Encoder::new(Options::new().format(pcapcast_core::Format::RawIp));
    let mut file = BytesMut::new();
    encoder.put_header(&mut file);
    let packet = ipv4_packet();
    for &s in seconds {
        let when = UNIX_EPOCH + Duration::from_secs(s);
        encoder.put_record(&mut file, pcapcast_core::Path::FromPeer, when, &packet);
    }
    file.to_vec()
}

/// A bare IPv4 header (protocol UDP): enough for the replay to take it as IP.
fn ipv4_packet() -> [u8; 20] {
    [
        0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]
}

/// `pcapcast demo --replay` of `bytes`, once, into a file; its output and that file.
fn replay_once(name: &str, bytes: &[u8], speed: &str) -> (Output, PathBuf, Duration) {
    let dir = temp_dir("replay-bad");
    let input = dir.join(name);
    std::fs::write(&input, bytes).unwrap();
    let output = dir.join("out.pcap");
    let started = Instant::now();
    let out = Command::new("timeout")
        .args(["60", PCAPCAST, "demo", "-q", "--socket"])
        .arg(dir.join("d.sock"))
        .arg("--replay")
        .arg(&input)
        .args(["--once", "--speed", speed, "-o"])
        .arg(&output)
        .output()
        .unwrap();
    (out, output, started.elapsed())
}

/// Replays `bytes` once at `speed`: it must succeed, warn with `warning` and write
/// `packets` packets; how long it took.
fn replays_with_a_warning(bytes: &[u8], speed: &str, warning: &str, packets: u64) -> Duration {
    let (out, output, took) = replay_once("input.pcap", bytes, speed);
    let said = stderr(&out);
    assert!(out.status.success(), "{said}");
    let warned = said
        .lines()
        .find(|l| l.starts_with("pcapcast demo: warning: "));
    assert!(warned.is_some_and(|l| l.contains(warning)), "{said}");
    assert_eq!(capinfos_count(&output), packets);
    took
}

#[test]
fn a_cut_file_replays_to_its_last_whole_record() {
    let mut file = pcap_at(&[1, 2, 3, 4]);
    file.truncate(file.len() - 7);
    let warning = format!(
        "ends at byte {} in the middle of a record (record 4",
        file.len()
    );
    replays_with_a_warning(&file, "max", &warning, 3);
}

#[test]
fn a_jump_of_136_years_does_not_stall_the_replay() {
    let file = pcap_at(&[0, u64::from(u32::MAX)]);
    let warning =
        "record 2 comes 4294967295.000s after the packet before it: that wait is cut to 1s";
    let took = replays_with_a_warning(&file, "1", warning, 2);
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn a_damaged_replay_file_says_what_and_where() {
    let whole = pcap_at(&[1]);
    for (name, bytes, says) in [
        (
            "short.pcap",
            &whole[..10],
            "short.pcap ends at byte 10 inside its file header",
        ),
        (
            "junk.pcap",
            &b"GIF89a, a picture"[..],
            "junk.pcap is not a pcap or pcapng file: byte 0 starts 47 49 46 38",
        ),
    ] {
        let (out, _, _) = replay_once(name, bytes, "max");
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(said.contains(says), "{said}");
    }
}
