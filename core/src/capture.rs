//! The datapath handle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use event_listener::Event;

mod retaining;

use crate::log::{lock, try_lock, Log, MAX_STORED_PACKET};
use crate::outputs::{Outputs, Room};
use crate::ring::{self, RecordHeader, RingReader, RingWriter};
use crate::signal::RecordSignal;
use crate::spare::SpareRing;
use crate::subscription::Attach;
use crate::waiters::RecordWaiters;
use crate::{meta, Error, History, Meta, Options, Path, Subscription, Timestamp};

/// Bit of `Shared::state` set once the capture is closed; the rest counts outputs.
const CLOSED: usize = 1 << (usize::BITS - 1);
/// Bit of `Shared::state` set while the capture is switched off
/// ([`Capture::set_enabled`]). With `CLOSED` above it, one comparison tells the datapath
/// "nobody listens, off or closed": the state is 0 or at least this.
const DISABLED: usize = 1 << (usize::BITS - 2);
/// Both flag bits: what is left counts listeners.
const FLAGS: usize = CLOSED | DISABLED;

/// Numbers captures, so that a thread's rings can tell them apart.
static NEXT_CAPTURE: AtomicU64 = AtomicU64::new(1);

#[derive(Debug)]
pub(crate) struct Shared {
    /// What the datapath reads for every packet, on a cache line of its own so that no
    /// reader's write disturbs it.
    hot: CachePadded<Hot>,
    /// Raised by readers about to park for the next record.
    pub(crate) signal: CachePadded<RecordSignal>,
    /// `Capture` handles alive; the last one to go closes the capture.
    handles: AtomicUsize,
    /// The backlog: the readers' lock. The datapath only ever tries it.
    pub(crate) log: Mutex<Log>,
    /// Rings registered by threads and not yet taken on by the log. A thread takes this
    /// lock once in its life; readers hold it only to move the rings out.
    new_rings: Mutex<Vec<RingReader>>,
    /// The ring the next thread to log takes, made ahead by a reader.
    spare_ring: SpareRing,
    /// Records lost because a thread could not reach its ring (while its thread-local
    /// state was torn down), per path kind.
    lost_unringed: [AtomicU64; Path::KINDS],
    /// Collections that took records or counted losses: a datapath thread whose ring
    /// is full tells from
    /// it whether readers are draining at all.
    collects: CachePadded<AtomicU64>,
    /// Wakes `Stream` readers waiting for records.
    pub(crate) record_waiters: RecordWaiters,
    /// Wakes readers when a ring is half full, or the capture closed.
    pub(crate) batch_event: Event,
    pub(crate) dropped: AtomicU64,
    /// The attached outputs' progress, to find the most stalled one.
    pub(crate) outputs: Outputs,
    max_outputs: usize,
    ring_bytes: usize,
    pub(crate) batch_bytes: usize,
    /// 1 when the capture retains records while nobody listens: the count in
    /// `Hot::state` it holds for itself, so that the datapath's one load sees a
    /// listener.
    retainer: usize,
}

/// The datapath's per-packet reads.
#[derive(Debug)]
struct Hot {
    /// Outputs attached, and [`CLOSED`]: the one word the datapath reads when idle,
    /// written only when outputs come and go.
    state: AtomicUsize,
    /// This capture's number, for the threads' rings.
    id: u64,
}

