//! Per-thread staging rings. Each datapath thread appends its records to a ring of its
//! own (a wait-free single-producer ring, `rtrb`), so that no two threads ever write
//! the same memory for a record; readers drain the rings into the shared backlog.
//!
//! A record in a ring: the header below, the metadata block, then the packet bytes as
//! kept. The header is published before the packet, so a reader may see a header whose
//! packet is not there yet: it leaves such a record for its next look.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::path::KindCounts;
use crate::{Path, Timestamp};

/// Byte ranges of a ring record's header, little-endian.
mod field {
    pub(super) type Field = std::ops::Range<usize>;
    /// Packet bytes kept after the header and the metadata block.
    pub(super) const KEPT_LEN: Field = 0..4;
    pub(super) const SECS: Field = 4..8;
    /// Nanoseconds within the second.
    pub(super) const NANOS: Field = 8..12;
    /// The packet's length as logged (saturated at `u32::MAX`).
    pub(super) const ORIG_LEN: Field = 12..16;
    pub(super) const PATH: Field = 16..18;
    pub(super) const FLAGS: usize = 18;
    pub(super) const META_LEN: usize = 19;
}

/// Bytes of a ring record's header.
pub(crate) const HEADER_LEN: usize = 20;
/// `FLAGS` bit: the time was outside the pcap range and saturated.
const CLAMPED: u8 = 1;

/// A ring record's header, as the datapath writes it and a reader reads it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) ts: Timestamp,
    pub(crate) clamped: bool,
    pub(crate) path: Path,
    pub(crate) orig_len: u32,
    pub(crate) kept_len: u32,
    pub(crate) meta_len: u8,
}

impl RecordHeader {
    pub(crate) fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[field::KEPT_LEN].copy_from_slice(&self.kept_len.to_le_bytes());
        bytes[field::SECS].copy_from_slice(&self.ts.secs().to_le_bytes());
        bytes[field::NANOS].copy_from_slice(&self.ts.nanos().to_le_bytes());
        bytes[field::ORIG_LEN].copy_from_slice(&self.orig_len.to_le_bytes());
        bytes[field::PATH].copy_from_slice(&u16::from(self.path).to_le_bytes());
        bytes[field::FLAGS] = if self.clamped { CLAMPED } else { 0 };
        bytes[field::META_LEN] = self.meta_len;
        bytes
    }

    pub(crate) fn from_bytes(bytes: &[u8; HEADER_LEN]) -> RecordHeader {
        let word = |range: field::Field| {
            let mut word = [0u8; 4];
            word.copy_from_slice(&bytes[range]);
            u32::from_le_bytes(word)
        };
        RecordHeader {
            ts: Timestamp::new(word(field::SECS), word(field::NANOS)),
            clamped: bytes[field::FLAGS] & CLAMPED != 0,
            path: Path::from(u16::from_le_bytes([
                bytes[field::PATH.start],
                bytes[field::PATH.start + 1],
            ])),
            orig_len: word(field::ORIG_LEN),
            kept_len: word(field::KEPT_LEN),
            meta_len: bytes[field::META_LEN],
        }
    }

    /// Bytes of the whole record in the ring.
    pub(crate) fn ring_len(&self) -> usize {
        HEADER_LEN + usize::from(self.meta_len) + self.kept_len as usize
    }
}

/// Records a ring's writer could not store, per path kind. Only the writer writes
/// them, so it updates them with a load and a store, never a read-modify-write.
#[derive(Debug, Default)]
pub(crate) struct Losses {
    per_kind: [AtomicU64; Path::KINDS],
}

impl Losses {
    fn count(&self, path: Path) {
        let counter = &self.per_kind[path.kind_index()];
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
    }

    fn read(&self) -> KindCounts {
        std::array::from_fn(|i| self.per_kind[i].load(Ordering::Acquire))
    }
}

/// The datapath's end of one thread's ring for one capture.
#[derive(Debug)]
pub(crate) struct RingWriter {
    capture: u64,
    producer: Producer<u8>,
    losses: Arc<Losses>,
    /// Bytes written since the writer last looked at how full its ring is.
    unlooked: usize,
    /// The capture's count of collections when this ring was last found full.
    collects_seen: u64,
}

/// What a write asks of the caller once the thread-local state is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Written {
    /// The ring is half full: readers should drain it now rather than at their next
    /// look.
    pub(crate) wake_readers: bool,
    /// A parked `Stream` reader's deadline passed, or a batch's worth waits for it.
    pub(crate) wake_waiters: bool,
}

