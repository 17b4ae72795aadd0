//! Writes a capture stream to its destination in whole units, and counts. What arrives
//! is framed in place and written as it is (or, for a classic format read from pcapng,
//! as it is transcoded), once enough is gathered or on the client's tick. When a write
//! fails (a full disk), the output is cut back to its last whole record and the counts
//! say what it holds.

use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;

use bytes::Bytes;
use pcapcast_core::framer::{Framer, Unit};
use pcapcast_core::pcapng::SECTION_HEADER;
use pcapcast_core::transcode::{Transcoded, Transcoder};
use pcapcast_core::Options;

use crate::gather::Gather;

/// Bytes gathered before they are written without waiting for the tick: big chunks
/// are written as they come, small ones a few at a time.
const WRITE_AT: usize = 128 << 10;

/// Whether a recording goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Wants more.
    More,
    /// Has what it wanted (the packet count was reached).
    Done,
}

/// Counters of a recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets written.
    pub packets: u64,
    /// Bytes written, headers included.
    pub bytes: u64,
    /// Packets the daemon lost for this output, as the stream reports them.
    pub drops: u64,
}

/// Where a recorder writes: something that takes bytes and, when it is a file, can drop
/// the torn tail a failed write left.
pub trait Output: Write {
    /// Cuts the output back to its first `len` bytes. `Ok(false)` where it is no
    /// regular file (a pipe, a terminal, a fifo): what went there is gone already.
    ///
    /// # Errors
    ///
    /// The file's own error.
    fn cut_back(&mut self, len: u64) -> io::Result<bool>;
}

impl Output for File {
    fn cut_back(&mut self, len: u64) -> io::Result<bool> {
        if !self.metadata()?.is_file() {
            return Ok(false);
        }
        self.set_len(len)?;
        Ok(true)
    }
}

/// Splits the incoming stream into whole units and writes them, so that whatever stops
/// the recording, the output ends on a whole record.
#[derive(Debug)]
pub struct Recorder<W: Output> {
    framer: Framer,
    /// Set when the daemon sends pcapng for a classic format written here.
    transcoder: Option<Transcoder>,
    out: W,
    /// Whole units not written yet, in order.
    gather: Gather,
    /// Bytes the output took.
    landed: u64,
    counts: Counts,
    /// The counts when each unit queued since the last write ended (`bytes` is where
    /// it ends in the output): a failed write cuts back to the last one that landed.
    unflushed: Vec<Counts>,
    /// The counts when the output last took all that was queued.
    flushed: Counts,
    /// Set once a write failed: nothing more is written.
    failed: bool,
    limit: Option<u64>,
}

/// Why a recording failed.
#[derive(Debug)]
pub enum RecordError {
    /// Writing the output failed; the output was cut back to its last whole record
    /// where it is a file, and the counts say what it holds.
    Write(io::Error),
    /// The stream was not a capture.
    Malformed(pcapcast_core::Error),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Write(e) => write!(f, "writing the capture failed: {e}"),
            RecordError::Malformed(e) => write!(f, "{e}"),
        }
    }
}

impl<W: Output> Recorder<W> {
    /// A recorder into `out` that stops after `limit` packets.
    pub fn new(out: W, limit: Option<u64>) -> Recorder<W> {
        Recorder {
            framer: Framer::new(),
            transcoder: None,
            out,
            gather: Gather::default(),
            landed: 0,
            counts: Counts::default(),
            unflushed: Vec::new(),
            flushed: Counts::default(),
            failed: false,
            limit,
        }
    }

    /// A recorder that takes the pcapng of [`Transcoder::upstream`] and writes the
    /// classic format of `options`.
    pub fn transcoding(out: W, limit: Option<u64>, options: Options) -> Recorder<W> {
        Recorder {
            transcoder: Some(Transcoder::new(options)),
            ..Recorder::new(out, limit)
        }
    }

    /// The counters so far; after a failed write, what the output holds.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The output.
    pub fn output(&self) -> &W {
        &self.out
    }