/// Keeps a value on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.hot.state.load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn detach(&self) {
        self.hot.state.fetch_sub(1, Ordering::AcqRel);
    }

    /// Outputs attached now, not counting the retention's own hold.
    fn outputs(&self, state: usize) -> usize {
        (state & !FLAGS).saturating_sub(self.retainer)
    }

    /// Wakes every output waiting for records, so that an evicted one sees its end.
    pub(crate) fn wake_readers(&self) {
        self.record_waiters.wake_all();
        self.batch_event.notify(usize::MAX);
    }

    /// At the output limit: evicts the most stalled output that lags, if one does.
    fn make_room(&self) -> Room {
        let oldest = self.lock_log().oldest().0;
        let room = self.outputs.evict_most_stalled(oldest);
        if room == Room::Made {
            self.wake_readers();
        }
        room
    }

    /// Locks the backlog, having it take on the rings registered since.
    pub(crate) fn lock_log(&self) -> std::sync::MutexGuard<'_, Log> {
        let mut log = lock(&self.log);
        self.adopt_rings(&mut log);
        log
    }

    fn adopt_rings(&self, log: &mut Log) {
        let mut new_rings = lock(&self.new_rings);
        log.adopt(&mut new_rings);
        drop(new_rings);
        self.adopt_lost_unringed(log);
    }

    fn adopt_lost_unringed(&self, log: &mut Log) {
        let mut lost = [0; Path::KINDS];
        for (kind, counter) in self.lost_unringed.iter().enumerate() {
            lost[kind] = counter.swap(0, Ordering::Relaxed);
        }
        log.count_lost(&lost);
    }

    fn register_ring(&self) -> RingWriter {
        let (writer, reader) = self.spare_ring.take_or_make(self.hot.id, self.ring_bytes);
        lock(&self.new_rings).push(reader);
        writer
    }

    /// The datapath found its ring full; says whether it drained the rings. It never
    /// waits for the readers' lock: if a reader holds it, the ring will have room soon
    /// and this record is lost. It drains them when the backlog has room for what they
    /// hold (a backlog sized for a burst then takes the burst, however slow the
    /// readers), or when no reader drained them since the ring was last full (every
    /// output stalled: they keep the newest records, losing the oldest). It leaves
    /// them to readers that drain them but lag, so that it does not take on their work
    /// when it is busiest.
    fn collect_for_readers(&self, collects_seen: &mut u64) -> bool {
        let Some(mut log) = try_lock(&self.log) else {
            return false;
        };
        // Rings registered since wait for a reader if their list is busy: the datapath
        // never waits for that lock either.
        if let Some(mut new_rings) = try_lock(&self.new_rings) {
            log.adopt(&mut new_rings);
        }
        self.adopt_lost_unringed(&mut log);
        let collects = self.collects.load(Ordering::Relaxed);
        let readers_drain = std::mem::replace(collects_seen, collects) != collects;
        if readers_drain && !self.has_room_for_rings(&log) {
            return false;
        }
        // Bounded, as a reader's collection is, so that a stalled output's backlog
        // keeps the newest records this call takes.
        let budget = log.backlog_bytes() / 2;
        log.collect_up_to(budget);
        *collects_seen = self.collects.load(Ordering::Relaxed);
        true
    }

    /// Appends a record to `writer`'s ring; when it is full, drains the rings if that
    /// is the datapath's to do, or counts the record lost.
    #[inline]
    fn write_or_collect(
        &self,
        writer: &mut RingWriter,
        header: &[u8; ring::HEADER_LEN],
        meta: &[u8],
        packet: &[u8],
        path: Path,
    ) -> Option<ring::Written> {
        if let Some(written) = writer.try_write(header, meta, packet) {
            return Some(written);
        }
        // Full: readers did not drain this ring as fast as this thread logs.
        if self.collect_for_readers(writer.collects_seen()) {
            if let Some(mut written) = writer.try_write(header, meta, packet) {
                written.wake_readers = true;
                return Some(written);
            }
        }
        writer.lose(path);
        None
    }

    /// Whether what the rings hold fits in the backlog beside what outputs have not
    /// read yet.
    fn has_room_for_rings(&self, log: &Log) -> bool {
        let slowest = self.outputs.slowest_cursor(log.end_seq());
        log.has_room(log.pending_bytes(), slowest)
    }

    /// Drains the rings into the backlog; the caller holds the log's lock.
    pub(crate) fn collect(&self, log: &mut Log) {
        self.collect_up_to(log, usize::MAX);
    }

    /// Drains at least `budget` bytes of the rings, if they hold that many.
    pub(crate) fn collect_up_to(&self, log: &mut Log, budget: usize) {
        if log.collect_up_to(budget) {
            self.collects.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The capture handle shared by the datapath and the servers.
///
/// `log_packet` is the datapath's one call: with no output attached it reads one atomic
/// word and returns; with outputs it copies the packet once into a ring of the calling
/// thread's own and returns. It writes no memory another thread writes for each record
/// and never waits for a reader or for another datapath thread: the only lock it may
/// take, when its ring is full, it only tries. A thread's first record while someone
/// listens makes its ring (an allocation of `ring_bytes`) and registers it, under a
/// lock held only to push or take the list of new rings. Readers drain the threads'
/// rings into a backlog shared by all outputs.
///
/// Order: the records of one thread keep their order; records of different threads
/// are merged by the time the caller passed, within each drain of the rings (readers
/// drain them at least once per flush interval while records wait).
/// Each output is a [`Subscription`]: a byte stream in its own format.
///
/// # Examples
///
/// ```
/// use std::time::SystemTime;
/// use futures_lite::{future::block_on, StreamExt};
/// use pcapcast_core::{Capture, Options, Path};
///
/// let capture = Capture::new();
/// let mut output = capture.subscribe(Options::default());
/// capture.log_packet(Path::FromLocal, SystemTime::now(), &[0x45, 0, 0, 20]);
/// capture.close();
///
/// let mut file = Vec::new();
/// while let Some(bytes) = block_on(output.next()) {
///     file.extend_from_slice(&bytes);
/// }
/// assert_eq!(file.len(), 24 + 16 + 2 + 4);
/// ```
#[derive(Debug)]
pub struct Capture {
    shared: Arc<Shared>,
}

/// Configures a [`Capture`].
///
/// # Examples
///
/// ```
/// use pcapcast_core::Capture;
///
/// let capture = Capture::builder().backlog_bytes(16 << 20).max_outputs(8).build();
/// assert_eq!(capture.num_outputs(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    batch_bytes: usize,
    backlog_bytes: usize,
    ring_bytes: usize,
    max_outputs: usize,
    retain_bytes: usize,
    enabled: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            batch_bytes: 64 << 10,
            backlog_bytes: 4 << 20,
            ring_bytes: 2 << 20,
            max_outputs: 256,
            retain_bytes: 0,
            enabled: true,
        }
    }
}

