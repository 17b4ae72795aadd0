//! A ring made ahead, off the datapath: a thread that logs for the first time while
//! someone listens takes it instead of allocating a ring and faulting in its pages
//! as it writes (on a fresh ring that was about half the datapath's cost).
//!
//! A thread's ring then lives as long as the thread and the capture: outputs that
//! come and go find it made and faulted in. The first output's attach (or the build,
//! for a capture that retains history) makes a spare; a later attach makes one again
//! only if a thread had to make its own ring since (more threads log than spares were
//! made), so a capture holds at most one ring that no thread uses. Not during a
//! capture: a reader that faults in a ring of hundreds of MiB takes that CPU from the
//! path. The memory goes back with the capture.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::log::{lock, try_lock};
use crate::ring::{self, RingReader, RingWriter};

/// The spare ring and the counts of rings made.
#[derive(Debug, Default)]
pub(crate) struct SpareRing {
    ring: Mutex<Option<(RingWriter, RingReader)>>,
    /// A thread found no spare and made its own ring: the next attach makes a spare.
    wanted: AtomicBool,
    made: AtomicU64,
    made_on_datapath: AtomicU64,
}

impl SpareRing {
    /// Makes the spare if there is none; for attaches and builds, never the datapath.
    pub(crate) fn prepare(&self, capture: u64, capacity: usize) {
        if lock(&self.ring).is_some() {
            return;
        }
        // Made outside the lock: a datapath thread looking for the spare only tries it.
        let made = ring::faulted_in_ring(capture, capacity);
        self.made.fetch_add(1, Ordering::Relaxed);
        let mut spare = lock(&self.ring);
        if spare.is_none() {
            *spare = Some(made);
        }
    }

    /// At an attach: makes the spare if no ring was made yet or a thread had to
    /// make its own since the last one.
    pub(crate) fn prepare_for_attach(&self, capture: u64, capacity: usize) {
        if self.made() == 0 || self.wanted.swap(false, Ordering::Relaxed) {
            self.prepare(capture, capacity);
        }
    }

    /// The datapath's ring for a thread: the spare if it is there and free, else a
    /// fresh ring.
    pub(crate) fn take_or_make(&self, capture: u64, capacity: usize) -> (RingWriter, RingReader) {
        let spare = try_lock(&self.ring).and_then(|mut spare| spare.take());
        spare.unwrap_or_else(|| {
            self.wanted.store(true, Ordering::Relaxed);
            self.made.fetch_add(1, Ordering::Relaxed);
            self.made_on_datapath.fetch_add(1, Ordering::Relaxed);
            ring::ring(capture, capacity)
        })
    }

    /// Rings made, spares included.
    pub(crate) fn made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    /// Rings a datapath thread had to make itself, finding no spare.
    pub(crate) fn made_on_datapath(&self) -> u64 {
        self.made_on_datapath.load(Ordering::Relaxed)
    }
}
