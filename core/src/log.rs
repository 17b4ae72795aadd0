//! The shared backlog: records in the seed layout, in batches that readers clone.
//!
//! Datapath threads write into rings of their own ([`crate::ring`]) and come here only
//! when a ring is full and the lock is free. A reader that wants records *collects*: under the readers' lock
//! it drains every ring, merging their records in time order, into batches in the seed
//! layout, and seals them into a queue. Readers clone the handles of sealed batches and
//! encode outside the lock. The queue holds at most `backlog` bytes: the oldest batch
//! goes first, and a reader that had not read it counts its records as lost. Buffers of
//! evicted batches are reused, so a steady capture keeps touching the same memory
//! instead of faulting in fresh pages.
//!
//! Every record gets a sequence number when it is collected. Records a ring could not
//! take are given numbers too, without bytes: a gap before the batch that follows,
//! which every reader that was attached counts as lost.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};

use crate::pcap::{self, MAX_SNAPLEN, PATH_LEN, RECORD_HEADER_LEN};
use crate::ring::{self, RecordHeader, RingReader};
use crate::{Path, Timestamp};

mod retained;

pub(crate) use retained::HistoryStart;

/// A stored record header: the seed record header, then the path.
pub(crate) const STORED_HEADER_LEN: usize = RECORD_HEADER_LEN + PATH_LEN;
/// The most packet bytes stored for one record; every snaplen an output may ask for fits.
pub(crate) const MAX_STORED_PACKET: usize = MAX_SNAPLEN as usize - PATH_LEN;
/// Evicted buffers kept for reuse.
const MAX_SPARE: usize = 4;
/// Bytes of a record's side entry before its metadata: sub-microseconds, metadata length.
const SIDE_LEN: usize = 3;

pub(crate) use crate::path::KindCounts;

/// A place in the log: a sequence number, and the records per path kind before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Point {
    pub(crate) seq: u64,
    pub(crate) kinds: KindCounts,
}

/// A sealed run of records: `data` in the seed layout (microseconds, snaplen 262144);
/// `side` for each record the nanoseconds below the microsecond (`u16` LE), the length
/// of its metadata block (`u8`) and the block.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    pub(crate) first_seq: u64,
    pub(crate) records: u32,
    pub(crate) data: Bytes,
    pub(crate) side: Bytes,
    /// The largest `incl_len` among the records: whether a snaplen cuts none of them.
    pub(crate) max_incl: u32,
    /// Records per path kind before `first_seq`.
    pub(crate) kinds_to_start: KindCounts,
    /// Records per path kind before `end_seq`.
    pub(crate) kinds_to_end: KindCounts,
}

impl Batch {
    pub(crate) fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.records)
    }
}

/// One stored record, read back from a batch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StoredRecord<'a> {
    pub(crate) path: Path,
    pub(crate) ts: Timestamp,
    pub(crate) packet: &'a [u8],
    pub(crate) orig_len: usize,
    /// The record's metadata block, as `Meta::encode` wrote it.
    pub(crate) meta: &'a [u8],
    /// The whole stored record, header included.
    pub(crate) raw: &'a [u8],
}

/// Walks the records of a batch's bytes.
pub(crate) fn records<'a>(
    data: &'a [u8],
    side: &'a [u8],
) -> impl Iterator<Item = StoredRecord<'a>> {
    let (mut offset, mut side_offset) = (0, 0);
    std::iter::from_fn(move || {
        let entry = side.get(side_offset..side_offset + SIDE_LEN)?;
        let meta_len = usize::from(entry[2]);
        let meta = side.get(side_offset + SIDE_LEN..side_offset + SIDE_LEN + meta_len)?;
        let sub_micros = u32::from(u16::from_le_bytes([entry[0], entry[1]]));
        let header = data.get(offset..offset + STORED_HEADER_LEN)?;
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let incl = word(8) as usize;
        let raw = data.get(offset..offset + RECORD_HEADER_LEN + incl)?;
        offset += raw.len();
        side_offset += SIDE_LEN + meta_len;
        Some(StoredRecord {
            path: Path::from(u16::from_le_bytes([header[16], header[17]])),
            ts: Timestamp::new(word(0), word(4) * 1_000 + sub_micros),
            packet: &raw[STORED_HEADER_LEN..],
            orig_len: (word(12) as usize).saturating_sub(PATH_LEN),
            meta,
            raw,
        })
    })
}

