//! Stalled outputs at the output limit: the most stalled one that lags gives way to a
//! new output, and the count of outputs stays right. No clock and no sleep: "stalled"
//! is told by the backlog alone, and outputs are polled by hand.

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use futures_core::Stream;
use pcapcast_core::{Capture, Error, Options, Path, Subscription};

/// A capture with room for `limit` outputs and a backlog of two small batches.
fn small_capture(limit: usize) -> Capture {
    Capture::builder()
        .batch_bytes(4 << 10)
        .backlog_bytes(8 << 10)
        .max_outputs(limit)
        .build()
}

/// Logs `n` records of 200 bytes (about 4.4 KiB for 20).
fn log(capture: &Capture, n: u32) {
    for i in 0..n {
        let when = UNIX_EPOCH + Duration::from_micros(u64::from(i));
        capture.log_packet(Path::FromPeer, when, &[0x45; 200]);
    }
}

/// Polls `output` until it has nothing more now; returns the bytes and whether it ended.
fn drain(output: &mut Subscription) -> (usize, bool) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = 0;
    loop {
        match Pin::new(&mut *output).poll_next(&mut cx) {
            Poll::Ready(Some(b)) => bytes += b.len(),
            Poll::Ready(None) => return (bytes, true),
            Poll::Pending => return (bytes, false),
        }
    }
}

/// Enough records, drained by `reader`, to push the backlog past whoever did not read.
fn roll_the_backlog(capture: &Capture, reader: &mut Subscription) {
    for _ in 0..10 {
        log(capture, 40);
        drain(reader);
    }
}

#[test]
fn the_most_stalled_output_gives_way_to_a_new_one() {
    let capture = small_capture(3);
    let mut stalled_first = capture.try_subscribe(Options::default()).unwrap();
    let mut stalled_later = capture.try_subscribe(Options::default()).unwrap();
    let mut reader = capture.try_subscribe(Options::default()).unwrap();
    drain(&mut stalled_first);
    roll_the_backlog(&capture, &mut reader);
    // The second one read up to here, then stalled too: behind, but less far behind.
    drain(&mut stalled_later);
    roll_the_backlog(&capture, &mut reader);
    assert_eq!(capture.num_outputs(), 3);

    let mut newcomer = capture
        .try_subscribe(Options::default())
        .expect("room made");
    assert_eq!(
        capture.num_outputs(),
        3,
        "the newcomer took the evicted one's place"
    );
    assert!(stalled_first.is_evicted());
    assert!(!stalled_later.is_evicted() && !reader.is_evicted());
    assert_eq!(
        drain(&mut stalled_first),
        (0, true),
        "its stream ends at once"
    );
    assert!(!drain(&mut stalled_later).1 && !drain(&mut reader).1);
    assert_eq!(capture.stats().stalled_detached, 1);

    // Dropping the evicted output gives back nothing: its count is the newcomer's.
    drop(stalled_first);
    assert_eq!(capture.num_outputs(), 3);

    // The next one to give way: the second stalled output, once it lags again.
    roll_the_backlog(&capture, &mut reader);
    drain(&mut newcomer);
    let last = capture
        .try_subscribe(Options::default())
        .expect("room made again");
    assert!(stalled_later.is_evicted());
    assert!(!reader.is_evicted() && !newcomer.is_evicted());
    assert_eq!(capture.stats().stalled_detached, 2);
    assert_eq!(capture.num_outputs(), 3);
    drop((stalled_later, reader, newcomer, last));
    assert_eq!(capture.num_outputs(), 0);
}

#[test]
fn a_full_set_that_does_not_lag_still_refuses() {
    let capture = small_capture(2);
    let mut a = capture.try_subscribe(Options::default()).unwrap();
    let mut b = capture.try_subscribe(Options::default()).unwrap();
    for _ in 0..10 {
        log(&capture, 40);
        drain(&mut a);
        drain(&mut b);
    }
    assert!(matches!(
        capture.try_subscribe(Options::default()),
        Err(Error::TooManyOutputs { limit: 2 })
    ));
    // Stalled but not yet behind the backlog: not lagging, so not evicted either.
    log(&capture, 5);
    drain(&mut a);
    assert!(matches!(
        capture.try_subscribe(Options::default()),
        Err(Error::TooManyOutputs { .. })
    ));
    assert!(!a.is_evicted() && !b.is_evicted());
    assert_eq!(
        (capture.num_outputs(), capture.stats().stalled_detached),
        (2, 0)
    );
}

#[test]
fn an_output_detached_by_its_writer_gives_its_place_back() {
    let capture = small_capture(2);
    let mut stalled = capture.try_subscribe(Options::default()).unwrap();
    let mut reader = capture.try_subscribe(Options::default()).unwrap();
    let watch = stalled.watch();
    assert!(!watch.is_lagging());
    roll_the_backlog(&capture, &mut reader);
    assert!(watch.is_lagging() && !reader.watch().is_lagging());
    assert!(watch.detach_stalled());
    assert!(!watch.detach_stalled(), "only once");
    assert_eq!(capture.num_outputs(), 1);
    assert_eq!(drain(&mut stalled), (0, true));
    drop(stalled);
    assert_eq!(
        capture.num_outputs(),
        1,
        "dropping it detaches nothing more"
    );
    let _newcomer = capture.try_subscribe(Options::default()).unwrap();
    assert_eq!(capture.num_outputs(), 2);
    assert_eq!(capture.stats().stalled_detached, 1);
}

#[test]
fn outputs_leaving_on_their_own_free_their_place() {
    let capture = small_capture(2);
    let a = capture.try_subscribe(Options::default()).unwrap();
    let b = capture.subscribe(Options::default());
    drop(a);
    let c = capture.try_subscribe(Options::default()).unwrap();
    drop((b, c));
    assert_eq!(capture.num_outputs(), 0);
    assert_eq!(capture.stats().stalled_detached, 0);
}

#[test]
fn a_lagging_output_counts_its_losses_without_reading() {
    let capture = small_capture(2);
    let mut stalled = capture.try_subscribe(Options::default()).unwrap();
    let mut reader = capture.try_subscribe(Options::default()).unwrap();
    drain(&mut stalled);
    roll_the_backlog(&capture, &mut reader);
    assert_eq!(stalled.dropped(), 0, "nothing counted before it looks");
    let lost = stalled.count_lost();
    assert!(lost > 0 && lost < 400, "{lost}");
    assert_eq!(stalled.dropped(), lost);
    assert!(!stalled.watch().is_lagging(), "caught up with the backlog");
}
