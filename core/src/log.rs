//! The shared backlog: records in the seed layout, in batches that readers clone.
//!
//! The datapath appends each record once, under a lock nobody holds for long, to the
//! open batch. A full batch is sealed (frozen into `Bytes`) and queued; readers clone the
//! handles of sealed batches and encode outside the lock. The queue holds at most
//! `backlog` bytes: the oldest batch goes first, and a reader that had not read it counts
//! its records as lost. Buffers of evicted batches are reused, so a steady capture keeps
//! touching the same memory instead of faulting in fresh pages.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};

use crate::pcap::{self, MAX_SNAPLEN, PATH_LEN, RECORD_HEADER_LEN};
use crate::{Path, Timestamp};

/// A stored record header: the seed record header, then the path.
pub(crate) const STORED_HEADER_LEN: usize = RECORD_HEADER_LEN + PATH_LEN;
/// The most packet bytes stored for one record; every snaplen an output may ask for fits.
pub(crate) const MAX_STORED_PACKET: usize = MAX_SNAPLEN as usize - PATH_LEN;
/// Evicted buffers kept for reuse.
const MAX_SPARE: usize = 4;

/// Records counted per path kind ([`Path::kind_index`]), from the capture's start up to
/// some sequence number. The difference of two tells how many records of each kind lie
/// between them, after their bytes are gone: an output that keeps some paths counts as
/// lost only the evicted records of those.
pub(crate) type KindCounts = [u64; Path::KINDS];

/// A sealed run of records: `data` in the seed layout (microseconds, snaplen 262144);
/// `sub_micros` the nanoseconds below the microsecond of each record, as `u16` LE.
#[derive(Clone, Debug)]
pub(crate) struct Batch {
    pub(crate) first_seq: u64,
    pub(crate) records: u32,
    pub(crate) data: Bytes,
    pub(crate) sub_micros: Bytes,
    /// The largest `incl_len` among the records: whether a snaplen cuts none of them.
    pub(crate) max_incl: u32,
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
    /// The whole stored record, header included.
    pub(crate) raw: &'a [u8],
}

/// Walks the records of a batch's bytes.
pub(crate) fn records<'a>(
    data: &'a [u8],
    sub_micros: &'a [u8],
) -> impl Iterator<Item = StoredRecord<'a>> {
    let mut offset = 0;
    sub_micros.chunks_exact(2).map_while(move |sub| {
        let header = data.get(offset..offset + STORED_HEADER_LEN)?;
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let incl = word(8) as usize;
        let raw = data.get(offset..offset + RECORD_HEADER_LEN + incl)?;
        offset += raw.len();
        let nanos = word(4) * 1_000 + u32::from(u16::from_le_bytes([sub[0], sub[1]]));
        Some(StoredRecord {
            path: Path::from(u16::from_le_bytes([header[16], header[17]])),
            ts: Timestamp::new(word(0), nanos),
            packet: &raw[STORED_HEADER_LEN..],
            orig_len: (word(12) as usize).saturating_sub(PATH_LEN),
            raw,
        })
    })
}

/// The batch the datapath appends to, under the datapath's lock.
#[derive(Debug)]
pub(crate) struct Open {
    batch_bytes: usize,
    buffer: BytesMut,
    sub_micros: BytesMut,
    first_seq: u64,
    records: u32,
    max_incl: u32,
    /// Records per path kind before `next_seq`.
    kinds: KindCounts,
    pub(crate) closed: bool,
    pub(crate) logged: u64,
    pub(crate) clamped: u64,
    /// Batch buffers allocated because no evicted one could be reused.
    fresh_buffers: u64,
    /// An output attached while this batch held records: it waits for a record that
    /// would otherwise land mid-batch, where no wake-up is due.
    wake_next: bool,
}

/// Sealed batches, under the readers' lock. The datapath takes it once a batch.
#[derive(Debug)]
pub(crate) struct Sealed {
    backlog_bytes: usize,
    queue: VecDeque<Batch>,
    bytes: usize,
    /// Sequence number of the first record not sealed yet.
    end_seq: u64,
    spare: Vec<BytesMut>,
    /// Records per path kind before [`Sealed::oldest_seq`].
    kinds_to_oldest: KindCounts,
    pub(crate) closed: bool,
}

/// Which waiting readers an append must wake once the lock is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    /// The first record of an empty batch: readers that wait for any record.
    pub(crate) data_readers: bool,
    /// A batch was sealed: readers that hold records back for a full batch.
    pub(crate) batch_readers: bool,
}

