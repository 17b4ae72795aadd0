//! The HTTP capture endpoint: its own server, or a service mounted in the daemon's.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::io;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{Either, Full};
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_TYPE, HOST, TRANSFER_ENCODING,
};
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use pcapcast_core::endpoint::{self, Peer, Policy, Verdict};
use pcapcast_core::refusals::RefusalLog;
use pcapcast_core::{Capture, Error, Subscription};

use crate::delivery::{Delivering, DeliveryCell};
use crate::stall::{OnStall, Stalling, WatchCell, STALL_LIMIT};
use crate::{Listener, Runtime, Timed};

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
                Stalling::<R, _>::new(stream, watch, self.stall_limit, OnStall::DetachIfLagging);
            let stream = Delivering::new(stream, Arc::clone(&delivery));
            let timeout = self.header_timeout;
            runtime.spawn(async move {
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

/// The capture endpoint as a service, to mount in a daemon's own HTTP server: a
/// [`tower_service::Service`] (axum's `Router::route_service`) and a
/// [`hyper::service::Service`]. It answers as [`HttpServer`] does (the same options,
/// statuses and attach/detach logs) on whatever path the host routes to it; the host's
/// own middleware (TLS, authentication) decides who reaches it. The peer named in the
/// logs is a [`Peer`] or a [`SocketAddr`] the host put in the request's extensions
/// (axum users: see `ConnectInfo`), else unknown. Mounted, an output evicted at the
/// output limit ends its body when the host's server next polls it; the stall limit and
/// the small write buffer of [`HttpServer`] are the host server's to set.
///
/// # Examples
///
/// ```
/// use pcapcast_core::Capture;
/// use pcapcast_serve::{CaptureService, Runtime};
///
/// // Each glue crate names it for its runtime: `pcapcast_tokio::CaptureService`. In
/// // axum: `Router::new().route_service("/debug/capture", service)`; the tokio crate's
/// // `axum` example does so, and its test asks it with curl.
/// fn mount<R: Runtime>(capture: Capture) -> CaptureService<R> {
///     CaptureService::new(capture)
/// }
/// ```
#[derive(Debug)]
pub struct CaptureService<R: Runtime> {
    shared: Arc<Shared>,
    peer: Option<Peer>,
    /// Where the connection's I/O learns of the output it streams (own listener only).
    watch: Option<WatchCell>,
    /// Where the connection's writes learn the capture's format, to count what they
    /// deliver (own listener only).
    delivery: Option<DeliveryCell>,
    runtime: PhantomData<R>,
}

impl<R: Runtime> Clone for CaptureService<R> {
    fn clone(&self) -> Self {
        CaptureService {
            shared: Arc::clone(&self.shared),
            peer: self.peer.clone(),
            watch: self.watch.clone(),
            delivery: self.delivery.clone(),
            runtime: PhantomData,
        }
    }
}

#[derive(Debug)]
struct Shared {
    capture: Capture,
    policy: Policy,
    refusals: Mutex<RefusalLog>,
}

/// The body of a capture response: the stream, or a refusal's one line.
pub type ResponseBody<R> = Either<CaptureBody<R>, Full<Bytes>>;

impl<R: Runtime> CaptureService<R> {
    /// The endpoint for `capture`, mounted: any path, no Host or token check of its own
    /// ([`Policy::mounted`]).
    pub fn new(capture: Capture) -> CaptureService<R> {
        CaptureService::with_policy(capture, Policy::mounted())
    }

    /// The endpoint for `capture` under `policy`.
    pub fn with_policy(capture: Capture, policy: Policy) -> CaptureService<R> {
        CaptureService {
            shared: Arc::new(Shared {
                capture,
                policy,
                refusals: Mutex::new(RefusalLog::default()),
            }),
            peer: None,
            watch: None,
            delivery: None,
            runtime: PhantomData,
        }
    }

    fn for_peer(&self, peer: Peer, watch: WatchCell, delivery: DeliveryCell) -> CaptureService<R> {
        CaptureService {
            peer: Some(peer),
            watch: Some(watch),
            delivery: Some(delivery),
            ..self.clone()
        }
    }

    /// Answers one request.
    pub fn respond<B>(&self, request: &Request<B>) -> Response<ResponseBody<R>> {
        let extensions = request.extensions();
        let peer = self
            .peer
            .clone()
            .or_else(|| extensions.get::<Peer>().cloned())
            .or_else(|| extensions.get::<SocketAddr>().map(|a| Peer::Tcp(*a)))
            .unwrap_or(Peer::Unknown);
        let headers = request.headers();
        let has_body = headers.contains_key(TRANSFER_ENCODING)
            || single(headers, CONTENT_LENGTH).is_some_and(|len| len.trim() != "0");
        let asked = endpoint::Request {
            method: request.method().as_str(),
            path: request.uri().path(),
            query: request.uri().query(),
            authority: request.uri().authority().map(|a| a.as_str()),
            host: single(headers, HOST),
            authorization: single(headers, AUTHORIZATION),
            has_body,
        };
        let options = match self.shared.policy.decide(&asked) {
            Verdict::Capture(options) => options,
            Verdict::Refuse { status, reason } => {
                self.log_refusal(&peer, status, &reason);
                let mut response = refusal(status, &reason);
                if matches!(status, 401 | 403) {
                    // Whoever guesses tokens or hosts gets one guess per connection:
                    // pipelined requests behind it are never read.
                    let close = HeaderValue::from_static("close");
                    response.headers_mut().insert(CONNECTION, close);
                }
                return response;
            }
        };
        match self.shared.capture.try_subscribe(options.clone()) {
            Ok(subscription) => {
                tracing::info!(%peer, options = %endpoint::to_query(&options), "capture attached");
                let history = subscription.history_len();
                if let Some(watch) = &self.watch {
                    *crate::lock(watch) = Some(subscription.watch());
                }
                if let Some(delivery) = &self.delivery {
                    crate::lock(delivery).attached(options.get_format());
                }
                let body = CaptureBody::new(subscription, peer);
                let mut response = Response::new(Either::Left(body));
                let headers = response.headers_mut();
                if !options.get_history().is_none() {
                    headers.insert(endpoint::HISTORY_HEADER, HeaderValue::from(history));
                }
                let media_type = options.get_format().media_type();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                response
            }
            Err(e @ (Error::TooManyOutputs { .. } | Error::Closed)) => {
                self.log_refusal(&peer, 503, &e.to_string());
                refusal(503, &e.to_string())
            }
            Err(e) => refusal(500, &e.to_string()),
        }
    }

    /// One WARN line for the first refusal, then at most one per
    /// [`REFUSAL_LOG_INTERVAL`](pcapcast_core::refusals::REFUSAL_LOG_INTERVAL), with the
    /// count since the previous line: a flood of guesses must not flood the log.
    fn log_refusal(&self, peer: &Peer, status: u16, reason: &str) {
        let mut refusals = self
            .shared
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(refused) = refusals.refused(Instant::now()) {
            tracing::warn!(%peer, status, %reason, refused, "capture refused");
        }
    }
}

impl<R: Runtime, B> hyper::service::Service<Request<B>> for CaptureService<R> {
    type Response = Response<ResponseBody<R>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        ready(Ok(self.respond(&request)))
    }
}

impl<R: Runtime, B> tower_service::Service<Request<B>> for CaptureService<R> {
    type Response = Response<ResponseBody<R>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.respond(&request)))
    }
}

