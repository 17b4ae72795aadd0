//! A subscription with a smol timer for its flush schedule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::Timer;
use bytes::Bytes;
use pcapcast_core::Subscription;

/// A [`Subscription`] whose held-back records are handed out when the core's flush
/// schedule says so, with an `async-io` timer to wake the task then.
#[derive(Debug)]
pub struct Timed {
    subscription: Subscription,
    timer: Timer,
}

impl Timed {
    /// Wraps a subscription.
    pub fn new(subscription: Subscription) -> Timed {
        Timed {
            subscription,
            timer: Timer::never(),
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
            self.timer.set_at(due);
            if Pin::new(&mut self.timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
