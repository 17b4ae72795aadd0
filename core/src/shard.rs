//! One shard of the log: the records some datapath threads appended since the last
//! seal, each with its number in the log's one order.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::{Batch, KindCounts, Sealed, MAX_STORED_PACKET, STORED_HEADER_LEN};
use crate::pcap::{self, PATH_LEN, RECORD_HEADER_LEN};
use crate::{Path, Timestamp};

/// The shard a thread appends to, of a power-of-two number of shards: threads take
/// shards in turn as they first log, counted across the process, so a few threads
/// that start together get shards of their own (threads that come and go may end up
/// sharing one).
pub(crate) fn of_this_thread(shards: usize) -> usize {
    debug_assert!(shards.is_power_of_two());
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    // A thread that logs while its thread-locals are torn down uses shard 0.
    let slot = SLOT
        .try_with(|slot| {
            if slot.get() == usize::MAX {
                slot.set(NEXT.fetch_add(1, Ordering::Relaxed));
            }
            slot.get()
        })
        .unwrap_or(0);
    slot & (shards - 1)
}

/// Records appended to one shard since the last seal, under the shard's lock.
#[derive(Debug)]
pub(crate) struct Shard {
    batch_bytes: usize,
    buffer: BytesMut,
    sub_micros: BytesMut,
    /// The log numbers of the records, rising, as runs of consecutive numbers.
    seqs: Runs,
    max_incl: u32,
    kinds: KindCounts,
    pub(crate) closed: bool,
}

/// What one append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored; `first` when the shard was empty before, `full` when it should be
    /// sealed now.
    Stored { first: bool, full: bool },
    /// No room: seal, then append again.
    NoRoom,
}

/// A shard's records, taken by a seal.
#[derive(Debug)]
pub(crate) struct Part {
    data: Bytes,
    sub_micros: Bytes,
    seqs: Runs,
    max_incl: u32,
    kinds: KindCounts,
}

impl Part {
    /// Records in this part.
    pub(crate) fn len(&self) -> usize {
        self.seqs.len
    }
}

impl Shard {
    pub(crate) fn new(batch_bytes: usize) -> Shard {
        Shard {
            batch_bytes,
            buffer: BytesMut::new(),
            sub_micros: BytesMut::new(),
            seqs: Runs::default(),
            max_incl: 0,
            kinds: [0; Path::KINDS],
            closed: false,
        }
    }

    /// Records waiting here.
    pub(crate) fn len(&self) -> usize {
        self.seqs.len
    }

    /// Records per path kind waiting here.
    pub(crate) fn kinds(&self) -> &KindCounts {
        &self.kinds
    }

    /// Appends one record, numbered from `next_seq` under this shard's lock, so that
    /// numbers rise within a shard and a seal that holds every shard's lock sees every
    /// number below the counter.
    pub(crate) fn append(
        &mut self,
        next_seq: &AtomicU64,
        path: Path,
        ts: Timestamp,
        packet: &[u8],
    ) -> Appended {
        let kept = &packet[..packet.len().min(MAX_STORED_PACKET)];
        let need = STORED_HEADER_LEN + kept.len();
        if self.buffer.capacity() - self.buffer.len() < need {
            if !self.seqs.is_empty() {
                return Appended::NoRoom;
            }
            // An empty shard gets room for a batch, or for a record larger than one.
            self.buffer.reserve(need.max(self.batch_bytes));
            self.sub_micros
                .reserve(self.batch_bytes / STORED_HEADER_LEN * 2);
        }
        let first = self.seqs.is_empty();
        let seq = next_seq.fetch_add(1, Ordering::SeqCst);
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
        self.seqs.push(seq);
        self.max_incl = self.max_incl.max(incl);
        self.kinds[path.kind_index()] += 1;
        Appended::Stored {
            first,
            full: self.buffer.len() >= self.batch_bytes - self.batch_bytes / 8,
        }
    }