fn single(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

fn refusal<R: Runtime>(status: u16, reason: &str) -> Response<ResponseBody<R>> {
    let body = Full::new(Bytes::from(format!("{reason}\n")));
    let mut response = Response::new(Either::Right(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    let text = HeaderValue::from_static("text/plain; charset=utf-8");
    headers.insert(CONTENT_TYPE, text);
    if status == 405 {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// The response body of a capture: the output's bytes, handed out on the core's flush
/// schedule.
#[derive(Debug)]
pub struct CaptureBody<R: Runtime> {
    timed: Timed<R>,
    peer: Peer,
}

impl<R: Runtime> CaptureBody<R> {
    /// A body streaming `subscription`; `peer` is named in the detach log.
    pub fn new(subscription: Subscription, peer: Peer) -> CaptureBody<R> {
        CaptureBody {
            timed: Timed::new(subscription),
            peer,
        }
    }
}

impl<R: Runtime> Body for CaptureBody<R> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .timed
            .poll_due(cx)
            .map(|bytes| bytes.map(|b| Ok(Frame::data(b))))
    }
}

impl<R: Runtime> Drop for CaptureBody<R> {
    fn drop(&mut self) {
        let stats = self.timed.subscription().stats();
        // Handed to hyper, which may not have written it all to the socket yet: named
        // so, since the body cannot see what the connection took.
        tracing::info!(
            peer = %self.peer,
            queued_records = stats.records,
            queued_bytes = stats.bytes,
            dropped = stats.dropped,
            "capture detached"
        );
    }
}
