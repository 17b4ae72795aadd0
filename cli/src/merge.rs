//! Merging several daemons' pcapng streams into one, in time order. Sans-IO: the caller
//! feeds each daemon's bytes as they arrive and pops what is due, passing the time in;
//! there are no timers here.
//!
//! Each daemon's interfaces become interfaces of the merged file, renumbered, with the
//! daemon named in `if_description`. Packets wait in a reorder window and are written
//! earliest time first, each at the latest once it has waited `window` since it
//! arrived: whenever the packet held longest is due, the earliest-timed packets are
//! written until it is. (A daemon whose clock runs behind thus holds nobody back for
//! longer than the window.) A daemon
//! hands out a packet at most its flush interval (100 ms) after logging it, so with
//! clocks that agree, a packet logged earlier elsewhere arrives within the window and
//! takes its place. One that arrives after a later packet was written (a clock ahead
//! by more than the margin, a stalled daemon) is written at once, out of order, with
//! a comment saying so, and counted as late: the packet is kept, and the file says
//! where its order breaks.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcapcast_core::framer::{Framer, Unit};
use pcapcast_core::pcapng::{INTERFACE_DESCRIPTION, SECTION_HEADER};

use crate::blocks::{self, Resolution};

/// The reorder window: the daemons' flush interval plus a margin for transit and
/// scheduling.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Packets held beyond this many bytes are written before their window ends, so that a
/// flood cannot grow memory without bound.
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// Something for the merged file, in the order it goes there.
#[derive(Debug)]
pub struct Out {
    /// The daemon it came from; `None` for the merged file's own section header.
    pub source: Option<usize>,
    /// The block: a header (section, interface) or a packet with its drop count.
    pub unit: Unit,
    /// A packet that came after the window and was written out of time order.
    pub late: bool,
}

/// A packet waiting in the window.
#[derive(Debug)]
struct Held {
    nanos: u128,
    seq: u64,
    source: usize,
    block: Bytes,
    drops: u64,
}

// Ordered for a min-heap on (time, arrival): equal times keep their arrival order.
impl Ord for Held {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.nanos, other.seq).cmp(&(self.nanos, self.seq))
    }
}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.nanos, self.seq) == (other.nanos, other.seq)
    }
}
impl Eq for Held {}

#[derive(Debug)]
struct Source {
    framer: Framer,
    description: String,
    /// The merged number and time unit of each of its interfaces, by its own number.
    interfaces: Vec<(u32, Resolution)>,
    sectioned: bool,
}

/// The merge of several streams.
#[derive(Debug)]
pub struct Merge {
    window: Duration,
    max_held_bytes: usize,
    sources: Vec<Source>,
    held: BinaryHeap<Held>,
    /// When each held packet's window ends, by arrival: the first is the one held
    /// longest.
    deadlines: BTreeMap<u64, Instant>,
    held_bytes: usize,
    ready: VecDeque<Out>,
    next_interface: u32,
    /// The time of the last packet written in order.
    written_up_to: Option<u128>,
    seq: u64,
}

impl Merge {
    /// A merge of one stream per description (how its interfaces will name it), whose
    /// section header carries `comment`.
    pub fn new(descriptions: Vec<String>, window: Duration, comment: &str) -> Merge {
        let application = concat!("pcapcast ", env!("CARGO_PKG_VERSION"));
        let header = blocks::section_header(application, comment);
        Merge {
            window,
            max_held_bytes: MAX_HELD_BYTES,
            sources: descriptions
                .into_iter()
                .map(|description| Source {
                    framer: Framer::new(),
                    description,
                    interfaces: Vec::new(),
                    sectioned: false,
                })
                .collect(),
            held: BinaryHeap::new(),
            deadlines: BTreeMap::new(),
            held_bytes: 0,
            ready: VecDeque::from([Out {
                source: None,
                unit: Unit::Header(header),
                late: false,
            }]),
            next_interface: 0,
            written_up_to: None,
            seq: 0,
        }
    }

    /// Caps the bytes held in the window (default [`MAX_HELD_BYTES`]); tests use a small
    /// cap to see it work.
    #[cfg(test)]
    pub fn max_held_bytes(mut self, bytes: usize) -> Merge {
        self.max_held_bytes = bytes;
        self
    }

