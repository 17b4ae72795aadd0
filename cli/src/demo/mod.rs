//! `pcapcast demo`: the main job with no setup. An embedded daemon whose userspace
//! datapath moves real IPv4/IPv6 UDP, TCP and ICMP packets over all four paths, logs
//! them to a capture, and serves it on a Unix socket (and PCAP-over-IP if asked).

mod datapath;
mod replay;
mod snapshot;
mod tcp;
mod traffic;

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use clap::Args;
use futures_lite::Stream;
use pcapcast_core::{Capture, History, Options, Subscription};
use pcapcast_serve::{serve_pcap_over_ip_with, HttpServer, Listener, Runtime};

use crate::capture::{stop_signals, LiveLine};
use crate::recorder::{Flow, Recorder};
use crate::target::{default_socket, prepare_socket_dir};
use crate::{FormatArgs, LimitArgs, RuntimeKind};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Serve the capture on this Unix socket (default: the socket `pcapcast capture`
    /// attaches to).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Also serve PCAP-over-IP on this loopback address, e.g. 127.0.0.1:57012, for
    /// `tshark -i TCP@127.0.0.1:57012`.
    #[arg(long)]
    pcap_over_ip: Option<SocketAddr>,
    /// What --pcap-over-ip serves: pcap (the seed format, with each packet's path) or
    /// raw (bare IP, for Arkime's pcap-over-ip-client mode, which reads LINKTYPE_RAW);
    /// --snaplen, --paths and the filter apply.
    #[arg(long, value_enum, default_value = "pcap", requires = "pcap_over_ip")]
    pcap_over_ip_format: crate::push::PushFormat,
    /// Start each PCAP-over-IP connection with what the capture retained (see
    /// --retain): all, or a span back from the newest packet (30s, 500ms).
    #[arg(long, value_name = "all|DURATION", value_parser = crate::parse_history, requires = "pcap_over_ip")]
    pcap_over_ip_history: Option<History>,
    /// Also push the capture to a PCAP-over-IP collector listening at tcp:HOST:PORT
    /// (Arkime's pcap-over-ip-server mode), reconnecting after 100 ms doubling to 5 s
    /// when it goes away; --snaplen, --paths and the filter apply.
    #[arg(long, value_name = "tcp:HOST:PORT", value_parser = crate::push::parse_collector)]
    push: Option<SocketAddr>,
    /// What --push sends: raw (bare IP, for collectors without pcapcast's dissector,
    /// such as Arkime) or pcap (the seed format, with each packet's path).
    #[arg(long, value_enum, default_value_t, requires = "push")]
    push_format: crate::push::PushFormat,
    /// Start the push with what the capture retained (see --retain): all, or a span
    /// back from the newest packet (30s, 500ms).
    #[arg(long, value_name = "all|DURATION", value_parser = crate::parse_history, requires = "push")]
    push_history: Option<History>,
    /// Bytes of the newest packets kept while nobody listens, for `pcapcast capture
    /// --history` and for the snapshot SIGUSR1 writes into the current directory (0
    /// keeps none).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_RETAIN)]
    retain: usize,
    /// Bytes of backlog kept for outputs that lag (default 4 MiB); smaller makes a
    /// slow reader lose packets sooner. The retention (--retain) is kept in the same
    /// backlog, which is never smaller than it.
    #[arg(long)]
    backlog: Option<usize>,
    /// Rounds of exchanges per second; each round is about a dozen packets.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Instead of the demo's own traffic, replay the IP packets of a capture (pcap or
    /// pcapng; Ethernet with VLAN tags, Linux cooked, BSD loopback, raw IP, or pcapcast's
    /// and Tailscale's USER0 framings, whose paths and NAT addresses it keeps), over and
    /// over until stopped.
    #[arg(long, value_name = "FILE")]
    replay: Option<PathBuf>,
    /// The replay's pace: a factor of the recorded one (2 is twice as fast), or max.
    #[arg(long, default_value = "1", value_parser = replay::parse_speed, requires = "replay")]
    speed: replay::Speed,
    /// Replay the capture once, then stop.
    #[arg(long, requires = "replay")]
    once: bool,
    /// Also capture the demo's own traffic into FILE, then stop (with -c or --duration;
    /// 200 packets by default).
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    #[command(flatten)]
    format: FormatArgs,
    #[command(flatten)]
    limits: LimitArgs,
    /// Log only warnings.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// The async runtime serving the capture.
    #[arg(long, value_enum, default_value_t)]
    runtime: RuntimeKind,
}

