//! The response body of a capture: the output's bytes on the core's flush schedule.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use pcapcast_core::endpoint::Peer;
use pcapcast_core::Subscription;

use crate::{Runtime, Timed, LOG_TARGET};

/// The response body of a capture: the output's bytes, handed out on the core's flush
/// schedule.
#[derive(Debug)]
pub struct CaptureBody<R: Runtime> {
    timed: Timed<R>,
    peer: Peer,
}

impl<R: Runtime> CaptureBody<R> {
    /// A body streaming `subscription`; `peer` is named in the detach log.
    pub fn new(subscription: Subscription, peer: Peer) -> CaptureBody<R> {
        CaptureBody {
            timed: Timed::new(subscription),
            peer,
        }
    }
}

impl<R: Runtime> Body for CaptureBody<R> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .timed
            .poll_due(cx)
            .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }
}

impl<R: Runtime> Drop for CaptureBody<R> {
    fn drop(&mut self) {
        let stats = self.timed.subscription().stats();
        // Handed to hyper, which may not have written it all to the socket yet: named
        // so, since the body cannot see what the connection took.
        tracing::info!(
            target: LOG_TARGET,
            peer = %self.peer,
            queued_records = stats.records,
            queued_bytes = stats.bytes,
            dropped = stats.dropped,
            "capture detached"
        );
    }
}