/// The backlog, under the readers' lock: the rings it drains, the batch it fills and
/// the sealed batches. The datapath takes this lock only with `try_lock`, to drain the
/// rings when it found its own full.
#[derive(Debug)]
pub(crate) struct Log {
    batch_bytes: usize,
    rings: Vec<RingReader>,
    open: Open,
    sealed: Sealed,
    /// Set by [`crate::Capture::close`]: readers drain what the rings still hold, then
    /// their streams end.
    pub(crate) closed: bool,
    /// Records collected, and records the rings could not take.
    pub(crate) logged: u64,
    pub(crate) clamped: u64,
    /// The latest time among the records collected: where a parked reader's deadline
    /// starts.
    pub(crate) newest: Timestamp,
}

/// The batch being filled by a collection; sealed before the collection ends.
#[derive(Debug)]
struct Open {
    buffer: BytesMut,
    side: BytesMut,
    first_seq: u64,
    records: u32,
    max_incl: u32,
    kinds_to_start: KindCounts,
    /// Records per path kind before `first_seq + records`.
    kinds: KindCounts,
    /// Batch buffers allocated because no evicted one could be reused.
    fresh_buffers: u64,
}

/// Sealed batches.
#[derive(Debug)]
struct Sealed {
    backlog_bytes: usize,
    /// Bytes that eviction leaves at least, for outputs that ask for history.
    retain_bytes: usize,
    queue: VecDeque<Batch>,
    bytes: usize,
    /// Sequence number after the last record sealed (or lost).
    end_seq: u64,
    /// Records per path kind before `end_seq`.
    kinds_to_end: KindCounts,
    spare: Vec<BytesMut>,
}

/// One ring's readable records during a collection.
struct Reading<'a> {
    first: &'a [u8],
    second: &'a [u8],
    /// Bytes of whole records taken so far.
    taken: usize,
    /// The next whole record, if there is one.
    next: Option<RecordHeader>,
}

impl<'a> Reading<'a> {
    fn new(first: &'a [u8], second: &'a [u8]) -> Reading<'a> {
        let mut reading = Reading {
            first,
            second,
            taken: 0,
            next: None,
        };
        reading.look();
        reading
    }

    fn look(&mut self) {
        let readable = self.first.len() + self.second.len() - self.taken;
        self.next = None;
        if readable < ring::HEADER_LEN {
            return;
        }
        let mut bytes = [0u8; ring::HEADER_LEN];
        ring::copy_out(self.first, self.second, self.taken, &mut bytes);
        let header = RecordHeader::from_bytes(&bytes);
        if header.ring_len() <= readable {
            self.next = Some(header);
        }
    }

    fn key(&self) -> Option<(u32, u32)> {
        self.next.map(|h| (h.ts.secs(), h.ts.nanos()))
    }
}

impl Log {
    /// A log that holds at most about `backlog_bytes`, or `retain_bytes` and one batch
    /// when that is more.
    pub(crate) fn new(batch_bytes: usize, backlog_bytes: usize, retain_bytes: usize) -> Log {
        Log {
            batch_bytes,
            rings: Vec::new(),
            open: Open {
                buffer: BytesMut::new(),
                side: BytesMut::new(),
                first_seq: 0,
                records: 0,
                max_incl: 0,
                kinds_to_start: [0; Path::KINDS],
                kinds: [0; Path::KINDS],
                fresh_buffers: 0,
            },
            sealed: Sealed {
                backlog_bytes: backlog_bytes.max(retain_bytes),
                retain_bytes,
                queue: VecDeque::new(),
                bytes: 0,
                end_seq: 0,
                kinds_to_end: [0; Path::KINDS],
                spare: Vec::new(),
            },
            closed: false,
            logged: 0,
            clamped: 0,
            newest: Timestamp::MIN,
        }
    }

