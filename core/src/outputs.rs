//! The attached outputs' progress: when the output limit is reached, the output furthest
//! behind among those that have already lost records to lag gives way to the new one.
//!
//! Nothing here is on the datapath: the count it reads stays in `Hot::state`. A stalled
//! output is told without a clock: its cursor is behind the backlog's oldest record.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::capture::Shared;
use crate::log::lock;

/// The output counts in `Hot::state`.
const ATTACHED: u8 = 0;
/// The output detached itself and gave its count back.
const DETACHED: u8 = 1;
/// The output was detached for being stalled: its count went to whoever detached it.
const EVICTED: u8 = 2;

/// One attached output's progress, shared by its [`Subscription`](crate::Subscription)
/// and the registry.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Sequence number of the next record the output will read.
    cursor: AtomicU64,
    state: AtomicU8,
    /// The task to wake on eviction: a writer whose write is pending.
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    pub(crate) fn set_cursor(&self, cursor: u64) {
        self.cursor.store(cursor, Ordering::Relaxed);
    }

    pub(crate) fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) == EVICTED
    }

    /// Gives the output's count back unless it was evicted (then its count is gone
    /// already); says whether the caller must decrement the count.
    pub(crate) fn detach(&self) -> bool {
        self.state
            .compare_exchange(ATTACHED, DETACHED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn evict(&self) -> bool {
        let evicted = self
            .state
            .compare_exchange(ATTACHED, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            if let Some(waker) = lock(&self.waker).take() {
                waker.wake();
            }
        }
        evicted
    }

    fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_evicted() {
            return Poll::Ready(());
        }
        let mut waker = lock(&self.waker);
        match waker.as_mut() {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => *waker = Some(cx.waker().clone()),
        }
        drop(waker);
        // Evicted between the check and the registration: the waker may have been missed.
        match self.is_evicted() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

/// What [`Outputs::evict_most_stalled`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Room {
    /// An output was evicted; its count is the caller's now.
    Made,
    /// The chosen output detached itself meanwhile: its count is free, try again.
    Freed,
    /// No output lags.
    None,
}

/// The registry of attached outputs.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Outputs detached for being stalled: evicted, or by a writer's stall limit.
    stalled_detached: AtomicU64,
}

impl Outputs {
    pub(crate) fn register(&self, cursor: u64) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            cursor: AtomicU64::new(cursor),
            state: AtomicU8::new(ATTACHED),
            waker: Mutex::new(None),
        });
        lock(&self.slots).push(Arc::clone(&slot));
        slot
    }

    pub(crate) fn remove(&self, slot: &Arc<Slot>) {
        let mut slots = lock(&self.slots);
        if let Some(at) = slots.iter().position(|s| Arc::ptr_eq(s, slot)) {
            slots.swap_remove(at);
        }
    }

    /// Evicts the output furthest behind among those whose cursor is before `oldest`,
    /// the backlog's oldest record: outputs that have lost records to lag.
    pub(crate) fn evict_most_stalled(&self, oldest: u64) -> Room {
        let mut slots = lock(&self.slots);
        let most_stalled = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state.load(Ordering::Acquire) == ATTACHED)
            .map(|(at, s)| (at, s.cursor.load(Ordering::Relaxed)))
            .filter(|(_, cursor)| *cursor < oldest)
            .min_by_key(|(_, cursor)| *cursor);
        let Some((at, _)) = most_stalled else {
            return Room::None;
        };
        let slot = slots.swap_remove(at);
        drop(slots);
        if !slot.evict() {
            return Room::Freed;
        }
        self.stalled_detached.fetch_add(1, Ordering::Relaxed);
        Room::Made
    }

    /// The cursor of the attached output furthest behind, `end` when none is attached;
    /// `None` when the registry is busy: the datapath asks and never waits.
    pub(crate) fn slowest_cursor(&self, end: u64) -> Option<u64> {
        let slots = crate::log::try_lock(&self.slots)?;
        let slowest = slots
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) == ATTACHED)
            .map(|s| s.cursor.load(Ordering::Relaxed))
            .min();
        Some(slowest.unwrap_or(end))
    }

    pub(crate) fn stalled_detached(&self) -> u64 {
        self.stalled_detached.load(Ordering::Relaxed)
    }
}

/// A handle on one output's attachment, for its writer: whether the output was evicted
/// (a new output took its place while it lagged), whether it lags, and a way to detach
/// it for being stalled. Held apart from the [`Subscription`](crate::Subscription), it
/// lets a writer whose write is pending notice an eviction.
#[derive(Clone, Debug)]
pub struct OutputWatch {
    shared: Arc<Shared>,
    slot: Option<Arc<Slot>>,
}

impl OutputWatch {
    pub(crate) fn new(shared: Arc<Shared>, slot: Option<Arc<Slot>>) -> OutputWatch {
        OutputWatch { shared, slot }
    }

    /// Whether the output was detached for being stalled.
    pub fn is_evicted(&self) -> bool {
        self.slot.as_ref().is_some_and(|slot| slot.is_evicted())
    }

    /// Ready once the output is detached for being stalled; wakes the task then.
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.slot {
            Some(slot) => slot.poll_evicted(cx),
            None => Poll::Pending,
        }
    }

    /// Whether the output lags: it has not read records the backlog no longer holds.
    pub fn is_lagging(&self) -> bool {
        let Some(slot) = &self.slot else {
            return false;
        };
        let oldest = self.shared.lock_log().oldest().0;
        slot.cursor.load(Ordering::Relaxed) < oldest
    }

    /// Detaches the output for being stalled (its writer made no progress for too
    /// long): its count is given back at once, its stream ends, and
    /// [`CaptureStats::stalled_detached`](crate::CaptureStats::stalled_detached) counts
    /// it. Says whether it was still attached.
    pub fn detach_stalled(&self) -> bool {
        let Some(slot) = &self.slot else {
            return false;
        };
        if !slot.evict() {
            return false;
        }
        self.shared.outputs.remove(slot);
        self.shared
            .outputs
            .stalled_detached
            .fetch_add(1, Ordering::Relaxed);
        self.shared.detach();
        self.shared.wake_readers();
        true
    }
}
