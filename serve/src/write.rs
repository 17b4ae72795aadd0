//! Streaming one output into a writer.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::{Buf, Bytes};
use hyper::rt::Write;
use pcapcast_core::delivered::Delivered;
use pcapcast_core::{OutputStats, Subscription, WriteError};

use crate::stall::{evicted, OnStall, Stalling, STALL_LIMIT};
use crate::{Runtime, Timed};

/// Writes one output into `writer` until the capture closes: the file header, then
/// records in few large (vectored) writes, flushed on the core's schedule. At the end
/// it flushes and shuts down the writer and returns the output's counters.
///
/// The glue crates call it with the runtime's own writers (`pcapcast_smol::stream_to`
/// takes a `futures-io` writer, `pcapcast_tokio::stream_to` a tokio one).
///
/// # Errors
///
/// A [`WriteError`] when the writer fails; the output is detached, and the capture and
/// its other outputs go on. So when the output is evicted to make room for a new one
/// (`ConnectionAborted`), or when a write makes no progress for [`STALL_LIMIT`] while
/// the output lags (`TimedOut`).
pub async fn stream_to<R, W>(
    subscription: Subscription,
    writer: W,
) -> Result<OutputStats, WriteError>
where
    R: Runtime,
    W: Write + Unpin,
{
    stream_until::<R, W, _>(subscription, writer, std::future::pending())
        .await
        .0
}

/// [`stream_to`], ended early by `hang_up`'s error if it resolves while the output
/// waits for records; also says what the writer took, which is less than what the
/// output handed out when the writer failed part-way.
pub(crate) async fn stream_until<R, W, H>(
    subscription: Subscription,
    writer: W,
    hang_up: H,
) -> (Result<OutputStats, WriteError>, Delivered)
where
    R: Runtime,
    W: Write + Unpin,
    H: Future<Output = io::Error>,
{
    let watch = Arc::new(Mutex::new(Some(subscription.watch())));
    let mut writer = Stalling::<R, W>::new(writer, watch, STALL_LIMIT, OnStall::DetachIfLagging);
    let mut delivered = Delivered::new(subscription.options().get_format());
    let mut timed = Timed::<R>::new(subscription);
    let mut pieces = VecDeque::new();
    let mut hang_up = pin!(hang_up);
    let result = async {
        while let Some(first) = due_or_hang_up(&mut timed, hang_up.as_mut()).await? {
            pieces.push_back(first);
            while let Some(more) = timed.subscription().next_ready() {
                pieces.push_back(more);
            }
            write_pieces(&mut writer, &mut pieces, &mut delivered).await?;
            poll_fn(|cx| Pin::new(&mut writer).poll_flush(cx)).await?;
        }
        if timed.subscription().is_evicted() {
            return Err(evicted());
        }
        poll_fn(|cx| Pin::new(&mut writer).poll_shutdown(cx)).await
    }
    .await;
    let stats = timed.subscription().stats();
    let result = match result {
        Ok(()) => Ok(stats),
        Err(source) => Err(WriteError { stats, source }),
    };
    (result, delivered)
}

/// The next bytes due, or the hang-up's error. The watch is polled only while nothing
/// is due, so a busy stream does not pay for it.
pub(crate) async fn due_or_hang_up<R, H>(
    timed: &mut Timed<R>,
    mut hang_up: Pin<&mut H>,
) -> io::Result<Option<Bytes>>
where
    R: Runtime,
    H: Future<Output = io::Error>,
{
    poll_fn(|cx| match timed.poll_due(cx) {
        Poll::Ready(due) => Poll::Ready(Ok(due)),
        Poll::Pending => hang_up.as_mut().poll(cx).map(Err),
    })
    .await
}

/// Writes every piece, many per system call, counting what the writer took in
/// `delivered`.
async fn write_pieces<W: Write + Unpin>(
    writer: &mut W,
    pieces: &mut VecDeque<Bytes>,
    delivered: &mut Delivered,
) -> io::Result<()> {
    while !pieces.is_empty() {
        let mut written = write_some(writer, pieces, 0).await?;
        while written > 0 {
            let Some(front) = pieces.front_mut() else {
                break;
            };
            let taken = written.min(front.len());
            delivered.written(&front[..taken]);
            written -= taken;
            if taken == front.len() {
                pieces.pop_front();
            } else {
                front.advance(taken);
            }
        }
    }
    Ok(())
}

/// One vectored write of the queued pieces, the first from byte `skip` on; returns the
/// bytes written, never 0 (a writer that takes nothing is an error).
pub(crate) async fn write_some<W: Write + Unpin>(
    writer: &mut W,
    pieces: &VecDeque<Bytes>,
    skip: usize,
) -> io::Result<usize> {
    const MAX_SLICES: usize = 64;
    let written = poll_fn(|cx| {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let used = pieces
            .iter()
            .enumerate()
            .zip(slices.iter_mut())
            .map(|((i, piece), slice)| {
                let from = if i == 0 { skip.min(piece.len()) } else { 0 };
                *slice = IoSlice::new(&piece[from..]);
            })
            .count();
        Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..used])
    })
    .await?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use pcapcast_core::{Encoder, Format, Options, Path};

    use super::*;
    use crate::test_writer::PartialWriter;

    #[test]
    fn what_a_writer_did_not_take_is_not_counted_as_delivered() {
        let encoder = Encoder::new(Options::default());
        let mut header = BytesMut::new();
        encoder.put_header(&mut header);
        let mut batch = BytesMut::new();
        for _ in 0..1000 {
            // 48 bytes a record: 16 of header, the path, 30 of packet.
            encoder.put_record(
                &mut batch,
                Path::FromPeer,
                std::time::UNIX_EPOCH,
                &[0x45; 30],
            );
        }
        let mut pieces = VecDeque::from([header.freeze(), batch.freeze()]);
        let mut delivered = Delivered::new(Format::Pcap);
        // A few bytes at a time, then it fails.
        let mut writer = PartialWriter::new(24 + 48 * 3 + 20).in_pieces(100);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let result = {
            let written = pin!(write_pieces(&mut writer, &mut pieces, &mut delivered));
            let Poll::Ready(result) = written.poll(&mut cx) else {
                panic!("the writer never waits");
            };
            result
        };
        assert!(result.is_err());
        assert_eq!(
            (delivered.bytes(), delivered.records()),
            (24 + 48 * 3 + 20, 3)
        );
    }
}