impl RingWriter {
    /// Appends one record, or says the ring has no room for it.
    #[inline]
    pub(crate) fn try_write(
        &mut self,
        header: &[u8; HEADER_LEN],
        meta: &[u8],
        packet: &[u8],
    ) -> Option<Written> {
        let need = HEADER_LEN + meta.len() + packet.len();
        if self.producer.cached_slots() < need && self.producer.slots() < need {
            return None;
        }
        // Room was checked above and only this thread writes: the pushes cannot fail.
        let _ = self.producer.push_entire_slice(header);
        if !meta.is_empty() {
            let _ = self.producer.push_entire_slice(meta);
        }
        let _ = self.producer.push_entire_slice(packet);
        self.unlooked += need;
        let half = self.producer.buffer().capacity() / 2;
        if self.unlooked < half {
            return Some(Written::default());
        }
        // Once per half ring written: how much of it is still unread?
        let unread = self.producer.buffer().capacity() - self.producer.slots();
        let wake_readers = unread >= half;
        self.unlooked = if wake_readers { 0 } else { unread };
        Some(Written {
            wake_readers,
            wake_waiters: false,
        })
    }

    /// Bytes written and not yet read: a load of the reader's position, for the slow
    /// path only (a reader is parked).
    pub(crate) fn unread_bytes(&self) -> usize {
        self.producer.buffer().capacity() - self.producer.slots()
    }

    /// The capture's count of collections when this ring was last found full.
    pub(crate) fn collects_seen(&mut self) -> &mut u64 {
        &mut self.collects_seen
    }

    /// Counts a record that found no room.
    pub(crate) fn lose(&self, path: Path) {
        self.losses.count(path);
    }
}

/// The readers' end of one thread's ring.
#[derive(Debug)]
pub(crate) struct RingReader {
    pub(crate) consumer: Consumer<u8>,
    losses: Arc<Losses>,
    losses_taken: KindCounts,
}

impl RingReader {
    /// Adds the losses counted since the last call to `into`.
    pub(crate) fn take_losses(&mut self, into: &mut KindCounts) {
        let now = self.losses.read();
        for (kind, total) in now.iter().enumerate() {
            into[kind] += total - self.losses_taken[kind];
        }
        self.losses_taken = now;
    }

    /// Whether the thread that wrote this ring has gone and everything was read.
    pub(crate) fn is_finished(&self) -> bool {
        if !self.consumer.is_abandoned() {
            return false;
        }
        // Pairs with the writer's release of the ring when it was dropped.
        std::sync::atomic::fence(Ordering::Acquire);
        self.consumer.is_empty()
    }
}

/// Makes a ring of `capacity` bytes for the capture numbered `capture`.
pub(crate) fn ring(capture: u64, capacity: usize) -> (RingWriter, RingReader) {
    let (producer, consumer) = RingBuffer::new(capacity);
    let losses = Arc::new(Losses::default());
    (
        RingWriter {
            capture,
            producer,
            losses: Arc::clone(&losses),
            unlooked: 0,
            collects_seen: 0,
        },
        RingReader {
            consumer,
            losses,
            losses_taken: [0; Path::KINDS],
        },
    )
}

/// [`ring`], with every page of the ring written once, so that the thread that logs
/// into it never takes a page fault on it: made by a reader, ahead of the datapath.
pub(crate) fn faulted_in_ring(capture: u64, capacity: usize) -> (RingWriter, RingReader) {
    let (mut writer, mut reader) = ring(capture, capacity);
    // Both ends are ours alone until handed out: a whole-ring write and read touches
    // each page and leaves the ring empty.
    if let Ok(chunk) = writer.producer.write_chunk(capacity) {
        chunk.commit_all();
    }
    if let Ok(chunk) = reader.consumer.read_chunk(capacity) {
        chunk.commit_all();
    }
    (writer, reader)
}

thread_local! {
    /// This thread's rings, one per capture it logged into.
    static WRITERS: RefCell<Vec<RingWriter>> = const { RefCell::new(Vec::new()) };
}

/// Runs `write` on this thread's ring for `capture`, made by `register` on first use.
/// `None` when the thread's state is gone (a thread-local destructor logging) or in use
/// (logging from inside a waker the datapath called): the record cannot be stored.
#[inline]
pub(crate) fn with_writer<R>(
    capture: u64,
    register: impl FnOnce() -> RingWriter,
    write: impl FnOnce(&mut RingWriter) -> R,
) -> Option<R> {
    WRITERS
        .try_with(|writers| {
            let mut writers = writers.try_borrow_mut().ok()?;
            let index = match writers.iter().position(|w| w.capture == capture) {
                Some(index) => index,
                None => {
                    // Rings of captures that are gone are dropped here, on the slow path.
                    writers.retain(|w| !w.producer.is_abandoned());
                    writers.push(register());
                    writers.len() - 1
                }
            };
            Some(write(&mut writers[index]))
        })
        .ok()
        .flatten()
}

/// Bytes this thread's ring for `capture` holds unread: 0 with no ring; `None` when
/// the thread's state cannot be read (a thread-local destructor logging, or logging from
/// inside a waker the datapath called).
#[inline]
pub(crate) fn unread_in_own_ring(capture: u64) -> Option<usize> {
    WRITERS
        .try_with(|writers| {
            let writers = writers.try_borrow().ok()?;
            Some(
                writers
                    .iter()
                    .find(|w| w.capture == capture)
                    .map_or(0, RingWriter::unread_bytes),
            )
        })
        .ok()
        .flatten()
}

