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

/// A deadline that can move, on one timer: re-armed only when the deadline changes.
pub(crate) struct Deadline<R: Runtime> {
    timer: R::Timer,
    sleep: Option<(Instant, Pin<Box<dyn Sleep>>)>,
}

impl<R: Runtime> Deadline<R> {
    pub(crate) fn new() -> Deadline<R> {
        Deadline {
            timer: R::Timer::default(),
            sleep: None,
        }
    }

    /// Ready once `at` has passed; wakes the task then.
    pub(crate) fn poll_at(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let (deadline, sleep) = self
            .sleep
            .get_or_insert_with(|| (at, self.timer.sleep_until(at)));
        if *deadline != at {
            self.timer.reset(sleep, at);
            *deadline = at;
        }
        sleep.as_mut().poll(cx)
    }
}

impl<R: Runtime> std::fmt::Debug for Deadline<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("at", &self.sleep.as_ref().map(|(at, _)| at))
            .finish()
    }
}
