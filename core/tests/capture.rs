//! The semantics every output keeps: attach and detach, close, lag and loss, order
//! across threads, timed hand-out with simulated time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Format, Options, Path, Subscription};

mod support;

fn drain(output: &mut Subscription) -> Vec<u8> {
    let mut file = Vec::new();
    while let Some(bytes) = block_on(output.next()) {
        file.extend_from_slice(&bytes);
    }
    file
}

fn log(capture: &Capture, tag: u8) {
    capture.log_packet(
        Path::FromPeer,
        UNIX_EPOCH + Duration::from_secs(u64::from(tag)),
        &[tag; 40],
    );
}

fn tags(bytes: &[u8]) -> Vec<u8> {
    support::parse(bytes)
        .records
        .iter()
        .map(|r| r.packet[0])
        .collect()
}

#[test]
fn outputs_see_what_was_logged_while_attached() {
    let capture = Capture::new();
    log(&capture, 1); // nobody listens
    let mut a = capture.subscribe(Options::default());
    log(&capture, 2);
    let mut b = capture.subscribe(Options::new().format(Format::Pcapng));
    log(&capture, 3);
    let c = capture.subscribe(Options::default());
    assert_eq!(capture.num_outputs(), 3);
    drop(c);
    assert_eq!(capture.num_outputs(), 2);
    log(&capture, 4);
    capture.close();
    log(&capture, 5); // after close: ignored
    assert_eq!(tags(&drain(&mut a)), [2, 3, 4]);
    assert_eq!(tags(&drain(&mut b)), [3, 4]);
    assert_eq!(capture.num_outputs(), 0);
    assert_eq!(capture.stats().logged, 3);
}

#[test]
fn a_closed_capture_gives_a_header_and_an_end() {
    let capture = Capture::new();
    capture.close();
    let mut late = capture.subscribe(Options::default());
    assert_eq!(drain(&mut late).len(), 24);
    assert!(capture.try_subscribe(Options::default()).is_err());
    assert_eq!(capture.num_outputs(), 0);
}

#[test]
fn dropping_every_handle_closes_the_capture() {
    let capture = Capture::new();
    let datapath = capture.clone();
    let mut output = capture.subscribe(Options::default());
    log(&datapath, 1);
    drop(capture);
    log(&datapath, 2);
    drop(datapath);
    assert_eq!(tags(&drain(&mut output)), [1, 2]);
}

#[test]
fn the_output_limit_is_kept() {
    let capture = Capture::builder().max_outputs(2).build();
    let _a = capture.try_subscribe(Options::default()).unwrap();
    let b = capture.try_subscribe(Options::default()).unwrap();
    let err = capture.try_subscribe(Options::default()).unwrap_err();
    assert_eq!(err, pcapcast_core::Error::TooManyOutputs { limit: 2 });
    drop(b);
    assert!(capture.try_subscribe(Options::default()).is_ok());
}

#[test]
fn a_lagging_output_loses_its_oldest_records_alone_and_counts_them() {
    let capture = Capture::builder()
        .batch_bytes(4096)
        .backlog_bytes(8192)
        .build();
    let mut fast = capture.subscribe(Options::default());
    let mut slow = capture.subscribe(Options::new().format(Format::Pcapng));
    let mut fast_bytes = Vec::new();
    for i in 0..1000u32 {
        capture.log_packet(Path::FromLocal, UNIX_EPOCH, &i.to_le_bytes().repeat(25));
        // The fast output reads everything there is after each packet.
        while let Poll::Ready(Some(b)) = fast.poll_next(&mut Context::from_waker(Waker::noop())) {
            fast_bytes.extend_from_slice(&b);
        }
    }
    capture.close();
    fast_bytes.extend(drain(&mut fast));
    let fast_file = support::parse(&fast_bytes);
    assert_eq!(fast_file.records.len(), 1000);
    assert_eq!(fast.dropped(), 0);

    let slow_file = support::parse(&drain(&mut slow));
    let lost = slow.dropped();
    assert!(lost > 0);
    assert_eq!(slow_file.records.len() as u64 + lost, 1000);
    // The loss shows in the stream, on the first record after it, and the survivors are
    // the newest records in order.
    assert_eq!(slow_file.records[0].drops, lost);
    assert!(slow_file.records[1..].iter().all(|r| r.drops == 0));
    let first = u32::from_le_bytes(slow_file.records[0].packet[..4].try_into().unwrap());
    assert_eq!(u64::from(first), lost);
    assert_eq!(capture.stats().dropped, lost);
}

