//! The wakers of `Stream` readers parked for the next record. The datapath takes them
//! out under the lock and wakes them after releasing it: a woken reader that runs at
//! once (on the datapath's CPU, preempting it) never blocks on a lock the datapath
//! still holds. (event-listener wakes under its list lock: each park then cost two
//! futex wakes and two context switches.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::Waker;

use crate::log::lock;

/// Parked readers' wakers, and a count of wake-ups so a reader tells it was woken.
#[derive(Debug, Default)]
pub(crate) struct RecordWaiters {
    wakers: Mutex<Vec<Waker>>,
    wakes: AtomicU64,
}

impl RecordWaiters {
    /// Registers `waker` (once, however often the task polls); returns the wake-up
    /// count to compare with [`RecordWaiters::woken_since`].
    pub(crate) fn register(&self, waker: &Waker) -> u64 {
        let mut wakers = lock(&self.wakers);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
        // Read under the lock: a wake that took this waker out has counted already.
        self.wakes.load(Ordering::Acquire)
    }

    /// Whether a wake-up came since the registration that returned `seen`.
    pub(crate) fn woken_since(&self, seen: u64) -> bool {
        self.wakes.load(Ordering::Acquire) != seen
    }

    /// Wakes every parked reader, outside the lock.
    pub(crate) fn wake_all(&self) {
        let wakers = {
            let mut wakers = lock(&self.wakers);
            self.wakes.fetch_add(1, Ordering::AcqRel);
            std::mem::take(&mut *wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}