    /// Takes on rings that threads registered since the last call.
    pub(crate) fn adopt(&mut self, rings: &mut Vec<RingReader>) {
        self.rings.append(rings);
    }

    /// Bytes waiting in the rings: one load of each ring's write position.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.rings.iter().map(|r| r.consumer.slots()).sum()
    }

    /// Bytes the backlog holds at most.
    pub(crate) fn backlog_bytes(&self) -> usize {
        self.sealed.backlog_bytes
    }

    /// Whether `bytes` more fit in the backlog without evicting anything some output
    /// has still to read. Only bytes after `slowest`, the cursor of the output furthest
    /// behind, count: batches every output has read are slack (eviction still keeps
    /// the retention's bytes). `None` (the registry was busy) counts every byte.
    pub(crate) fn has_room(&self, bytes: usize, slowest: Option<u64>) -> bool {
        let unread = match slowest {
            Some(cursor) => self.sealed.unread_bytes(cursor),
            None => self.sealed.bytes,
        };
        unread.saturating_add(bytes) <= self.sealed.backlog_bytes
    }

    /// Sequence number after the last record collected.
    pub(crate) fn end_seq(&self) -> u64 {
        self.sealed.end_seq
    }

    /// The place after the last record collected.
    pub(crate) fn end(&self) -> Point {
        Point {
            seq: self.sealed.end_seq,
            kinds: self.sealed.kinds_to_end,
        }
    }

    /// Records per path kind before [`Log::end_seq`].
    pub(crate) fn kinds_to_end(&self) -> KindCounts {
        self.sealed.kinds_to_end
    }

    /// Sequence number of the oldest record still held, and the records per path kind
    /// before it.
    pub(crate) fn oldest(&self) -> (u64, &KindCounts) {
        match self.sealed.queue.front() {
            Some(batch) => (batch.first_seq, &batch.kinds_to_start),
            None => (self.sealed.end_seq, &self.sealed.kinds_to_end),
        }
    }

    /// Clones the handles of the sealed batches that end after `cursor` into `out`.
    pub(crate) fn batches_from(&self, cursor: u64, out: &mut Vec<Batch>) {
        let queue = &self.sealed.queue;
        let start = queue.partition_point(|b| b.end_seq() <= cursor);
        out.extend(queue.range(start..).cloned());
    }

    /// [`Log::collect_up_to`] with no budget.
    #[cfg(test)]
    pub(crate) fn collect(&mut self) -> bool {
        self.collect_up_to(usize::MAX)
    }

    /// Drains the rings into sealed batches, merging the rings' records by time (each
    /// ring keeps its own order; ties go to the ring registered first), until at least
    /// `budget` bytes were taken: a reader takes no more than the backlog holds, so that
    /// what it collects is not evicted before it reads it; the rest waits in the rings.
    /// Says whether anything was sealed or counted lost.
    pub(crate) fn collect_up_to(&mut self, budget: usize) -> bool {
        let before = self.sealed.end_seq;
        let mut lost = [0; Path::KINDS];
        for ring in &mut self.rings {
            ring.take_losses(&mut lost);
        }
        self.count_lost(&lost);
        let Log {
            rings,
            open,
            sealed,
            batch_bytes,
            logged,
            clamped,
            newest,
            ..
        } = self;
        let mut chunks: Vec<_> = rings
            .iter_mut()
            .filter_map(|ring| {
                let readable = ring.consumer.slots();
                (readable > 0).then(|| ring.consumer.read_chunk(readable).ok())?
            })
            .collect();
        let mut readings: Vec<Reading<'_>> = chunks
            .iter()
            .map(|chunk| {
                let (first, second) = chunk.as_slices();
                Reading::new(first, second)
            })
            .collect();
        let mut taken_bytes = 0usize;
        while taken_bytes < budget {
            // The ring whose next record is the oldest; the first of equals.
            let mut best: Option<(usize, (u32, u32))> = None;
            for (index, reading) in readings.iter().enumerate() {
                if let Some(key) = reading.key() {
                    if best.is_none_or(|(_, best_key)| key < best_key) {
                        best = Some((index, key));
                    }
                }
            }
            let Some((index, _)) = best else {
                break;
            };
            let reading = &mut readings[index];
            let Some(header) = reading.next else {
                break;
            };
            let meta_at = reading.taken + ring::HEADER_LEN;
            let meta = ring::pieces(
                reading.first,
                reading.second,
                meta_at,
                usize::from(header.meta_len),
            );
            let packet = ring::pieces(
                reading.first,
                reading.second,
                meta_at + usize::from(header.meta_len),
                header.kept_len as usize,
            );
            open.append(sealed, *batch_bytes, &header, meta, packet);
            *logged += 1;
            *clamped += u64::from(header.clamped);
            *newest = (*newest).max(header.ts);
            reading.taken += header.ring_len();
            taken_bytes += header.ring_len();
            reading.look();
        }
        let taken: Vec<usize> = readings.iter().map(|r| r.taken).collect();
        drop(readings);
        for (chunk, taken) in chunks.drain(..).zip(taken) {
            chunk.commit(taken);
        }
        self.open.seal_into(&mut self.sealed);
        // A thread that is gone may have lost records after the losses were taken.
        let mut late = [0; Path::KINDS];
        self.rings.retain_mut(|ring| {
            let finished = ring.is_finished();
            if finished {
                ring.take_losses(&mut late);
            }
            !finished
        });
        self.count_lost(&late);
        self.sealed.end_seq != before
    }

    /// Appends one record straight to the open batch: a datapath thread that holds the
    /// lock while only the retention listens (see `capture/retaining.rs`). The batch is
    /// sealed as any, when full or by the next collection.
    pub(crate) fn append(&mut self, header: &RecordHeader, meta: &[u8], packet: &[u8]) {
        let Log {
            open,
            sealed,
            batch_bytes,
            ..
        } = self;
        open.append(sealed, *batch_bytes, header, (meta, &[]), (packet, &[]));
        self.logged += 1;
        self.clamped += u64::from(header.clamped);
    }

    /// Counts what the rings lost since the last collection, without draining them: a
    /// reader that finds no record must still see the losses behind the last one.
    pub(crate) fn take_ring_losses(&mut self) {
        let mut lost = [0; Path::KINDS];
        for ring in &mut self.rings {
            ring.take_losses(&mut lost);
        }
        self.count_lost(&lost);
    }

    /// Gives sequence numbers, and no bytes, to records the rings could not take.
    pub(crate) fn count_lost(&mut self, lost: &KindCounts) {
        let total: u64 = lost.iter().sum();
        if total == 0 {
            return;
        }
        self.open.seal_into(&mut self.sealed);
        self.sealed.end_seq += total;
        for (kind, count) in lost.iter().enumerate() {
            self.sealed.kinds_to_end[kind] += count;
        }
        self.open.first_seq = self.sealed.end_seq;
        self.open.kinds = self.sealed.kinds_to_end;
        self.logged += total;
    }
}

