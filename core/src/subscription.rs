//! One output: the records of a capture as a byte stream in that output's format.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use event_listener::EventListener;
use futures_core::Stream;

use crate::capture::Shared;
use crate::encoder::{Stored, LIVE_NOTE};
use crate::log::{self, Batch, HistoryStart, KindCounts, Log, Point};
use crate::outputs::Slot;
use crate::pcap::RECORD_HEADER_LEN;
use crate::{
    Bpf, Encoder, FlushSchedule, Format, History, Meta, Options, OutputWatch, Path, Timestamp,
};

/// Counters of one output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutputStats {
    /// Records handed out.
    pub records: u64,
    /// Bytes handed out, the file header included.
    pub bytes: u64,
    /// Records this output lost because it lagged behind the backlog.
    pub dropped: u64,
    /// Of the records handed out, those logged before the output attached: its
    /// [`History`].
    pub history_records: u64,
}

/// One output of a [`Capture`](crate::Capture): a `Stream` of `Bytes` that holds the
/// file header, then whole records in log order, in this output's format.
///
/// Polling it as a `Stream` hands out whatever was logged so far, with no timer behind
/// it; a pending poll is woken by the next record. Writers that want fewer, larger
/// writes use [`Subscription::poll_next_at`] with a timer: it looks at the datapath's
/// rings on its own schedule and holds records back until a batch is full or the flush
/// interval has passed, so that the datapath never has to wake it for a record. Records
/// that the default seed format can pass on unchanged are handed out as slices of the
/// shared backlog, without a copy per output. Dropping it detaches the output.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
    encoder: Encoder,
    attached: bool,
    /// This output's place among the attached ones; `None` for an output that never
    /// attached.
    slot: Option<Arc<Slot>>,
    cursor: u64,
    /// Records per path kind before the cursor, to count losses by the paths kept.
    kinds_to_cursor: KindCounts,
    header_sent: bool,
    ended: bool,
    ready: VecDeque<Bytes>,
    scratch: BytesMut,
    batches: Vec<Batch>,
    /// Timed hand-out: the listener that tells of a ring filling up.
    listener: Option<EventListener>,
    /// A `Stream` poll that found nothing: the wake-up count when its waker was
    /// registered.
    record_wait: Option<u64>,
    /// The latest record time collected when this output last pulled: a parked
    /// `Stream` poll is woken by a record [`STREAM_WAKE_DEADLINE`] later than it.
    newest_seen: Timestamp,
    schedule: FlushSchedule,
    /// With timed hand-out: when this output last looked at the rings, and when it
    /// looks next.
    last_look: Option<Instant>,
    next_look: Option<Instant>,
    /// When a look last found records: while they flow, look again soon.
    last_found: Option<Instant>,
    stats: OutputStats,
    /// Records lost since the last record handed out, for pcapng's `epb_dropcount`.
    unreported_drops: u64,
    /// The first record logged after the attach: those before are history.
    live_start: u64,
    /// Records before the attach older than this are left out (`History::Last`).
    history_floor: Option<Timestamp>,
    /// Without follow, the stream ends here.
    snapshot_end: Option<Point>,
    /// Without follow, the history's batches, taken at the attach: a snapshot hands out
    /// exactly what the capture held then, however fast the datapath goes on, and
    /// lets each go once handed out.
    pinned: VecDeque<Batch>,
    /// Records of the history this output was to hand out, as counted at its attach.
    history_len: u64,
    /// Whether the first live record still needs its comment (pcapng with history).
    live_note_due: bool,
}

/// Where an attaching output starts, and the history's batches, taken under the log's
/// lock and used after it.
#[derive(Debug)]
pub(crate) struct Attach {
    pub(crate) start: HistoryStart,
    pub(crate) live: Point,
    pub(crate) history: Vec<Batch>,
}

/// How a pull treats records that are not yet in a full batch.
#[derive(Clone, Copy, Debug)]
enum Take {
    /// Take them now.
    Everything,
    /// Take them once the flush interval since they were first seen has passed.
    DueAt(Instant),
}

enum Pulled {
    Data,
    /// Nothing to hand out yet; `Awaited` says what would change that.
    Nothing(Awaited),
    End,
}

/// What a waiting output needs to hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaited {
    /// Any record: a `Stream` poll found nothing.
    AnyRecord,
    /// A ring filling up, or the capture closing: timed hand-out, which otherwise looks
    /// at the rings on its own schedule.
    Look,
}

/// What a snapshot hands out at a pull, at most (but a batch bigger than it).
const SNAPSHOT_PULL: usize = 1 << 20;