    /// Whether the stream so far ends between units, its file header received: a
    /// daemon that closes the stream here closed it cleanly.
    pub fn ends_whole(&self) -> bool {
        self.framer.buffered() == 0 && self.counts.bytes > 0
    }

    /// Bytes received that do not make a whole unit yet.
    pub fn torn_bytes(&self) -> usize {
        self.framer.buffered()
    }

    /// Takes a chunk of the stream and queues the whole units it completes; writes
    /// them once enough is queued (see [`Recorder::tick`] for the rest).
    ///
    /// # Errors
    ///
    /// The output's error, or a stream that is not a capture.
    pub fn feed(&mut self, chunk: Bytes) -> Result<Flow, RecordError> {
        self.refuse_after_failure()?;
        let whole = chunk.as_ptr_range();
        let whole = whole.start as usize..whole.end as usize;
        self.framer.push_bytes(chunk.clone());
        // Units that lie in the chunk one after the other are queued as one slice.
        let mut run: Option<Range<usize>> = None;
        let flow = loop {
            if self.is_full() {
                break Flow::Done;
            }
            let unit = match self.framer.next_unit() {
                Ok(Some(unit)) => unit,
                Ok(None) => break Flow::More,
                Err(e) => return Err(RecordError::Malformed(e)),
            };
            if self.transcodes(&unit) {
                self.transcode(&unit, &whole)?;
                continue;
            }
            let (bytes, packets, drops) = unit_parts(&unit);
            // Where the unit starts in the chunk, if it lies in it.
            let offset = (bytes.as_ptr() as usize)
                .checked_sub(whole.start)
                .filter(|_| whole.contains(&(bytes.as_ptr() as usize)));
            match (run.as_mut(), offset) {
                (Some(range), Some(offset)) if range.end == offset => range.end += bytes.len(),
                (_, Some(offset)) => {
                    self.end_run(&chunk, &mut run);
                    run = Some(offset..offset + bytes.len());
                }
                _ => {
                    // A unit completed from an earlier chunk's tail, copied already.
                    self.end_run(&chunk, &mut run);
                    self.gather
                        .push_copied(|copy| copy.extend_from_slice(bytes));
                }
            }
            self.count(bytes.len(), packets, drops);
        };
        self.end_run(&chunk, &mut run);
        // Received bytes are written at once, so that the reader reuses its buffer
        // for the next read; copies wait for more, or for the tick.
        if self.gather.len() >= WRITE_AT || self.gather.holds_received() {
            self.flush()?;
        }
        Ok(flow)
    }

    /// On the client's tick: writes what is queued, so nothing waits longer than a tick.
    ///
    /// # Errors
    ///
    /// The output's error.
    pub fn tick(&mut self) -> Result<(), RecordError> {
        match self.gather.len() {
            0 => Ok(()),
            _ => self.flush(),
        }
    }

    /// Queues a unit framed elsewhere (by a merge) and counts it, unless the packet
    /// count was reached; [`Recorder::flush`] writes it.
    ///
    /// # Errors
    ///
    /// A write that failed before.
    pub fn put(&mut self, unit: &Unit) -> Result<Flow, RecordError> {
        self.refuse_after_failure()?;
        if !self.is_full() {
            let (bytes, packets, drops) = unit_parts(unit);
            self.gather.push_received(bytes.clone());
            self.count(bytes.len(), packets, drops);
        }
        Ok(if self.is_full() {
            Flow::Done
        } else {
            Flow::More
        })
    }

