//! The shared backlog: records in the seed layout, in batches that readers clone.
//!
//! The datapath appends each record once to a shard of its own thread (see
//! [`crate::shard`]), numbered from one counter so that the log keeps one order. A seal
//! takes every shard's records at once and queues them as one batch (the shard's own
//! bytes when only one shard had any, else merged by number); readers clone the
//! handles of sealed batches and encode outside the lock. The queue holds at most
//! `backlog` bytes: the oldest batch goes first, and a reader that had not read it
//! counts its records as lost. Buffers of evicted batches are reused, so a steady
//! capture keeps touching the same memory instead of faulting in fresh pages.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use crate::capture::CachePadded;
use crate::pcap::{MAX_SNAPLEN, PATH_LEN, RECORD_HEADER_LEN};
use crate::shard::{self, Appended, Shard};
use crate::{Path, Timestamp};

/// A stored record header: the seed record header, then the path.
pub(crate) const STORED_HEADER_LEN: usize = RECORD_HEADER_LEN + PATH_LEN;
/// The most packet bytes stored for one record; every snaplen an output may ask for fits.
pub(crate) const MAX_STORED_PACKET: usize = MAX_SNAPLEN as usize - PATH_LEN;
/// Evicted buffers kept for reuse.
const MAX_SPARE: usize = 8;

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

