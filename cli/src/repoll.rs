//! A future polled again at once when it wakes itself while being polled, instead of
//! telling the runtime. hyper's client hands each body frame from its connection to
//! the body through a channel that wakes the task: on smol (async-io's `block_on`)
//! every such wake made a round of the reactor, five system calls a frame.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// How many times in a row a future that keeps waking itself is polled before the
/// runtime gets its turn (its timers and I/O events).
const MAX_REPOLLS: usize = 64;

/// Polls `future`, again at once while it woke itself during the poll.
pub fn repolled<F: Future>(future: F) -> Repolled<F> {
    Repolled {
        future: Box::pin(future),
        waker: Arc::new(SelfWake::default()),
    }
}

/// See [`repolled`].
pub struct Repolled<F> {
    future: Pin<Box<F>>,
    waker: Arc<SelfWake>,
}

#[derive(Default)]
struct SelfWake {
    /// Set while the future is being polled: a wake then only marks `woken`.
    polling: AtomicBool,
    woken: AtomicBool,
    /// The runtime's waker, for the wakes that come between polls.
    outer: Mutex<Option<Waker>>,
}

impl Wake for SelfWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            if let Some(outer) = self.outer.lock().ok().and_then(|w| w.clone()) {
                outer.wake();
            }
        }
    }
}

impl<F: Future> Future for Repolled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        if let Ok(mut outer) = this.waker.outer.lock() {
            if !outer.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *outer = Some(cx.waker().clone());
            }
        }
        let waker = Waker::from(Arc::clone(&this.waker));
        let mut inner = Context::from_waker(&waker);
        for _ in 0..MAX_REPOLLS {
            this.waker.woken.store(false, Ordering::SeqCst);
            this.waker.polling.store(true, Ordering::SeqCst);
            let polled = this.future.as_mut().poll(&mut inner);
            this.waker.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() {
                return polled;
            }
            if !this.waker.woken.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        // Still waking itself: the runtime's turn, then this is polled again.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wakes the runtime hears.
    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn self_wakes_are_polled_at_once_and_others_reach_the_runtime() {
        // Wakes itself 10 times, then waits for a wake from outside.
        let outside: Arc<Mutex<Option<Waker>>> = Arc::default();
        let mut left = 10;
        let mut done = false;
        let stash = Arc::clone(&outside);
        let future = std::future::poll_fn(move |cx| {
            if done {
                return Poll::Ready(());
            }
            if left > 0 {
                left -= 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            *stash.lock().unwrap() = Some(cx.waker().clone());
            done = true;
            Poll::Pending
        });
        let runtime = Arc::new(Counted::default());
        let waker = Waker::from(Arc::clone(&runtime));
        let mut cx = Context::from_waker(&waker);
        let mut future = repolled(future);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        assert_eq!(
            runtime.0.load(Ordering::SeqCst),
            0,
            "self-wakes stay inside"
        );
        let from_outside = outside.lock().unwrap().take().unwrap();
        from_outside.wake();
        assert_eq!(
            runtime.0.load(Ordering::SeqCst),
            1,
            "an outside wake reaches it"
        );
        assert!(Pin::new(&mut future).poll(&mut cx).is_ready());
    }
}