    /// Takes the records waiting here, if any, and makes room for the next batch with
    /// a buffer from `sealed`'s spares when too little is left.
    pub(crate) fn take(&mut self, sealed: &mut Sealed) -> Option<Part> {
        let part = (!self.seqs.is_empty()).then(|| Part {
            data: self.buffer.split().freeze(),
            sub_micros: self.sub_micros.split().freeze(),
            seqs: std::mem::take(&mut self.seqs),
            max_incl: std::mem::take(&mut self.max_incl),
            kinds: std::mem::take(&mut self.kinds),
        });
        // Kept until nearly used up: a reader that seals each record as it comes would
        // otherwise have the shard take a buffer for every few records.
        if self.buffer.capacity() - self.buffer.len() < self.batch_bytes / 8 {
            let mut buffer = sealed.spare.pop().unwrap_or_default();
            // On a buffer nobody else holds, `reserve` reclaims the whole allocation.
            buffer.reserve(self.batch_bytes);
            self.buffer = buffer;
            self.sub_micros
                .reserve(self.batch_bytes / STORED_HEADER_LEN * 2);
        }
        part
    }
}

/// Makes one batch of the parts a seal took, numbered from `sealed`'s end: the part
/// itself when there is one, else the records of all in number order, copied once.
pub(crate) fn merge(mut parts: Vec<Part>, sealed: &mut Sealed) -> Batch {
    let first_seq = sealed.end_seq();
    let records: usize = parts.iter().map(|p| p.seqs.len).sum();
    let max_incl = parts.iter().map(|p| p.max_incl).max().unwrap_or(0);
    let mut kinds_to_end = sealed.kinds_to_end;
    for part in &parts {
        for (total, n) in kinds_to_end.iter_mut().zip(part.kinds) {
            *total += n;
        }
    }
    let batch = |data, sub_micros, records: usize| Batch {
        first_seq,
        records: records as u32,
        data,
        sub_micros,
        max_incl,
        kinds_to_end,
    };
    if parts.len() == 1 {
        let part = parts.remove(0);
        debug_assert_eq!(part.seqs.run(0).map(|r| r.0), Some(first_seq));
        return batch(part.data, part.sub_micros, records);
    }
    let bytes: usize = parts.iter().map(|p| p.data.len()).sum();
    let mut data = sealed.spare.pop().unwrap_or_default();
    data.reserve(bytes);
    let mut sub_micros = BytesMut::with_capacity(records * 2);
    // Per part: the next run, its records and bytes already copied.
    let mut at = vec![(0usize, 0usize, 0usize); parts.len()];
    let mut copied = 0;
    while copied < records {
        let want = first_seq + copied as u64;
        let next_run = |i: usize| parts[i].seqs.run(at[i].0);
        let Some(i) =
            (0..parts.len()).find(|&i| next_run(i).is_some_and(|(start, _)| start == want))
        else {
            debug_assert!(false, "record {want} missing from the parts");
            break;
        };
        let Some((_, run)) = next_run(i) else { break };
        let (part, (run_index, record, offset)) = (&parts[i], &mut at[i]);
        // A run of consecutive numbers is consecutive in the part too: one copy.
        let start = *offset;
        for _ in 0..run {
            *offset += stored_len(&part.data[*offset..]);
        }
        data.extend_from_slice(&part.data[start..*offset]);
        sub_micros.extend_from_slice(&part.sub_micros[*record * 2..(*record + run as usize) * 2]);
        *record += run as usize;
        *run_index += 1;
        copied += run as usize;
    }
    for part in parts {
        sealed.recycle(part.data);
    }
    batch(data.freeze(), sub_micros.freeze(), copied)
}

/// The length of the stored record at the start of `data`, header included.
fn stored_len(data: &[u8]) -> usize {
    let incl = u32::from_le_bytes([data[8], data[9], data[10], data[11]]) as usize;
    RECORD_HEADER_LEN + incl
}

/// Rising numbers stored as runs of consecutive ones. The first run is kept inline: a
/// shard that one thread fills holds one run and never allocates for it.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    head: Option<(u64, u32)>,
    rest: Vec<(u64, u32)>,
    len: usize,
}

impl Runs {
    fn push(&mut self, seq: u64) {
        self.len += 1;
        let last = self.rest.last_mut().or(self.head.as_mut());
        match last {
            Some((start, count)) if *start + u64::from(*count) == seq => *count += 1,
            Some(_) => self.rest.push((seq, 1)),
            None => self.head = Some((seq, 1)),
        }
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Run `i`: its first number and length.
    fn run(&self, i: usize) -> Option<(u64, u32)> {
        match i {
            0 => self.head,
            _ => self.rest.get(i - 1).copied(),
        }
    }
}
