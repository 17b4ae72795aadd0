//! The run-time switch: off, the capture refuses attaches, keeps nothing and costs the
//! datapath what nobody listening costs.

use std::time::{Duration, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Error, Options, Path, Subscription};

fn log(capture: &Capture, n: u32) {
    for i in 0..n {
        let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000 + u64::from(i));
        capture.log_packet(Path::FromPeer, when, &[0x45; 20]);
    }
}

fn records(output: &mut Subscription) -> usize {
    let mut file = Vec::new();
    while let Some(bytes) = block_on(output.next()) {
        file.extend_from_slice(&bytes);
    }
    (file.len() - 24) / (16 + 2 + 20)
}

#[test]
fn off_from_the_start_refuses_and_keeps_nothing() {
    let capture = Capture::builder().enabled(false).retain(1 << 20).build();
    assert!(!capture.is_enabled());
    assert!(
        !capture.is_listening(),
        "the datapath's check says nobody listens"
    );
    log(&capture, 10);
    assert_eq!(
        capture.try_subscribe(Options::default()).err(),
        Some(Error::Disabled)
    );
    assert_eq!(capture.num_outputs(), 0);
    let mut refused = capture.subscribe(Options::default());
    capture.set_enabled(true);
    log(&capture, 3);
    capture.close();
    assert_eq!(
        records(&mut refused),
        0,
        "an attach refused while off stays ended"
    );
    assert_eq!(capture.stats().logged, 3, "only what was logged while on");
}

#[test]
fn switched_off_and_on_an_attached_output_misses_only_the_time_off() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    log(&capture, 4);
    capture.set_enabled(false);
    assert!(!capture.is_listening());
    log(&capture, 100);
    assert_eq!(capture.num_outputs(), 1, "attached outputs stay attached");
    assert_eq!(
        capture.try_subscribe(Options::default()).err(),
        Some(Error::Disabled)
    );
    capture.set_enabled(true);
    assert!(capture.is_listening());
    log(&capture, 5);
    capture.close();
    assert_eq!(records(&mut output), 9);
    assert_eq!(output.dropped(), 0, "what was not logged is not a drop");
    assert_eq!(
        Error::Disabled.to_string(),
        "capture is disabled in this daemon"
    );
}

#[test]
fn a_retention_keeps_nothing_while_off() {
    let capture = Capture::builder().retain(1 << 20).build();
    log(&capture, 2);
    capture.set_enabled(false);
    log(&capture, 50);
    capture.set_enabled(true);
    let mut snapshot = capture.snapshot(Options::default());
    assert_eq!(records(&mut snapshot), 2);
}