/// Sealed batches, under the readers' lock. The datapath takes it once a batch.
#[derive(Debug)]
pub(crate) struct Sealed {
    backlog_bytes: usize,
    queue: VecDeque<Batch>,
    bytes: usize,
    /// Sequence number of the first record not sealed yet.
    end_seq: u64,
    pub(crate) spare: Vec<BytesMut>,
    /// Records per path kind before [`Sealed::oldest_seq`].
    kinds_to_oldest: KindCounts,
    /// Records per path kind before [`Sealed::end_seq`].
    pub(crate) kinds_to_end: KindCounts,
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

impl Sealed {
    pub(crate) fn new(backlog_bytes: usize) -> Sealed {
        Sealed {
            backlog_bytes,
            queue: VecDeque::new(),
            bytes: 0,
            end_seq: 0,
            spare: Vec::new(),
            kinds_to_oldest: [0; Path::KINDS],
            kinds_to_end: [0; Path::KINDS],
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

    pub(crate) fn push(&mut self, batch: Batch) {
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

    pub(crate) fn recycle(&mut self, data: Bytes) {
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

/// The log: the shards the datapath appends to, and the sealed batches readers take.
#[derive(Debug)]
pub(crate) struct Log {
    /// Read on every append: on a line no reader writes.
    shards: CachePadded<Box<[CachePadded<Mutex<Shard>>]>>,
    /// The number the next record gets; every record stored so far is below it. Only
    /// the datapath touches it per record: readers look at `unsealed` instead, so that
    /// the counter's line stays with the datapath's cores.
    next_seq: CachePadded<AtomicU64>,
    /// Whether records wait in a shard since the last seal: each shard's first record
    /// sets it and wakes the readers that wait for any record.
    unsealed: CachePadded<AtomicBool>,
    /// Bit `i` set once shard `i` took a record: a seal locks only those, so one
    /// datapath thread's seal takes one shard's lock, not all of them.
    used: CachePadded<AtomicU64>,
    /// The sealed batches: the readers' lock, taken before any shard's.
    pub(crate) sealed: CachePadded<Mutex<Sealed>>,
    /// A copy of the sealed end, so that a reader finds out without a lock that it has
    /// read everything sealed.
    sealed_end: AtomicU64,
    clamped: AtomicU64,
}

impl Log {
    pub(crate) fn new(shards: usize, batch_bytes: usize, backlog_bytes: usize) -> Log {
        Log {
            shards: CachePadded(
                (0..prev_power_of_two(shards.max(1)))
                    .map(|_| CachePadded(Mutex::new(Shard::new(batch_bytes))))
                    .collect(),
            ),
            next_seq: CachePadded(AtomicU64::new(0)),
            unsealed: CachePadded(AtomicBool::new(false)),
            used: CachePadded(AtomicU64::new(0)),
            sealed: CachePadded(Mutex::new(Sealed::new(backlog_bytes))),
            sealed_end: AtomicU64::new(0),
            clamped: AtomicU64::new(0),
        }
    }

    /// Appends one record to this thread's shard; says whom to wake.
    pub(crate) fn append(&self, path: Path, ts: Timestamp, clamped: bool, packet: &[u8]) -> Wake {
        let index = shard::of_this_thread(self.shards.len());
        let shard = &self.shards[index];
        let mut wake = Wake::default();
        loop {
            let mut open = lock(shard);
            if open.closed {
                return wake;
            }
            // Marked before the record is numbered: a seal that sees a number sees the
            // mark of its shard (both in the one order of SeqCst operations).
            let bit = 1 << index;
            if self.used.load(Ordering::Relaxed) & bit == 0 {
                self.used.fetch_or(bit, Ordering::SeqCst);
            }
            match open.append(&self.next_seq, path, ts, packet) {
                Appended::Stored { first, full } => {
                    // Under the shard's lock, so that no seal comes between the record
                    // and the flag. Only a shard's first record since a seal touches
                    // the flag: a line readers read is not written on every record.
                    if first {
                        // SeqCst: ordered with a seal's clearing and its look at `used`.
                        self.unsealed.store(true, Ordering::SeqCst);
                        wake.data_readers = true;
                    }
                    drop(open);
                    if clamped {
                        self.clamped.fetch_add(1, Ordering::Relaxed);
                    }
                    if full {
                        wake.batch_readers |= self.seal(false);
                    }
                    return wake;
                }
                Appended::NoRoom => {
                    drop(open);
                    wake.batch_readers |= self.seal(false);
                }
            }
        }
    }

    /// Seals every record stored so far into one batch; with `close`, the shards take
    /// no more records and the queue is marked closed. Says whether it sealed any.
    pub(crate) fn seal(&self, close: bool) -> bool {
        let mut sealed = lock(&self.sealed);
        // Allocated before any shard's lock is taken: the datapath may wait on those.
        let mut held = Vec::with_capacity(self.shards.len());
        let mut parts = Vec::with_capacity(self.shards.len());
        let mut locked = 0u64;
        let every = if close { u64::MAX } else { 0 };
        loop {
            let fresh = held.len();
            self.lock_more(&mut held, &mut locked, every);
            for open in &mut held[fresh..] {
                open.closed |= close;
                parts.extend(open.take(&mut sealed));
            }
            // The new end first, then the flag: a reader that sees nothing unsealed
            // also sees that there is more sealed, and waits on the readers' lock.
            let taken: usize = parts.iter().map(shard::Part::len).sum();
            self.sealed_end
                .store(sealed.end_seq() + taken as u64, Ordering::Release);
            self.unsealed.store(false, Ordering::SeqCst);
            // A shard that took its first record after the last look at the mask set
            // the flag before or after the store above: look again, and take it too
            // if it is marked by now; a shard marked later sets the flag after.
            if self.used.load(Ordering::SeqCst) & !locked == 0 {
                break;
            }
        }
        drop(held);
        sealed.closed |= close;
        let any = !parts.is_empty();
        if any {
            let batch = shard::merge(parts, &mut sealed);
            sealed.kinds_to_end = batch.kinds_to_end;
            sealed.push(batch);
        }
        any
    }

    /// Where an output attached now starts: the next record's number, and the records
    /// per path kind before it.
    pub(crate) fn attach_point(&self) -> (u64, KindCounts) {
        let sealed = lock(&self.sealed);
        let mut shards = Vec::with_capacity(self.shards.len());
        self.lock_more(&mut shards, &mut 0, 0);
        // Every record numbered so far is in a locked shard (a shard marked later
        // numbers after these), so the cursor and the counts agree.
        let mut kinds = sealed.kinds_to_end;
        let mut waiting = 0;
        for open in &shards {
            waiting += open.len();
            for (total, n) in kinds.iter_mut().zip(open.kinds()) {
                *total += n;
            }
        }
        (sealed.end_seq() + waiting as u64, kinds)
    }

    /// Locks, beside those in `locked`, every shard that took a record (and those in
    /// `also`), until no other has: then every record numbered below the highest
    /// number held is in a locked shard. Only a caller that holds the sealed lock may
    /// hold several shard locks, so their order is free.
    fn lock_more<'a>(&'a self, held: &mut Vec<MutexGuard<'a, Shard>>, locked: &mut u64, also: u64) {
        let all = if self.shards.len() == 64 {
            u64::MAX
        } else {
            (1u64 << self.shards.len()) - 1
        };
        loop {
            let fresh = (self.used.load(Ordering::SeqCst) | also) & all & !*locked;
            if fresh == 0 {
                return;
            }
            for index in (0..self.shards.len()).filter(|i| fresh & (1 << i) != 0) {
                held.push(lock(&self.shards[index]));
            }
            *locked |= fresh;
        }
    }

    /// The number the next record gets: records stored so far.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Acquire)
    }

    /// Whether records wait in the shards: for a reader that has read all that is
    /// sealed, whether there may be more to take (an output attached since they came
    /// finds none of them its own, seals them and waits for the next).
    pub(crate) fn has_unsealed(&self) -> bool {
        self.unsealed.load(Ordering::Acquire)
    }

    /// The number after the last sealed record.
    pub(crate) fn sealed_end(&self) -> u64 {
        self.sealed_end.load(Ordering::Acquire)
    }

    /// Records whose time was saturated.
    pub(crate) fn clamped(&self) -> u64 {
        self.clamped.load(Ordering::Relaxed)
    }
}

/// The largest power of two not above `n` (at least 1).
fn prev_power_of_two(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
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

    fn sealed_batches(log: &Log) -> Vec<Batch> {
        log.seal(false);
        let mut batches = Vec::new();
        lock(&log.sealed).batches_from(0, &mut batches);
        batches
    }

    #[test]
    fn records_read_back_as_written() {
        let log = Log::new(1, 4096, 16384);
        for i in 0..3u8 {
            log.append(
                Path::FromPeer,
                Timestamp::new(u32::from(i), 1_234),
                false,
                &[i; 10],
            );
        }
        let batches = sealed_batches(&log);
        let read: Vec<_> = records(&batches[0].data, &batches[0].sub_micros).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].ts, Timestamp::new(2, 1_234));
        assert_eq!(read[2].packet, &[2u8; 10]);
        assert_eq!(read[2].orig_len, 10);
        assert_eq!(batches[0].max_incl, 12);
    }

    #[test]
    fn backlog_evicts_oldest_and_reuses_buffers() {
        let log = Log::new(1, 4096, 3 * 4096);
        let mut buffers = std::collections::HashSet::new();
        for _ in 0..1000 {
            log.append(Path::FromPeer, Timestamp::MIN, false, &[0; 100]);
            let sealed = lock(&log.sealed);
            if let Some(newest) = sealed.queue.back() {
                buffers.insert(newest.data.as_ptr() as usize);
            }
        }
        let sealed = lock(&log.sealed);
        assert!(sealed.bytes <= 3 * 4096);
        assert!(sealed.oldest_seq() > 0);
        assert_eq!(log.next_seq(), 1000);
        // 1000 records of 118 bytes fill about 30 batches; with reuse only the backlog's
        // worth of buffers (and one or two in flight) is ever used.
        assert!(buffers.len() <= 6, "{} distinct buffers", buffers.len());
    }

    #[test]
    fn huge_packets_are_stored_cut() {
        let log = Log::new(1, 4096, 16384);
        log.append(Path::Disco, Timestamp::MIN, false, &vec![1; 1 << 20]);
        let batches = sealed_batches(&log);
        let rec = records(&batches[0].data, &batches[0].sub_micros)
            .next()
            .unwrap();
        assert_eq!(rec.packet.len(), MAX_STORED_PACKET);
        assert_eq!(rec.orig_len, 1 << 20);
    }

    #[test]
    fn shards_merge_into_one_batch_in_number_order() {
        let log = Log::new(4, 1 << 20, 4 << 20);
        // Four threads, so four shards, each logging in turn: numbers interleave.
        let (turns, seen) = (std::sync::Barrier::new(4), std::sync::Mutex::new(0u32));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    turns.wait();
                    for _ in 0..50 {
                        let mut next = seen.lock().unwrap();
                        log.append(Path::FromLocal, Timestamp::MIN, false, &next.to_le_bytes());
                        *next += 1;
                    }
                });
            }
        });
        let batches = sealed_batches(&log);
        assert_eq!(batches.len(), 1);
        assert_eq!((batches[0].first_seq, batches[0].records), (0, 200));
        let order: Vec<u32> = records(&batches[0].data, &batches[0].sub_micros)
            .map(|r| u32::from_le_bytes(r.packet.try_into().unwrap()))
            .collect();
        assert_eq!(order, (0..200).collect::<Vec<_>>());
        assert_eq!(batches[0].kinds_to_end[Path::FromLocal.kind_index()], 200);
    }
}