/// How soon a timed output looks again while records flow: often enough that a ring
/// (2 MiB by default) is drained before it is half full at 2 GB/s, so that the datapath
/// does not have to wake it.
const BUSY_LOOK: Duration = Duration::from_micros(500);

/// How much later, in the times the datapath passes, than the newest record it had
/// seen a record must be to wake a parked `Stream` poll (a batch's worth waiting
/// wakes it sooner): the datapath wakes it about once per burst, not at every park.
pub const STREAM_WAKE_DEADLINE: Duration = Duration::from_millis(1);

impl Subscription {
    pub(crate) fn attached(shared: Arc<Shared>, options: Options, attach: Attach) -> Subscription {
        let follow = options.get_follow();
        let asks_history = options.get_history() != History::None;
        let slot = shared.outputs.register(attach.start.at.seq);
        let mut subscription = Subscription::ended(shared, options);
        subscription.slot = Some(slot);
        subscription.attached = true;
        subscription.ended = false;
        subscription.cursor = attach.start.at.seq;
        subscription.kinds_to_cursor = attach.start.at.kinds;
        subscription.live_start = attach.live.seq;
        subscription.history_floor = attach.start.floor;
        subscription.snapshot_end = (!follow).then_some(attach.live);
        subscription.live_note_due =
            asks_history && follow && subscription.options().get_format() == Format::Pcapng;
        subscription.history_len = attach
            .history
            .iter()
            .filter(|batch| batch.first_seq < attach.live.seq)
            .map(|batch| subscription.count_history(batch))
            .sum();
        if !follow {
            subscription.pinned = attach.history.into();
        }
        subscription
    }

    /// Records of `batch` this output hands out as history: after its start, of the
    /// paths and filter it keeps, and not older than its floor.
    fn count_history(&self, batch: &Batch) -> u64 {
        let skip = self.cursor.saturating_sub(batch.first_seq) as usize;
        let filter = self.encoder.options().get_bpf();
        log::records(&batch.data, &batch.side)
            .skip(skip)
            .filter(|record| self.keeps(record, filter, self.history_floor))
            .count() as u64
    }

    /// Whether this output writes `record`: a path it keeps, a packet its filter takes,
    /// and not older than `floor`.
    fn keeps(
        &self,
        record: &log::StoredRecord<'_>,
        filter: Option<&Bpf>,
        floor: Option<Timestamp>,
    ) -> bool {
        let accepted = |bpf: &Bpf| {
            let wire_len = u32::try_from(record.orig_len).unwrap_or(u32::MAX);
            bpf.run(record.packet, wire_len) != 0
        };
        self.encoder.writes(record.path)
            && filter.is_none_or(accepted)
            && floor.is_none_or(|floor| record.ts >= floor)
    }

    pub(crate) fn ended(shared: Arc<Shared>, options: Options) -> Subscription {
        let schedule = FlushSchedule::new(options.get_flush_interval(), shared.batch_bytes);
        Subscription {
            shared,
            encoder: Encoder::new(options),
            attached: false,
            slot: None,
            cursor: 0,
            kinds_to_cursor: [0; Path::KINDS],
            header_sent: false,
            ended: true,
            ready: VecDeque::new(),
            scratch: BytesMut::new(),
            batches: Vec::new(),
            listener: None,
            record_wait: None,
            newest_seen: Timestamp::MIN,
            schedule,
            last_look: None,
            next_look: None,
            last_found: None,
            stats: OutputStats::default(),
            unreported_drops: 0,
            live_start: 0,
            history_floor: None,
            snapshot_end: None,
            pinned: VecDeque::new(),
            history_len: 0,
            live_note_due: false,
        }
    }

    /// The options of this output.
    pub fn options(&self) -> &Options {
        self.encoder.options()
    }

    /// Counters of this output.
    pub fn stats(&self) -> OutputStats {
        self.stats
    }

