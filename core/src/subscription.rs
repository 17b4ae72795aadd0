//! One output: the records of a capture as a byte stream in that output's format.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use event_listener::EventListener;
use futures_core::Stream;

use crate::capture::Shared;
use crate::log::{self, lock, Batch, KindCounts, Sealed};
use crate::pcap::RECORD_HEADER_LEN;
use crate::{Encoder, FlushSchedule, Options, Path};

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
}

/// One output of a [`Capture`](crate::Capture): a `Stream` of `Bytes` that holds the
/// file header, then whole records in log order, in this output's format.
///
/// Polling it as a `Stream` hands out whatever was logged so far, with no timer behind
/// it. Writers that want fewer, larger writes use [`Subscription::poll_next_at`], which
/// holds records back until a batch is full or the flush interval has passed. Records
/// that the default seed format can pass on unchanged are handed out as slices of the
/// shared backlog, without a copy per output. Dropping it detaches the output.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
    encoder: Encoder,
    attached: bool,
    cursor: u64,
    /// Records per path kind before the cursor, to count losses by the paths kept.
    kinds_to_cursor: KindCounts,
    header_sent: bool,
    ended: bool,
    ready: VecDeque<Bytes>,
    scratch: BytesMut,
    batches: Vec<Batch>,
    /// What this output waits for, and the listener that will tell it.
    listener: Option<(Awaited, EventListener)>,
    schedule: FlushSchedule,
    stats: OutputStats,
    /// Records lost since the last record handed out, for pcapng's `epb_dropcount`.
    unreported_drops: u64,
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
    /// Any record: nothing is held back.
    AnyRecord,
    /// A full batch: records are held back until then (or the flush timer).
    FullBatch,
}

impl Subscription {
    pub(crate) fn attached(
        shared: Arc<Shared>,
        options: Options,
        cursor: u64,
        kinds_to_cursor: KindCounts,
    ) -> Subscription {
        let mut subscription = Subscription::ended(shared, options);
        subscription.attached = true;
        subscription.ended = false;
        subscription.cursor = cursor;
        subscription.kinds_to_cursor = kinds_to_cursor;
        subscription
    }