impl Builder {
    /// Size of a batch (default 64 KiB, at least 4 KiB): records are handed to readers
    /// in batches, and a full batch goes to waiting readers at once.
    pub fn batch_bytes(mut self, bytes: usize) -> Builder {
        self.batch_bytes = bytes.clamp(4 << 10, 64 << 20);
        self
    }

    /// Bytes of records kept for readers that lag (default 4 MiB, at least two batches).
    /// The backlog is shared by all outputs: memory does not grow with their number. A
    /// reader further behind loses the oldest records and counts them.
    pub fn backlog_bytes(mut self, bytes: usize) -> Builder {
        self.backlog_bytes = bytes;
        self
    }

    /// Bytes of the ring each datapath thread logs into (default 2 MiB, at least
    /// 512 KiB, so that the largest record fits), made when the thread first logs a
    /// packet that someone listens to. Readers drain the rings into the backlog. A
    /// thread whose ring is full drains the rings itself if the readers' lock is free
    /// and either no reader drained them since (every output stalled) or the backlog
    /// has room for them; otherwise it loses the record, counted and shown to every
    /// output as a loss. So a burst is kept whole only if it fits in the ring as well
    /// as in the backlog, when readers drain slower than the datapath logs. Memory:
    /// the backlog, plus one ring per thread that has logged while someone listened,
    /// plus at most one spare. A thread's ring lives as long as the thread and the
    /// capture: the next output finds it made and its pages faulted in. Rings are made
    /// off the datapath where they can be: the first attach (or, with a retention, the
    /// build) makes a spare and writes each of its pages, and the first thread to log
    /// takes it; a later attach makes another only if a thread had to make its own
    /// since. The memory goes back when the capture is dropped (a thread's ring also
    /// when the thread ends).
    ///
    /// # Examples
    ///
    /// ```
    /// use pcapcast_core::Capture;
    ///
    /// // Keep a burst of up to 64 MiB from each thread whole.
    /// let capture = Capture::builder().ring_bytes(64 << 20).backlog_bytes(64 << 20).build();
    /// # drop(capture);
    /// ```
    pub fn ring_bytes(mut self, bytes: usize) -> Builder {
        self.ring_bytes = bytes.clamp(512 << 10, 1 << 30);
        self
    }