impl Open {
    fn append(
        &mut self,
        sealed: &mut Sealed,
        batch_bytes: usize,
        header: &RecordHeader,
        meta: (&[u8], &[u8]),
        packet: (&[u8], &[u8]),
    ) {
        let kept = header.kept_len as usize;
        let need = STORED_HEADER_LEN + kept;
        if self.buffer.capacity() - self.buffer.len() < need {
            self.seal_into(sealed);
            self.renew(sealed, need.max(batch_bytes));
        }
        let incl = (PATH_LEN + kept) as u32;
        let orig = pcap::saturating_u32((header.orig_len as usize).saturating_add(PATH_LEN));
        let mut stored = [0u8; STORED_HEADER_LEN];
        stored[0..4].copy_from_slice(&header.ts.secs().to_le_bytes());
        stored[4..8].copy_from_slice(&header.ts.micros().to_le_bytes());
        stored[8..12].copy_from_slice(&incl.to_le_bytes());
        stored[12..16].copy_from_slice(&orig.to_le_bytes());
        stored[16..18].copy_from_slice(&u16::from(header.path).to_le_bytes());
        self.buffer.extend_from_slice(&stored);
        self.buffer.extend_from_slice(packet.0);
        self.buffer.extend_from_slice(packet.1);
        self.side.put_u16_le((header.ts.nanos() % 1_000) as u16);
        self.side.put_u8(header.meta_len);
        self.side.extend_from_slice(meta.0);
        self.side.extend_from_slice(meta.1);
        if self.records == 0 {
            self.kinds_to_start = self.kinds;
        }
        self.records += 1;
        self.max_incl = self.max_incl.max(incl);
        self.kinds[header.path.kind_index()] += 1;
    }

