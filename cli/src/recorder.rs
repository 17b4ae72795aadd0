//! Writes a capture stream to its destination in whole units, and counts. When a write
//! fails (a full disk), the output is cut back to its last whole record and the counts
//! say what it holds.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use pcapcast_core::framer::{Framer, Unit};

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

/// Counts the bytes the output accepted, so that after a failure the recorder knows
/// where the output's contents end, whatever the buffer had written of them.
#[derive(Debug)]
struct Landed<W> {
    out: W,
    bytes: u64,
}

impl<W: Write> Write for Landed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Splits the incoming stream into whole units and writes them, so that whatever stops
/// the recording, the output ends on a whole record.
#[derive(Debug)]
pub struct Recorder<W: Output> {
    framer: Framer,
    out: BufWriter<Landed<W>>,
    counts: Counts,
    /// The counts when each unit written since the last flush ended (`bytes` is where
    /// it ends in the output): a failed write cuts back to the last one that landed.
    unflushed: Vec<Counts>,
    /// The counts at the last flush that succeeded: all of it landed.
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
    /// A recorder into `out`, buffered here, that stops after `limit` packets.
    pub fn new(out: W, limit: Option<u64>) -> Recorder<W> {
        Recorder {
            framer: Framer::new(),
            out: BufWriter::with_capacity(1 << 16, Landed { out, bytes: 0 }),
            counts: Counts::default(),
            unflushed: Vec::new(),
            flushed: Counts::default(),
            failed: false,
            limit,
        }
    }

    /// The counters so far; after a failed write, what the output holds.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The output.
    pub fn output(&self) -> &W {
        &self.out.get_ref().out
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

    /// Takes bytes of the stream and writes the whole units they complete, then flushes.
    ///
    /// # Errors
    ///
    /// The output's error, or a stream that is not a capture.
    pub fn feed(&mut self, data: &[u8]) -> Result<Flow, RecordError> {
        self.framer.push(data);
        let flow = loop {
            if self.is_full() {
                break Flow::Done;
            }
            let unit = match self.framer.next_unit() {
                Ok(Some(unit)) => unit,
                Ok(None) => break Flow::More,
                Err(e) => return Err(RecordError::Malformed(e)),
            };
            self.write(&unit)?;
        };
        self.flush()?;
        Ok(flow)
    }

    /// Writes a unit framed elsewhere (by a merge) and counts it, unless the packet
    /// count was reached; [`Recorder::flush`] pushes it out.
    ///
    /// # Errors
    ///
    /// The output's error.
    pub fn put(&mut self, unit: &Unit) -> Result<Flow, RecordError> {
        if !self.is_full() {
            self.write(unit)?;
        }
        Ok(if self.is_full() {
            Flow::Done
        } else {
            Flow::More
        })
    }

    /// Flushes the output.
    ///
    /// # Errors
    ///
    /// The output's error.
    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.refuse_after_failure()?;
        match self.out.flush() {
            Ok(()) => {
                self.flushed = self.counts;
                self.unflushed.clear();
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.counts.packets >= limit)
    }

    fn write(&mut self, unit: &Unit) -> Result<(), RecordError> {
        self.refuse_after_failure()?;
        let (bytes, packets, drops) = match unit {
            Unit::Header(bytes) | Unit::Other(bytes) => (bytes, 0, 0),
            Unit::Packet { bytes, drops } => (bytes, 1, *drops),
        };
        if let Err(e) = self.out.write_all(bytes) {
            return Err(self.fail(e));
        }
        self.counts.packets += packets;
        self.counts.drops += drops;
        self.counts.bytes += bytes.len() as u64;
        self.unflushed.push(self.counts);
        Ok(())
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
        let landed = self.out.get_ref().bytes;
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
        match self.out.get_mut().out.cut_back(whole.bytes) {
            Ok(_) => RecordError::Write(error),
            Err(cut) => RecordError::Write(io::Error::new(
                error.kind(),
                format!("{error}, and cutting it back to its last whole record failed: {cut}"),
            )),
        }
    }

    /// Flushes and hands back the output, what it holds, and the flush's error if it
    /// failed (the output then cut back as after any failed write).
    pub fn finish(mut self) -> Finished<W> {
        let result = if self.failed { Ok(()) } else { self.flush() };
        // Whatever a failed write left in the buffer is dropped, not written after the cut.
        let (landed, _unwritten) = self.out.into_parts();
        Finished {
            out: landed.out,
            counts: self.counts,
            result,
        }
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
mod tests {
    use bytes::BytesMut;
    use pcapcast_core::{Encoder, Options, Path};

    use super::*;

    #[test]
    fn stops_on_a_whole_record_at_the_count() {
        let encoder = Encoder::new(Options::default());
        let mut stream = BytesMut::new();
        encoder.put_header(&mut stream);
        for _ in 0..10 {
            encoder.put_record(
                &mut stream,
                Path::FromPeer,
                std::time::UNIX_EPOCH,
                &[0x45; 50],
            );
        }
        let mut recorder = Recorder::new(Vec::new(), Some(3));
        let mut flow = Flow::More;
        for chunk in stream.chunks(7) {
            flow = recorder.feed(chunk).unwrap();
            if flow == Flow::Done {
                break;
            }
        }
        assert_eq!(flow, Flow::Done);
        let finished = recorder.finish();
        finished.result.unwrap();
        let out = finished.out;
        assert_eq!(out.len(), 24 + 3 * (16 + 2 + 50));
    }

    impl Output for Vec<u8> {
        fn cut_back(&mut self, len: u64) -> io::Result<bool> {
            self.truncate(len as usize);
            Ok(true)
        }
    }

    /// A disk with room for `room` bytes: it takes what fits, then says it is full.
    struct SmallDisk {
        file: Vec<u8>,
        room: usize,
    }

    impl Write for SmallDisk {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room - self.file.len());
            if n == 0 && !buf.is_empty() {
                return Err(io::Error::from(io::ErrorKind::StorageFull));
            }
            self.file.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Output for SmallDisk {
        fn cut_back(&mut self, len: u64) -> io::Result<bool> {
            self.file.truncate(len as usize);
            Ok(true)
        }
    }

    #[test]
    fn a_full_disk_keeps_whole_records_and_counts_what_it_holds() {
        let encoder = Encoder::new(Options::default());
        let mut stream = BytesMut::new();
        encoder.put_header(&mut stream);
        for _ in 0..5000 {
            encoder.put_record(
                &mut stream,
                Path::FromPeer,
                std::time::UNIX_EPOCH,
                &[0x45; 50],
            );
        }
        // Room for 24 + 1000.5 records; frames of 1000 bytes, as HTTP chunks come.
        let record = 16 + 2 + 50;
        let disk = SmallDisk {
            file: Vec::new(),
            room: 24 + 1000 * record + record / 2,
        };
        let mut recorder = Recorder::new(disk, None);
        let failed = stream
            .chunks(1000)
            .find_map(|chunk| recorder.feed(chunk).err())
            .expect("the disk fills");
        assert!(
            matches!(&failed, RecordError::Write(e) if e.kind() == io::ErrorKind::StorageFull),
            "{failed}"
        );
        let finished = recorder.finish();
        finished.result.unwrap();
        let (counts, file) = (finished.counts, finished.out.file);
        assert_eq!(counts.packets, 1000);
        assert_eq!(counts.bytes, file.len() as u64);
        assert_eq!(file.len(), 24 + 1000 * record);
    }
}
