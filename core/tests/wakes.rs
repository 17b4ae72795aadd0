//! How often the datapath wakes a parked `Stream` reader, in simulated time: the
//! records' times are the caller's, no clock is read.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, UNIX_EPOCH};

use futures_core::Stream;
use pcapcast_core::{Capture, Options, Path, Subscription, STREAM_WAKE_DEADLINE};

mod support;

#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Polls until the output parks; returns what it handed out.
fn poll_until_parked(output: &mut Subscription, waker: &Waker) -> Vec<u8> {
    let mut cx = Context::from_waker(waker);
    let mut file = Vec::new();
    loop {
        match Pin::new(&mut *output).poll_next(&mut cx) {
            Poll::Ready(Some(bytes)) => file.extend_from_slice(&bytes),
            Poll::Ready(None) => panic!("the stream ended"),
            Poll::Pending => return file,
        }
    }
}

fn log_at(capture: &Capture, micros: u64, size: usize) {
    let mut packet = vec![0u8; size];
    packet[..8].copy_from_slice(&micros.to_le_bytes());
    let when = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_micros(micros);
    capture.log_packet(Path::FromPeer, when, &packet);
}

fn times(file: &[u8]) -> Vec<u64> {
    support::parse(file)
        .records
        .iter()
        .map(|r| u64::from_le_bytes(r.packet[..8].try_into().unwrap()))
        .collect()
}

/// Records 10 µs apart: the reader that parked after the first is not woken by the
/// next ones, but by the first record a deadline past what it had seen, and then gets
/// every record at once.
#[test]
fn a_parked_reader_is_woken_once_its_deadline_passes_not_per_record() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));
    let mut file = poll_until_parked(&mut output, &waker);
    log_at(&capture, 0, 100);
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        1,
        "the first record wakes"
    );
    file.extend(poll_until_parked(&mut output, &waker));
    assert_eq!(times(&file), [0]);
    let deadline = STREAM_WAKE_DEADLINE.as_micros() as u64;
    let before_deadline: Vec<u64> = (1..)
        .map(|i| i * 10)
        .take_while(|t| *t < deadline)
        .collect();
    for &t in &before_deadline {
        log_at(&capture, t, 100);
    }
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        1,
        "{} records within the deadline woke the reader",
        before_deadline.len()
    );
    log_at(&capture, deadline, 100);
    assert_eq!(
        counter.0.load(Ordering::Relaxed),
        2,
        "woken at the deadline"
    );
    log_at(&capture, deadline + 10, 100);
    assert_eq!(counter.0.load(Ordering::Relaxed), 2, "woken once");
    file.extend(poll_until_parked(&mut output, &waker));
    let mut expected = vec![0];
    expected.extend(&before_deadline);
    expected.extend([deadline, deadline + 10]);
    assert_eq!(times(&file), expected);
}

/// Within the deadline, a batch's worth waiting wakes the reader, once per batch.
#[test]
fn a_parked_reader_is_woken_once_per_batch_within_the_deadline() {
    let capture = Capture::builder().batch_bytes(64 << 10).build();
    let mut output = capture.subscribe(Options::default());
    let counter = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counter));
    let mut file = poll_until_parked(&mut output, &waker);
    log_at(&capture, 0, 1500);
    file.extend(poll_until_parked(&mut output, &waker));
    let woken_before = counter.0.load(Ordering::Relaxed);
    // 100 records of 1500 B in 100 ns steps: about two batches, all within the deadline.
    let mut wakes_at = Vec::new();
    for i in 1..=100u64 {
        log_at(&capture, i / 10, 1500);
        if counter.0.load(Ordering::Relaxed) > woken_before + wakes_at.len() {
            wakes_at.push(i);
            file.extend(poll_until_parked(&mut output, &waker));
        }
    }
    // 64 KiB holds 43 records of 1520 ring bytes: the 44th wakes it, then 44 more.
    assert_eq!(wakes_at, [44, 88]);
    capture.close();
    let mut cx = Context::from_waker(&waker);
    while let Poll::Ready(Some(bytes)) = Pin::new(&mut output).poll_next(&mut cx) {
        file.extend_from_slice(&bytes);
    }
    assert_eq!(times(&file).len(), 101);
}
