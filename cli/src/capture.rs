//! `pcapcast capture`: attach to a daemon and stream its capture.

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgMatches, Args};
use pcapcast_core::endpoint::to_query;
use pcapcast_core::transcode::Transcoder;
use pcapcast_core::Format;

use crate::client::{self, Ask, End, Event, Next};
use crate::daemons;
use crate::outcome::{Outcome, EXIT_STATUS};
use crate::recorder::{Counts, Flow, RecordError, Recorder};
use crate::sink;
use crate::target::{default_socket, Target};
use crate::{FormatArgs, HistoryArgs, LimitArgs, RuntimeKind};

#[derive(Debug, Args)]
#[command(after_help = EXIT_STATUS, after_long_help = format!("{MERGING}\n\n{EXIT_STATUS}"))]
pub struct CaptureArgs {
    /// The daemon's endpoint: unix:PATH, tcp:HOST:PORT or http://HOST:PORT, followed by
    /// the capture's HTTP path where the daemon mounted it elsewhere than /capture
    /// (tcp:127.0.0.1:8080/debug/capture, unix:/run/d.sock/debug/capture). Default: the
    /// default socket, the one `pcapcast demo` serves. Repeat it to capture several
    /// daemons into one pcapng, merged in time order (see below).
    #[arg(long, value_name = "ENDPOINT")]
    connect: Vec<Target>,
    /// Bearer token for a TCP endpoint. With several --connect, a --token belongs to
    /// the tcp: --connect before it; one before every --connect serves them all.
    #[arg(long, env = "PCAPCAST_TOKEN", hide_env_values = true)]
    token: Vec<String>,
    /// With several --connect: the name of the daemon of the --connect before it, for
    /// its interfaces' description (default: its endpoint).
    #[arg(long)]
    name: Vec<String>,
    /// With several --connect: how long each packet waits for earlier ones from the
    /// other daemons (default 500ms: the daemons' 100 ms flush interval plus a margin).
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
    reorder_window: Option<Duration>,
    /// Write to FILE, or `-` for stdout. Without it, Wireshark opens the live capture.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Without -o: decode in the terminal with tshark instead of opening Wireshark.
    #[arg(long)]
    tshark: bool,
    #[command(flatten)]
    format: FormatArgs,
    #[command(flatten)]
    history: HistoryArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Show the live counts (packets, bytes, drops) even when stderr is not a terminal:
    /// there, one line a second.
    #[arg(long)]
    stats: bool,
    /// Never show the live line.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// The async runtime for the connection.
    #[arg(long, value_enum, default_value_t)]
    runtime: RuntimeKind,
}

const MERGING: &str = "\
Several daemons in one capture:
  pcapcast capture --connect unix:/run/left.sock --name left \\
                   --connect tcp:10.0.0.2:8080 --token \"$TOKEN\" --name right -o both.pcapng
Each --token and --name belongs to the --connect before it. The output is pcapng (--format pcapng, the only format that tells daemons apart: other
formats are refused). Each daemon's paths are interfaces of their own: if_name is the
path (from-local, from-peer, ...), if_description the daemon (--name, else its
endpoint). Packets are merged in time order through a reorder window (--reorder-window,
500ms: the daemons' 100 ms flush interval plus 400 ms for transit and scheduling); one
that arrives later than that is written at once, out of order, with a comment saying so,
and counted as late. Times come from each daemon's own clock, as the file's section
comment says. The live line shows each daemon's packets and drops. A daemon that goes
away ends its part with a message; the others go on, and the exit status is 2 at the
end; 1 if a daemon could not be attached.";

/// Flags set by SIGINT and SIGTERM.
pub fn stop_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration fails only for forbidden signals, which these are not.
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }
    stop
}

/// The live line on stderr, as dumpcap shows it.
pub struct LiveLine {
    enabled: bool,
    terminal: bool,
    last: Instant,
}

impl LiveLine {
    pub fn new(asked: bool, quiet: bool) -> LiveLine {
        let terminal = io::stderr().is_terminal();
        LiveLine {
            enabled: !quiet && (terminal || asked),
            terminal,
            last: Instant::now(),
        }
    }

    /// Redraws the line on a terminal four times a second; elsewhere (`--stats` into a
    /// log) writes one line a second.
    pub fn update(&mut self, counts: Counts) {
        self.update_with(|| describe(counts, None));
    }