    /// Moves the batch, if it holds records, to the sealed queue.
    fn seal_into(&mut self, sealed: &mut Sealed) {
        if self.records == 0 {
            return;
        }
        let batch = Batch {
            first_seq: self.first_seq,
            records: self.records,
            data: self.buffer.split().freeze(),
            side: self.side.split().freeze(),
            max_incl: std::mem::take(&mut self.max_incl),
            kinds_to_start: self.kinds_to_start,
            kinds_to_end: self.kinds,
        };
        self.first_seq = batch.end_seq();
        self.records = 0;
        sealed.push(batch);
    }

    fn renew(&mut self, sealed: &mut Sealed, size: usize) {
        let mut buffer = sealed.spare.pop().unwrap_or_else(|| {
            self.fresh_buffers += 1;
            BytesMut::new()
        });
        // On a buffer nobody else holds, `reserve` reclaims the whole allocation.
        buffer.reserve(size);
        self.buffer = buffer;
        self.side.reserve(size / STORED_HEADER_LEN * SIDE_LEN);
    }
}

impl Sealed {
    /// Bytes of the batches that end after `cursor`.
    fn unread_bytes(&self, cursor: u64) -> usize {
        let read = self.queue.partition_point(|b| b.end_seq() <= cursor);
        self.queue.range(read..).map(|b| b.data.len()).sum()
    }

    fn push(&mut self, batch: Batch) {
        self.end_seq = batch.end_seq();
        self.kinds_to_end = batch.kinds_to_end;
        self.bytes += batch.data.len();
        self.queue.push_back(batch);
        // The newest batch stays, even alone over the bound: it may be one huge record.
        // A batch the retention still needs stays too.
        while self.bytes > self.backlog_bytes && self.queue.len() > 1 {
            let Some(oldest) = self.queue.front() else {
                break;
            };
            if self.bytes - oldest.data.len() < self.retain_bytes {
                break;
            }
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= old.data.len();
            self.recycle(old.data);
        }
    }

    fn recycle(&mut self, data: Bytes) {
        if self.spare.len() < MAX_SPARE {
            if let Ok(mut buffer) = data.try_into_mut() {
                buffer.clear();
                self.spare.push(buffer);
            }
        }
    }
}