    /// Most outputs [`Capture::try_subscribe`] attaches (default 256).
    pub fn max_outputs(mut self, outputs: usize) -> Builder {
        self.max_outputs = outputs.min(DISABLED - 2);
        self
    }

    /// Keeps at least the last `bytes` of records (headers, metadata and packets) while
    /// nobody listens, from every datapath thread, for outputs that ask for their
    /// [`History`] (default 0: none). The records stay in the backlog, which grows to
    /// this size if it is smaller: memory is the retention plus a batch, plus a ring
    /// per thread that logs. With a retention the datapath stores every packet, as if
    /// an output were always attached (a copy into its thread's ring); without one,
    /// nobody listening still costs one atomic load.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use futures_lite::{future::block_on, StreamExt};
    /// use pcapcast_core::{Capture, Options, Path};
    ///
    /// let capture = Capture::builder().retain(16 << 20).build();
    /// capture.log_packet(Path::FromLocal, SystemTime::now(), &[0x45; 20]);
    /// assert_eq!(capture.num_outputs(), 0);
    /// assert!(capture.is_listening());
    ///
    /// // What happened before anyone looked: the history, then the stream ends.
    /// let mut snapshot = capture.snapshot(Options::default());
    /// let mut file = Vec::new();
    /// while let Some(bytes) = block_on(snapshot.next()) {
    ///     file.extend_from_slice(&bytes);
    /// }
    /// assert_eq!(file.len(), 24 + 16 + 2 + 20);
    /// ```
    pub fn retain(mut self, bytes: usize) -> Builder {
        self.retain_bytes = bytes;
        self
    }

    /// Whether the capture starts switched on (the default); see
    /// [`Capture::set_enabled`]. A daemon that reads its operator's wish from the
    /// environment: `pcapcast_serve::enabled_by_environment()`.
    pub fn enabled(mut self, enabled: bool) -> Builder {
        self.enabled = enabled;
        self
    }

    /// Makes the capture.
    pub fn build(self) -> Capture {
        let backlog = self.backlog_bytes.max(2 * self.batch_bytes);
        let retainer = usize::from(self.retain_bytes > 0);
        let capture = Capture {
            shared: Arc::new(Shared {
                hot: CachePadded(Hot {
                    state: AtomicUsize::new(retainer | if self.enabled { 0 } else { DISABLED }),
                    id: NEXT_CAPTURE.fetch_add(1, Ordering::Relaxed),
                }),
                signal: CachePadded(RecordSignal::new()),
                handles: AtomicUsize::new(1),
                log: Mutex::new(Log::new(self.batch_bytes, backlog, self.retain_bytes)),
                new_rings: Mutex::new(Vec::new()),
                spare_ring: SpareRing::default(),
                lost_unringed: Default::default(),
                collects: CachePadded(AtomicU64::new(0)),
                record_waiters: RecordWaiters::default(),
                batch_event: Event::new(),
                dropped: AtomicU64::new(0),
                outputs: Outputs::default(),
                max_outputs: self.max_outputs,
                ring_bytes: self.ring_bytes,
                batch_bytes: self.batch_bytes,
                retainer,
            }),
        };
        if retainer == 1 {
            // The datapath logs from the start: its first thread finds a ring made.
            let shared = &capture.shared;
            shared.spare_ring.prepare(shared.hot.id, shared.ring_bytes);
        }
        capture
    }
}

