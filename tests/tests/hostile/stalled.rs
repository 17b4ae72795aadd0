//! Readers that stop reading: they must not lock everyone out, and are detached once
//! their writes stall past the limit while they lag.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pcapcast_core::{Capture, Path};
use pcapcast_tests::{connect, post, read, temp_dir, wait_until, Endpoint, HttpConfig, Runtime};

/// An HTTP client that sent its POST, saw the answer begin, and reads no more.
fn stalled_reader(endpoint: &Endpoint) -> Box<dyn pcapcast_tests::Stream> {
    let mut stream = connect(endpoint).unwrap();
    stream
        .write_all(b"POST /capture HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 200");
    stream
}

/// Logs as fast as it can, on a thread of its own, until told to stop.
fn log_fast(capture: &Capture) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (capture, stop) = (capture.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 500]);
                }
            }
        })
    };
    (stop, thread)
}

/// 256 readers of one user that never read hold every output there is: a new capture
/// still gets in, in place of the most stalled, and receives real records.
pub(super) fn a_new_capture_gets_in_past_256_stalled_readers<R: Runtime>() {
    let capture = Capture::new();
    let dir = temp_dir("stalled256");
    let server = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("h.sock")),
        HttpConfig::default(),
    );
    let stalled: Vec<_> = (0..256).map(|_| stalled_reader(&server.endpoint)).collect();
    assert_eq!(capture.num_outputs(), 256);
    let (stop, datapath) = log_fast(&capture);
    // Enough logged that every stalled reader lags behind the backlog.
    let logged_past_backlog = || capture.stats().logged > 4 * (4 << 20) / 518;
    assert!(wait_until(Duration::from_secs(20), logged_past_backlog));
    let newcomer = {
        let ep = server.endpoint.clone();
        std::thread::spawn(move || post(&ep, "/capture", "localhost", "").unwrap())
    };
    assert!(
        wait_until(Duration::from_secs(10), || capture.stats().stalled_detached
            >= 1),
        "{}: no stalled reader gave way",
        R::NAME
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    datapath.join().unwrap();
    assert!(capture.num_outputs() <= 256, "{}", R::NAME);
    capture.close();
    let response = newcomer.join().unwrap();
    assert_eq!(response.status, 200, "{}", R::NAME);
    let file = read::parse(&response.body);
    assert!(!file.records.is_empty(), "{}: no records", R::NAME);
    assert!(file.records.iter().all(|r| r.packet == [0x45; 500]));
    drop(stalled);
}

/// A reader that stops reading while the datapath logs is detached once its writes made
/// no progress for the stall limit, and counted.
pub(super) fn a_stalled_reader_is_detached_after_the_limit<R: Runtime>() {
    let capture = Capture::new();
    let dir = temp_dir("stall-limit");
    let limit = Duration::from_millis(800);
    let config = HttpConfig {
        stall_limit: Some(limit),
        ..HttpConfig::default()
    };
    let server = R::serve_http(capture.clone(), Endpoint::Unix(dir.join("h.sock")), config);
    let stalled = stalled_reader(&server.endpoint);
    let (stop, datapath) = log_fast(&capture);
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), || capture.num_outputs() == 0),
        "{}: the stalled reader stayed attached",
        R::NAME
    );
    stop.store(true, Ordering::Relaxed);
    datapath.join().unwrap();
    assert!(start.elapsed() >= limit, "{}: detached too soon", R::NAME);
    assert_eq!(capture.stats().stalled_detached, 1, "{}", R::NAME);
    drop(stalled);
}