#[test]
fn an_output_that_keeps_some_paths_counts_only_their_losses() {
    let capture = Capture::builder()
        .batch_bytes(4096)
        .backlog_bytes(8192)
        .build();
    let mut peer_only = capture.subscribe(
        Options::new()
            .format(Format::Pcapng)
            .paths([Path::FromPeer]),
    );
    let mut every_path = capture.subscribe(Options::default());
    let peer = |i: u32| i % 4 == 0;
    for i in 0..1000u32 {
        let path = if peer(i) {
            Path::FromPeer
        } else {
            Path::FromLocal
        };
        capture.log_packet(path, UNIX_EPOCH, &i.to_le_bytes().repeat(25));
    }
    capture.close();
    // Read one to its end first: the other, behind it, loses the oldest records.
    let every_file = support::parse(&drain(&mut every_path));
    let peer_file = support::parse(&drain(&mut peer_only));
    let peer_logged = (0..1000).filter(|i| peer(*i)).count() as u64;
    assert!(peer_only.dropped() > 0);
    assert_eq!(
        peer_file.records.len() as u64 + peer_only.dropped(),
        peer_logged
    );
    assert_eq!(every_file.records.len() as u64 + every_path.dropped(), 1000);
    let shown: u64 = peer_file.records.iter().map(|r| r.drops).sum();
    assert_eq!(shown, peer_only.dropped(), "pcapng shows the loss");
    assert_eq!(
        capture.stats().dropped,
        peer_only.dropped() + every_path.dropped()
    );
}

#[test]
fn default_outputs_share_the_stored_bytes() {
    let capture = Capture::new();
    let mut a = capture.subscribe(Options::default());
    let mut b = capture.subscribe(Options::default());
    log(&capture, 9);
    capture.close();
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let _ = (a.poll_next(&mut cx), b.poll_next(&mut cx)); // the headers
    let (Poll::Ready(Some(ra)), Poll::Ready(Some(rb))) =
        (a.poll_next(&mut cx), b.poll_next(&mut cx))
    else {
        panic!("records expected");
    };
    assert_eq!(ra, rb);
    assert_eq!(
        ra.as_ptr(),
        rb.as_ptr(),
        "one copy, whatever the number of outputs"
    );
}

#[test]
fn records_are_held_back_until_the_flush_interval_or_a_full_batch() {
    let capture = Capture::builder().batch_bytes(4096).build();
    let mut output = capture.subscribe(Options::default());
    let waker = Waker::noop();
    let mut cx = Context::from_waker(waker);
    let t0 = Instant::now();
    let (ms, us) = (Duration::from_millis, Duration::from_micros);
    assert!(matches!(output.poll_next_at(&mut cx, t0), Poll::Ready(Some(h)) if h.len() == 24));
    assert!(output.poll_next_at(&mut cx, t0).is_pending());
    // Nothing waits: the output looks again one flush interval later.
    assert_eq!(output.poll_timeout(), Some(t0 + ms(100)));
    log(&capture, 1);
    // Found at 5 ms, logged after the look at 0 ms: due 100 ms after that look, and
    // looked at again sooner while it waits.
    assert!(output.poll_next_at(&mut cx, t0 + ms(5)).is_pending());
    assert_eq!(output.poll_timeout(), Some(t0 + us(5_500)));
    log(&capture, 2);
    assert!(output.poll_next_at(&mut cx, t0 + ms(99)).is_pending());
    let Poll::Ready(Some(bytes)) = output.poll_next_at(&mut cx, t0 + ms(100)) else {
        panic!("due at 100 ms");
    };
    assert_eq!(bytes.len(), 2 * (16 + 2 + 40));
    assert_eq!(
        output.poll_timeout(),
        Some(t0 + us(100_500)),
        "the next look"
    );

    // A full batch goes at once.
    assert!(output.poll_next_at(&mut cx, t0 + ms(101)).is_pending());
    for _ in 0..100 {
        log(&capture, 3);
    }
    let Poll::Ready(Some(_)) = output.poll_next_at(&mut cx, t0 + ms(102)) else {
        panic!("a full batch is due at once");
    };
}

#[test]
fn a_quiet_threads_last_records_reach_a_timed_reader_within_the_flush_interval() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    let mut cx = Context::from_waker(Waker::noop());
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let Poll::Ready(Some(header)) = output.poll_next_at(&mut cx, t0) else {
        panic!("the header comes first");
    };
    assert!(output.poll_next_at(&mut cx, t0).is_pending());
    // A thread logs two records, in simulated time just after the look, and ends.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            log(&capture, 1);
            log(&capture, 2);
        });
    });
    // Nobody wakes the reader: it polls when its own timer says.
    let mut now = t0;
    let mut file = header.to_vec();
    while now <= t0 + ms(100) {
        let due = output.poll_timeout().expect("a timer is always armed");
        assert!(due > now, "the timer moves on");
        now = due;
        if let Poll::Ready(Some(bytes)) = output.poll_next_at(&mut cx, now) {
            file.extend_from_slice(&bytes);
            break;
        }
    }
    assert!(now <= t0 + ms(100), "handed out at {:?}", now - t0);
    assert_eq!(tags(&file), [1, 2]);
}

