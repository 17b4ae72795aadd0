//! The axum example, run as a program and asked with curl: the app's own route and the
//! capture mounted beside it.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use pcapcast_tokio::core::framer::{Framer, Unit};

/// The example's binary: `cargo test` builds examples beside the test binaries.
fn example() -> PathBuf {
    let test = std::env::current_exe().expect("the test binary");
    let profile = test
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/PROFILE/deps");
    profile.join("examples").join("axum")
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let dir = std::env::temp_dir().join(format!("pcapcast-axum-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body = dir.join("body");
    let out = Command::new("curl")
        .args(["--silent", "--max-time", "2", "-w", "%{http_code}", "-o"])
        .arg(&body)
        .args(args)
        .output()
        .expect("curl is installed (CI installs it)");
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    (status, std::fs::read(&body).unwrap_or_default())
}

#[test]
fn the_app_and_its_capture_answer_on_one_listener() {
    let mut child = Command::new(example())
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example was built by cargo test");
    let stdout = child.stdout.take().unwrap();
    let app = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("its address")
        .to_owned();

    let (status, body) = curl(&[&format!("{base}/")]);
    assert_eq!(status, "200");
    assert!(String::from_utf8_lossy(&body).contains("/debug/capture"));

    // The capture streams until curl gives up after 2 s: a pcapng section, interfaces,
    // and the packets the datapath logged meanwhile.
    let (status, body) = curl(&["-X", "POST", &format!("{base}/debug/capture?format=pcapng")]);
    assert_eq!(status, "200");
    assert_eq!(
        &body[..4],
        &[0x0a, 0x0d, 0x0d, 0x0a],
        "a pcapng section header"
    );
    let mut framer = Framer::new();
    framer.push(&body);
    let mut packets = 0;
    while let Some(unit) = framer.next_unit().expect("a pcapng stream") {
        packets += usize::from(matches!(unit, Unit::Packet { .. }));
    }
    // The datapath logs one every 10 ms; the stream was cut after 2 s.
    assert!(packets >= 10, "{packets} packets in {} bytes", body.len());

    let (status, body) = curl(&[&format!("{base}/debug/capture")]);
    assert_eq!(status, "405", "{}", String::from_utf8_lossy(&body));
    let (status, body) = curl(&["-X", "POST", &format!("{base}/debug/capture?snaplen=0")]);
    assert_eq!(status, "400");
    assert!(String::from_utf8_lossy(&body).contains("snaplen"));
    drop(app);
}