impl Open {
    pub(crate) fn new(batch_bytes: usize) -> Open {
        Open {
            batch_bytes,
            buffer: BytesMut::new(),
            sub_micros: BytesMut::new(),
            first_seq: 0,
            records: 0,
            max_incl: 0,
            kinds: [0; Path::KINDS],
            closed: false,
            logged: 0,
            clamped: 0,
            fresh_buffers: 0,
            wake_next: false,
        }
    }

    /// Makes the next append wake the readers waiting for any record, as the first
    /// record of a batch does.
    pub(crate) fn wake_on_next_record(&mut self) {
        self.wake_next = self.records > 0;
    }

    /// Sequence number the next record will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.first_seq + u64::from(self.records)
    }

    /// Records per path kind before [`Open::next_seq`].
    pub(crate) fn kinds(&self) -> KindCounts {
        self.kinds
    }

    /// Sequence number of the first record not sealed yet.
    pub(crate) fn sealed_end(&self) -> u64 {
        self.first_seq
    }

    /// Whether the open batch holds records at or after `cursor`.
    pub(crate) fn has_records_after(&self, cursor: u64) -> bool {
        self.next_seq() > cursor
    }

    /// Whether an output attached mid-batch waits for this record; a plain load when not.
    fn take_wake_next(&mut self) -> bool {
        if self.wake_next {
            self.wake_next = false;
            return true;
        }
        false
    }

    /// Appends one record; `sealed` is locked only when a batch is sealed.
    pub(crate) fn append(
        &mut self,
        sealed: &Mutex<Sealed>,
        path: Path,
        ts: Timestamp,
        clamped: bool,
        packet: &[u8],
    ) -> Wake {
        let kept = &packet[..packet.len().min(MAX_STORED_PACKET)];
        let need = STORED_HEADER_LEN + kept.len();
        let mut wake = Wake::default();
        if self.buffer.capacity() - self.buffer.len() < need {
            let mut sealed = lock(sealed);
            wake.batch_readers = self.seal_into(&mut sealed);
            self.renew(&mut sealed, need);
        }
        let orig = pcap::saturating_u32(packet.len().saturating_add(PATH_LEN));
        let incl = (PATH_LEN + kept.len()) as u32;
        let mut header = [0u8; STORED_HEADER_LEN];
        header[0..4].copy_from_slice(&ts.secs().to_le_bytes());
        header[4..8].copy_from_slice(&ts.micros().to_le_bytes());
        header[8..12].copy_from_slice(&incl.to_le_bytes());
        header[12..16].copy_from_slice(&orig.to_le_bytes());
        header[16..18].copy_from_slice(&u16::from(path).to_le_bytes());
        self.buffer.extend_from_slice(&header);
        self.buffer.extend_from_slice(kept);
        self.sub_micros.put_u16_le((ts.nanos() % 1_000) as u16);
        self.records += 1;
        self.max_incl = self.max_incl.max(incl);
        self.kinds[path.kind_index()] += 1;
        self.logged += 1;
        self.clamped += u64::from(clamped);
        wake.data_readers = self.records == 1 || self.take_wake_next();
        if self.buffer.len() >= self.batch_bytes - self.batch_bytes / 8 {
            wake.batch_readers |= self.seal_into(&mut lock(sealed));
        }
        wake
    }

    /// Moves the open batch, if it holds records, to the sealed queue; says whether it
    /// did.
    pub(crate) fn seal_into(&mut self, sealed: &mut Sealed) -> bool {
        if self.records == 0 {
            return false;
        }
        let batch = Batch {
            first_seq: self.first_seq,
            records: self.records,
            data: self.buffer.split().freeze(),
            sub_micros: self.sub_micros.split().freeze(),
            max_incl: std::mem::take(&mut self.max_incl),
            kinds_to_end: self.kinds,
        };
        self.first_seq = batch.end_seq();
        self.records = 0;
        // The next record starts a batch, which wakes every waiting output anyway.
        self.wake_next = false;
        sealed.push(batch);
        true
    }

    fn renew(&mut self, sealed: &mut Sealed, need: usize) {
        let size = need.max(self.batch_bytes);
        let mut buffer = sealed.spare.pop().unwrap_or_else(|| {
            self.fresh_buffers += 1;
            BytesMut::new()
        });
        // On a buffer nobody else holds, `reserve` reclaims the whole allocation.
        buffer.reserve(size);
        self.buffer = buffer;
        self.sub_micros.reserve(size / STORED_HEADER_LEN * 2);
    }
}

