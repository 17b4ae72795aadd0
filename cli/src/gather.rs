//! What a recorder has to write, gathered for one `writev`: slices of the chunks
//! received, where they are big enough to be worth an entry of their own, and the rest
//! (record heads, small records) copied into one reused buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

/// Received bytes shorter than this are copied rather than written from where they lie:
/// so that small packets do not make one `writev` entry each.
pub const SLICE_FROM: usize = 1024;
/// At most this many entries in one `writev` (Linux takes up to 1024).
const MAX_PIECES: usize = 1024;

#[derive(Debug)]
enum Piece {
    /// Received bytes, written from where they lie.
    Received(Bytes),
    /// A part of the copy buffer.
    Copied(Range<usize>),
}

/// Bytes waiting to be written, in order.
#[derive(Debug, Default)]
pub struct Gather {
    pieces: VecDeque<Piece>,
    /// Copied bytes; emptied, and its space reused, once all is written: fresh
    /// memory for every chunk would cost page faults.
    copied: BytesMut,
    len: usize,
    /// Some piece refers to received bytes, which the client's reader cannot reuse
    /// until they are written.
    holds_received: bool,
}

impl Gather {
    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether received bytes wait here: written at the end of the chunk, they are
    /// given back to the reader for its next read.
    pub fn holds_received(&self) -> bool {
        self.holds_received
    }

    /// Adds received bytes: from where they lie, or copied when short.
    pub fn push_received(&mut self, bytes: Bytes) {
        if bytes.len() < SLICE_FROM {
            self.push_copied(|copy| copy.extend_from_slice(&bytes));
            return;
        }
        self.len += bytes.len();
        self.holds_received = true;
        self.pieces.push_back(Piece::Received(bytes));
    }

    /// Adds what `write` appends to the copy buffer; returns what it returned.
    pub fn push_copied<T>(&mut self, write: impl FnOnce(&mut BytesMut) -> T) -> T {
        let start = self.copied.len();
        let made = write(&mut self.copied);
        let end = self.copied.len();
        self.len += end - start;
        match self.pieces.back_mut() {
            Some(Piece::Copied(range)) if range.end == start => range.end = end,
            _ if end > start => self.pieces.push_back(Piece::Copied(start..end)),
            _ => {}
        }
        made
    }

    /// One `writev` of what waits (up to [`MAX_PIECES`] entries); returns the bytes the
    /// output took, which leave.
    ///
    /// # Errors
    ///
    /// The output's error; `WriteZero` for an output that takes nothing.
    pub fn write_once(&mut self, out: &mut impl Write) -> io::Result<usize> {
        let slices: Vec<IoSlice<'_>> = self
            .pieces
            .iter()
            .take(MAX_PIECES)
            .map(|piece| match piece {
                Piece::Received(bytes) => IoSlice::new(bytes),
                Piece::Copied(range) => IoSlice::new(&self.copied[range.clone()]),
            })
            .collect();
        let written = match out.write_vectored(&slices)? {
            0 if self.len > 0 => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            n => n,
        };
        self.len -= written;
        let mut left = written;
        while left > 0 {
            let Some(first) = self.pieces.front_mut() else {
                break;
            };
            let len = match first {
                Piece::Received(bytes) => bytes.len(),
                Piece::Copied(range) => range.len(),
            };
            if len > left {
                match first {
                    Piece::Received(bytes) => bytes.advance(left),
                    Piece::Copied(range) => range.start += left,
                }
                break;
            }
            left -= len;
            self.pieces.pop_front();
        }
        if self.pieces.is_empty() {
            self.clear();
        }
        Ok(written)
    }

    /// Drops what waits.
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.copied.clear();
        self.len = 0;
        self.holds_received = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes a call, to see pieces cut mid-way.
    struct Narrow {
        file: Vec<u8>,
        room: usize,
        calls: usize,
    }

    impl Write for Narrow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.calls += 1;
            let all: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            let n = all.len().min(self.room);
            self.file.extend_from_slice(&all[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pieces_leave_in_order_also_when_cut() {
        let big = Bytes::from(vec![7u8; 3000]);
        let mut gather = Gather::default();
        gather.push_copied(|c| c.extend_from_slice(b"head"));
        gather.push_received(big.clone());
        gather.push_copied(|c| c.extend_from_slice(b"tail"));
        gather.push_received(Bytes::from_static(b"small"));
        assert!(gather.holds_received());
        // The small received bytes were copied next to the tail: three entries.
        assert_eq!(gather.pieces.len(), 3);
        let want = [&b"head"[..], &big, b"tail", b"small"].concat();
        assert_eq!(gather.len(), want.len());
        let mut out = Narrow {
            file: Vec::new(),
            room: 1000,
            calls: 0,
        };
        while gather.len() > 0 {
            gather.write_once(&mut out).unwrap();
        }
        assert_eq!(out.file, want);
        assert_eq!(out.calls, want.len().div_ceil(1000));
        assert!(!gather.holds_received());
        gather.push_copied(|c| c.extend_from_slice(b"a"));
        gather.push_received(Bytes::from_static(b"b"));
        assert_eq!(gather.pieces.len(), 1);
    }
}
