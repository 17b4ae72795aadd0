//! Test support for pcapcast's end-to-end tests: one conformance harness over both
//! runtimes, a small blocking HTTP client, writers that fail or stall on demand, and
//! capture readers (pcap-parser and pcap-file).

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use pcapcast_core::{Capture, Options, OutputStats, Subscription, WriteError};

#[path = "../../core/tests/support/mod.rs"]
pub mod read;

/// Where a test server listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// TCP.
    Tcp(SocketAddr),
}

/// How a test HTTP server is configured.
#[derive(Clone, Debug, Default)]
pub struct HttpConfig {
    /// Bearer token to require.
    pub token: Option<String>,
    /// Header read timeout (the server's default when `None`).
    pub header_timeout: Option<Duration>,
    /// How long a write may stall while its output lags (the server's default when
    /// `None`).
    pub stall_limit: Option<Duration>,
    /// Users allowed on a Unix socket besides the test's own and root.
    pub allowed_uids: Vec<u32>,
}

/// A server running on its own runtime thread; dropping it stops it.
#[derive(Debug)]
pub struct Server {
    /// Where it listens (the real port for TCP).
    pub endpoint: Endpoint,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts `serve` on a thread; `serve` returns the bound endpoint and a future that
    /// serves until the stop signal future completes.
    pub fn start<S>(serve: S) -> Server
    where
        S: FnOnce(std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<Endpoint>)
            + Send
            + 'static,
    {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || serve(stop_rx, ready_tx));
        let endpoint = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("server started");
        Server {
            endpoint,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the server's thread panicked");
            }
        }
    }
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts, from now on, the panics on threads other than the test harness's (whose
/// names are test paths, `module::test`): runtime workers and server threads, where
/// an executor would catch a task's panic and nobody would see it.
pub fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = std::thread::current().name().map(str::to_owned);
            if !name.is_some_and(|n| n.contains("::")) {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Runs a test, then checks that no runtime or server thread panicked meanwhile.
pub fn checked(test: impl FnOnce()) {
    watch_panics();
    test();
    assert_eq!(
        panics_outside_tests(),
        0,
        "a thread of a runtime or server panicked"
    );
}

/// Panics counted by [`watch_panics`] so far.
pub fn panics_outside_tests() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// A future that completes once the stop channel's sender is dropped, polled by
/// checking it on a short timer of the runtime at hand.
pub async fn stopped<F, Fut>(stop: std::sync::mpsc::Receiver<()>, sleep: F)
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Err(std::sync::mpsc::TryRecvError::Empty) = stop.try_recv() {
        sleep(Duration::from_millis(20)).await;
    }
}

/// What the conformance suite needs of a runtime adapter.
pub trait Runtime {
    /// The runtime's name, for messages.
    const NAME: &'static str;
    /// Runs the adapter's `stream_to(subscription, writer)` on a thread of its own.
    fn stream(
        subscription: Subscription,
        writer: TestWriter,
    ) -> JoinHandle<Result<OutputStats, WriteError>>;
    /// Serves `capture` over HTTP on `endpoint` (port 0 for any).
    fn serve_http(capture: Capture, endpoint: Endpoint, config: HttpConfig) -> Server;
    /// Binds the adapter's Unix listener at `path`, then drops it (its socket removed):
    /// a daemon's start, over and over.
    fn bind_unix_once(path: &std::path::Path);
    /// Serves `capture` over PCAP-over-IP on `endpoint`.
    fn serve_pcap_over_ip(capture: Capture, endpoint: Endpoint) -> Server {
        Self::serve_pcap_over_ip_with(capture, endpoint, Options::default())
    }
    /// PCAP-over-IP whose connections get outputs with `options`.
    fn serve_pcap_over_ip_with(capture: Capture, endpoint: Endpoint, options: Options) -> Server;
    /// Pushes `capture` to the PCAP-over-IP collector listening at `collector`, on a
    /// thread of its own, until the capture closes; `backoff` is the first and the
    /// longest wait between attempts.
    fn push(
        capture: Capture,
        collector: SocketAddr,
        options: Options,
        backoff: (Duration, Duration),
    ) -> Pushing {
        Self::push_with_stall_limit(
            capture,
            collector,
            options,
            backoff,
            pcapcast_smol::STALL_LIMIT,
        )
    }
    /// [`Runtime::push`] whose connection ends after a write stalled for `stall_limit`.
    fn push_with_stall_limit(
        capture: Capture,
        collector: SocketAddr,
        options: Options,
        backoff: (Duration, Duration),
        stall_limit: Duration,
    ) -> Pushing;
}