impl Sealed {
    pub(crate) fn new(backlog_bytes: usize) -> Sealed {
        Sealed {
            backlog_bytes,
            queue: VecDeque::new(),
            bytes: 0,
            end_seq: 0,
            spare: Vec::new(),
            kinds_to_oldest: [0; Path::KINDS],
            closed: false,
        }
    }

    /// Sequence number of the oldest record still held.
    pub(crate) fn oldest_seq(&self) -> u64 {
        self.queue.front().map_or(self.end_seq, |b| b.first_seq)
    }

    /// Records per path kind before [`Sealed::oldest_seq`].
    pub(crate) fn kinds_to_oldest(&self) -> &KindCounts {
        &self.kinds_to_oldest
    }

    /// Sequence number of the first record not sealed yet.
    pub(crate) fn end_seq(&self) -> u64 {
        self.end_seq
    }

    fn push(&mut self, batch: Batch) {
        self.end_seq = batch.end_seq();
        self.bytes += batch.data.len();
        self.queue.push_back(batch);
        // The newest batch stays, even alone over the bound: it may be one huge record.
        while self.bytes > self.backlog_bytes && self.queue.len() > 1 {
            let Some(old) = self.queue.pop_front() else {
                break;
            };
            self.bytes -= old.data.len();
            self.kinds_to_oldest = old.kinds_to_end;
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

    /// Clones the handles of the sealed batches that end after `cursor` into `out`.
    pub(crate) fn batches_from(&self, cursor: u64, out: &mut Vec<Batch>) {
        let start = self.queue.partition_point(|b| b.end_seq() <= cursor);
        out.extend(self.queue.range(start..).cloned());
    }
}

/// Locks a mutex whose data no panic can leave half-written (appends and seals are
/// plain buffer and queue operations), so a poisoned lock is still usable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Log {
        open: Open,
        sealed: Mutex<Sealed>,
    }

    impl Log {
        fn new(batch: usize, backlog: usize) -> Log {
            Log {
                open: Open::new(batch),
                sealed: Mutex::new(Sealed::new(backlog)),
            }
        }

        fn append(&mut self, path: Path, ts: Timestamp, packet: &[u8]) {
            self.open.append(&self.sealed, path, ts, false, packet);
        }

        fn seal_all(&mut self) -> Vec<Batch> {
            let mut sealed = lock(&self.sealed);
            self.open.seal_into(&mut sealed);
            let mut batches = Vec::new();
            sealed.batches_from(0, &mut batches);
            batches
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let mut log = Log::new(4096, 16384);
        for i in 0..3u8 {
            log.append(
                Path::FromPeer,
                Timestamp::new(u32::from(i), 1_234),
                &[i; 10],
            );
        }
        let batches = log.seal_all();
        let read: Vec<_> = records(&batches[0].data, &batches[0].sub_micros).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].ts, Timestamp::new(2, 1_234));
        assert_eq!(read[2].packet, &[2u8; 10]);
        assert_eq!(read[2].orig_len, 10);
        assert_eq!(batches[0].max_incl, 12);
    }

    #[test]
    fn backlog_evicts_oldest_and_reuses_buffers() {
        let mut log = Log::new(4096, 3 * 4096);
        for _ in 0..1000 {
            log.append(Path::FromPeer, Timestamp::MIN, &[0; 100]);
        }
        let sealed = lock(&log.sealed);
        assert!(sealed.bytes <= 3 * 4096);
        assert!(sealed.oldest_seq() > 0);
        assert_eq!(log.open.next_seq(), 1000);
        // 1000 records of 118 bytes fill about 30 batches; with reuse only the backlog's
        // worth of buffers (and one or two in flight) is ever allocated.
        assert!(
            log.open.fresh_buffers <= 6,
            "{} fresh buffers",
            log.open.fresh_buffers
        );
    }

    #[test]
    fn huge_packets_are_stored_cut() {
        let mut log = Log::new(4096, 16384);
        log.append(Path::Disco, Timestamp::MIN, &vec![1; 1 << 20]);
        let batches = log.seal_all();
        let rec = records(&batches[0].data, &batches[0].sub_micros)
            .next()
            .unwrap();
        assert_eq!(rec.packet.len(), MAX_STORED_PACKET);
        assert_eq!(rec.orig_len, 1 << 20);
    }
}