/// Copies `out.len()` bytes starting `at` bytes into the concatenation of `first` and
/// `second` (a ring's readable bytes, which may wrap).
pub(crate) fn copy_out(first: &[u8], second: &[u8], at: usize, out: &mut [u8]) {
    let end = at + out.len();
    if end <= first.len() {
        out.copy_from_slice(&first[at..end]);
    } else if at >= first.len() {
        out.copy_from_slice(&second[at - first.len()..end - first.len()]);
    } else {
        let split = first.len() - at;
        let rest = out.len() - split;
        out[..split].copy_from_slice(&first[at..]);
        out[split..].copy_from_slice(&second[..rest]);
    }
}

/// The two pieces of `len` bytes starting `at` bytes into `first` then `second`.
pub(crate) fn pieces<'a>(
    first: &'a [u8],
    second: &'a [u8],
    at: usize,
    len: usize,
) -> (&'a [u8], &'a [u8]) {
    let end = at + len;
    if end <= first.len() {
        (&first[at..end], &[])
    } else if at >= first.len() {
        (&second[at - first.len()..end - first.len()], &[])
    } else {
        (&first[at..], &second[..end - first.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_back_as_written() {
        let header = RecordHeader {
            ts: Timestamp::new(1_700_000_000, 123_456_789),
            clamped: true,
            path: Path::Other(77),
            orig_len: 70_000,
            kept_len: 65_000,
            meta_len: 18,
        };
        assert_eq!(RecordHeader::from_bytes(&header.to_bytes()), header);
        assert_eq!(header.ring_len(), 20 + 18 + 65_000);
    }

    #[test]
    fn wrapped_bytes_read_back_in_order() {
        let (first, second) = (&[1u8, 2, 3][..], &[4u8, 5, 6][..]);
        for at in 0..6 {
            for len in 0..=6 - at {
                let mut out = vec![0; len];
                copy_out(first, second, at, &mut out);
                let expected: Vec<u8> = (at as u8 + 1..).take(len).collect();
                assert_eq!(out, expected);
                let (a, b) = pieces(first, second, at, len);
                assert_eq!([a, b].concat(), expected);
            }
        }
    }

    #[test]
    fn a_full_ring_refuses_and_a_drained_one_takes_again() {
        let (mut writer, mut reader) = ring(1, 256);
        let header = [0u8; HEADER_LEN];
        let packet = [7u8; 100];
        assert!(writer.try_write(&header, &[], &packet).is_some());
        assert!(writer.try_write(&header, &[], &packet).is_some());
        assert_eq!(writer.try_write(&header, &[], &packet), None);
        writer.lose(Path::FromPeer);
        let mut lost = [0; Path::KINDS];
        reader.take_losses(&mut lost);
        assert_eq!(lost[Path::FromPeer.kind_index()], 1);
        reader.take_losses(&mut lost);
        assert_eq!(lost[Path::FromPeer.kind_index()], 1, "taken once");
        let readable = reader.consumer.slots();
        assert_eq!(readable, 240);
        reader.consumer.read_chunk(readable).unwrap().commit_all();
        assert!(writer.try_write(&header, &[], &packet).is_some());
        assert!(!reader.is_finished());
        drop(writer);
        assert!(!reader.is_finished(), "a record is still unread");
        let readable = reader.consumer.slots();
        reader.consumer.read_chunk(readable).unwrap().commit_all();
        assert!(reader.is_finished());
    }

    #[test]
    fn a_faulted_in_ring_starts_empty_and_takes_a_full_load() {
        let (mut writer, mut reader) = faulted_in_ring(1, 256);
        assert!(reader.consumer.is_empty());
        let header = [0u8; HEADER_LEN];
        assert!(writer.try_write(&header, &[], &[7; 100]).is_some());
        assert!(writer.try_write(&header, &[], &[8; 100]).is_some());
        assert_eq!(writer.try_write(&header, &[], &[9; 100]), None);
        let chunk = reader.consumer.read_chunk(240).unwrap();
        let (first, second) = chunk.as_slices();
        let bytes = [first, second].concat();
        assert_eq!(&bytes[HEADER_LEN..120], &[7; 100][..]);
        assert_eq!(&bytes[120 + HEADER_LEN..], &[8; 100][..]);
    }

    #[test]
    fn half_a_ring_unread_asks_for_readers() {
        let (mut writer, _reader) = ring(1, 1000);
        let header = [0u8; HEADER_LEN];
        let packet = [0u8; 80];
        let wakes: Vec<bool> = (0..9)
            .map(|_| {
                writer
                    .try_write(&header, &[], &packet)
                    .unwrap()
                    .wake_readers
            })
            .collect();
        assert_eq!(wakes.iter().filter(|w| **w).count(), 1);
        assert!(wakes[4], "at 500 of 1000 bytes unread");
    }
}
