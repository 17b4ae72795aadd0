//! History over every surface, on both runtimes: HTTP with `history=` and
//! `follow=false` (curl and a plain client), PCAP-over-IP and the push; and the
//! switch that turns a capture off.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcapcast_core::{Capture, History, Options, Path};
use pcapcast_tests::{post, read, temp_dir, wait_until, Endpoint, Runtime};

use super::{http_on_unix, log, seqs};

/// A capture that retains, with `n` packets logged while nobody listened.
fn retaining(n: u32) -> Capture {
    let capture = Capture::builder().retain(1 << 20).build();
    log(&capture, n, 300);
    capture
}

/// curl with `history=all` gets the retained packets, then those logged after it
/// attached, and the header that counts the history.
pub(super) fn curl_gets_history_then_live<R: Runtime>() {
    let dir = temp_dir("curl-history");
    let capture = retaining(50);
    let (_server, sock) = http_on_unix::<R>(&capture, &dir);
    let (out, head) = (dir.join("h.pcap"), dir.join("head.txt"));
    let mut curl = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "-D"])
        .arg(&head)
        .arg("--unix-socket")
        .arg(&sock)
        .args(["-X", "POST", "http://localhost/capture?history=all", "-o"])
        .arg(&out)
        .spawn()
        .expect("curl is installed (CI installs it)");
    assert!(wait_until(Duration::from_secs(10), || capture
        .num_outputs()
        == 1));
    // Numbered on from the history's 50.
    for i in 50..80u32 {
        let mut packet = vec![0x45u8; 300];
        packet[..4].copy_from_slice(&i.to_be_bytes());
        capture.log_packet(Path::FromPeer, SystemTime::now(), &packet);
    }
    capture.close();
    assert!(curl.wait().unwrap().success(), "{}", R::NAME);
    assert_eq!(
        seqs(&std::fs::read(&out).unwrap()),
        (0..80).collect::<Vec<_>>(),
        "{}",
        R::NAME
    );
    let head = std::fs::read_to_string(&head).unwrap().to_ascii_lowercase();
    assert!(head.contains("pcapcast-history-records: 50"), "{head}");
}

/// `follow=false` ends the response by itself, while the capture goes on; a span keeps
/// only the newest part, by the datapath's times.
pub(super) fn a_snapshot_ends_by_itself<R: Runtime>() {
    let dir = temp_dir("snapshot");
    let capture = Capture::builder().retain(1 << 20).build();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for i in 0..10u32 {
        let mut packet = vec![0x45u8; 100];
        packet[..4].copy_from_slice(&i.to_be_bytes());
        capture.log_packet(
            Path::FromLocal,
            start + Duration::from_millis(100) * i,
            &packet,
        );
    }
    let (_server, sock) = http_on_unix::<R>(&capture, &dir);
    let endpoint = Endpoint::Unix(sock);
    let all = post(
        &endpoint,
        "/capture?history=all&follow=false",
        "localhost",
        "",
    )
    .unwrap();
    assert_eq!(all.status, 200, "{}", R::NAME);
    assert_eq!(seqs(&all.body), (0..10).collect::<Vec<_>>());
    let last = post(
        &endpoint,
        "/capture?format=pcapng&history=450ms&follow=false",
        "localhost",
        "",
    )
    .unwrap();
    // The newest is at 900 ms: from 450 ms on.
    assert_eq!(seqs(&last.body), (5..10).collect::<Vec<_>>(), "{}", R::NAME);
    assert_eq!(last.header("pcapcast-history-records"), Some("5"));
    assert!(!capture.is_closed());
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 0));
    for (query, reason) in [
        ("history=30", "needs a unit"),
        ("follow=maybe", "true or false"),
    ] {
        let refused = post(&endpoint, &format!("/capture?{query}"), "localhost", "").unwrap();
        assert_eq!(refused.status, 400, "{query}");
        let body = String::from_utf8_lossy(&refused.body);
        assert!(body.contains(reason), "{query}: {body}");
    }
}

/// A PCAP-over-IP connection starts with the history when its options ask for it.
pub(super) fn pcap_over_ip_starts_with_history<R: Runtime>() {
    let capture = retaining(20);
    let options = Options::new().history(History::All);
    let server = R::serve_pcap_over_ip_with(
        capture.clone(),
        Endpoint::Tcp(super::LOOPBACK_ANY.parse().unwrap()),
        options,
    );
    let mut stream = pcapcast_tests::connect(&server.endpoint).unwrap();
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    for i in 20..25u32 {
        let mut packet = vec![0x45u8; 300];
        packet[..4].copy_from_slice(&i.to_be_bytes());
        capture.log_packet(Path::FromPeer, SystemTime::now(), &packet);
    }
    capture.close();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    assert_eq!(seqs(&bytes), (0..25).collect::<Vec<_>>(), "{}", R::NAME);
    assert_eq!(read::parse(&bytes).linktype, Some(147));
}

/// The push starts with the history too.
pub(super) fn push_starts_with_history<R: Runtime>() {
    let capture = retaining(20);
    let collector = std::net::TcpListener::bind(super::LOOPBACK_ANY).unwrap();
    let addr = collector.local_addr().unwrap();
    let options = Options::new().history(History::All);
    let pushing = R::push(
        capture.clone(),
        addr,
        options,
        (Duration::from_millis(50), Duration::from_millis(200)),
    );
    let mut stream = pcapcast_tests::accept_within(&collector, Duration::from_secs(10));
    capture.close();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    pushing.thread.join().unwrap().unwrap();
    assert_eq!(seqs(&bytes), (0..20).collect::<Vec<_>>(), "{}", R::NAME);
}

/// A capture switched off answers 403 with the reason, and 200 once it is on again.
pub(super) fn a_capture_switched_off_refuses_with_403<R: Runtime>() {
    let dir = temp_dir("switched-off");
    let capture = Capture::builder().enabled(false).build();
    let (_server, sock) = http_on_unix::<R>(&capture, &dir);
    let endpoint = Endpoint::Unix(sock);
    let refused = post(&endpoint, "/capture", "localhost", "").unwrap();
    assert_eq!(refused.status, 403, "{}", R::NAME);
    let reason = String::from_utf8_lossy(&refused.body);
    assert!(
        reason.contains("capture is disabled in this daemon"),
        "{reason}"
    );
    capture.set_enabled(true);
    let streaming = std::thread::spawn({
        let endpoint = endpoint.clone();
        move || post(&endpoint, "/capture", "localhost", "").unwrap()
    });
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    log(&capture, 3, 100);
    capture.close();
    let answered = streaming.join().unwrap();
    assert_eq!(answered.status, 200, "{}", R::NAME);
    assert_eq!(seqs(&answered.body).len(), 3);
}
