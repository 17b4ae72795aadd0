//! Streaming one output into a writer.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::task::Poll;

use bytes::{Buf, Bytes};
use pcapcast_core::{OutputStats, Subscription, WriteError};
use std::future::poll_fn;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::Timed;

/// Writes one output into `writer` until the capture closes: the file header, then
/// records in few large (vectored) writes, flushed on the core's schedule. At the end
/// it flushes and shuts down the writer and returns the output's counters.
///
/// # Errors
///
/// A [`WriteError`] when the writer fails; the output is detached, and the capture and
/// its other outputs go on.
pub async fn stream_to<W>(subscription: Subscription, writer: W) -> Result<OutputStats, WriteError>
where
    W: AsyncWrite + Unpin,
{
    stream_until(subscription, writer, std::future::pending()).await
}

/// [`stream_to`], ended early by `hang_up`'s error if it resolves while the output
/// waits for records.
pub(crate) async fn stream_until<W, H>(
    subscription: Subscription,
    mut writer: W,
    hang_up: H,
) -> Result<OutputStats, WriteError>
where
    W: AsyncWrite + Unpin,
    H: Future<Output = io::Error>,
{
    let mut timed = Timed::new(subscription);
    let mut pieces = VecDeque::new();
    let mut hang_up = pin!(hang_up);
    let result = async {
        while let Some(first) = due_or_hang_up(&mut timed, hang_up.as_mut()).await? {
            pieces.push_back(first);
            while let Some(more) = timed.subscription().next_ready() {
                pieces.push_back(more);
            }
            write_pieces(&mut writer, &mut pieces).await?;
            writer.flush().await?;
        }
        writer.shutdown().await
    }
    .await;
    let stats = timed.subscription().stats();
    match result {
        Ok(()) => Ok(stats),
        Err(source) => Err(WriteError { stats, source }),
    }
}

/// The next bytes due, or the hang-up's error. The watch is polled only while nothing
/// is due, so a busy stream does not pay for it.
async fn due_or_hang_up<H>(timed: &mut Timed, mut hang_up: Pin<&mut H>) -> io::Result<Option<Bytes>>
where
    H: Future<Output = io::Error>,
{
    poll_fn(|cx| match timed.poll_due(cx) {
        Poll::Ready(due) => Poll::Ready(Ok(due)),
        Poll::Pending => hang_up.as_mut().poll(cx).map(Err),
    })
    .await
}

/// Writes every piece, many per system call.
async fn write_pieces<W: AsyncWrite + Unpin>(
    writer: &mut W,
    pieces: &mut VecDeque<Bytes>,
) -> io::Result<()> {
    const MAX_SLICES: usize = 64;
    while !pieces.is_empty() {
        let slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .take(MAX_SLICES)
            .map(|p| IoSlice::new(p))
            .collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = pieces.front_mut() else {
                break;
            };
            if written >= front.len() {
                written -= front.len();
                pieces.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    Ok(())
}
