//! `pcapcast capture`: attach to a daemon and stream its capture.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgMatches, Args};
use pcapcast_core::endpoint::to_query;
use pcapcast_core::Format;

use crate::client::{self, Ask, End, Event, Next};
use crate::daemons;
use crate::recorder::{Counts, Flow, RecordError, Recorder};
use crate::target::{default_socket, Target};
use crate::{dissector, FormatArgs, HistoryArgs, LimitArgs, RuntimeKind};

#[derive(Debug, Args)]
#[command(after_long_help = MERGING)]
pub struct CaptureArgs {
    /// The daemon's endpoint: unix:PATH or tcp:HOST:PORT (default: the default socket,
    /// the one `pcapcast demo` serves). Repeat it to capture several daemons into one
    /// pcapng, merged in time order (see below).
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
away ends its part with a message; the others go on. Exit status 1 if a daemon could
not be attached.";

/// Where the stream goes.
enum Sink {
    File(BufWriter<File>),
    Stdout(BufWriter<io::Stdout>),
    Viewer {
        stdin: BufWriter<ChildStdin>,
        child: Child,
        _dissector: TempFile,
    },
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File(w) => w.write(buf),
            Sink::Stdout(w) => w.write(buf),
            Sink::Viewer { stdin, .. } => stdin.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File(w) => w.flush(),
            Sink::Stdout(w) => w.flush(),
            Sink::Viewer { stdin, .. } => stdin.flush(),
        }
    }
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Writes `contents` to `name` in a new folder of the temporary directory that only
    /// this user can enter. The folder is made, not reused, so a name planted there
    /// beforehand (a link to another file) cannot redirect the write.
    fn private(name: &str, contents: &str) -> io::Result<TempFile> {
        use std::os::unix::fs::DirBuilderExt;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("pcapcast-{}-{nonce}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = TempFile(dir.join(name));
        std::fs::write(&file.0, contents)?;
        Ok(file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn open_sink(args: &CaptureArgs) -> Result<Sink, String> {
    match args.output.as_deref() {
        Some("-") => Ok(Sink::Stdout(BufWriter::with_capacity(
            1 << 16,
            io::stdout(),
        ))),
        Some(path) => File::create(path)
            .map(|f| Sink::File(BufWriter::with_capacity(1 << 16, f)))
            .map_err(|e| format!("cannot create {path}: {e}")),
        None => {
            let lua = TempFile::private("pcapcast.lua", dissector::SOURCE)
                .map_err(|e| format!("cannot write the dissector: {e}"))?;
            let script = format!("lua_script:{}", lua.0.display());
            let (program, mut command) = if args.tshark {
                ("tshark", Command::new("tshark"))
            } else {
                ("wireshark", Command::new("wireshark"))
            };
            if !args.tshark {
                command.arg("-k");
            }
            command
                .args(["-i", "-", "-X", &script])
                .stdin(Stdio::piped());
            let mut child = command.spawn().map_err(|e| {
                format!("cannot start {program} ({e}): install it, or write to a file with -o FILE or to stdout with -o -")
            })?;
            let stdin = child.stdin.take().ok_or("no pipe to the viewer")?;
            Ok(Sink::Viewer {
                stdin: BufWriter::with_capacity(1 << 16, stdin),
                child,
                _dissector: lua,
            })
        }
    }
}

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
        self.update_with(|| describe(counts));
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

    pub fn finish(&self, counts: Counts) {
        self.finish_with(describe(counts));
    }

    /// [`LiveLine::finish`] with a text of the caller's.
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

fn describe(counts: Counts) -> String {
    format!(
        "pcapcast: {} packets, {} bytes, {} dropped",
        counts.packets, counts.bytes, counts.drops
    )
}

/// Runs `pcapcast capture`; `matches` are clap's, for the places of the options.
pub fn run(args: CaptureArgs, matches: Option<&ArgMatches>) -> Result<ExitCode, String> {
    if args.connect.len() > 1 {
        return run_merged(args, matches);
    }
    let only_merged = [
        (args.token.len() > 1, "several --token"),
        (!args.name.is_empty(), "--name"),
        (args.reorder_window.is_some(), "--reorder-window"),
    ];
    if let Some((_, what)) = only_merged.iter().find(|(given, _)| *given) {
        return Err(format!(
            "{what}: only a capture of several daemons takes it (a --connect for each)"
        ));
    }
    let options = args.history.apply(args.format.options()?);
    let ask = Ask {
        target: args
            .connect
            .first()
            .cloned()
            .unwrap_or_else(|| Target::Unix(default_socket())),
        query: to_query(&options),
        token: args.token.first().cloned(),
    };
    let sink = open_sink(&args)?;
    let stop = stop_signals();
    let mut recorder = Recorder::new(sink, args.limits.count);
    let mut line = LiveLine::new(args.stats, args.quiet);
    let started = Instant::now();
    let mut failure: Option<String> = None;
    let end = client::run(args.runtime, &ask, &stop, |event| {
        if let Event::Data(bytes) = event {
            match recorder.feed(&bytes) {
                Ok(Flow::More) => {}
                Ok(Flow::Done) => return Next::Stop,
                // The reader went away (Wireshark closed, `| head`): a normal end.
                Err(RecordError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Next::Stop
                }
                Err(RecordError::Write(e)) => {
                    failure = Some(format!("writing the capture failed: {e}"));
                    return Next::Stop;
                }
                Err(RecordError::Malformed(e)) => {
                    failure = Some(format!("{}: {e}", ask.target));
                    return Next::Stop;
                }
            }
        }
        line.update(recorder.counts());
        let out_of_time = args.limits.duration.is_some_and(|d| started.elapsed() >= d);
        if out_of_time || stop.load(Ordering::Relaxed) {
            Next::Stop
        } else {
            Next::Continue
        }
    })?;
    let counts = recorder.counts();
    line.finish(counts);
    close_viewer(recorder.finish());
    if let Some(failure) = failure {
        return Err(failure);
    }
    if let End::Broken(reason) = end {
        eprintln!("pcapcast: the daemon went away ({reason}); the capture ends on a whole record");
    }
    Ok(ExitCode::SUCCESS)
}

/// Several `--connect`: one pcapng, merged in time order. `matches` tells where each
/// option stood, to pair it with its `--connect`.
fn run_merged(args: CaptureArgs, matches: Option<&ArgMatches>) -> Result<ExitCode, String> {
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
    let sink = open_sink(&args)?;
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
    close_viewer(merged.out);
    if let Some(failure) = merged.failure {
        return Err(failure);
    }
    Ok(if merged.all_attached {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Once the capture ended: a viewer's input is closed and it is waited for, so that it
/// shows what it has.
fn close_viewer(sink: io::Result<Sink>) {
    if let Ok(Sink::Viewer {
        stdin, mut child, ..
    }) = sink
    {
        drop(stdin);
        let _ = child.wait();
    }
}