/// Counters of a whole capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureStats {
    /// Outputs attached now.
    pub outputs: usize,
    /// Packets logged while at least one output was attached: stored, or lost because
    /// their thread's ring was full.
    pub logged: u64,
    /// Of those, packets whose time was outside 1970..2106 and was saturated.
    pub clamped_times: u64,
    /// Records lost by lagging outputs, all outputs together.
    pub dropped: u64,
    /// Outputs detached for being stalled: made to give way to a new output at the
    /// limit, or detached by their writer's stall limit.
    pub stalled_detached: u64,
    /// Rings made for datapath threads, the spare made ahead included. A thread keeps
    /// its ring for the next output: this grows with the threads, not the outputs.
    pub rings_made: u64,
    /// Of those, rings a datapath thread made itself, finding no spare made ahead: it
    /// faults their pages in as it logs.
    pub rings_made_on_datapath: u64,
}

impl Default for Capture {
    fn default() -> Self {
        Capture::new()
    }
}

impl Clone for Capture {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Ordering::Relaxed);
        Capture {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.close();
        }
    }
}

impl Capture {
    /// A capture with the default configuration.
    pub fn new() -> Capture {
        Builder::default().build()
    }

    /// Configures a capture.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Logs a packet seen on `path` at `when`. Never waits, never panics; with no
    /// output attached it does nothing but read one atomic word. The packet is copied
    /// once (at most 262142 bytes of it), whatever the number of outputs, into a ring of
    /// this thread's own.
    #[inline(always)]
    pub fn log_packet(&self, path: Path, when: SystemTime, packet: &[u8]) {
        let state = self.shared.hot.state.load(Ordering::Relaxed);
        // One comparison for "no listener" (0 wraps to the top), "off" and "closed".
        if state.wrapping_sub(1) >= DISABLED - 1 {
            return;
        }
        self.store(path, when, &[], packet);
    }

    /// [`Capture::log_packet`] at the current time, read only when the packet is kept:
    /// with nobody listening this costs one atomic load, where
    /// `log_packet(path, SystemTime::now(), packet)` pays for the clock (about 25 ns)
    /// on every packet. The one place the core reads a clock, and only for the caller.
    ///
    /// # Examples
    ///
    /// ```
    /// use pcapcast_core::{Capture, Options, Path};
    ///
    /// let capture = Capture::new();
    /// capture.log_packet_now(Path::FromLocal, &[0x45; 20]); // nobody listens: no clock read
    /// let output = capture.subscribe(Options::default());
    /// capture.log_packet_now(Path::FromLocal, &[0x45; 20]);
    /// assert_eq!(capture.stats().logged, 1);
    /// # drop(output);
    /// ```
    #[inline(always)]
    pub fn log_packet_now(&self, path: Path, packet: &[u8]) {
        if self.is_listening() {
            self.store(path, SystemTime::now(), &[], packet);
        }
    }

    /// [`Capture::log_packet`] for a packet with metadata: the addresses it had before
    /// NAT. The same rules hold: it never waits, allocates nothing and stores nothing
    /// when no output is attached; the metadata is stored with the record, and each
    /// output writes it if its format holds it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use pcapcast_core::{Capture, Format, Meta, Options, Path};
    ///
    /// let capture = Capture::new();
    /// let output = capture.subscribe(Options::new().format(Format::Tailscale));
    /// // A packet a subnet router masqueraded: its source was 100.64.0.7:1000.
    /// let meta = Meta::new().snat("100.64.0.7:1000".parse()?);
    /// capture.log_packet_with(Path::FromLocal, SystemTime::now(), &[0x45; 20], &meta);
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    #[inline(always)]
    pub fn log_packet_with(&self, path: Path, when: SystemTime, packet: &[u8], meta: &Meta) {
        let state = self.shared.hot.state.load(Ordering::Relaxed);
        if state.wrapping_sub(1) >= DISABLED - 1 {
            return;
        }
        let mut block = [0; meta::MAX_BLOCK];
        let len = meta.encode(&mut block);
        self.store(path, when, &block[..len], packet);
    }