    pub(crate) fn ended(shared: Arc<Shared>, options: Options) -> Subscription {
        let schedule = FlushSchedule::new(options.get_flush_interval(), shared.batch_bytes);
        Subscription {
            shared,
            encoder: Encoder::new(options),
            attached: false,
            cursor: 0,
            kinds_to_cursor: [0; Path::KINDS],
            header_sent: false,
            ended: true,
            ready: VecDeque::new(),
            scratch: BytesMut::new(),
            batches: Vec::new(),
            listener: None,
            schedule,
            stats: OutputStats::default(),
            unreported_drops: 0,
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

    /// Polls for bytes, holding records back until a batch is full or until the flush
    /// interval has passed since this output first saw them; `now` is the caller's clock.
    /// Returns `Pending` with a waker registered for new batches; the caller also arms a
    /// timer for [`Subscription::poll_timeout`].
    pub fn poll_next_at(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Option<Bytes>> {
        self.poll_with(cx, Take::DueAt(now))
    }

    /// When held-back records fall due, if any are held back.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.poll_timeout()
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
            match self.listener.as_mut() {
                Some((listening, listener)) if *listening == awaited => {
                    ready!(Pin::new(listener).poll(cx));
                    self.listener = None;
                }
                // Listen first, then look again (the loop), so no wake-up is missed.
                _ => {
                    let event = match awaited {
                        Awaited::AnyRecord => &self.shared.data_event,
                        Awaited::FullBatch => &self.shared.batch_event,
                    };
                    self.listener = Some((awaited, event.listen()));
                }
            }
        }
    }

    fn pull(&mut self, take: Take) -> Pulled {
        if let Some(nothing) = self.nothing_to_take(take) {
            return nothing;
        }
        let shared = Arc::clone(&self.shared);
        let mut sealed = lock(&shared.sealed);
        self.catch_up(&sealed);
        sealed.batches_from(self.cursor, &mut self.batches);
        let mut held_back = false;
        if self.batches.is_empty() && !sealed.closed {
            // Records may wait in the open batch: the datapath's lock, taken in its
            // order (open, then sealed) and only when the records are due.
            drop(sealed);
            let mut open = lock(&shared.open);
            held_back = open.has_records_after(self.cursor);
            let due = held_back
                && match take {
                    Take::Everything => true,
                    Take::DueAt(now) => {
                        self.schedule.handle_buffered(now, 0);
                        self.schedule.is_due(now)
                    }
                };
            sealed = lock(&shared.sealed);
            if due && open.seal_into(&mut sealed) {
                shared.publish(&open);
                held_back = false;
            }
            drop(open);
            self.catch_up(&sealed);
            sealed.batches_from(self.cursor, &mut self.batches);
        }
        let ended = sealed.closed && self.cursor >= sealed.end_seq();
        drop(sealed);
        if self.batches.is_empty() {
            return if ended {
                Pulled::End
            } else if held_back {
                Pulled::Nothing(Awaited::FullBatch)
            } else {
                Pulled::Nothing(Awaited::AnyRecord)
            };
        }
        self.schedule.handle_flushed();
        let batches = std::mem::take(&mut self.batches);
        for batch in &batches {
            self.encode(batch);
        }
        self.batches = batches;
        self.batches.clear();
        Pulled::Data
    }

    /// Decides without the lock, from the published positions, that there is nothing to
    /// take yet; `None` means "look under the lock".
    fn nothing_to_take(&mut self, take: Take) -> Option<Pulled> {
        if self.shared.is_closed() || self.cursor < self.shared.sealed_end.load(Ordering::Acquire) {
            return None;
        }
        if self.shared.next_seq.load(Ordering::Acquire) <= self.cursor {
            return Some(Pulled::Nothing(Awaited::AnyRecord));
        }
        match take {
            Take::Everything => None,
            Take::DueAt(now) => {
                self.schedule.handle_buffered(now, 0);
                (!self.schedule.is_due(now)).then_some(Pulled::Nothing(Awaited::FullBatch))
            }
        }
    }

    /// Skips what the backlog no longer holds, counting as lost the records of the
    /// paths this output keeps. Paths without a name share one count: an output that
    /// keeps some of them counts the loss of any.
    fn catch_up(&mut self, sealed: &Sealed) {
        let oldest = sealed.oldest_seq();
        if self.cursor >= oldest {
            return;
        }
        let to_oldest = sealed.kinds_to_oldest();
        let lost = Path::ALL_KINDS
            .iter()
            .filter(|kind| self.encoder.writes_kind(**kind))
            .map(|kind| to_oldest[kind.kind_index()] - self.kinds_to_cursor[kind.kind_index()])
            .sum();
        self.lose(lost);
        self.cursor = oldest;
        self.kinds_to_cursor = *to_oldest;
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
        let skip = self.cursor.saturating_sub(batch.first_seq) as usize;
        let passthrough = self.encoder.options().is_seed_micros();
        let snaplen = self.encoder.options().get_snaplen() as usize;
        if passthrough
            && skip == 0
            && self.encoder.options().keeps_all()
            && batch.max_incl as usize <= snaplen
        {
            // Every record passes unchanged: hand out the batch without reading it.
            self.stats.records += u64::from(batch.records);
            self.queue_scratch();
            self.ready.push_back(batch.data.clone());
            self.unreported_drops = 0;
            self.cursor = batch.end_seq();
            self.kinds_to_cursor = batch.kinds_to_end;
            return;
        }
        let base = batch.data.as_ptr() as usize;
        let mut run: Option<Range<usize>> = None;
        for record in log::records(&batch.data, &batch.sub_micros).skip(skip) {
            if !self.encoder.writes(record.path) {
                self.end_run(batch, &mut run);
                continue;
            }
            self.stats.records += 1;
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
            self.encoder.put_stored(
                &mut self.scratch,
                record.path,
                record.ts,
                record.packet,
                record.orig_len,
                drops,
            );
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

    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            self.shared.detach();
        }
    }
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
