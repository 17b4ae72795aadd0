//! The HTTP capture endpoint on a listener of its own.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use pcapcast_core::endpoint::Policy;
use pcapcast_core::Capture;

use crate::delivery::DeliveryCell;
use crate::stall::{OnStall, Stalling, WatchCell, STALL_LIMIT};
use crate::{CaptureService, Listener, Runtime};

/// Serves a capture over HTTP/1.1 on a listener of its own: `POST
/// /capture?format=...&snaplen=...&paths=...&bpf=...` streams it as the response body.
/// The answers come from [`pcapcast_core::endpoint::Policy`]; every attach and detach is
/// logged with the peer (its uid on a Unix socket, its address on TCP) and the options.
#[derive(Debug, Clone)]
pub struct HttpServer<R: Runtime> {
    capture: Capture,
    token: Option<String>,
    hosts: Vec<String>,
    header_timeout: Duration,
    stall_limit: Duration,
    open: Arc<AtomicUsize>,
    runtime: PhantomData<R>,
}

/// hyper's buffer for a connection's reads and writes. Small, because a reader that
/// stops reading leaves it full, and what it holds pins the capture's batches: hyper
/// then takes no more of the body until the socket drains (its default is about
/// 400 KiB). Request headers must fit in it as well.
const MAX_BUF: usize = 32 << 10;

impl<R: Runtime> HttpServer<R> {
    /// A server for `capture`, with no token, a 10 s limit for request headers and a
    /// [`STALL_LIMIT`] of 30 s for readers that stop reading.
    pub fn new(capture: Capture) -> HttpServer<R> {
        HttpServer {
            capture,
            token: None,
            hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            stall_limit: STALL_LIMIT,
            open: Arc::default(),
            runtime: PhantomData,
        }
    }

    /// Requires `Authorization: Bearer TOKEN` on TCP; needed to listen off loopback.
    pub fn token(mut self, token: impl Into<String>) -> HttpServer<R> {
        self.token = Some(token.into());
        self
    }

    /// Accepts this name in the Host header of TCP requests, besides loopback names.
    pub fn allow_host(mut self, host: impl Into<String>) -> HttpServer<R> {
        self.hosts.push(host.into());
        self
    }

    /// How long a client may take to send its request headers.
    pub fn header_timeout(mut self, timeout: Duration) -> HttpServer<R> {
        self.header_timeout = timeout;
        self
    }

    /// How long a write to a reader may make no progress while its output lags (it has
    /// lost records) before the output is detached, with a warning, and counted in
    /// [`CaptureStats::stalled_detached`](pcapcast_core::CaptureStats::stalled_detached).
    pub fn stall_limit(mut self, limit: Duration) -> HttpServer<R> {
        self.stall_limit = limit;
        self
    }

    /// Connections being served now, counted from their accept to the end of their last
    /// write: a daemon that stops can wait until its readers have had the end of their
    /// streams (after [`Capture::close`]) before it exits.
    pub fn open_connections(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.open)
    }

    /// Serves connections from `listener` until accepting fails.
    ///
    /// Each connection runs in a task of its own, spawned on the runtime: dropping this
    /// future stops accepting, and the connections already served go on until their
    /// clients leave or [`Capture::close`] ends their streams.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a TCP listener off loopback without a token, or an error of
    /// accept that retrying cannot cure (a client gone early is skipped; descriptors
    /// running out pause it).
    pub async fn serve(self, listener: Listener<R>) -> io::Result<()> {
        let policy = match listener.tcp_addr() {
            Some(addr) => Policy::tcp(addr, self.token, self.hosts)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            None => Policy::unix(),
        };
        let service = CaptureService::<R>::with_policy(self.capture, policy);
        let runtime = listener.runtime().clone();
        tracing::info!(listen = %listener.describe(), "capture endpoint ready");
        loop {
            let (stream, peer) = listener.accept_next().await?;
            let stream = match runtime.stream(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "connection dropped");
                    continue;
                }
            };
            let watch = WatchCell::default();
            let delivery = DeliveryCell::default();
            let service = service.for_peer(peer.clone(), Arc::clone(&watch), Arc::clone(&delivery));
            let stream =
                Stalling::<R, _>::new(stream, watch, self.stall_limit, OnStall::DetachIfLagging)
                    .with_delivery(Arc::clone(&delivery));
            let timeout = self.header_timeout;
            let open = OpenConnection::new(&self.open);
            runtime.spawn(async move {
                let _open = open;
                let served = http1::Builder::new()
                    .timer(R::Timer::default())
                    .header_read_timeout(timeout)
                    .max_buf_size(MAX_BUF)
                    .serve_connection(stream, service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                if let Some(delivered) = crate::lock(&delivery).delivered() {
                    // What the socket took; the reader may not have read all of it.
                    tracing::info!(
                        %peer,
                        records = delivered.records(),
                        bytes = delivered.bytes(),
                        "capture delivered"
                    );
                }
            });
        }
    }
}

/// Counts a connection in [`HttpServer::open_connections`] while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::AcqRel);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
