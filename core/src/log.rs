//! The shared backlog: records in the seed layout, in batches that readers clone.
//!
//! The datapath appends each record once, under a lock nobody holds for long, to the
//! open batch. A full batch is sealed (frozen into `Bytes`) and queued; readers clone the
//! handles of sealed batches and encode outside the lock. The queue holds at most
//! `backlog` bytes: the oldest batch goes first, and a reader that had not read it counts
//! its records as lost. Buffers of evicted batches are reused, so a steady capture keeps
//! touching the same memory instead of faulting in fresh pages.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use crate::pcap::{self, MAX_SNAPLEN, PATH_LEN, RECORD_HEADER_LEN};
use crate::{Path, Timestamp};

/// A stored record header: the seed record header, then the path.
pub(crate) const STORED_HEADER_LEN: usize = RECORD_HEADER_LEN + PATH_LEN;
/// The most packet bytes stored for one record; every snaplen an output may ask for fits.
pub(crate) const MAX_STORED_PACKET: usize = MAX_SNAPLEN as usize - PATH_LEN;
/// Evicted buffers kept for reuse.
const MAX_SPARE: usize = 4;

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

#[derive(Debug)]
pub(crate) struct Log {
    batch_bytes: usize,
    backlog_bytes: usize,
    open: BytesMut,
    open_sub_micros: BytesMut,
    open_first_seq: u64,
    open_records: u32,
    open_max_incl: u32,
    sealed: VecDeque<Batch>,
    sealed_bytes: usize,
    spare: Vec<BytesMut>,
    pub(crate) closed: bool,
    pub(crate) logged: u64,
    pub(crate) clamped: u64,
}

/// Which waiting readers an append must wake once the lock is released.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Wake {
    /// The first record of an empty batch: readers that wait for any record.
    pub(crate) data_readers: bool,
    /// A batch was sealed: readers that hold records back for a full batch.
    pub(crate) batch_readers: bool,
}

impl Log {
    pub(crate) fn new(batch_bytes: usize, backlog_bytes: usize) -> Log {
        Log {
            batch_bytes,
            backlog_bytes,
            open: BytesMut::new(),
            open_sub_micros: BytesMut::new(),
            open_first_seq: 0,
            open_records: 0,
            open_max_incl: 0,
            sealed: VecDeque::new(),
            sealed_bytes: 0,
            spare: Vec::new(),
            closed: false,
            logged: 0,
            clamped: 0,
        }
    }