    /// Records this output lost because it lagged.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped
    }

    /// Records of its [`History`] this output was to start with, counted when it
    /// attached (after its paths, filter and span): what a client shows as "from before
    /// the attach". Those lost before it read them count in
    /// [`OutputStats::dropped`]; [`OutputStats::history_records`] says how many it
    /// handed out.
    pub fn history_len(&self) -> u64 {
        self.history_len
    }

    /// Whether this output was detached for being stalled (see [`OutputWatch`]): its
    /// stream has ended, without what it had not handed out yet.
    pub fn is_evicted(&self) -> bool {
        self.slot.as_ref().is_some_and(|slot| slot.is_evicted())
    }

    /// A handle on this output's attachment, for a writer to notice an eviction while a
    /// write is pending, or to detach the output when the write stalls.
    pub fn watch(&self) -> OutputWatch {
        OutputWatch::new(Arc::clone(&self.shared), self.slot.clone())
    }

    /// Counts the records this output has lost so far, also those it has not reached
    /// because its writer is stalled, and returns its whole count of drops.
    pub fn count_lost(&mut self) -> u64 {
        let shared = Arc::clone(&self.shared);
        let log = shared.lock_log();
        self.catch_up(&log);
        drop(log);
        self.note_progress();
        self.stats.dropped
    }

    /// Polls for bytes with timed hand-out; `now` is the caller's clock. Each call looks
    /// at the rings the datapath writes; records found are held back until a batch's
    /// worth waits or the flush interval has passed since the look before the one that
    /// found them (the earliest they can have been logged). Returns `Pending` with a
    /// waker registered for a ring that fills up and for the capture's end; the caller
    /// also arms a timer for [`Subscription::poll_timeout`], which is always set while
    /// the output is attached: with nothing waiting, the output looks once per flush
    /// interval.
    pub fn poll_next_at(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Option<Bytes>> {
        self.poll_with(cx, Take::DueAt(now))
    }

    /// When to call [`Subscription::poll_next_at`] again: when held-back records fall
    /// due, or for the next look at the rings, whichever comes first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.schedule.poll_timeout(), self.next_look) {
            (Some(due), Some(look)) => Some(due.min(look)),
            (due, look) => due.or(look),
        }
    }

    /// Bytes already prepared, without looking at the capture: after a `Ready` from
    /// [`Subscription::poll_next_at`], a writer collects the rest of the batch with this.
    pub fn next_ready(&mut self) -> Option<Bytes> {
        let bytes = self.ready.pop_front()?;
        self.stats.bytes += bytes.len() as u64;
        Some(bytes)
    }

    /// Whether the stream has ended: the capture closed and everything was handed out.
    pub fn is_finished(&self) -> bool {
        self.ended && self.ready.is_empty() && self.header_sent
    }

    fn poll_with(&mut self, cx: &mut Context<'_>, take: Take) -> Poll<Option<Bytes>> {
        loop {
            if self.is_evicted() && !self.ended {
                // What it held back is stale: let the backlog have its batches again.
                self.ready.clear();
                self.pinned.clear();
                self.header_sent = true;
                self.ended = true;
            }
            if let Some(bytes) = self.next_ready() {
                return Poll::Ready(Some(bytes));
            }
            if !self.header_sent {
                self.header_sent = true;
                self.encoder.put_header(&mut self.scratch);
                self.ready.push_back(self.scratch.split().freeze());
                continue;
            }
            if self.ended {
                return Poll::Ready(None);
            }
            let awaited = match self.pull(take) {
                Pulled::Data => continue,
                Pulled::End => {
                    self.ended = true;
                    self.detach();
                    continue;
                }
                Pulled::Nothing(awaited) => awaited,
            };
            // Listen first, then look again (the loop), so no wake-up is missed.
            match awaited {
                Awaited::AnyRecord => match self.record_wait {
                    Some(seen) if !self.shared.record_waiters.woken_since(seen) => {
                        // The task's waker may have changed since it registered.
                        self.shared.record_waiters.register(cx.waker());
                        return Poll::Pending;
                    }
                    Some(_) => self.record_wait = None,
                    None => {
                        let seen = self.shared.record_waiters.register(cx.waker());
                        let deadline = STREAM_WAKE_DEADLINE.as_nanos() as u64;
                        let wake_from = self.newest_seen.as_nanos().saturating_add(deadline);
                        self.shared.signal.before_last_look(wake_from);
                        self.record_wait = Some(seen);
                    }
                },
                Awaited::Look => match self.listener.as_mut() {
                    Some(listener) => {
                        ready!(Pin::new(listener).poll(cx));
                        self.listener = None;
                    }
                    None => self.listener = Some(self.shared.batch_event.listen()),
                },
            }
        }
    }

    fn pull(&mut self, take: Take) -> Pulled {
        if let Some(end) = self.snapshot_end {
            return self.pull_snapshot(end);
        }
        let shared = Arc::clone(&self.shared);
        let mut log = shared.lock_log();
        self.catch_up(&log);
        log.batches_from(self.cursor, &mut self.batches);
        let mut found = !self.batches.is_empty();
        if !found {
            let pending = log.pending_bytes();
            found = pending > 0;
            let due = found
                && match take {
                    Take::Everything => true,
                    // Closed: nothing more will come, nothing is held back.
                    Take::DueAt(_) if log.closed => true,
                    Take::DueAt(now) => {
                        // Logged after the previous look at the earliest.
                        self.schedule
                            .handle_buffered(self.last_look.unwrap_or(now), 0);
                        pending >= shared.batch_bytes || self.schedule.is_due(now)
                    }
                };
            if due {
                // No more than half the backlog, so that nothing this output takes is
                // evicted before it reads it; the rest waits in the rings.
                let budget = log.backlog_bytes() / 2;
                shared.collect_up_to(&mut log, budget);
                self.catch_up(&log);
                log.batches_from(self.cursor, &mut self.batches);
            }
        }
        hand_out_at_most(&mut self.batches, shared.batch_bytes);
        if self.batches.is_empty() {
            // Records the rings could not take, after the last batch: a gap that no
            // batch follows yet.
            log.take_ring_losses();
            let kinds_to_end = log.kinds_to_end();
            self.skip_to(log.end_seq(), &kinds_to_end);
        }
        let ended = log.closed && self.cursor >= log.end_seq() && log.pending_bytes() == 0;
        self.newest_seen = log.newest;
        drop(log);
        self.note_progress();
        if let Take::DueAt(now) = take {
            self.last_look = Some(now);
            let interval = self.encoder.options().get_flush_interval();
            // Looks right after a hand-out find the rings just drained: records still
            // flow if some were found in the last few looks' time.
            if found {
                self.last_found = Some(now);
            }
            let flowing = self
                .last_found
                .is_some_and(|at| now.saturating_duration_since(at) < 4 * BUSY_LOOK);
            let wait = if flowing {
                BUSY_LOOK.min(interval)
            } else {
                interval
            };
            self.next_look = now.checked_add(wait);
        }
        if self.batches.is_empty() {
            return if ended {
                Pulled::End
            } else {
                Pulled::Nothing(match take {
                    Take::Everything => Awaited::AnyRecord,
                    Take::DueAt(_) => Awaited::Look,
                })
            };
        }
        self.encode_batches();
        Pulled::Data
    }

    /// Everything a snapshot hands out was sealed and taken when it attached: no lock,
    /// no look at the rings, no waiting; it ends at its attach point.
    fn pull_snapshot(&mut self, end: Point) -> Pulled {
        let mut taken = 0;
        while let Some(batch) = self.pinned.front() {
            if batch.first_seq >= end.seq {
                self.pinned.clear();
                break;
            }
            // Up to SNAPSHOT_PULL at a time: the batches are held anyway, but a format
            // that is encoded makes a copy of what a pull takes.
            taken += batch.data.len();
            if taken > SNAPSHOT_PULL && !self.batches.is_empty() {
                break;
            }
            self.batches.extend(self.pinned.pop_front());
        }
        if self.batches.is_empty() {
            // What the rings could not take before the attach.
            self.skip_to(end.seq, &end.kinds);
            self.note_progress();
            return Pulled::End;
        }
        self.encode_batches();
        self.note_progress();
        Pulled::Data
    }

    fn encode_batches(&mut self) {
        self.schedule.handle_flushed();
        let batches = std::mem::take(&mut self.batches);
        for batch in &batches {
            self.encode(batch);
        }
        self.batches = batches;
        self.batches.clear();
    }

    /// Skips what the backlog no longer holds, counting as lost the records of the
    /// paths this output keeps.
    fn catch_up(&mut self, log: &Log) {
        let (oldest, kinds_to_oldest) = log.oldest();
        self.skip_to(oldest, kinds_to_oldest);
    }

    /// Moves the cursor to `seq` if it is behind it, counting the records in between
    /// as lost. Paths without a name share one count: an output that keeps some of them
    /// counts the loss of any.
    fn skip_to(&mut self, seq: u64, kinds_to_seq: &KindCounts) {
        // A snapshot loses nothing logged after its end.
        let (seq, kinds_to_seq) = match self.snapshot_end {
            Some(end) if seq > end.seq => (end.seq, end.kinds),
            _ => (seq, *kinds_to_seq),
        };
        let kinds_to_seq = &kinds_to_seq;
        if self.cursor >= seq {
            return;
        }
        let lost = Path::ALL_KINDS
            .iter()
            .filter(|kind| self.encoder.writes_kind(**kind))
            .map(|kind| kinds_to_seq[kind.kind_index()] - self.kinds_to_cursor[kind.kind_index()])
            .sum();
        self.lose(lost);
        self.cursor = seq;
        self.kinds_to_cursor = *kinds_to_seq;
    }

    fn lose(&mut self, records: u64) {
        if records == 0 {
            return;
        }
        self.stats.dropped += records;
        self.unreported_drops += records;
        self.shared.dropped.fetch_add(records, Ordering::Relaxed);
    }

    /// Encodes the records of `batch` from the cursor on. Runs of records the seed format
    /// passes on unchanged become slices of the batch; the rest is encoded into scratch.
    fn encode(&mut self, batch: &Batch) {
        // Records the rings could not take lie in the gap before a batch.
        self.skip_to(batch.first_seq, &batch.kinds_to_start);
        let skip = self.cursor.saturating_sub(batch.first_seq) as usize;
        // A batch is sealed when an output attaches: none holds records from both sides.
        let history = batch.first_seq < self.live_start;
        let floor = self.history_floor.filter(|_| history);
        let passthrough = self.encoder.options().is_seed_micros();
        let snaplen = self.encoder.options().get_snaplen() as usize;
        let filter = self.encoder.options().get_bpf().cloned();
        if passthrough
            && skip == 0
            && self.encoder.options().keeps_all()
            && filter.is_none()
            && floor.is_none()
            && batch.max_incl as usize <= snaplen
        {
            // Every record passes unchanged: hand out the batch without reading it.
            self.count_handed_out(u64::from(batch.records), history);
            self.queue_scratch();
            self.ready.push_back(batch.data.clone());
            self.unreported_drops = 0;
            self.cursor = batch.end_seq();
            self.kinds_to_cursor = batch.kinds_to_end;
            return;
        }
        let base = batch.data.as_ptr() as usize;
        let mut run: Option<Range<usize>> = None;
        for record in log::records(&batch.data, &batch.side).skip(skip) {
            // Packets the filter rejects are not drops: they are not counted at all.
            if !self.keeps(&record, filter.as_ref(), floor) {
                self.end_run(batch, &mut run);
                continue;
            }
            self.count_handed_out(1, history);
            if passthrough && record.raw.len() - RECORD_HEADER_LEN <= snaplen {
                let start = record.raw.as_ptr() as usize - base;
                let end = start + record.raw.len();
                match run.as_mut() {
                    Some(range) => range.end = end,
                    None => {
                        self.queue_scratch();
                        run = Some(start..end);
                    }
                }
                continue;
            }
            self.end_run(batch, &mut run);
            let drops = std::mem::take(&mut self.unreported_drops);
            let note = (!history && std::mem::take(&mut self.live_note_due)).then_some(LIVE_NOTE);
            let stored = Stored {
                path: record.path,
                ts: record.ts,
                packet: record.packet,
                orig_len: record.orig_len,
                meta: &Meta::decode(record.meta),
                note,
            };
            self.encoder.put_stored(&mut self.scratch, &stored, drops);
        }
        self.end_run(batch, &mut run);
        self.queue_scratch();
        if passthrough {
            // Classic pcap cannot show drops; the counters keep them.
            self.unreported_drops = 0;
        }
        self.cursor = batch.end_seq();
        self.kinds_to_cursor = batch.kinds_to_end;
    }

    fn count_handed_out(&mut self, records: u64, history: bool) {
        self.stats.records += records;
        if history {
            self.stats.history_records += records;
        }
    }

    fn end_run(&mut self, batch: &Batch, run: &mut Option<Range<usize>>) {
        if let Some(range) = run.take() {
            self.ready.push_back(batch.data.slice(range));
        }
    }

    fn queue_scratch(&mut self) {
        if !self.scratch.is_empty() {
            self.ready.push_back(self.scratch.split().freeze());
        }
    }

    /// Tells the registry how far this output has read.
    fn note_progress(&self) {
        if let Some(slot) = &self.slot {
            slot.set_cursor(self.cursor);
        }
    }

    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            // An evicted output's count was taken over when it was evicted.
            if self.slot.as_ref().is_none_or(|slot| slot.detach()) {
                self.shared.detach();
            }
            if let Some(slot) = self.slot.take() {
                self.shared.outputs.remove(&slot);
            }
        }
    }
}

/// Keeps the first batches of `batches` up to about `bytes` (at least one): what an
/// output holds unsent is bounded so, and a writer that stops pulling pins no more than
/// that of the backlog's memory. The rest stays in the backlog for the next pull.
fn hand_out_at_most(batches: &mut Vec<Batch>, bytes: usize) {
    let mut taken = 0;
    let keep = batches
        .iter()
        .take_while(|batch| {
            taken += batch.data.len();
            taken <= bytes
        })
        .count();
    batches.truncate(keep.max(1));
}

impl Stream for Subscription {
    type Item = Bytes;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        self.get_mut().poll_with(cx, Take::Everything)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.detach();
    }
}