/// What the demo retains unless told: 16 MiB.
const DEFAULT_RETAIN: usize = 16 << 20;

/// How long a stopped demo waits for its outputs to hand out their backlogs and its
/// connections to write them.
const DRAIN_AFTER_CLOSE: Duration = Duration::from_secs(10);

/// The slowest `--rate`: one round a day.
const MIN_RATE: f64 = 1.0 / 86_400.0;

pub fn run(args: DemoArgs) -> Result<ExitCode, String> {
    // Slower than a round a day would wait past what a timer holds, so it is refused.
    if !(args.rate.is_finite() && args.rate >= MIN_RATE) {
        return Err(format!(
            "--rate is rounds per second, at least one a day ({MIN_RATE:.7}); got {:e}",
            args.rate
        ));
    }
    let options = args.format.options()?;
    init_logging(args.quiet);
    crate::return_freed_memory();
    let socket = args.socket.clone().unwrap_or_else(default_socket);
    prepare_socket_dir(&socket)?;

    let enabled = pcapcast_serve::enabled_by_environment();
    if !enabled {
        tracing::warn!(
            variable = pcapcast_serve::DISABLE_VARIABLE,
            "capture disabled by the environment: attaching is refused"
        );
    }
    let mut builder = Capture::builder().retain(args.retain).enabled(enabled);
    if let Some(bytes) = args.backlog {
        // Batches no bigger than the default: a reader that stops reading pins about
        // one batch of memory until it leaves.
        builder = builder
            .batch_bytes((bytes / 4).min(64 << 10))
            .backlog_bytes(bytes);
    }
    let capture = builder.build();
    let replayed = match &args.replay {
        Some(file) => {
            let mut loaded = replay::load(file)?;
            let capped = loaded.cap_waits(args.speed);
            for warning in loaded.warnings.iter().chain(&capped) {
                eprintln!("pcapcast demo: warning: {warning}");
            }
            if !args.quiet {
                eprintln!(
                    "pcapcast demo: replaying {} IP packets of {} ({} records without one skipped)",
                    loaded.packets.len(),
                    file.display(),
                    loaded.skipped
                );
            }
            Some(loaded)
        }
        None => None,
    };
    let stop = stop_signals();
    let pcap_over_ip = args.pcap_over_ip.map(|addr| {
        (
            addr,
            options
                .clone()
                .format(args.pcap_over_ip_format.into())
                .history(args.pcap_over_ip_history.unwrap_or_default()),
        )
    });
    let open_connections = serve(args.runtime, capture.clone(), socket.clone(), pcap_over_ip)?;
    let pushing = match args.push {
        Some(collector) => {
            let push_options = options
                .clone()
                .format(args.push_format.into())
                .history(args.push_history.unwrap_or_default());
            Some(crate::push::start(
                args.runtime,
                capture.clone(),
                collector,
                push_options,
            )?)
        }
        None => None,
    };
    // Attached before the datapath starts, so that the file holds its first packets.
    let own_output = args.output.as_ref().map(|_| capture.subscribe(options));
    let datapath = match replayed {
        Some(loaded) => run_replay(capture.clone(), loaded, args.speed, args.once),
        None => run_datapath(capture.clone(), args.rate),
    };

    let result = match (&args.output, own_output) {
        (Some(path), Some(output)) => record(output, path, &args, &stop),
        _ => {
            banner(&socket, args.pcap_over_ip, args.retain);
            let snapshots = snapshot::requests();
            while !stop.load(Ordering::Relaxed) && !datapath.thread.is_finished() {
                thread::sleep(Duration::from_millis(100));
                if snapshots.swap(false, Ordering::Relaxed) {
                    write_snapshot(&capture);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    };
    capture.close();
    // Each output's stream ends once its backlog is written: readers get that, and the
    // daemon's word on what each was handed and lost, unless one is stalled.
    // An output is gone once its stream ended (at once, when it had handed everything to
    // its connection already); its connection still writes the stream's last bytes and
    // its end, to a reader that may be slow: both are waited for.
    let closed = Instant::now();
    let busy = || capture.num_outputs() > 0 || open_connections.load(Ordering::Acquire) > 0;
    while busy() && closed.elapsed() < DRAIN_AFTER_CLOSE {
        thread::sleep(Duration::from_millis(10));
    }
    datapath.stop();
    if let Some(pushing) = pushing {
        pushing.finish(Duration::from_secs(2)); // the collector gets what the push holds
    }
    let _ = std::fs::remove_file(&socket);
    result
}

fn init_logging(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn write_snapshot(capture: &Capture) {
    match snapshot::write(capture, SystemTime::now()) {
        Ok(written) => tracing::info!(
            path = %written.path.display(),
            records = written.records,
            dropped = written.dropped,
            "snapshot written"
        ),
        Err(e) => tracing::error!(error = %e, "snapshot failed"),
    }
}

fn banner(socket: &FsPath, pcap_over_ip: Option<SocketAddr>, retain: usize) {
    let sock = socket.display();
    eprintln!("pcapcast demo: a userspace datapath moves IPv4/IPv6 UDP, TCP and ICMP packets");
    eprintln!(
        "over all four paths (from-local, from-peer, synth-to-local, synth-to-peer) and disco."
    );
    eprintln!("Its capture is served on unix:{sock}. In another terminal:");
    eprintln!("  pcapcast capture -o demo.pcap -c 200      # save 200 packets");
    eprintln!("  pcapcast capture --tshark -c 20           # decode them in the terminal");
    eprintln!("  pcapcast capture                          # watch them live in Wireshark");
    eprintln!("  curl -s --unix-socket {sock} -X POST 'http://localhost/capture?format=pcapng' -o demo.pcapng");
    if let Some(addr) = pcap_over_ip {
        eprintln!("  tshark -i TCP@{addr}                 # PCAP-over-IP");
    }
    if retain > 0 {
        eprintln!(
            "It keeps its last {} MiB of packets while nobody listens:",
            retain as f64 / f64::from(1 << 20)
        );
        eprintln!(
            "  pcapcast capture --history 30s --no-follow -o before.pcapng   # what just happened"
        );
        eprintln!(
            "  kill -USR1 {}                  # a pcapng snapshot into this folder",
            std::process::id()
        );
    }
    eprintln!("Ctrl-C stops it.");
}

/// The datapath thread and its stop flag.
struct DatapathThread {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl DatapathThread {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

fn run_datapath(capture: Capture, rate: f64) -> DatapathThread {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let period = Duration::from_secs_f64(1.0 / rate);
    let thread = thread::spawn(move || {
        let mut hosts = tcp::Hosts::new(capture.clone(), SystemTime::now);
        let datapath = datapath::Datapath::new(capture, SystemTime::now);
        let mut n = 0;
        let mut next = Instant::now();
        while !flag.load(Ordering::Relaxed) {
            traffic::round(&datapath, &mut hosts, n);
            n += 1;
            next += period;
            // Waits for the next round in steps, so that a stop is seen within 100 ms
            // at any rate.
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                match next.checked_duration_since(now) {
                    Some(wait) if !wait.is_zero() => {
                        thread::sleep(wait.min(Duration::from_millis(100)));
                    }
                    Some(_) => break,
                    None => {
                        next = now; // fell behind: do not burst to catch up
                        break;
                    }
                }
            }
        }
    });
    DatapathThread { stop, thread }
}

/// Replays `loaded` as the datapath; with `once`, closes the capture at the end, so
/// that every output ends.
fn run_replay(
    capture: Capture,
    loaded: replay::Replay,
    speed: replay::Speed,
    once: bool,
) -> DatapathThread {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = thread::spawn(move || {
        // A loop starts one mean gap after the previous one's last packet, and at least
        // 10 ms (scaled) after it: a file whose packets share one time is not a busy loop.
        let span = loaded.packets.last().map_or(Duration::ZERO, |p| p.at);
        let gap = span / u32::try_from(loaded.packets.len()).unwrap_or(u32::MAX);
        let gap = gap.max(Duration::from_millis(10));
        loop {
            let start = Instant::now();
            for packet in &loaded.packets {
                if !wait_until(start.checked_add(speed.due(packet.at)), &flag) {
                    return;
                }
                let when = SystemTime::now();
                capture.log_packet_with(packet.path, when, &packet.packet, &packet.meta);
            }
            if once {
                capture.close();
                return;
            }
            if !wait_until(Instant::now().checked_add(speed.due(gap)), &flag) {
                return;
            }
        }
    });
    DatapathThread { stop, thread }
}

/// Sleeps until `due` (for ever when it is past what an `Instant` holds) in steps of at
/// most 100 ms, so that a stop is seen soon; false when stopped.
fn wait_until(due: Option<Instant>, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = due.map(|due| due.saturating_duration_since(Instant::now()));
        match left {
            Some(left) if left.is_zero() => return true,
            _ => thread::sleep(
                left.unwrap_or(Duration::MAX)
                    .min(Duration::from_millis(100)),
            ),
        }
    }
}

/// Starts the servers on a thread of the chosen runtime; returns once they listen, with
/// the count of the HTTP server's open connections.
fn serve(
    kind: RuntimeKind,
    capture: Capture,
    socket: PathBuf,
    pcap_over_ip: Option<(SocketAddr, Options)>,
) -> Result<Arc<AtomicUsize>, String> {
    let (ready, listening) = mpsc::channel::<Result<Arc<AtomicUsize>, String>>();
    thread::spawn(move || match kind {
        RuntimeKind::Smol => smol::block_on(serve_on::<pcapcast_smol::Smol>(
            capture,
            socket,
            pcap_over_ip,
            ready,
        )),
        RuntimeKind::Tokio => match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(serve_on::<pcapcast_tokio::Tokio>(
                capture,
                socket,
                pcap_over_ip,
                ready,
            )),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot start tokio: {e}")));
            }
        },
    });
    listening
        .recv()
        .map_err(|_| "the server thread failed to start".to_owned())?
}

/// Binds and serves the endpoints on runtime `R`, the same code for both runtimes; says
/// on `ready` once both listen, or why not.
async fn serve_on<R: Runtime>(
    capture: Capture,
    socket: PathBuf,
    pcap_over_ip: Option<(SocketAddr, Options)>,
    ready: mpsc::Sender<Result<Arc<AtomicUsize>, String>>,
) {
    // PCAP-over-IP first: once the Unix socket exists, both endpoints listen.
    let poip = match pcap_over_ip {
        Some((addr, options)) => match Listener::<R>::bind_tcp(addr).await {
            Ok(listener) => Some((listener, options)),
            Err(e) => {
                let _ = ready.send(Err(format!("cannot listen on tcp:{addr}: {e}")));
                return;
            }
        },
        None => None,
    };
    let http = match Listener::<R>::bind_unix(&socket) {
        Ok(listener) => listener,
        Err(e) => {
            // The error names the socket already.
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let server = HttpServer::<R>::new(capture.clone());
    let _ = ready.send(Ok(server.open_connections()));
    let http = server.serve(http);
    let served = match poip {
        Some((listener, options)) => {
            let poip = serve_pcap_over_ip_with(capture, listener, options);
            futures_lite::future::or(http, poip).await
        }
        None => http.await,
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "the capture endpoint stopped");
    }
}

const DEFAULT_COUNT: u64 = 200;

/// Captures the demo's own traffic into `path`, in-process, then prints a summary.
fn record(
    mut output: Subscription,
    path: &FsPath,
    args: &DemoArgs,
    stop: &AtomicBool,
) -> Result<ExitCode, String> {
    let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let count = args.limits.count.or(if args.limits.duration.is_none() {
        Some(DEFAULT_COUNT)
    } else {
        None
    });
    let mut recorder = Recorder::new(file, count);
    let mut line = LiveLine::new(false, args.quiet);
    let started = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed)
            || args.limits.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        match next_within(&mut output, Duration::from_millis(100)) {
            Poll::Ready(Some(bytes)) => match recorder.feed(bytes) {
                Ok(Flow::More) => {}
                Ok(Flow::Done) => break,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            },
            Poll::Ready(None) => break,
            Poll::Pending => recorder
                .tick()
                .map_err(|e| format!("{}: {e}", path.display()))?,
        }
        line.update(recorder.counts());
    }
    let finished = recorder.finish();
    let counts = finished.counts;
    finished
        .result
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let file = path.display();
    eprintln!(
        "pcapcast demo: wrote {} packets ({} bytes) to {file} in {seconds:.1} s, {} dropped.",
        counts.packets,
        counts.bytes,
        output.dropped()
    );
    eprintln!("Look at it with the dissector, which names each packet's path:");
    eprintln!("  pcapcast dissector > pcapcast.lua");
    eprintln!("  tshark -r {file} -X lua_script:pcapcast.lua");
    eprintln!("or install it (`pcapcast dissector --install`) and open {file} in Wireshark.");
    Ok(ExitCode::SUCCESS)
}

struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// The next bytes of `output`, waiting at most `timeout`.
fn next_within(output: &mut Subscription, timeout: Duration) -> Poll<Option<Bytes>> {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let deadline = Instant::now() + timeout;
    loop {
        if let Poll::Ready(next) = Pin::new(&mut *output).poll_next(&mut cx) {
            return Poll::Ready(next);
        }
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => thread::park_timeout(left),
            _ => return Poll::Pending,
        }
    }
}
