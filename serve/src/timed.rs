//! A subscription with a runtime's timer for its flush schedule.

use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use pcapcast_core::Subscription;

use crate::wait::Deadline;
use crate::Runtime;

/// A [`Subscription`] whose held-back records are handed out when the core's flush
/// schedule says so, with `R`'s timer to wake the task then.
#[derive(Debug)]
pub struct Timed<R: Runtime> {
    subscription: Subscription,
    deadline: Deadline<R::Timer>,
}

impl<R: Runtime> Timed<R> {
    /// Wraps a subscription.
    pub fn new(subscription: Subscription) -> Timed<R> {
        Timed {
            subscription,
            deadline: Deadline::new(),
        }
    }

    /// The subscription inside.
    pub fn subscription(&mut self) -> &mut Subscription {
        &mut self.subscription
    }

    /// Polls for the next bytes that are due; `None` once the capture closed and
    /// everything was handed out.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        loop {
            if let Poll::Ready(bytes) = self.subscription.poll_next_at(cx, Instant::now()) {
                return Poll::Ready(bytes);
            }
            let Some(due) = self.subscription.poll_timeout() else {
                return Poll::Pending;
            };
            if self.deadline.poll_at(due, cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