/// A push running on its own thread.
#[derive(Debug)]
pub struct Pushing {
    /// Its counters (the same type for both runtimes).
    pub stats: pcapcast_smol::PushStats,
    /// The thread, which ends with the push.
    pub thread: JoinHandle<io::Result<()>>,
}

/// A writer for both runtimes' traits that keeps what it is given, and can fail after
/// a number of bytes or stall until released.
#[derive(Clone, Debug, Default)]
pub struct TestWriter {
    /// What was written.
    pub bytes: Arc<Mutex<Vec<u8>>>,
    /// Fail every write once this many bytes were taken.
    fail_after: Option<usize>,
    /// While set, writes are pending.
    pub stalled: Arc<AtomicBool>,
    /// Writes seen, and flushes seen.
    pub writes: Arc<AtomicUsize>,
    /// Flushes seen.
    pub flushes: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl TestWriter {
    /// A writer that fails every write once it has taken `limit` bytes.
    pub fn failing_after(limit: usize) -> TestWriter {
        TestWriter {
            fail_after: Some(limit),
            ..TestWriter::default()
        }
    }

    /// Unstalls the writer.
    pub fn release(&self) {
        self.stalled.store(false, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().unwrap().take() {
            w.wake();
        }
    }

    /// A copy of what was written.
    pub fn contents(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }

    fn poll_write_inner(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.stalled.load(Ordering::SeqCst) {
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            if self.stalled.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
        let mut bytes = self.bytes.lock().unwrap();
        let n = match self.fail_after {
            Some(limit) if bytes.len() >= limit => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "test writer fails",
                )))
            }
            Some(limit) => buf.len().min(limit - bytes.len()),
            None => buf.len(),
        };
        bytes.extend_from_slice(&buf[..n]);
        self.writes.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
}

