//! A writer for unit tests: it takes up to a budget of bytes, in pieces of at most a
//! given size, keeps what it took, then fails every write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

pub(crate) struct PartialWriter {
    budget: usize,
    piece: usize,
    pub(crate) taken: Vec<u8>,
}

impl PartialWriter {
    /// Takes `budget` bytes in pieces as big as each write offers.
    pub(crate) fn new(budget: usize) -> PartialWriter {
        PartialWriter {
            budget,
            piece: usize::MAX,
            taken: Vec::new(),
        }
    }

    /// Takes at most `piece` bytes a write.
    pub(crate) fn in_pieces(mut self, piece: usize) -> PartialWriter {
        self.piece = piece;
        self
    }
}

impl hyper::rt::Write for PartialWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.budget == 0 {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(self.budget).min(self.piece);
        self.budget -= n;
        self.taken.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