#[test]
fn a_waiting_reader_is_woken_by_the_datapath() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::default());
    let (got, record) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let header = block_on(output.next()).expect("the header");
        got.send(header).unwrap();
        // Parks until the datapath's wake-up; close() would wake it too, so the record
        // must arrive before the capture is closed.
        let record = block_on(output.next()).expect("a record");
        got.send(record).unwrap();
    });
    let header = record.recv().unwrap();
    std::thread::sleep(Duration::from_millis(50)); // the reader parks
    log(&capture, 7);
    let bytes = record
        .recv_timeout(Duration::from_secs(10))
        .expect("the datapath woke the waiting reader");
    capture.close();
    reader.join().unwrap();
    assert_eq!(tags(&[header.to_vec(), bytes.to_vec()].concat()), [7]);
}

/// Remembers whether it was woken.
struct Flag(AtomicBool);

impl std::task::Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn an_output_attached_mid_batch_is_woken_by_the_next_record() {
    let capture = Capture::new();
    let _first = capture.subscribe(Options::default());
    log(&capture, 1);
    log(&capture, 2); // both in the open batch, before the second output attaches
    let mut second = capture.subscribe(Options::default());
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let waker = Waker::from(Arc::clone(&flag));
    let mut cx = Context::from_waker(&waker);
    let Poll::Ready(Some(header)) = second.poll_next(&mut cx) else {
        panic!("the header comes first");
    };
    assert!(second.poll_next(&mut cx).is_pending());
    log(&capture, 3);
    assert!(
        flag.0.load(Ordering::SeqCst),
        "the waiting output was not told of the record"
    );
    capture.close();
    let file = [header.to_vec(), drain(&mut second)].concat();
    assert_eq!(tags(&file), [3]);
}

#[test]
fn an_output_attaching_leaves_waiting_records_to_the_others() {
    let capture = Capture::new();
    let mut first = capture.subscribe(Options::default());
    let mut cx = Context::from_waker(Waker::noop());
    let t0 = Instant::now();
    let Poll::Ready(Some(header)) = first.poll_next_at(&mut cx, t0) else {
        panic!("the header comes first");
    };
    log(&capture, 1);
    assert!(first.poll_next_at(&mut cx, t0).is_pending(), "held back");
    let _second = capture.subscribe(Options::default());
    // Nothing more is logged: the record waiting since before the second output
    // attached is still due to the first at its flush time.
    let later = t0 + Duration::from_millis(150);
    let Poll::Ready(Some(record)) = first.poll_next_at(&mut cx, later) else {
        panic!("the waiting record was not handed out when due");
    };
    assert_eq!(tags(&[header.to_vec(), record.to_vec()].concat()), [1]);
}

#[test]
fn a_late_output_is_not_left_due_by_records_before_it() {
    let capture = Capture::new();
    let _first = capture.subscribe(Options::default());
    log(&capture, 1); // waits in a shard, before the late output's cursor
    let mut late = capture.subscribe(Options::default());
    let mut cx = Context::from_waker(Waker::noop());
    let t0 = Instant::now();
    let Poll::Ready(Some(_header)) = late.poll_next_at(&mut cx, t0) else {
        panic!("the header comes first");
    };
    assert!(late.poll_next_at(&mut cx, t0).is_pending());
    let later = t0 + Duration::from_millis(150);
    assert!(
        late.poll_next_at(&mut cx, later).is_pending(),
        "nothing of its own"
    );
    // A timer armed for a deadline already past would fire at once, for ever.
    assert!(
        late.poll_timeout().is_none_or(|due| due > later),
        "still due at {:?}",
        late.poll_timeout()
    );
}

#[test]
fn records_keep_their_order_across_threads() {
    // Two threads log in turn, each after the other's record and with a later time, as
    // a clock read at each packet gives: every output must show the records in the
    // order they were logged, whichever thread logged them.
    let capture = Capture::builder().batch_bytes(4096).build();
    let mut output = capture.subscribe(Options::default());
    let (to_b, from_a) = std::sync::mpsc::channel::<u32>();
    let (to_a, from_b) = std::sync::mpsc::channel::<u32>();
    let log_n = |capture: &Capture, n: u32| {
        let when = UNIX_EPOCH + Duration::from_micros(u64::from(n));
        capture.log_packet(Path::FromLocal, when, &n.to_le_bytes().repeat(10));
    };
    std::thread::scope(|scope| {
        let capture = &capture;
        scope.spawn(move || {
            for n in (0..2000).step_by(2) {
                log_n(capture, n);
                to_b.send(n + 1).unwrap();
                if from_b.recv().is_err() {
                    break;
                }
            }
        });
        scope.spawn(move || {
            while let Ok(n) = from_a.recv() {
                log_n(capture, n);
                let _ = to_a.send(n + 1);
            }
        });
    });
    capture.close();
    let file = support::parse(&drain(&mut output));
    let order: Vec<u32> = file
        .records
        .iter()
        .map(|r| u32::from_le_bytes(r.packet[..4].try_into().unwrap()))
        .collect();
    assert_eq!(order, (0..2000).collect::<Vec<_>>());
}

