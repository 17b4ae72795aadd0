//! The capture endpoint as a service: the answers to requests, whoever serves the
//! connection (pcapcast's own [`HttpServer`](crate::HttpServer)(crate::HttpServer) or the daemon's server).

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_TYPE, HOST, TRANSFER_ENCODING,
};
use hyper::{Request, Response, StatusCode};
use pcapcast_core::endpoint::{self, Peer, Policy, Verdict};
use pcapcast_core::refusals::RefusalLog;
use pcapcast_core::{Capture, Error};

use crate::body::CaptureBody;
use crate::delivery::DeliveryCell;
use crate::stall::WatchCell;
use crate::{Runtime, LOG_TARGET};

/// The capture endpoint as a service, to mount in a daemon's own HTTP server: a
/// [`tower_service::Service`] (axum's `Router::route_service`) and a
/// [`hyper::service::Service`]. It answers as [`HttpServer`](crate::HttpServer) does (the same options,
/// statuses and attach/detach logs) on whatever path the host routes to it; the host's
/// own middleware (TLS, authentication) decides who reaches it. The peer named in the
/// logs is a [`Peer`] or a [`SocketAddr`] the host put in the request's extensions
/// (axum users: see `ConnectInfo`), else unknown. Mounted, an output evicted at the
/// output limit ends its body when the host's server next polls it; the stall limit and
/// the small write buffer of [`HttpServer`](crate::HttpServer) are the host server's to set.
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
    /// Mounted: the checks asked for with `token` and `allow_host`.
    token: Option<String>,
    hosts: Vec<String>,
    /// Mounted: how the host's server says who sent a request.
    peer_from: Option<PeerFrom>,
}

/// Reads who sent a request from its extensions, where the host's server put it.
pub type PeerFrom = fn(&hyper::http::Extensions) -> Option<Peer>;

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
        let settings = Settings {
            token: None,
            hosts: Vec::new(),
            peer_from: None,
        };
        CaptureService::from_settings(capture, policy, settings)
    }

    fn from_settings(capture: Capture, policy: Policy, settings: Settings) -> CaptureService<R> {
        CaptureService {
            shared: Arc::new(Shared {
                capture,
                policy,
                refusals: Mutex::new(RefusalLog::default()),
                token: settings.token,
                hosts: settings.hosts,
                peer_from: settings.peer_from,
            }),
            peer: None,
            watch: None,
            delivery: None,
            runtime: PhantomData,
        }
    }

    /// Mounted: requires `Authorization: Bearer TOKEN`, as [`HttpServer::token`]
    /// does (the same exact parsing, a refused guess closes the connection), for a daemon
    /// whose server others can reach. See [`Policy::mounted_with`].
    ///
    /// [`HttpServer::token`]: crate::HttpServer::token
    pub fn token(self, token: impl Into<String>) -> CaptureService<R> {
        self.remade(|shared| shared.token = Some(token.into()))
    }

    /// Mounted: requests must name this host (or a loopback one) in their Host header
    /// and in an absolute-form target, as [`HttpServer::allow_host`] asks (against DNS
    /// rebinding). See [`Policy::mounted_with`].
    ///
    /// [`HttpServer::allow_host`]: crate::HttpServer::allow_host
    pub fn allow_host(self, host: impl Into<String>) -> CaptureService<R> {
        self.remade(|shared| shared.hosts.push(host.into()))
    }

    /// Mounted: how to read who sent a request, for the attach and detach logs, where
    /// the host's server puts something else than a [`Peer`] or a [`SocketAddr`]. With
    /// axum's `into_make_service_with_connect_info::<SocketAddr>()`:
    ///
    /// ```text
    /// CaptureService::new(capture)
    ///     .peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|info| Peer::Tcp(info.0)))
    /// ```
    pub fn peer_from(self, read: PeerFrom) -> CaptureService<R> {
        self.remade(|shared| shared.peer_from = Some(read))
    }

    /// The service with its settings changed and the policy made from them again.
    fn remade(self, change: impl FnOnce(&mut Settings)) -> CaptureService<R> {
        let mut settings = Settings {
            token: self.shared.token.clone(),
            hosts: self.shared.hosts.clone(),
            peer_from: self.shared.peer_from,
        };
        change(&mut settings);
        let policy = Policy::mounted_with(settings.token.clone(), settings.hosts.clone());
        CaptureService::from_settings(self.shared.capture.clone(), policy, settings)
    }

    pub(crate) fn for_peer(
        &self,
        peer: Peer,
        watch: WatchCell,
        delivery: DeliveryCell,
    ) -> CaptureService<R> {
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
            .or_else(|| self.shared.peer_from.and_then(|read| read(extensions)))
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
                // Loud, once per attach: the datapath's decrypted traffic now leaves it.
                tracing::warn!(
                    target: LOG_TARGET,
                    %peer,
                    options = %endpoint::to_query(&options),
                    "capture attached: decrypted traffic is being copied to this reader"
                );
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
            Err(e @ Error::Disabled) => {
                self.log_refusal(&peer, 403, &e.to_string());
                refusal(403, &e.to_string())
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
            tracing::warn!(target: LOG_TARGET, %peer, status, %reason, refused, "capture refused");
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

/// What a mounted service is asked to check, and how it names peers.
struct Settings {
    token: Option<String>,
    hosts: Vec<String>,
    peer_from: Option<PeerFrom>,
}
