//! Waiting on a runtime: for a deadline, and for a descriptor to be readable.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use hyper::rt::{Sleep, Timer};

use crate::Runtime;

/// Resolves at `at`.
pub(crate) async fn sleep_until<R: Runtime>(at: Instant) {
    R::Timer::default().sleep_until(at).await;
}

/// Resolves once `readiness` may be readable.
pub(crate) async fn readable<R: Runtime>(runtime: &R, readiness: &R::Readiness) -> io::Result<()> {
    poll_fn(|cx| runtime.poll_readable(readiness, cx)).await
}

/// Lets the executor run other tasks once, then resumes.
pub(crate) async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if std::mem::replace(&mut yielded, true) {
            return Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

/// A deadline that can move, on one timer: re-armed only when the deadline changes or
/// the timer has fired (a fired async-io timer stays silent until it is set again).
pub(crate) struct Deadline<T: Timer> {
    timer: T,
    sleep: Option<Pin<Box<dyn Sleep>>>,
    armed_for: Option<Instant>,
}

impl<T: Timer + Default> Deadline<T> {
    pub(crate) fn new() -> Deadline<T> {
        Deadline {
            timer: T::default(),
            sleep: None,
            armed_for: None,
        }
    }

    /// Ready once `at` has passed; wakes the task then.
    pub(crate) fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = match (&mut self.sleep, self.armed_for) {
            (Some(sleep), Some(armed)) if armed == at => sleep,
            (Some(sleep), _) => {
                self.timer.reset(sleep, at);
                sleep
            }
            (sleep @ None, _) => sleep.insert(self.timer.sleep_until(at)),
        };
        self.armed_for = Some(at);
        let fired = sleep.as_mut().poll(cx);
        if fired.is_ready() {
            self.armed_for = None;
        }
        fired
    }
}

impl<T: Timer> std::fmt::Debug for Deadline<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("armed_for", &self.armed_for)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Waker;
    use std::time::Duration;

    use super::*;

    /// A timer whose sleeps fire once, when the test says so, and stay silent after
    /// that until reset: async-io's one-shot timers behave so.
    #[derive(Clone, Default)]
    struct OneShot(Arc<AtomicUsize>);

    struct Shot {
        at: Instant,
        fired: bool,
        now: Arc<AtomicUsize>,
    }

    impl Future for Shot {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            let now = START.get_or_init(Instant::now).to_owned()
                + Duration::from_millis(self.now.load(Ordering::SeqCst) as u64);
            if !self.fired && now >= self.at {
                self.fired = true;
                return Poll::Ready(());
            }
            Poll::Pending
        }
    }

    impl Sleep for Shot {}

    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

    impl Timer for OneShot {
        fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
            self.sleep_until(Instant::now() + duration)
        }
        fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Sleep>> {
            Box::pin(Shot {
                at,
                fired: false,
                now: Arc::clone(&self.0),
            })
        }
    }

    #[test]
    fn a_fired_timer_is_set_again_for_the_same_deadline() {
        let start = *START.get_or_init(Instant::now);
        let mut deadline = Deadline::<OneShot>::new();
        let clock = Arc::clone(&deadline.timer.0);
        let mut cx = Context::from_waker(Waker::noop());
        let at = start + Duration::from_millis(5);
        assert!(deadline.poll_at(at, &mut cx).is_pending());
        clock.store(5, Ordering::SeqCst);
        assert!(deadline.poll_at(at, &mut cx).is_ready());
        // Asked again for the deadline that fired: a timer left as it was would never
        // fire again, and the output would wait for some other wake-up.
        assert!(deadline.poll_at(at, &mut cx).is_ready());
        let later = start + Duration::from_millis(9);
        assert!(deadline.poll_at(later, &mut cx).is_pending());
        clock.store(9, Ordering::SeqCst);
        assert!(deadline.poll_at(later, &mut cx).is_ready());
    }
}
