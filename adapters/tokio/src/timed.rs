//! A subscription with a tokio timer for its flush schedule.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use pcapcast_core::Subscription;
use tokio::time::Sleep;

/// A [`Subscription`] whose held-back records are handed out when the core's flush
/// schedule says so, with a tokio timer to wake the task then.
#[derive(Debug)]
pub struct Timed {
    subscription: Subscription,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Timed {
    /// Wraps a subscription.
    pub fn new(subscription: Subscription) -> Timed {
        Timed {
            subscription,
            timer: None,
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
            let due = tokio::time::Instant::from_std(due);
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            // Re-arming touches the timer wheel; skip it when the deadline stands.
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}
