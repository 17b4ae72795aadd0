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
use loom::sync::atomic::{fence, AtomicBool, Ordering};
#[cfg(not(pcapcast_loom))]
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// Whether some reader waits for the next record.
#[derive(Debug, Default)]
pub(crate) struct RecordSignal {
    waiting: AtomicBool,
}

impl RecordSignal {
    pub(crate) fn new() -> RecordSignal {
        RecordSignal {
            waiting: AtomicBool::new(false),
        }
    }

    /// A reader that found nothing calls this after registering its listener and
    /// before its last look; the look decides whether it parks.
    pub(crate) fn before_last_look(&self) {
        self.waiting.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// The datapath calls this after publishing a record; `true` means "wake the
    /// readers", and only one caller gets it for each raise of the flag.
    #[inline(always)]
    pub(crate) fn after_publish(&self) -> bool {
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::AcqRel)
    }
}

#[cfg(all(test, pcapcast_loom))]
mod tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread;

    /// One record, one reader: if the reader's last look misses the record, the
    /// datapath must be told to wake it.
    #[test]
    fn a_reader_never_parks_past_a_record() {
        loom::model(|| {
            let published = Arc::new(AtomicUsize::new(0));
            let signal = Arc::new(RecordSignal::new());
            let datapath = {
                let (published, signal) = (Arc::clone(&published), Arc::clone(&signal));
                thread::spawn(move || {
                    published.store(1, Ordering::Release);
                    signal.after_publish()
                })
            };
            signal.before_last_look();
            let parked = published.load(Ordering::Acquire) == 0;
            let woken = datapath.join().unwrap();
            assert!(!parked || woken, "the reader parked and nobody woke it");
        });
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
                        signal.after_publish()
                    })
                })
                .collect();
            signal.before_last_look();
            let seen = published.load(Ordering::Acquire);
            let woken = datapaths
                .into_iter()
                .map(|d| d.join().unwrap())
                .fold(false, |any, woke| any | woke);
            assert!(seen == 2 || woken, "the reader was left parked");
        });
    }
}