    /// Sequence number the next record will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.open_first_seq + u64::from(self.open_records)
    }

    /// Sequence number of the oldest record still held.
    pub(crate) fn oldest_seq(&self) -> u64 {
        self.sealed
            .front()
            .map_or(self.open_first_seq, |b| b.first_seq)
    }

    pub(crate) fn append(
        &mut self,
        path: Path,
        ts: Timestamp,
        clamped: bool,
        packet: &[u8],
    ) -> Wake {
        let kept = &packet[..packet.len().min(MAX_STORED_PACKET)];
        let need = STORED_HEADER_LEN + kept.len();
        let mut wake = Wake::default();
        if self.open.capacity() - self.open.len() < need {
            wake.batch_readers = self.seal();
            self.renew_open(need);
        }
        let orig = pcap::saturating_u32(packet.len().saturating_add(PATH_LEN));
        let incl = (PATH_LEN + kept.len()) as u32;
        let mut header = [0u8; STORED_HEADER_LEN];
        header[0..4].copy_from_slice(&ts.secs().to_le_bytes());
        header[4..8].copy_from_slice(&ts.micros().to_le_bytes());
        header[8..12].copy_from_slice(&incl.to_le_bytes());
        header[12..16].copy_from_slice(&orig.to_le_bytes());
        header[16..18].copy_from_slice(&u16::from(path).to_le_bytes());
        self.open.extend_from_slice(&header);
        self.open.extend_from_slice(kept);
        self.open_sub_micros.put_u16_le((ts.nanos() % 1_000) as u16);
        self.open_records += 1;
        self.open_max_incl = self.open_max_incl.max(incl);
        self.logged += 1;
        self.clamped += u64::from(clamped);
        wake.data_readers = self.open_records == 1;
        if self.open.len() >= self.batch_bytes - self.batch_bytes / 8 {
            wake.batch_readers |= self.seal();
        }
        wake
    }

    /// Moves the open batch, if it holds records, to the sealed queue; says whether it
    /// did.
    pub(crate) fn seal(&mut self) -> bool {
        if self.open_records == 0 {
            return false;
        }
        let batch = Batch {
            first_seq: self.open_first_seq,
            records: self.open_records,
            max_incl: std::mem::take(&mut self.open_max_incl),
            data: self.open.split().freeze(),
            sub_micros: self.open_sub_micros.split().freeze(),
        };
        self.open_first_seq = batch.end_seq();
        self.open_records = 0;
        self.sealed_bytes += batch.data.len();
        self.sealed.push_back(batch);
        // The newest batch stays, even alone over the bound: it may be one huge record.
        while self.sealed_bytes > self.backlog_bytes && self.sealed.len() > 1 {
            let Some(old) = self.sealed.pop_front() else {
                break;
            };
            self.sealed_bytes -= old.data.len();
            self.recycle(old.data);
        }
        true
    }

    /// Sequence number of the first record not yet in a sealed batch.
    pub(crate) fn sealed_end(&self) -> u64 {
        self.open_first_seq
    }

    fn recycle(&mut self, data: Bytes) {
        if self.spare.len() < MAX_SPARE {
            if let Ok(mut buffer) = data.try_into_mut() {
                buffer.clear();
                self.spare.push(buffer);
            }
        }
    }

    fn renew_open(&mut self, need: usize) {
        let size = need.max(self.batch_bytes);
        let mut buffer = self.spare.pop().unwrap_or_default();
        // On a buffer nobody else holds, `reserve` reclaims the whole allocation.
        buffer.reserve(size);
        self.open = buffer;
        let mut sub = std::mem::take(&mut self.open_sub_micros);
        sub.reserve(size / STORED_HEADER_LEN * 2);
        self.open_sub_micros = sub;
    }

    /// Clones the handles of the sealed batches that end after `cursor` into `out`.
    pub(crate) fn sealed_from(&self, cursor: u64, out: &mut Vec<Batch>) {
        let start = self.sealed.partition_point(|b| b.end_seq() <= cursor);
        out.extend(self.sealed.range(start..).cloned());
    }

    /// Whether the open batch holds records at or after `cursor`.
    pub(crate) fn has_open_after(&self, cursor: u64) -> bool {
        self.next_seq() > cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_n(log: &mut Log, n: usize, len: usize) {
        for i in 0..n {
            log.append(
                Path::FromPeer,
                Timestamp::new(i as u32, 1_234),
                false,
                &vec![i as u8; len],
            );
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let mut log = Log::new(4096, 16384);
        log_n(&mut log, 3, 10);
        log.seal();
        let mut batches = Vec::new();
        log.sealed_from(0, &mut batches);
        let read: Vec<_> = records(&batches[0].data, &batches[0].sub_micros).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].ts, Timestamp::new(2, 1_234));
        assert_eq!(read[2].packet, &[2u8; 10]);
        assert_eq!(read[2].orig_len, 10);
    }

    #[test]
    fn backlog_evicts_oldest_and_reuses_buffers() {
        let mut log = Log::new(4096, 3 * 4096);
        log_n(&mut log, 1000, 100);
        assert!(log.sealed_bytes <= 3 * 4096);
        assert!(log.oldest_seq() > 0);
        assert_eq!(log.next_seq(), 1000);
        // Evicted buffers come back: allocation is bounded, not one per batch.
        assert!(!log.spare.is_empty() || log.open.capacity() >= 4096);
    }

    #[test]
    fn huge_packets_are_stored_cut() {
        let mut log = Log::new(4096, 16384);
        log.append(Path::Disco, Timestamp::MIN, false, &vec![1; 1 << 20]);
        log.seal();
        let mut batches = Vec::new();
        log.sealed_from(0, &mut batches);
        let rec = records(&batches[0].data, &batches[0].sub_micros)
            .next()
            .unwrap();
        assert_eq!(rec.packet.len(), MAX_STORED_PACKET);
        assert_eq!(rec.orig_len, 1 << 20);
    }
}