#[test]
fn threads_log_while_outputs_come_and_go() {
    const THREADS: u8 = 4;
    const PER_THREAD: u32 = 20_000;
    let capture = Capture::builder()
        .batch_bytes(8192)
        .backlog_bytes(64 << 10)
        .build();
    let done = Arc::new(AtomicBool::new(false));
    let loggers: Vec<_> = (0..THREADS)
        .map(|t| {
            let capture = capture.clone();
            std::thread::spawn(move || {
                for seq in 0..PER_THREAD {
                    let mut packet = vec![t; 8 + (seq as usize % 300)];
                    packet[1..5].copy_from_slice(&seq.to_le_bytes());
                    capture.log_packet(Path::from(u16::from(t % 4)), UNIX_EPOCH, &packet);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..6)
        .map(|r| {
            let capture = capture.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let formats = [Format::Pcap, Format::RawIp, Format::Pcapng];
                let mut rounds = 0;
                while !done.load(Ordering::Relaxed) || rounds == 0 {
                    rounds += 1;
                    let options = Options::new().format(formats[(r + rounds) % 3]);
                    let mut output = capture.subscribe(options);
                    let mut bytes = Vec::new();
                    // Read a while, then detach mid-stream (or at the end, once closed).
                    for _ in 0..(50 + 37 * r) {
                        match block_on(output.next()) {
                            Some(b) => bytes.extend_from_slice(&b),
                            None => break,
                        }
                    }
                    let lost = output.dropped();
                    drop(output);
                    let file = support::parse(&bytes);
                    let mut last = [None::<u32>; THREADS as usize];
                    let mut gaps = 0;
                    for record in &file.records {
                        let thread = record.packet[0] as usize;
                        let seq = u32::from_le_bytes(record.packet[1..5].try_into().unwrap());
                        assert!(
                            last[thread].is_none_or(|prev| seq > prev),
                            "order kept per thread"
                        );
                        gaps += last[thread].map_or(0, |prev| u64::from(seq - prev - 1));
                        last[thread] = Some(seq);
                    }
                    // Every record missing between two that arrived was counted as lost.
                    assert!(gaps <= lost, "{gaps} records missing, {lost} counted");
                }
            })
        })
        .collect();
    for logger in loggers {
        logger.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    capture.close();
    for reader in readers {
        reader.join().expect("a reader's checks failed");
    }
    assert_eq!(capture.num_outputs(), 0);
}

/// Logs a packet when its thread's locals are torn down.
struct LogsOnExit(Capture);

impl Drop for LogsOnExit {
    fn drop(&mut self) {
        log(&self.0, 9);
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<LogsOnExit>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_record_lost_after_the_last_one_is_counted_and_the_stream_ends() {
    let capture = Capture::new();
    let mut output = capture.subscribe(Options::new().format(Format::Pcapng));
    let mut cx = Context::from_waker(Waker::noop());
    let mut bytes = Vec::new();
    let (logged, exit) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
    let datapath = capture.clone();
    let thread = std::thread::spawn(move || {
        // Made before the thread's ring: torn down after it, so its record finds no
        // ring to go to.
        ON_EXIT.with_borrow_mut(|slot| *slot = Some(LogsOnExit(datapath.clone())));
        log(&datapath, 1);
        logged.0.send(()).unwrap();
        let _ = exit.1.recv();
    });
    logged.1.recv().unwrap();
    // The reader takes record 1 before the thread's last record is lost.
    while let Poll::Ready(Some(b)) = output.poll_next(&mut cx) {
        bytes.extend_from_slice(&b);
    }
    exit.0.send(()).unwrap();
    thread.join().unwrap(); // waits for the thread's locals to be torn down
    capture.close();
    loop {
        match output.poll_next(&mut cx) {
            Poll::Ready(Some(b)) => bytes.extend_from_slice(&b),
            Poll::Ready(None) => break,
            Poll::Pending => panic!("closed, and the stream waits for more"),
        }
    }
    let file = support::parse(&bytes);
    assert_eq!(file.records.len(), 1);
    assert_eq!(
        output.dropped(),
        1,
        "the record logged at exit is counted lost"
    );
    assert_eq!(capture.num_outputs(), 0, "the stream ended");
}
