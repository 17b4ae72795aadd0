//! The one hand-off that tells a parked reader of a new record without the datapath
//! taking a lock: a flag raised by readers about to wait, checked by the datapath after
//! each record it publishes.
//!
//! Both sides store, then fence, then load the other side's word (the store-buffering
//! pattern). With a `SeqCst` fence on each side, at least one of them sees the other:
//! either the reader finds the record on its last look, or the datapath finds the flag
//! and wakes it. Without the datapath's fence, a record published just as its reader
//! parks could wait for the next record, which a thread that went quiet never logs.

#[cfg(pcapcast_loom)]
use loom::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
#[cfg(not(pcapcast_loom))]
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

/// Whether some reader waits for the next record, and from which record time on it
/// wants to be woken.
///
/// Waking a reader per record (or per park: a reader that catches up parks every few
/// dozen records) costs a context switch each time, on the datapath's CPU when they
/// share one. So a parked reader is woken once a record's time, the caller's `when`,
/// is its deadline past the newest record it had seen, or a batch's worth waits: the
/// core reads no clock. A reader that had seen nothing, or whose records are older
/// than the deadline, is woken by the next record.
#[derive(Debug)]
pub(crate) struct RecordSignal {
    waiting: AtomicBool,
    /// Record time, in nanoseconds since the epoch, from which a record wakes the
    /// readers: the earliest any waiting reader asked for.
    wake_from: AtomicU64,
}

impl Default for RecordSignal {
    fn default() -> Self {
        RecordSignal::new()
    }
}

impl RecordSignal {
    pub(crate) fn new() -> RecordSignal {
        RecordSignal {
            waiting: AtomicBool::new(false),
            wake_from: AtomicU64::new(u64::MAX),
        }
    }

    /// A reader that found nothing calls this after registering its waker and before
    /// its last look; the look decides whether it parks. A record at `wake_from` or
    /// later (nanoseconds since the epoch, the caller's times) wakes it.
    pub(crate) fn before_last_look(&self, wake_from: u64) {
        self.wake_from.fetch_min(wake_from, Ordering::Relaxed);
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The datapath calls this after publishing a record logged at `when` (nanoseconds
    /// since the epoch); `batch_waiting` says whether a batch's worth waits unread.
    /// `true` means "wake the readers", and only one caller gets it for each raise of
    /// the flag.
    #[inline(always)]
    pub(crate) fn after_publish(&self, when: u64, batch_waiting: impl FnOnce() -> bool) -> bool {
        fence(Ordering::SeqCst);
        if !self.waiting.load(Ordering::Relaxed) {
            return false;
        }
        if when < self.wake_from.load(Ordering::Relaxed) && !batch_waiting() {
            return false;
        }
        // Cleared before the flag: a reader that raises the flag after this keeps its
        // deadline, and one that raised it before is woken now.
        self.wake_from.store(u64::MAX, Ordering::Relaxed);
        self.waiting.swap(false, Ordering::AcqRel)
    }
}

#[cfg(all(test, pcapcast_loom))]
mod tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    /// One datapath thread publishes records at `times` (the last at the deadline or
    /// later) while a reader asks to be woken from `wake_from`: a reader that parks
    /// without having seen the last record must be woken.
    fn model_one_datapath(wake_from: u64, times: &'static [u64]) {
        loom::model(move || {
            let published = Arc::new(AtomicUsize::new(0));
            let signal = Arc::new(RecordSignal::new());
            let datapath = {
                let (published, signal) = (Arc::clone(&published), Arc::clone(&signal));
                thread::spawn(move || {
                    times.iter().fold(false, |woken, &when| {
                        published.fetch_add(1, Ordering::Release);
                        woken | signal.after_publish(when, || false)
                    })
                })
            };
            signal.before_last_look(wake_from);
            let parked = published.load(Ordering::Acquire) < times.len();
            let woken = datapath.join().unwrap();
            assert!(!parked || woken, "the reader parked and nobody woke it");
        });
    }

    /// One record, one reader: if the reader's last look misses the record, the
    /// datapath must be told to wake it.
    #[test]
    fn a_reader_never_parks_past_a_record() {
        model_one_datapath(0, &[1]);
    }

    /// A record before the reader's deadline may leave it parked; one at the
    /// deadline, published by the same thread after it, wakes it.
    #[test]
    fn a_record_at_the_deadline_wakes_a_reader_that_parked_on_an_earlier_one() {
        model_one_datapath(10, &[5, 10]);
    }

    /// Two datapath threads, each publishing one record: a reader that parks without
    /// having seen both is woken by one of them.
    #[test]
    fn two_datapath_threads() {
        loom::model(|| {
            let published = Arc::new(AtomicUsize::new(0));
            let signal = Arc::new(RecordSignal::new());
            let datapaths: Vec<_> = (0..2)
                .map(|_| {
                    let (published, signal) = (Arc::clone(&published), Arc::clone(&signal));
                    thread::spawn(move || {
                        published.fetch_add(1, Ordering::Release);
                        signal.after_publish(1, || false)
                    })
                })
                .collect();
            signal.before_last_look(0);
            let seen = published.load(Ordering::Acquire);
            let woken = datapaths
                .into_iter()
                .map(|d| d.join().unwrap())
                .fold(false, |any, woke| any | woke);
            assert!(seen == 2 || woken, "the reader was left parked");
        });
    }
}
