//! The datapath handle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use event_listener::Event;

use crate::log::{lock, Open, Sealed};
use crate::{Error, Options, Path, Subscription, Timestamp};

/// Bit of `Shared::state` set once the capture is closed; the rest counts outputs.
const CLOSED: usize = 1 << (usize::BITS - 1);

#[derive(Debug)]
pub(crate) struct Shared {
    /// Outputs attached, and [`CLOSED`]: the one word the datapath reads when idle, on
    /// a cache line of its own so that no write elsewhere disturbs it.
    state: CachePadded<AtomicUsize>,
    /// `Capture` handles alive; the last one to go closes the capture.
    handles: AtomicUsize,
    /// The open batch: the datapath's lock.
    pub(crate) open: Mutex<Open>,
    /// The sealed batches: the readers' lock, taken by the datapath once a batch.
    pub(crate) sealed: Mutex<Sealed>,
    /// Wakes readers waiting for any record: on the first record of an empty batch.
    pub(crate) data_event: Event,
    /// Wakes readers holding records back for a full batch: when one is sealed.
    pub(crate) batch_event: Event,
    pub(crate) dropped: AtomicU64,
    /// Copies of `Log::next_seq` and `Log::sealed_end`, so that a reader with nothing to
    /// take finds out without taking the lock the datapath needs.
    pub(crate) next_seq: CachePadded<AtomicU64>,
    pub(crate) sealed_end: AtomicU64,
    max_outputs: usize,
    pub(crate) batch_bytes: usize,
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
    /// Publishes the open batch's positions; called under its lock after every change.
    pub(crate) fn publish(&self, open: &Open) {
        self.next_seq.store(open.next_seq(), Ordering::Release);
        self.sealed_end.store(open.sealed_end(), Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    pub(crate) fn detach(&self) {
        self.state.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The capture handle shared by the datapath and the servers.
///
/// `log_packet` is the datapath's one call: with no output attached it reads one atomic
/// word and returns; with outputs it copies the packet once into a shared backlog and
/// never waits for a reader to read. The backlog's lock is shared by the datapath's
/// threads; a reader takes it only to seal a partial batch that is due. Holding it, the
/// reader may queue behind other readers copying batch handles: the datapath can wait
/// for that, never for a reader's I/O.
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
    max_outputs: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            batch_bytes: 64 << 10,
            backlog_bytes: 4 << 20,
            max_outputs: 256,
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

    /// Most outputs [`Capture::try_subscribe`] attaches (default 256).
    pub fn max_outputs(mut self, outputs: usize) -> Builder {
        self.max_outputs = outputs.min(CLOSED - 1);
        self
    }

    /// Makes the capture.
    pub fn build(self) -> Capture {
        let backlog = self.backlog_bytes.max(2 * self.batch_bytes);
        Capture {
            shared: Arc::new(Shared {
                state: CachePadded(AtomicUsize::new(0)),
                handles: AtomicUsize::new(1),
                open: Mutex::new(Open::new(self.batch_bytes)),
                sealed: Mutex::new(Sealed::new(backlog)),
                data_event: Event::new(),
                batch_event: Event::new(),
                dropped: AtomicU64::new(0),
                next_seq: CachePadded(AtomicU64::new(0)),
                sealed_end: AtomicU64::new(0),
                max_outputs: self.max_outputs,
                batch_bytes: self.batch_bytes,
            }),
        }
    }
}

/// Counters of a whole capture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CaptureStats {
    /// Outputs attached now.
    pub outputs: usize,
    /// Packets stored while at least one output was attached.
    pub logged: u64,
    /// Of those, packets whose time was outside 1970..2106 and was saturated.
    pub clamped_times: u64,
    /// Records lost by lagging outputs, all outputs together.
    pub dropped: u64,
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

    /// Logs a packet seen on `path` at `when`. Never waits for a reader to read, never
    /// panics; with no output attached it does nothing but read one atomic word. The
    /// packet is copied once (at most 262142 bytes of it), whatever the number of outputs.
    #[inline(always)]
    pub fn log_packet(&self, path: Path, when: SystemTime, packet: &[u8]) {
        let state = self.shared.state.load(Ordering::Relaxed);
        if state == 0 || state & CLOSED != 0 {
            return;
        }
        self.store(path, when, packet);
    }

    /// The part of `log_packet` that runs when someone listens; kept out of line so the
    /// idle check inlines into the datapath.
    #[inline(never)]
    fn store(&self, path: Path, when: SystemTime, packet: &[u8]) {
        let (ts, clamped) = Timestamp::from_system_time(when);
        let wake = {
            let mut open = lock(&self.shared.open);
            if open.closed {
                return;
            }
            let wake = open.append(&self.shared.sealed, path, ts, clamped, packet);
            self.shared.publish(&open);
            wake
        };
        if wake.data_readers {
            self.shared.data_event.notify(usize::MAX);
        }
        if wake.batch_readers {
            self.shared.batch_event.notify(usize::MAX);
        }
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

    /// Attaches an output unless the capture is closed or has its limit of outputs.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] or [`Error::TooManyOutputs`].
    pub fn try_subscribe(&self, options: Options) -> Result<Subscription, Error> {
        self.attach(options, self.shared.max_outputs)
    }

    fn attach(&self, options: Options, limit: usize) -> Result<Subscription, Error> {
        let state = &self.shared.state;
        let mut current = state.load(Ordering::Acquire);
        loop {
            if current & CLOSED != 0 {
                return Err(Error::Closed);
            }
            if current >= limit.min(CLOSED - 1) {
                return Err(Error::TooManyOutputs { limit });
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
        // Counted first, then placed: every record stored after this point is seen.
        let (cursor, kinds) = {
            let mut open = lock(&self.shared.open);
            open.wake_on_next_record();
            (open.next_seq(), open.kinds())
        };
        Ok(Subscription::attached(
            Arc::clone(&self.shared),
            options,
            cursor,
            kinds,
        ))
    }

    /// Outputs attached now.
    pub fn num_outputs(&self) -> usize {
        self.shared.state.load(Ordering::Acquire) & !CLOSED
    }

    /// Whether [`Capture::close`] was called (or every handle dropped).
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Closes the capture: later packets are ignored, and every output's stream ends
    /// once it has handed out what it holds.
    pub fn close(&self) {
        self.shared.state.fetch_or(CLOSED, Ordering::AcqRel);
        {
            let mut open = lock(&self.shared.open);
            open.closed = true;
            let mut sealed = lock(&self.shared.sealed);
            open.seal_into(&mut sealed);
            sealed.closed = true;
            self.shared.publish(&open);
        }
        self.shared.data_event.notify(usize::MAX);
        self.shared.batch_event.notify(usize::MAX);
    }

    /// Counters of the whole capture.
    pub fn stats(&self) -> CaptureStats {
        let open = lock(&self.shared.open);
        CaptureStats {
            outputs: self.num_outputs(),
            logged: open.logged,
            clamped_times: open.clamped,
            dropped: self.shared.dropped.load(Ordering::Relaxed),
        }
    }
}