    /// [`LiveLine::update`] with a text of the caller's, made only when shown.
    pub fn update_with(&mut self, text: impl FnOnce() -> String) {
        let every = if self.terminal { 250 } else { 1000 };
        if self.enabled && self.last.elapsed() >= Duration::from_millis(every) {
            self.last = Instant::now();
            if self.terminal {
                eprint!("\r{}", text());
            } else {
                eprintln!("{}", text());
            }
        }
    }

    /// Ends the live line with `text`, the closing summary.
    pub fn finish_with(&self, text: String) {
        if self.enabled {
            let start = if self.terminal { "\r" } else { "" };
            eprintln!("{start}{text}");
        }
    }

    /// A message on a line of its own, even when the live line is off; on a terminal
    /// the live line is cleared first and redrawn at its next update.
    pub fn say(&self, message: &str) {
        if self.enabled && self.terminal {
            eprint!("\r\x1b[K");
        }
        eprintln!("{message}");
    }
}

/// The live line's text; `history` is what the daemon said the capture starts with.
fn describe(counts: Counts, history: Option<u64>) -> String {
    // History comes first: of the packets so far, up to that many are from before.
    let before = history.map_or(String::new(), |history| {
        format!(" ({} from before the attach)", history.min(counts.packets))
    });
    format!(
        "pcapcast: {} packets{before}, {} bytes, {} dropped",
        counts.packets, counts.bytes, counts.drops
    )
}

/// Runs `pcapcast capture`; `matches` are clap's, for the places of the options.
pub fn run(args: CaptureArgs, matches: Option<&ArgMatches>) -> Outcome {
    let refused = |why| Outcome::Refused(why);
    if args.connect.len() > 1 {
        return run_merged(args, matches).unwrap_or_else(refused);
    }
    let only_merged = [
        (args.token.len() > 1, "several --token"),
        (!args.name.is_empty(), "--name"),
        (args.reorder_window.is_some(), "--reorder-window"),
    ];
    if let Some((_, what)) = only_merged.iter().find(|(given, _)| *given) {
        return refused(format!(
            "{what}: only a capture of several daemons takes it (a --connect for each)"
        ));
    }
    let options = match args.format.options() {
        Ok(options) => args.history.apply(options),
        Err(why) => return refused(why),
    };
    // A classic format is written here from the daemon's pcapng, the format that
    // reports losses: so the counts tell the truth in every format.
    let classic = options.get_format() != Format::Pcapng;
    let asked = match classic {
        true => Transcoder::upstream(&options),
        false => options.clone(),
    };
    let ask = Ask {
        target: args
            .connect
            .first()
            .cloned()
            .unwrap_or_else(|| Target::unix(default_socket())),
        query: to_query(&asked),
        token: args.token.first().cloned(),
    };
    let sink = match sink::open(args.output.as_deref(), args.tshark) {
        Ok(sink) => sink,
        Err(why) => return refused(why),
    };
    let destination = sink.name();
    let stop = stop_signals();
    let mut recorder = match classic {
        true => Recorder::transcoding(sink, args.limits.count, options),
        false => Recorder::new(sink, args.limits.count),
    };
    let mut line = LiveLine::new(args.stats, args.quiet);
    let started = Instant::now();
    let mut failure: Option<Outcome> = None;
    let mut history = None;
    let end = client::run(args.runtime, &ask, &stop, |event| {
        match event {
            Event::Attached { history: told } => history = told,
            Event::Data(bytes) => match recorder.feed(bytes) {
                Ok(Flow::More) => {}
                Ok(Flow::Done) => return Next::Stop,
                Err(e) => {
                    failure = failed(e, &destination, &ask.target, recorder.counts());
                    return Next::Stop;
                }
            },
            // The reader went away (`| head`): a normal end, as a broken pipe is.
            Event::Tick if recorder.output().reader_gone() => return Next::Stop,
            Event::Tick => {
                if let Err(e) = recorder.tick() {
                    failure = failed(e, &destination, &ask.target, recorder.counts());
                    return Next::Stop;
                }
            }
        }
        line.update_with(|| describe(recorder.counts(), history));
        let out_of_time = args.limits.duration.is_some_and(|d| started.elapsed() >= d);
        if out_of_time || stop.load(Ordering::Relaxed) {
            Next::Stop
        } else {
            Next::Continue
        }
    });
    let (ends_whole, torn) = (recorder.ends_whole(), recorder.torn_bytes());
    let finished = recorder.finish();
    let (sink, counts) = (finished.out, finished.counts);
    let failure = failure.or_else(|| {
        let e = finished.result.err()?;
        failed(e, &destination, &ask.target, counts)
    });
    line.finish_with(describe(counts, history));
    let outcome = failure.unwrap_or_else(|| match end {
        Err(why) => Outcome::Refused(why),
        Ok(End::Stopped) => Outcome::Whole,
        Ok(End::Closed) if ends_whole => Outcome::Whole,
        Ok(End::Closed) if counts.bytes == 0 => Outcome::CutShort(format!(
            "{}: the stream ended before its file header ({torn} bytes came): nothing was captured",
            ask.target
        )),
        Ok(End::Closed) => Outcome::CutShort(format!(
            "{}: the stream ended in the middle of a record ({torn} bytes of it left out); \
             {destination} ends on its last whole record, {} packets",
            ask.target, counts.packets
        )),
        Ok(End::Broken(reason)) => Outcome::CutShort(format!(
            "{}: the daemon went away ({reason}); {destination} ends on its last whole record, {} packets",
            ask.target, counts.packets
        )),
    });
    if outcome != Outcome::Whole {
        sink.remove_if_empty();
    }
    sink::close_viewer(sink);
    outcome
}

