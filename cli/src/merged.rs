//! `pcapcast capture` with several `--connect`: a client thread per daemon, their
//! pcapng streams merged in time order ([`crate::merge`]) into one file. A daemon that
//! goes away ends its part; the others go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pcapcast_core::framer::Unit;

use crate::capture::LiveLine;
use crate::client::{self, Ask, End, Event, Next, TICK};
use crate::merge::{Merge, Out};
use crate::recorder::{Counts, Flow, Output, RecordError, Recorder};
use crate::{LimitArgs, RuntimeKind};

/// One daemon of a merged capture.
#[derive(Debug)]
pub struct Daemon {
    /// What to ask it for.
    pub ask: Ask,
    /// How its interfaces name it.
    pub name: String,
}

/// How a merged capture ended.
#[derive(Debug)]
pub struct Merged<W> {
    /// The output, flushed unless writing it failed.
    pub out: W,
    /// What the output holds.
    pub counts: Counts,
    /// Daemons that could not be attached.
    pub unattached: usize,
    /// Daemons whose part was cut short: they went away, or their stream broke.
    pub cut_short: usize,
    /// Writing the output failed (its reader leaving too); the output was cut back to
    /// its last whole record.
    pub failure: Option<RecordError>,
}

/// A daemon's part, as the live line shows it.
#[derive(Debug, Default)]
struct Part {
    packets: u64,
    drops: u64,
    late: u64,
    ended: bool,
}

enum Message {
    Data(usize, Bytes),
    End(usize, Result<End, String>),
}

/// The comment of the merged file's section header.
fn clock_comment(daemons: &[Daemon], window: Duration) -> String {
    let names: Vec<&str> = daemons.iter().map(|d| d.name.as_str()).collect();
    format!(
        "Merged by pcapcast from {} daemons ({}). Each packet's time comes from its own daemon's clock: \
         daemons on different machines can disagree, and packets are ordered by those times, \
         through a reorder window of {window:?}.",
        daemons.len(),
        names.join(", ")
    )
}