/// Locks a mutex whose data no panic can leave half-written (collections are plain
/// buffer and queue operations), so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes a mutex only if nobody holds it.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{ring, RingWriter};

    pub(super) fn write(writer: &mut RingWriter, path: Path, ts: Timestamp, packet: &[u8]) {
        let header = RecordHeader {
            ts,
            clamped: false,
            path,
            orig_len: packet.len() as u32,
            kept_len: packet.len().min(MAX_STORED_PACKET) as u32,
            meta_len: 0,
        };
        let kept = &packet[..header.kept_len as usize];
        writer
            .try_write(&header.to_bytes(), &[], kept)
            .expect("room in the ring");
    }

    fn sealed(log: &Log) -> Vec<Batch> {
        let mut batches = Vec::new();
        log.batches_from(0, &mut batches);
        batches
    }

    #[test]
    fn records_read_back_as_written() {
        let mut log = Log::new(4096, 16384, 0);
        let (mut writer, reader) = ring(1, 4096);
        log.adopt(&mut vec![reader]);
        for i in 0..3u8 {
            write(
                &mut writer,
                Path::FromPeer,
                Timestamp::new(u32::from(i), 1_234),
                &[i; 10],
            );
        }
        assert!(log.collect());
        let batches = sealed(&log);
        let read: Vec<_> = records(&batches[0].data, &batches[0].side).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].ts, Timestamp::new(2, 1_234));
        assert_eq!(read[2].packet, &[2u8; 10]);
        assert_eq!(read[2].orig_len, 10);
        assert_eq!(batches[0].max_incl, 12);
        assert!(!log.collect(), "nothing new");
    }

    #[test]
    fn a_metadata_block_reads_back_beside_its_record() {
        let mut log = Log::new(4096, 16384, 0);
        let (mut writer, reader) = ring(1, 1 << 20);
        log.adopt(&mut vec![reader]);
        let meta = [4u8, 100, 64, 0, 1];
        let header = RecordHeader {
            ts: Timestamp::new(7, 1_234_567),
            clamped: false,
            path: Path::FromPeer,
            orig_len: 3,
            kept_len: 3,
            meta_len: meta.len() as u8,
        };
        writer
            .try_write(&header.to_bytes(), &meta, &[1, 2, 3])
            .unwrap();
        write(&mut writer, Path::FromLocal, Timestamp::new(8, 0), &[9; 4]);
        log.collect();
        let batches = sealed(&log);
        let read: Vec<_> = records(&batches[0].data, &batches[0].side).collect();
        assert_eq!(
            (read[0].meta, read[0].packet),
            (&meta[..], &[1u8, 2, 3][..])
        );
        assert_eq!(read[0].ts, Timestamp::new(7, 1_234_567));
        assert_eq!((read[1].meta, read[1].packet), (&[][..], &[9u8; 4][..]));
        // The seed layout stays byte for byte: the metadata lives beside it.
        assert_eq!(batches[0].data.len(), 2 * STORED_HEADER_LEN + 3 + 4);
    }

    #[test]
    fn rings_merge_in_time_order_each_keeping_its_own() {
        let mut log = Log::new(4096, 1 << 20, 0);
        let (mut a, ra) = ring(1, 4096);
        let (mut b, rb) = ring(1, 4096);
        log.adopt(&mut vec![ra, rb]);
        let at = |n: u32| Timestamp::new(100, n);
        for n in [1, 4, 5] {
            write(&mut a, Path::FromLocal, at(n), &[n as u8]);
        }
        // Out of time order within one ring: kept in that ring's order.
        for n in [2, 3, 9, 6] {
            write(&mut b, Path::FromPeer, at(n), &[n as u8]);
        }
        log.collect();
        let order: Vec<u8> = sealed(&log)
            .iter()
            .flat_map(|b| {
                records(&b.data, &b.side)
                    .map(|r| r.packet[0])
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(order, [1, 2, 3, 4, 5, 9, 6]);
    }

    #[test]
    fn records_that_wrap_around_a_ring_read_back_whole() {
        let mut log = Log::new(4096, 1 << 20, 0);
        let (mut writer, reader) = ring(1, 1000);
        log.adopt(&mut vec![reader]);
        let mut expected = Vec::new();
        for i in 0..40u8 {
            let packet: Vec<u8> = (0..100 + i).collect();
            write(
                &mut writer,
                Path::FromPeer,
                Timestamp::new(u32::from(i), 0),
                &packet,
            );
            expected.push(packet);
            if i % 3 == 2 {
                log.collect();
            }
        }
        log.collect();
        let got: Vec<Vec<u8>> = sealed(&log)
            .iter()
            .flat_map(|b| {
                records(&b.data, &b.side)
                    .map(|r| r.packet.to_vec())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn lost_records_become_a_counted_gap() {
        let mut log = Log::new(4096, 1 << 20, 0);
        let (mut writer, reader) = ring(1, 4096);
        log.adopt(&mut vec![reader]);
        write(&mut writer, Path::FromPeer, Timestamp::MIN, &[1; 10]);
        log.collect();
        writer.lose(Path::FromLocal);
        writer.lose(Path::FromLocal);
        write(&mut writer, Path::FromPeer, Timestamp::MIN, &[2; 10]);
        log.collect();
        let batches = sealed(&log);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].first_seq, batches[0].end_seq() + 2);
        let local = Path::FromLocal.kind_index();
        assert_eq!(
            batches[1].kinds_to_start[local] - batches[0].kinds_to_end[local],
            2
        );
        assert_eq!(log.logged, 4);
    }

    #[test]
    fn backlog_evicts_oldest_and_reuses_buffers() {
        let mut log = Log::new(4096, 3 * 4096, 0);
        let (mut writer, reader) = ring(1, 8192);
        log.adopt(&mut vec![reader]);
        for i in 0..1000 {
            write(&mut writer, Path::FromPeer, Timestamp::MIN, &[0; 100]);
            if i % 20 == 19 {
                log.collect();
            }
        }
        assert!(log.sealed.bytes <= 3 * 4096);
        assert!(log.oldest().0 > 0);
        assert_eq!(log.end_seq(), 1000);
        // About 30 batches' worth; with reuse only the backlog's worth of buffers (and
        // one or two in flight) is ever allocated.
        assert!(
            log.open.fresh_buffers <= 6,
            "{} fresh buffers",
            log.open.fresh_buffers
        );
    }

    #[test]
    fn a_collection_with_a_budget_leaves_the_rest_in_the_ring() {
        let mut log = Log::new(4096, 1 << 20, 0);
        let (mut writer, reader) = ring(1, 1 << 20);
        log.adopt(&mut vec![reader]);
        for i in 0..100u8 {
            write(
                &mut writer,
                Path::FromPeer,
                Timestamp::new(u32::from(i), 0),
                &[i; 80],
            );
        }
        assert!(log.collect_up_to(1000));
        assert_eq!(log.end_seq(), 10, "ten records of 100 bytes in the ring");
        assert_eq!(log.pending_bytes(), 90 * 100);
        log.collect();
        let secs: Vec<u32> = sealed(&log)
            .iter()
            .flat_map(|b| {
                records(&b.data, &b.side)
                    .map(|r| r.ts.secs())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(secs, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn only_unread_batches_count_against_the_backlog() {
        let mut log = Log::new(4096, 8 * 4096, 0);
        let (mut writer, reader) = ring(1, 1 << 20);
        log.adopt(&mut vec![reader]);
        for _ in 0..60 {
            write(&mut writer, Path::FromPeer, Timestamp::MIN, &[0; 482]);
        }
        log.collect();
        assert!(
            !log.has_room(4096, Some(0)),
            "nothing read: the backlog is full"
        );
        assert!(
            !log.has_room(4096, None),
            "unknown cursors count every byte"
        );
        assert!(log.has_room(4096, Some(log.end_seq())), "everything read");
        assert!(log.has_room(8 * 4096, Some(log.end_seq())));
    }

    #[test]
    fn a_finished_ring_is_dropped_once_read() {
        let mut log = Log::new(4096, 1 << 20, 0);
        let (mut writer, reader) = ring(1, 4096);
        log.adopt(&mut vec![reader]);
        write(&mut writer, Path::FromPeer, Timestamp::MIN, &[1; 10]);
        drop(writer);
        log.collect();
        assert!(log.rings.is_empty());
        assert_eq!(log.end_seq(), 1);
    }
}