/// The outcome of a recording's error, `None` when it is the reader of a pipe leaving
/// (a normal end). `counts` are what the output holds after the recorder cut it back.
fn failed(
    error: RecordError,
    destination: &str,
    target: &Target,
    counts: Counts,
) -> Option<Outcome> {
    match error {
        RecordError::Write(e) if e.kind() == io::ErrorKind::BrokenPipe => None,
        RecordError::Write(e) => Some(Outcome::WriteFailed(format!(
            "writing {destination} failed: {e}; it holds the {} packets ({} bytes) before, and ends on a whole record",
            counts.packets, counts.bytes
        ))),
        RecordError::Malformed(e) => Some(Outcome::CutShort(format!(
            "{target}: the stream is not a capture ({e}); {destination} ends on its last whole record, {} packets",
            counts.packets
        ))),
    }
}

/// Several `--connect`: one pcapng, merged in time order. `matches` tells where each
/// option stood, to pair it with its `--connect`.
///
/// # Errors
///
/// Bad options, or an output that cannot be opened, on one line.
fn run_merged(args: CaptureArgs, matches: Option<&ArgMatches>) -> Result<Outcome, String> {
    if let Some(format) = args.format.format_given().filter(|f| *f != Format::Pcapng) {
        return Err(format!(
            "--format {}: several daemons are merged into pcapng, the format that keeps them apart \
             (each daemon's paths as interfaces of their own); drop --format or give pcapng",
            format.name()
        ));
    }
    let options = args
        .history
        .apply(args.format.options()?)
        .format(Format::Pcapng);
    let daemons = daemons::pair(
        &daemons::given(matches, "connect", &args.connect),
        &daemons::given(matches, "token", &args.token),
        &daemons::given(matches, "name", &args.name),
        &to_query(&options),
    )?;
    let sink = sink::open(args.output.as_deref(), args.tshark)?;
    let destination = sink.name();
    let stop = stop_signals();
    let mut line = LiveLine::new(args.stats, args.quiet);
    let window = args.reorder_window.unwrap_or(crate::merge::WINDOW);
    let merged = crate::merged::run(
        args.runtime,
        &daemons,
        sink,
        &args.limits,
        window,
        &mut line,
        &stop,
    );
    // Each daemon that was not attached or went away was named as it happened.
    let failure = merged.failure.and_then(|e| {
        let target = &daemons[0].ask.target;
        failed(e, &destination, target, merged.counts)
    });
    let outcome = failure.unwrap_or_else(|| match (merged.unattached, merged.cut_short) {
        (0, 0) => Outcome::Whole,
        (0, cut) => Outcome::CutShort(format!(
            "{cut} of {} daemons went away before the end; {destination} ends on a whole record",
            daemons.len()
        )),
        (unattached, _) => Outcome::Refused(format!(
            "{unattached} of {} daemons could not be attached",
            daemons.len()
        )),
    });
    if outcome != Outcome::Whole {
        merged.out.remove_if_empty();
    }
    sink::close_viewer(merged.out);
    Ok(outcome)
}