/// Captures from every daemon into `out` until a limit, a signal (`stop`), the end of
/// every daemon's stream, or a failure to write.
pub fn run<W: Output>(
    kind: RuntimeKind,
    daemons: &[Daemon],
    out: W,
    limits: &LimitArgs,
    window: Duration,
    line: &mut LiveLine,
    stop: &AtomicBool,
) -> Merged<W> {
    let names: Vec<String> = daemons.iter().map(|d| d.name.clone()).collect();
    let mut merge = Merge::new(names, window, &clock_comment(daemons, window));
    // Bounded: a slow output holds the clients back, and the daemons count what their
    // outputs then lose, as for one daemon.
    let (tx, rx) = mpsc::sync_channel::<Message>(64);
    let mut flags = Vec::new();
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    for (i, daemon) in daemons.iter().enumerate() {
        let flag = Arc::new(AtomicBool::new(false));
        flags.push(Arc::clone(&flag));
        let (tx, ask) = (tx.clone(), daemon.ask.clone());
        threads.push(thread::spawn(move || {
            let end = client::run(kind, &ask, &flag, |event| {
                if let Event::Data(bytes) = event {
                    if tx.send(Message::Data(i, bytes)).is_err() {
                        return Next::Stop;
                    }
                }
                if flag.load(Ordering::Relaxed) {
                    Next::Stop
                } else {
                    Next::Continue
                }
            });
            let _ = tx.send(Message::End(i, end));
        }));
    }
    drop(tx);
    let mut parts: Vec<Part> = daemons.iter().map(|_| Part::default()).collect();
    let mut recorder = Recorder::new(out, limits.count);
    let (mut unattached, mut cut_short) = (0, 0);
    let mut failure = None;
    let mut live = daemons.len();
    let started = Instant::now();
    let mut flow = Flow::More;
    // Nothing is written, the section header included, until a daemon has answered
    // with data: an existing output file stays as it was when none does.
    let mut answered = false;
    while flow == Flow::More && live > 0 {
        let wait = merge
            .next_due()
            .map_or(TICK, |due| due.saturating_duration_since(Instant::now()))
            .min(TICK);
        match rx.recv_timeout(wait) {
            Ok(Message::Data(i, bytes)) if !parts[i].ended => {
                answered = true;
                if let Err(e) = merge.push(i, &bytes, Instant::now()) {
                    line.say(&format!(
                        "pcapcast: {}: {e}; its part ends here, the others go on",
                        daemons[i].name
                    ));
                    flags[i].store(true, Ordering::Relaxed);
                    parts[i].ended = true;
                    cut_short += 1;
                }
            }
            Ok(Message::Data(..)) => {}
            Ok(Message::End(i, end)) => {
                live -= 1;
                parts[i].ended = true;
                match end {
                    Err(e) => {
                        unattached += 1;
                        line.say(&format!("pcapcast: {e}"));
                    }
                    Ok(End::Stopped) => {}
                    Ok(End::Closed) => line.say(&format!(
                        "pcapcast: {}: the daemon ended its capture; its part ends on a whole record{}",
                        daemons[i].name,
                        others_go_on(live)
                    )),
                    Ok(End::Broken(reason)) => {
                        cut_short += 1;
                        line.say(&format!(
                            "pcapcast: {}: the daemon went away ({reason}); its part ends on a whole record{}",
                            daemons[i].name,
                            others_go_on(live)
                        ));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => live = 0,
        }
        let now = Instant::now();
        if answered {
            flow = write_due(&mut recorder, &mut parts, || merge.pop(now), &mut failure);
        }
        line.update_with(|| describe(recorder.counts(), daemons, &parts));
        let out_of_time = limits.duration.is_some_and(|d| started.elapsed() >= d);
        if out_of_time || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    // What the window holds is whole and in order: it goes in, unless the count is
    // reached or the output failed.
    if flow == Flow::More && answered {
        write_due(&mut recorder, &mut parts, || merge.drain(), &mut failure);
    }
    for flag in &flags {
        flag.store(true, Ordering::Relaxed);
    }
    // Clients blocked on a full channel see it gone and stop; the others stop within
    // a tick of their flag.
    drop(rx);
    for thread in threads {
        let _ = thread.join();
    }
    let finished = recorder.finish();
    let (out, counts) = (finished.out, finished.counts);
    failure = failure.or(finished.result.err());
    line.finish_with(describe(counts, daemons, &parts));
    Merged {
        out,
        counts,
        unattached,
        cut_short,
        failure,
    }
}

fn others_go_on(live: usize) -> &'static str {
    if live > 0 {
        ", the others go on"
    } else {
        ""
    }
}

/// Writes what `next` gives, counting each daemon's part. `Done` once the packet count
/// is reached or the output failed (its reader leaving too: the caller tells them apart).
fn write_due<W: Output>(
    recorder: &mut Recorder<W>,
    parts: &mut [Part],
    mut next: impl FnMut() -> Option<Out>,
    failure: &mut Option<RecordError>,
) -> Flow {
    let mut flow = Flow::More;
    let mut result = Ok(());
    while let Some(out) = next() {
        let put = recorder.put(&out.unit);
        if let (Ok(_), Some(i), Unit::Packet { drops, .. }) = (&put, out.source, &out.unit) {
            let part = &mut parts[i];
            part.packets += 1;
            part.drops += drops;
            part.late += u64::from(out.late);
        }
        match put {
            Ok(Flow::More) => {}
            Ok(Flow::Done) => {
                flow = Flow::Done;
                break;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let result = result.and_then(|()| recorder.flush());
    match result {
        Ok(()) => flow,
        Err(e) => {
            *failure = Some(e);
            Flow::Done
        }
    }
}

fn describe(total: Counts, daemons: &[Daemon], parts: &[Part]) -> String {
    let mut text = format!(
        "pcapcast: {} packets, {} bytes, {} dropped",
        total.packets, total.bytes, total.drops
    );
    for (daemon, part) in daemons.iter().zip(parts) {
        text += &format!(
            " | {}: {} packets, {} dropped",
            daemon.name, part.packets, part.drops
        );
        if part.late > 0 {
            text += &format!(", {} late", part.late);
        }
        if part.ended {
            text += ", ended";
        }
    }
    text
}