impl futures_lite::AsyncWrite for TestWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_inner(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl tokio::io::AsyncWrite for TestWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_inner(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The smol adapter.
#[derive(Debug)]
pub struct Smol;

/// The tokio adapter.
#[derive(Debug)]
pub struct Tokio;

impl Runtime for Smol {
    const NAME: &'static str = "smol";

    fn bind_unix_once(path: &std::path::Path) {
        drop(pcapcast_smol::Listener::bind_unix(path).expect("bind unix"));
    }

    fn stream(
        subscription: Subscription,
        writer: TestWriter,
    ) -> JoinHandle<Result<OutputStats, WriteError>> {
        std::thread::spawn(move || smol::block_on(pcapcast_smol::stream_to(subscription, writer)))
    }

    fn serve_http(capture: Capture, endpoint: Endpoint, config: HttpConfig) -> Server {
        Server::start(move |stop, ready| {
            smol::block_on(async move {
                let listener = smol_listener(&endpoint)
                    .await
                    .allow_uids(config.allowed_uids);
                ready.send(bound(&endpoint, listener.tcp_addr())).unwrap();
                let mut server = pcapcast_smol::HttpServer::new(capture);
                if let Some(token) = config.token {
                    server = server.token(token);
                }
                if let Some(timeout) = config.header_timeout {
                    server = server.header_timeout(timeout);
                }
                if let Some(limit) = config.stall_limit {
                    server = server.stall_limit(limit);
                }
                let serve = async { server.serve(listener).await.expect("serve") };
                futures_lite::future::or(
                    serve,
                    stopped(stop, |d| async move {
                        smol::Timer::after(d).await;
                    }),
                )
                .await;
            })
        })
    }

    fn serve_pcap_over_ip_with(capture: Capture, endpoint: Endpoint, options: Options) -> Server {
        Server::start(move |stop, ready| {
            smol::block_on(async move {
                let listener = smol_listener(&endpoint).await;
                ready.send(bound(&endpoint, listener.tcp_addr())).unwrap();
                let serve = async {
                    pcapcast_smol::serve_pcap_over_ip_with(capture, listener, options)
                        .await
                        .expect("serve")
                };
                futures_lite::future::or(
                    serve,
                    stopped(stop, |d| async move {
                        smol::Timer::after(d).await;
                    }),
                )
                .await;
            })
        })
    }

    fn push_with_stall_limit(
        capture: Capture,
        collector: SocketAddr,
        options: Options,
        (first, max): (Duration, Duration),
        stall_limit: Duration,
    ) -> Pushing {
        let push = pcapcast_smol::Push::new(capture, collector)
            .options(options)
            .backoff(first, max)
            .stall_limit(stall_limit);
        Pushing {
            stats: push.stats(),
            thread: std::thread::spawn(move || smol::block_on(push.run())),
        }
    }
}

async fn smol_listener(endpoint: &Endpoint) -> pcapcast_smol::Listener {
    match endpoint {
        Endpoint::Unix(path) => pcapcast_smol::Listener::bind_unix(path).expect("bind unix"),
        Endpoint::Tcp(addr) => pcapcast_smol::Listener::bind_tcp(*addr)
            .await
            .expect("bind tcp"),
    }
}

fn bound(endpoint: &Endpoint, tcp: Option<SocketAddr>) -> Endpoint {
    match tcp {
        Some(addr) => Endpoint::Tcp(addr),
        None => endpoint.clone(),
    }
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn tokio_listener(endpoint: &Endpoint) -> pcapcast_tokio::Listener {
    match endpoint {
        Endpoint::Unix(path) => pcapcast_tokio::Listener::bind_unix(path).expect("bind unix"),
        Endpoint::Tcp(addr) => pcapcast_tokio::Listener::bind_tcp(*addr)
            .await
            .expect("bind tcp"),
    }
}

impl Runtime for Tokio {
    const NAME: &'static str = "tokio";

    fn bind_unix_once(path: &std::path::Path) {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let _entered = RUNTIME.get_or_init(tokio_runtime).enter();
        drop(pcapcast_tokio::Listener::bind_unix(path).expect("bind unix"));
    }

    fn stream(
        subscription: Subscription,
        writer: TestWriter,
    ) -> JoinHandle<Result<OutputStats, WriteError>> {
        std::thread::spawn(move || {
            tokio_runtime().block_on(pcapcast_tokio::stream_to(subscription, writer))
        })
    }

    fn serve_http(capture: Capture, endpoint: Endpoint, config: HttpConfig) -> Server {
        Server::start(move |stop, ready| {
            tokio_runtime().block_on(async move {
                let listener = tokio_listener(&endpoint)
                    .await
                    .allow_uids(config.allowed_uids);
                ready.send(bound(&endpoint, listener.tcp_addr())).unwrap();
                let mut server = pcapcast_tokio::HttpServer::new(capture);
                if let Some(token) = config.token {
                    server = server.token(token);
                }
                if let Some(timeout) = config.header_timeout {
                    server = server.header_timeout(timeout);
                }
                if let Some(limit) = config.stall_limit {
                    server = server.stall_limit(limit);
                }
                tokio::select! {
                    served = server.serve(listener) => served.expect("serve"),
                    () = stopped(stop, tokio::time::sleep) => {}
                }
            })
        })
    }

    fn serve_pcap_over_ip_with(capture: Capture, endpoint: Endpoint, options: Options) -> Server {
        Server::start(move |stop, ready| {
            tokio_runtime().block_on(async move {
                let listener = tokio_listener(&endpoint).await;
                ready.send(bound(&endpoint, listener.tcp_addr())).unwrap();
                tokio::select! {
                    served = pcapcast_tokio::serve_pcap_over_ip_with(capture, listener, options) => served.expect("serve"),
                    () = stopped(stop, tokio::time::sleep) => {}
                }
            })
        })
    }

    fn push_with_stall_limit(
        capture: Capture,
        collector: SocketAddr,
        options: Options,
        (first, max): (Duration, Duration),
        stall_limit: Duration,
    ) -> Pushing {
        let push = pcapcast_tokio::Push::new(capture, collector)
            .options(options)
            .backoff(first, max)
            .stall_limit(stall_limit);
        let stats: pcapcast_tokio::PushStats = push.stats();
        Pushing {
            stats,
            thread: std::thread::spawn(move || tokio_runtime().block_on(push.run())),
        }
    }
}

/// A stream to an endpoint, Unix or TCP.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Connects to `endpoint` with blocking std sockets.
///
/// Reads time out after [`STALL_LIMIT`], so that a server that stops sending fails its
/// test with an error instead of hanging the suite.
pub fn connect(endpoint: &Endpoint) -> io::Result<Box<dyn Stream>> {
    Ok(match endpoint {
        Endpoint::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path)?;
            stream.set_read_timeout(Some(STALL_LIMIT))?;
            Box::new(stream)
        }
        Endpoint::Tcp(addr) => {
            let stream = std::net::TcpStream::connect(addr)?;
            stream.set_read_timeout(Some(STALL_LIMIT))?;
            Box::new(stream)
        }
    })
}

/// How long a test client waits for the next byte before it calls the server stalled.
pub const STALL_LIMIT: Duration = Duration::from_secs(60);

/// An HTTP response, its body decoded from chunks.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` (raw bytes) and reads the whole response until the server closes or
/// the body ends.
pub fn exchange(endpoint: &Endpoint, request: &[u8]) -> io::Result<Response> {
    let mut stream = connect(endpoint)?;
    stream.write_all(request)?;
    read_response(&mut stream)
}

/// Sends `POST target` with `Host: host` and extra header lines.
pub fn post(endpoint: &Endpoint, target: &str, host: &str, extra: &str) -> io::Result<Response> {
    let request =
        format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n");
    exchange(endpoint, request.as_bytes())
}

/// Reads one response from a stream.
pub fn read_response(stream: &mut dyn Stream) -> io::Result<Response> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no response head",
            ));
        }
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(&rest)? } else { rest };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad chunked body");
    let mut body = Vec::new();
    loop {
        let end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&data[..end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        data = &data[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(data.get(..size).ok_or_else(bad)?);
        data = data.get(size + 2..).ok_or_else(bad)?;
    }
}

/// Waits until `condition` holds, up to `limit`.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    condition()
}

/// The next connection on `listener` within `limit`, blocking, its reads timing out
/// after [`STALL_LIMIT`]; a test collector's accept.
///
/// # Panics
///
/// When nobody connects in time: the test fails.
pub fn accept_within(listener: &std::net::TcpListener, limit: Duration) -> std::net::TcpStream {
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let mut accepted = None;
    assert!(
        wait_until(limit, || {
            accepted = listener.accept().ok();
            accepted.is_some()
        }),
        "nobody connected within {limit:?}"
    );
    let (stream, _) = accepted.expect("accepted");
    stream.set_nonblocking(false).expect("a blocking stream");
    stream
        .set_read_timeout(Some(STALL_LIMIT))
        .expect("a read timeout");
    stream
}

/// A fresh directory under the system's temporary folder, for sockets and files.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pcapcast-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
