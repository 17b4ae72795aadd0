//! Writes a capture stream to its destination in whole units, and counts.

use std::io::{self, Write};

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

/// Splits the incoming stream into whole units and writes them, so that whatever stops
/// the recording, the output ends on a whole record.
#[derive(Debug)]
pub struct Recorder<W: Write> {
    framer: Framer,
    out: W,
    counts: Counts,
    limit: Option<u64>,
}

/// Why a recording failed.
#[derive(Debug)]
pub enum RecordError {
    /// Writing the output failed.
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

impl<W: Write> Recorder<W> {
    /// A recorder into `out` that stops after `limit` packets.
    pub fn new(out: W, limit: Option<u64>) -> Recorder<W> {
        Recorder {
            framer: Framer::new(),
            out,
            counts: Counts::default(),
            limit,
        }
    }

    /// The counters so far.
    pub fn counts(&self) -> Counts {
        self.counts
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
        self.out.flush().map_err(RecordError::Write)
    }

    fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.counts.packets >= limit)
    }

    fn write(&mut self, unit: &Unit) -> Result<(), RecordError> {
        let bytes = match unit {
            Unit::Header(bytes) | Unit::Other(bytes) => bytes,
            Unit::Packet { bytes, drops } => {
                self.counts.packets += 1;
                self.counts.drops += drops;
                bytes
            }
        };
        self.out.write_all(bytes).map_err(RecordError::Write)?;
        self.counts.bytes += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and hands back the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
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
        let out = recorder.finish().unwrap();
        assert_eq!(out.len(), 24 + 3 * (16 + 2 + 50));
    }
}