    /// Writes all that is queued.
    ///
    /// # Errors
    ///
    /// The output's error.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.refuse_after_failure()?;
        while self.gather.len() > 0 {
            match self.gather.write_once(&mut self.out) {
                Ok(written) => self.landed += written as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.out.flush().map_err(|e| self.fail(e))?;
        self.flushed = self.counts;
        self.unflushed.clear();
        Ok(())
    }

    /// Whether `unit` is transcoded. A server that answers in classic pcap although
    /// pcapng was asked for (a daemon that knows no formats) is written as it sent it.
    fn transcodes(&mut self, unit: &Unit) -> bool {
        if self.transcoder.is_some() && self.counts.bytes == 0 {
            let pcapng = SECTION_HEADER.to_le_bytes();
            if matches!(unit, Unit::Header(b) if !b.starts_with(&pcapng)) {
                self.transcoder = None;
            }
        }
        self.transcoder.is_some()
    }

    /// Transcodes `unit`, whose packet bytes are written from where they lie when it
    /// lies in the chunk at `whole` (addresses), copied when not.
    fn transcode(&mut self, unit: &Unit, whole: &Range<usize>) -> Result<(), RecordError> {
        let Some(transcoder) = self.transcoder.as_mut() else {
            return Ok(());
        };
        let before = self.gather.len();
        let (written, packet) = self
            .gather
            .push_copied(|copy| transcoder.put_unit_head(unit, copy))
            .map_err(RecordError::Malformed)?;
        let drops = match unit {
            Unit::Packet { bytes, drops } => {
                if whole.contains(&(bytes.as_ptr() as usize)) {
                    self.gather.push_received(bytes.slice(packet));
                } else {
                    self.gather
                        .push_copied(|copy| copy.extend_from_slice(&bytes[packet]));
                }
                *drops
            }
            Unit::Header(_) | Unit::Other(_) => 0,
        };
        let packets = u64::from(written == Transcoded::Record);
        self.count(self.gather.len() - before, packets, drops);
        Ok(())
    }

    fn end_run(&mut self, chunk: &Bytes, run: &mut Option<Range<usize>>) {
        if let Some(range) = run.take() {
            self.gather.push_received(chunk.slice(range));
        }
    }

    fn count(&mut self, bytes: usize, packets: u64, drops: u64) {
        self.counts.packets += packets;
        self.counts.drops += drops;
        self.counts.bytes += bytes as u64;
        self.unflushed.push(self.counts);
    }

    fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.counts.packets >= limit)
    }

    fn refuse_after_failure(&self) -> Result<(), RecordError> {
        match self.failed {
            true => Err(RecordError::Write(io::Error::other(
                "the output failed before",
            ))),
            false => Ok(()),
        }
    }

    /// After a failed write: the output is cut back to the last unit that landed whole,
    /// and the counts go back to it. The error says so where cutting back failed.
    fn fail(&mut self, error: io::Error) -> RecordError {
        self.failed = true;
        // Whatever the failed write left queued is dropped, not written after the cut.
        self.gather.clear();
        let landed = self.landed;
        let whole = self
            .unflushed
            .iter()
            .rev()
            .find(|counts| counts.bytes <= landed)
            .copied()
            .unwrap_or(self.flushed);
        self.counts = whole;
        if landed == whole.bytes {
            return RecordError::Write(error);
        }
        match self.out.cut_back(whole.bytes) {
            Ok(_) => RecordError::Write(error),
            Err(cut) => RecordError::Write(io::Error::new(
                error.kind(),
                format!("{error}, and cutting it back to its last whole record failed: {cut}"),
            )),
        }
    }

    /// Writes what is queued and hands back the output, what it holds, and the
    /// write's error if it failed (the output then cut back as after any failed write).
    pub fn finish(mut self) -> Finished<W> {
        let result = if self.failed { Ok(()) } else { self.flush() };
        Finished {
            out: self.out,
            counts: self.counts,
            result,
        }
    }
}

/// A unit's bytes, and the packets and losses it counts for.
fn unit_parts(unit: &Unit) -> (&Bytes, u64, u64) {
    match unit {
        Unit::Header(bytes) | Unit::Other(bytes) => (bytes, 0, 0),
        Unit::Packet { bytes, drops } => (bytes, 1, *drops),
    }
}

/// What a recording leaves.
#[derive(Debug)]
pub struct Finished<W> {
    /// The output.
    pub out: W,
    /// What the output holds.
    pub counts: Counts,
    /// The last flush's error; a failure before it was reported when it happened.
    pub result: Result<(), RecordError>,
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
