//! Unit tests of the recorder: streams as a daemon writes them, fed in chunks, into
//! outputs that count their writes or fill up.

use std::io::IoSlice;

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
        flow = recorder.feed(Bytes::copy_from_slice(chunk)).unwrap();
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

/// An output that counts the writes it is asked for.
#[derive(Default)]
struct CountedWrites {
    file: Vec<u8>,
    writes: usize,
}

impl Write for CountedWrites {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writes += 1;
        bufs.iter().for_each(|b| self.file.extend_from_slice(b));
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Output for CountedWrites {
    fn cut_back(&mut self, len: u64) -> io::Result<bool> {
        self.file.truncate(len as usize);
        Ok(true)
    }
}

#[test]
fn one_write_a_big_chunk_and_fewer_for_small_ones() {
    let encoder = Encoder::new(Options::new().format(pcapcast_core::Format::Pcapng));
    let mut stream = BytesMut::new();
    encoder.put_header(&mut stream);
    for _ in 0..2000 {
        encoder.put_record(
            &mut stream,
            Path::FromPeer,
            std::time::UNIX_EPOCH,
            &[0x45; 1500],
        );
    }
    let stream = stream.freeze();
    for (chunk, most_writes) in [(WRITE_AT * 2, 1.0), (1000, 0.01)] {
        let mut recorder = Recorder::new(CountedWrites::default(), None);
        let mut chunks = 0;
        for start in (0..stream.len()).step_by(chunk) {
            let end = (start + chunk).min(stream.len());
            recorder.feed(stream.slice(start..end)).unwrap();
            chunks += 1;
        }
        let finished = recorder.finish();
        finished.result.unwrap();
        assert_eq!(finished.out.file, stream.to_vec());
        assert_eq!(finished.counts.packets, 2000);
        let writes = finished.out.writes as f64;
        assert!(
            writes <= most_writes * chunks as f64 + 1.0,
            "{writes} writes, {chunks} chunks of {chunk}"
        );
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
        .find_map(|chunk| {
            let fed = recorder.feed(Bytes::copy_from_slice(chunk));
            fed.and_then(|_| recorder.tick()).err()
        })
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