    /// The part of `log_packet` that runs when someone listens; kept out of line so the
    /// idle check inlines into the datapath.
    #[inline(never)]
    fn store(&self, path: Path, when: SystemTime, meta: &[u8], packet: &[u8]) {
        let shared = &*self.shared;
        // `Path::Other(1)` is stored as 1 and read back as `FromPeer`: counted so too.
        let path = Path::from(u16::from(path));
        let (ts, clamped) = Timestamp::from_system_time(when);
        let kept = &packet[..packet.len().min(MAX_STORED_PACKET)];
        let record = RecordHeader {
            ts,
            clamped,
            path,
            orig_len: crate::pcap::saturating_u32(packet.len()),
            kept_len: kept.len() as u32,
            meta_len: meta.len() as u8,
        };
        if shared.append_while_retaining(&record, meta, kept) {
            return;
        }
        let header = record.to_bytes();
        let written = ring::with_writer(
            shared.hot.id,
            || shared.register_ring(),
            |writer| {
                let mut written = shared.write_or_collect(writer, &header, meta, kept, path)?;
                // Decided here, where the ring is at hand; woken once it is released.
                written.wake_waiters = shared.signal.after_publish(ts.as_nanos(), || {
                    writer.unread_bytes() >= shared.batch_bytes
                });
                Some(written)
            },
        );
        let written = match written {
            Some(Some(written)) => written,
            Some(None) => return,
            None => {
                shared.lost_unringed[path.kind_index()].fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if written.wake_waiters {
            shared.record_waiters.wake_all();
        }
        if written.wake_readers {
            shared.batch_event.notify(usize::MAX);
        }
    }

    /// Whether a packet logged now would be kept: an output is attached or the capture
    /// retains a history, and it is not closed. One atomic load: the guard for work a
    /// datapath does only for the capture (building a header, reading the clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use pcapcast_core::{Capture, Options, Path};
    ///
    /// let capture = Capture::new();
    /// assert!(!capture.is_listening());
    /// let output = capture.subscribe(Options::default());
    /// if capture.is_listening() {
    ///     capture.log_packet(Path::FromLocal, SystemTime::now(), &[0x45; 20]);
    /// }
    /// # drop(output);
    /// ```
    #[inline(always)]
    pub fn is_listening(&self) -> bool {
        let state = self.shared.hot.state.load(Ordering::Relaxed);
        state.wrapping_sub(1) < DISABLED - 1
    }

    /// Attaches an output; it sees the packets logged from now on. Unlike
    /// [`Capture::try_subscribe`] it ignores the output limit; on a closed capture the
    /// stream holds the file header and ends.
    pub fn subscribe(&self, options: Options) -> Subscription {
        match self.attach(options.clone(), usize::MAX) {
            Ok(subscription) => subscription,
            Err(_) => Subscription::ended(Arc::clone(&self.shared), options),
        }
    }

    /// Attaches an output unless the capture is closed or has its limit of outputs. At
    /// the limit, the output furthest behind among those that lag (their cursor is
    /// before the backlog's oldest record: they have lost records) is detached and the
    /// new one takes its place; the evicted output's stream ends.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`], or [`Error::TooManyOutputs`] when the limit is reached and no
    /// output lags.
    pub fn try_subscribe(&self, options: Options) -> Result<Subscription, Error> {
        self.attach(options, self.shared.max_outputs)
    }

    fn attach(&self, options: Options, limit: usize) -> Result<Subscription, Error> {
        let state = &self.shared.hot.state;
        if !self.shared.is_closed() {
            // Before the output counts, so that the datapath logs nothing for it until
            // the ring is there (the first thread takes it instead of faulting in a
            // fresh one), and before the log's lock, which the datapath only tries.
            self.shared
                .spare_ring
                .prepare_for_attach(self.shared.hot.id, self.shared.ring_bytes);
        }
        let mut current = state.load(Ordering::Acquire);
        loop {
            if current & CLOSED != 0 {
                return Err(Error::Closed);
            }
            if current & DISABLED != 0 {
                return Err(Error::Disabled);
            }
            if self.shared.outputs(current) >= limit.min(DISABLED - 2) {
                match self.shared.make_room() {
                    // The evicted output's count is this one's now.
                    Room::Made => break,
                    Room::Freed => {
                        current = state.load(Ordering::Acquire);
                        continue;
                    }
                    Room::None => return Err(Error::TooManyOutputs { limit }),
                }
            }
            match state.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        // Counted first, then placed after everything the rings hold: every record
        // logged after this point is seen, none logged before it but the history it
        // asks for. (What the rings held moves into the backlog at once, where outputs
        // that lag far behind can lose some of it.)
        let attach = {
            let mut log = self.shared.lock_log();
            self.shared.collect(&mut log);
            let live = log.end();
            let start = log.history_start(options.get_history());
            let mut history = Vec::new();
            log.batches_from(start.at.seq, &mut history);
            Attach {
                start,
                live,
                history,
            }
        };
        Ok(Subscription::attached(
            Arc::clone(&self.shared),
            options,
            attach,
        ))
    }

    /// An output that holds the history its options ask for ([`History::All`] if they
    /// ask for none) and then ends, while the capture goes on: what a daemon writes
    /// from an error path or a signal handler. It is polled like any [`Subscription`],
    /// with no runtime needed (`futures_lite::future::block_on`). It ignores the output
    /// limit. On a closed capture it holds the file header alone.
    pub fn snapshot(&self, options: Options) -> Subscription {
        let history = match options.get_history() {
            History::None => History::All,
            asked => asked,
        };
        self.subscribe(options.history(history).follow(false))
    }

    /// Outputs attached now.
    pub fn num_outputs(&self) -> usize {
        self.shared
            .outputs(self.shared.hot.state.load(Ordering::Acquire))
    }

    /// Switches the capture on or off at run time. While off, attaching is refused with
    /// [`Error::Disabled`] (the endpoint answers 403), nothing is retained, and
    /// `log_packet` costs what it costs with nobody listening: the same one load. Outputs
    /// already attached stay attached and receive nothing until it is on again.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::SystemTime;
    /// use pcapcast_core::{Capture, Error, Options, Path};
    ///
    /// let capture = Capture::builder().enabled(false).build();
    /// assert_eq!(capture.try_subscribe(Options::default()).err(), Some(Error::Disabled));
    /// capture.set_enabled(true);
    /// let output = capture.try_subscribe(Options::default())?;
    /// capture.set_enabled(false);
    /// assert!(!capture.is_listening());
    /// capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 20]); // not kept
    /// assert_eq!(capture.stats().logged, 0);
    /// # drop(output);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn set_enabled(&self, enabled: bool) {
        match enabled {
            true => self.shared.hot.state.fetch_and(!DISABLED, Ordering::AcqRel),
            false => self.shared.hot.state.fetch_or(DISABLED, Ordering::AcqRel),
        };
    }

    /// Whether the capture is switched on ([`Capture::set_enabled`]).
    pub fn is_enabled(&self) -> bool {
        self.shared.hot.state.load(Ordering::Acquire) & DISABLED == 0
    }

    /// Whether [`Capture::close`] was called (or every handle dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes the capture: later packets are ignored, and every output's stream ends
    /// once it has handed out what it and the threads' rings hold. A packet logged by
    /// another thread while `close` runs may be left out without being counted.
    pub fn close(&self) {
        self.shared.hot.state.fetch_or(CLOSED, Ordering::AcqRel);
        // What the rings hold stays there for readers to drain at their pace: moved
        // into the backlog at once, a burst bigger than it would be evicted unread.
        self.shared.lock_log().closed = true;
        self.shared.record_waiters.wake_all();
        self.shared.batch_event.notify(usize::MAX);
    }

    /// Counters of the whole capture. Records still in the threads' rings are counted
    /// once drained: this drains them when the backlog has room for them, and leaves
    /// them to the readers otherwise.
    pub fn stats(&self) -> CaptureStats {
        let mut log = self.shared.lock_log();
        if self.shared.has_room_for_rings(&log) {
            self.shared.collect(&mut log);
        }
        CaptureStats {
            outputs: self.num_outputs(),
            logged: log.logged,
            clamped_times: log.clamped,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            stalled_detached: self.shared.outputs.stalled_detached(),
            rings_made: self.shared.spare_ring.made(),
            rings_made_on_datapath: self.shared.spare_ring.made_on_datapath(),
        }
    }
}
