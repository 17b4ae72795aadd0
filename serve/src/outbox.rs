//! Classic pcap records on their way into a connection that may fail: what a failed
//! connection leaves unwritten waits for the next one, and only the record it cut
//! mid-way is lost.

use std::collections::VecDeque;
use std::io;

use bytes::Bytes;
use hyper::rt::Write;
use pcapcast_core::pcap::RECORD_HEADER_LEN;

use crate::write::write_some;

/// Pieces of an output's stream, each made of whole classic pcap records (the
/// little-endian layout the core's encoder writes), and how much of the first one a
/// connection has taken.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pieces: VecDeque<Bytes>,
    /// Bytes of the front piece already written.
    written: usize,
}

/// Where each record of `piece` ends. A length that runs past the piece (which the
/// encoder never writes) ends the walk, so a bad piece is never read out of bounds.
fn record_ends(piece: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let header = piece.get(at..at + RECORD_HEADER_LEN)?;
        let incl = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        let end = at + RECORD_HEADER_LEN + usize::try_from(incl).ok()?;
        (end <= piece.len()).then(|| {
            at = end;
            end
        })
    })
}

impl Outbox {
    /// Queues whole records.
    pub(crate) fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.pieces.push_back(piece);
        }
    }

    /// Records queued and not yet written whole.
    pub(crate) fn records(&self) -> u64 {
        let ends = |p: &Bytes| record_ends(p).count() as u64;
        let front_done = self.pieces.front().map_or(0, |front| {
            record_ends(front)
                .filter(|end| *end <= self.written)
                .count() as u64
        });
        self.pieces.iter().map(ends).sum::<u64>() - front_done
    }

    /// Writes everything queued, many pieces per system call, adding the records
    /// written whole to `sent`. On an error the unwritten rest stays queued (see
    /// [`Outbox::cut`]).
    pub(crate) async fn write_to<W: Write + Unpin>(
        &mut self,
        writer: &mut W,
        sent: &mut u64,
    ) -> io::Result<()> {
        while !self.pieces.is_empty() {
            let mut n = write_some(writer, &self.pieces, self.written).await?;
            while let Some(front) = self.pieces.front() {
                let left = front.len() - self.written;
                if n < left {
                    self.written += n;
                    break;
                }
                n -= left;
                // Records of a piece are counted once it is all written (or in `cut`,
                // which drops the ones it counts).
                *sent += record_ends(front).count() as u64;
                self.pieces.pop_front();
                self.written = 0;
            }
        }
        Ok(())
    }

    /// After a connection failed: the records of the front piece that went out whole
    /// are counted in `sent` and dropped from the queue, and a record the failure cut
    /// mid-way is dropped too, so that the next connection starts on a record. Returns
    /// the records cut: 0 or 1.
    pub(crate) fn cut(&mut self, sent: &mut u64) -> u64 {
        let Some(front) = self.pieces.front_mut() else {
            return 0;
        };
        if self.written == 0 {
            return 0;
        }
        let written = std::mem::take(&mut self.written);
        let mut start = 0;
        let mut cut = 0;
        for end in record_ends(front) {
            if end <= written {
                *sent += 1;
            } else if start < written {
                cut = 1;
            } else {
                break;
            }
            start = end;
        }
        let rest = front.slice(start..);
        if rest.is_empty() {
            self.pieces.pop_front();
        } else {
            *front = rest;
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use bytes::BytesMut;
    use pcapcast_core::{Encoder, Options, Path};

    use super::*;
    use crate::test_writer::PartialWriter;

    /// `n` seed-format records of 30-byte packets (48 bytes each).
    fn records(n: usize) -> Bytes {
        let encoder = Encoder::new(Options::default());
        let mut out = BytesMut::new();
        for _ in 0..n {
            encoder.put_record(&mut out, Path::FromPeer, std::time::UNIX_EPOCH, &[0x45; 30]);
        }
        out.freeze()
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
        }
    }

    #[test]
    fn a_failure_mid_record_loses_that_record_alone() {
        let mut outbox = Outbox::default();
        outbox.push(records(3));
        outbox.push(records(2));
        assert_eq!(outbox.records(), 5);
        let mut sent = 0;
        // One record and half of the next one get through.
        let mut writer = PartialWriter::new(48 + 20);
        assert!(block_on(outbox.write_to(&mut writer, &mut sent)).is_err());
        assert_eq!(outbox.cut(&mut sent), 1);
        assert_eq!(sent, 1);
        assert_eq!(outbox.records(), 3, "the untouched records wait");
        let mut next = PartialWriter::new(usize::MAX);
        block_on(outbox.write_to(&mut next, &mut sent)).unwrap();
        assert_eq!(sent, 4);
        assert_eq!(
            next.taken.len(),
            3 * 48,
            "the next connection gets whole records"
        );
        assert_eq!(outbox.records(), 0);
    }

    #[test]
    fn a_failure_on_a_boundary_cuts_nothing() {
        let mut outbox = Outbox::default();
        outbox.push(records(4));
        let mut sent = 0;
        let mut writer = PartialWriter::new(2 * 48);
        assert!(block_on(outbox.write_to(&mut writer, &mut sent)).is_err());
        assert_eq!(outbox.cut(&mut sent), 0);
        assert_eq!((sent, outbox.records()), (2, 2));
    }

    #[test]
    fn a_bad_length_never_reads_past_the_piece() {
        let mut piece = records(2).to_vec();
        piece[48 + 8..48 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(record_ends(&piece).collect::<Vec<_>>(), [48]);
    }
}