    /// Takes bytes of stream `source` that arrived at `now`.
    ///
    /// # Errors
    ///
    /// What makes the stream unusable (not pcapng, big-endian, a packet on an interface
    /// it never described, a malformed block), in words; the stream cannot go on, the
    /// others can.
    pub fn push(&mut self, source: usize, data: &[u8], now: Instant) -> Result<(), String> {
        let Some(stream) = self.sources.get_mut(source) else {
            return Err(format!("no stream {source}"));
        };
        stream.framer.push(data);
        loop {
            let next = self.sources[source].framer.next_unit();
            match next.map_err(|e| e.to_string())? {
                Some(unit) => self.take(source, unit, now)?,
                None => return Ok(()),
            }
        }
    }

    fn take(&mut self, source: usize, unit: Unit, now: Instant) -> Result<(), String> {
        let stream = &mut self.sources[source];
        match unit {
            Unit::Header(block) => match blocks::block_type(&block) {
                Some(SECTION_HEADER) if blocks::is_little_endian(&block) => {
                    // A new section numbers its interfaces afresh.
                    stream.interfaces.clear();
                    stream.sectioned = true;
                }
                Some(SECTION_HEADER) => {
                    return Err(
                        "the stream is big-endian pcapng, which a merge does not convert".into(),
                    )
                }
                Some(INTERFACE_DESCRIPTION) if stream.sectioned => {
                    let (block, resolution) =
                        blocks::describe_interface(&block, &stream.description)?;
                    stream.interfaces.push((self.next_interface, resolution));
                    self.next_interface += 1;
                    self.ready.push_back(Out {
                        source: Some(source),
                        unit: Unit::Header(block),
                        late: false,
                    });
                }
                _ => return Err("the stream is not pcapng (a merge needs format=pcapng)".into()),
            },
            Unit::Packet { bytes, drops } => {
                let (interface, ticks) = blocks::packet_interface_and_time(&bytes)
                    .ok_or("a packet block too short for its header")?;
                let Some(&(merged, resolution)) = stream.interfaces.get(interface as usize) else {
                    return Err(format!(
                        "a packet on interface {interface}, which the stream never described"
                    ));
                };
                let nanos = resolution.nanos(ticks);
                if let Some(up_to) = self.written_up_to.filter(|up_to| nanos < *up_to) {
                    let behind =
                        Duration::from_nanos(u64::try_from(up_to - nanos).unwrap_or(u64::MAX));
                    let comment = format!(
                        "pcapcast: out of order, {behind:?} earlier than the packet before it, which was written before this one arrived (reorder window {:?})",
                        self.window
                    );
                    self.ready.push_back(Out {
                        source: Some(source),
                        unit: Unit::Packet {
                            bytes: blocks::renumber_packet(&bytes, merged, Some(&comment)),
                            drops,
                        },
                        late: true,
                    });
                } else {
                    let block = blocks::renumber_packet(&bytes, merged, None);
                    self.held_bytes += block.len();
                    self.seq += 1;
                    let due = now.checked_add(self.window).unwrap_or(now);
                    self.deadlines.insert(self.seq, due);
                    self.held.push(Held {
                        nanos,
                        seq: self.seq,
                        source,
                        block,
                        drops,
                    });
                }
            }
            // Statistics and other blocks name the daemon's own interface numbers and
            // would be wrong in the merged file: they are left out.
            Unit::Other(_) => {}
        }
        Ok(())
    }

    /// The next block that may be written at `now`, if any.
    pub fn pop(&mut self, now: Instant) -> Option<Out> {
        if let Some(out) = self.ready.pop_front() {
            return Some(out);
        }
        let due = self.next_due()?;
        (due <= now || self.held_bytes > self.max_held_bytes).then(|| self.release())?
    }

    /// The next block, without waiting for the window: for the end of the capture.
    pub fn drain(&mut self) -> Option<Out> {
        self.ready.pop_front().or_else(|| self.release())
    }

    /// When the packet held longest falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.deadlines.first_key_value().map(|(_, due)| *due)
    }

    fn release(&mut self) -> Option<Out> {
        let held = self.held.pop()?;
        self.deadlines.remove(&held.seq);
        self.held_bytes -= held.block.len();
        self.written_up_to = Some(held.nanos);
        Some(Out {
            source: Some(held.source),
            unit: Unit::Packet {
                bytes: held.block,
                drops: held.drops,
            },
            late: false,
        })
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
