//! Streaming one output into a writer.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

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
pub async fn stream_to<W>(
    subscription: Subscription,
    mut writer: W,
) -> Result<OutputStats, WriteError>
where
    W: AsyncWrite + Unpin,
{
    let mut timed = Timed::new(subscription);
    let mut pieces = VecDeque::new();
    let result = async {
        while let Some(first) = poll_fn(|cx| timed.poll_due(cx)).await {
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
