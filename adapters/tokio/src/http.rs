//! The HTTP capture endpoint on tokio, with hyper.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE,
    HOST, TRANSFER_ENCODING,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use pcapcast_core::endpoint::{self, Peer, Policy, Verdict};
use pcapcast_core::{Capture, Error, Subscription};

use crate::{Listener, Timed};

/// Serves a capture over HTTP/1.1: `POST /capture?format=...&snaplen=...&paths=...`
/// streams it as the response body. The answers come from
/// [`pcapcast_core::endpoint::Policy`]; every attach and detach is logged with the
/// peer (its uid on a Unix socket, its address on TCP) and the options.
#[derive(Debug, Clone)]
pub struct HttpServer {
    capture: Capture,
    token: Option<String>,
    hosts: Vec<String>,
    header_timeout: Duration,
}

/// The response body of a capture: the output's bytes, handed out on the core's flush
/// schedule.
#[derive(Debug)]
pub struct CaptureBody {
    timed: Timed,
    peer: Peer,
}

type ResponseBody = Either<CaptureBody, Full<Bytes>>;

struct Shared {
    capture: Capture,
    policy: Policy,
}

impl HttpServer {
    /// A server for `capture`, with no token and a 10 s limit for request headers.
    pub fn new(capture: Capture) -> HttpServer {
        HttpServer {
            capture,
            token: None,
            hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
        }
    }

    /// Requires `Authorization: Bearer TOKEN` on TCP; needed to listen off loopback.
    pub fn token(mut self, token: impl Into<String>) -> HttpServer {
        self.token = Some(token.into());
        self
    }

    /// Accepts this name in the Host header of TCP requests, besides loopback names.
    pub fn allow_host(mut self, host: impl Into<String>) -> HttpServer {
        self.hosts.push(host.into());
        self
    }

    /// How long a client may take to send its request headers.
    pub fn header_timeout(mut self, timeout: Duration) -> HttpServer {
        self.header_timeout = timeout;
        self
    }

    /// Serves connections from `listener` until accepting fails.
    ///
    /// Each connection runs in a task of its own (`tokio::spawn`, on the current runtime): dropping this future
    /// stops accepting, and the connections already served go on until their clients
    /// leave or [`Capture::close`](pcapcast_core::Capture::close) ends their streams.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a TCP listener off loopback without a token, or an error of
    /// accept that retrying cannot cure (a client gone early is skipped; descriptors
    /// running out pause it).
    pub async fn serve(self, listener: Listener) -> io::Result<()> {
        let policy = match listener.tcp_addr() {
            Some(addr) => Policy::tcp(addr, self.token, self.hosts)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?,
            None => Policy::unix(),
        };
        let shared = Arc::new(Shared {
            capture: self.capture,
            policy,
        });
        tracing::info!(listen = %listener.describe(), "capture endpoint ready");
        loop {
            let (connection, peer) = listener.accept_next().await?;
            let shared = Arc::clone(&shared);
            let timeout = self.header_timeout;
            tokio::spawn(async move {
                let service = service_fn(|request| {
                    let response = respond(&shared, &peer, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(timeout)
                    .serve_connection(TokioIo::new(connection), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
            });
        }
    }
}

fn single(headers: &HeaderMap, name: hyper::header::HeaderName) -> Option<&str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().ok(),
        _ => None,
    }
}

fn respond(shared: &Shared, peer: &Peer, request: &Request<Incoming>) -> Response<ResponseBody> {
    let headers = request.headers();
    let has_body = headers.contains_key(TRANSFER_ENCODING)
        || single(headers, CONTENT_LENGTH).is_some_and(|len| len.trim() != "0");
    let asked = endpoint::Request {
        method: request.method().as_str(),
        path: request.uri().path(),
        query: request.uri().query(),
        host: single(headers, HOST),
        authorization: single(headers, AUTHORIZATION),
        has_body,
    };
    let options = match shared.policy.decide(&asked) {
        Verdict::Capture(options) => options,
        Verdict::Refuse { status, reason } => {
            tracing::warn!(%peer, status, %reason, "capture refused");
            return refusal(status, &reason);
        }
    };
    match shared.capture.try_subscribe(options.clone()) {
        Ok(subscription) => {
            tracing::info!(%peer, options = %endpoint::to_query(&options), "capture attached");
            let mut response =
                Response::new(Either::Left(CaptureBody::new(subscription, peer.clone())));
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static(options.get_format().media_type()),
            );
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e @ (Error::TooManyOutputs { .. } | Error::Closed)) => {
            tracing::warn!(%peer, error = %e, "capture refused");
            refusal(503, &e.to_string())
        }
        Err(e) => refusal(500, &e.to_string()),
    }
}

fn refusal(status: u16, reason: &str) -> Response<ResponseBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!("{reason}\n")))));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == 405 {
        headers.insert(ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

impl CaptureBody {
    /// A body streaming `subscription`; `peer` is named in the detach log.
    pub fn new(subscription: Subscription, peer: Peer) -> CaptureBody {
        CaptureBody {
            timed: Timed::new(subscription),
            peer,
        }
    }
}

impl Body for CaptureBody {
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

impl Drop for CaptureBody {
    fn drop(&mut self) {
        let stats = self.timed.subscription().stats();
        tracing::info!(
            peer = %self.peer,
            records = stats.records,
            bytes = stats.bytes,
            dropped = stats.dropped,
            "capture detached"
        );
    }
}
