//! Attaching to a daemon's capture endpoint over HTTP/1.1, on smol or on tokio.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_lite::future::or;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{AUTHORIZATION, HOST};
use hyper::Request;

use crate::target::{Endpoint, Target};
use crate::RuntimeKind;

/// How often the handler hears a tick from the client, data or not (for limits,
/// signals and the live line).
pub const TICK: Duration = Duration::from_millis(100);

/// What the client hands the caller.
#[derive(Debug)]
pub enum Event {
    /// Bytes of the capture stream.
    Data(Bytes),
    /// Time passed.
    Tick,
    /// The daemon accepted the capture; for one that asked for history, how many
    /// records from before the attach it starts with, as the daemon counted them.
    Attached {
        /// The daemon's `pcapcast-history-records`.
        history: Option<u64>,
    },
}

/// Whether the caller wants more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Go on.
    Continue,
    /// Stop now.
    Stop,
}

/// How a capture session ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The caller stopped it.
    Stopped,
    /// The daemon ended the stream (its capture closed).
    Closed,
    /// The connection broke.
    Broken(String),
}

/// What to ask for.
#[derive(Clone, Debug)]
pub struct Ask {
    /// The endpoint.
    pub target: Target,
    /// The query string of `POST /capture`.
    pub query: String,
    /// A bearer token for TCP endpoints.
    pub token: Option<String>,
}

/// Attaches and feeds `handler` until it stops, the daemon ends the stream or the
/// connection breaks. Once `stop` is set (a signal) it ends within a tick, also while
/// it still connects or waits for the daemon's answer (a host name being resolved
/// finishes first).
///
/// # Errors
///
/// A one-line message for the person at the terminal: no daemon, no permission, or the
/// daemon's refusal with its reason.
pub fn run(
    kind: RuntimeKind,
    ask: &Ask,
    stop: &AtomicBool,
    handler: impl FnMut(Event) -> Next,
) -> Result<End, String> {
    match kind {
        RuntimeKind::Smol => smol::block_on(or(
            run_smol(ask, handler),
            until_stopped(stop, |d| async move {
                smol::Timer::after(d).await;
            }),
        )),
        RuntimeKind::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start tokio: {e}"))?
            .block_on(or(
                run_tokio(ask, handler),
                until_stopped(stop, tokio::time::sleep),
            )),
    }
}

async fn until_stopped<S, F>(stop: &AtomicBool, sleep: S) -> Result<End, String>
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    while !stop.load(Ordering::Relaxed) {
        sleep(TICK).await;
    }
    Ok(End::Stopped)
}

async fn run_smol(ask: &Ask, handler: impl FnMut(Event) -> Next) -> Result<End, String> {
    use smol_hyper::rt::FuturesIo;
    let sleep = |d| async move {
        smol::Timer::after(d).await;
    };
    match &ask.target.endpoint {
        Endpoint::Unix(path) => {
            // async-io's own streams: the smol adapter's notes (net.rs) say why.
            let stream = async_io::Async::<std::os::unix::net::UnixStream>::connect(path)
                .await
                .map_err(|e| connect_error(&ask.target, &e))?;
            session(FuturesIo::new(stream), sleep, ask, handler).await
        }
        Endpoint::Tcp(addr) => {
            let stream = connect_tcp(addr)
                .await
                .map_err(|e| connect_error(&ask.target, &e))?;
            session(FuturesIo::new(stream), sleep, ask, handler).await
        }
    }
}

/// Connects to the first address `addr` ("host:port") resolves to that answers.
async fn connect_tcp(addr: &str) -> std::io::Result<async_io::Async<std::net::TcpStream>> {
    use std::net::ToSocketAddrs;
    let mut last = std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    // A capture endpoint is local or named in /etc/hosts: resolving blocks briefly.
    for candidate in addr.to_socket_addrs()? {
        match async_io::Async::<std::net::TcpStream>::connect(candidate).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn run_tokio(ask: &Ask, handler: impl FnMut(Event) -> Next) -> Result<End, String> {
    use hyper_util::rt::TokioIo;
    match &ask.target.endpoint {
        Endpoint::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| connect_error(&ask.target, &e))?;
            session(TokioIo::new(stream), tokio::time::sleep, ask, handler).await
        }
        Endpoint::Tcp(addr) => {
            let stream = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(|e| connect_error(&ask.target, &e))?;
            session(TokioIo::new(stream), tokio::time::sleep, ask, handler).await
        }
    }
}

fn connect_error(target: &Target, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    if let Some(what) = Target::not_a_socket(target) {
        return format!(
            "{target} is {what}, not a socket: name the daemon's socket with --connect unix:PATH"
        );
    }
    match e.kind() {
        NotFound | ConnectionRefused => format!(
            "no daemon listens on {target}: start one (`pcapcast demo` runs a demo daemon) or name its endpoint with --connect"
        ),
        PermissionDenied => format!(
            "permission denied on {target}: the socket is private to the user that runs the daemon; run pcapcast as that user"
        ),
        _ => format!("cannot connect to {target}: {e}"),
    }
}

async fn session<IO, S, F>(
    io: IO,
    sleep: S,
    ask: &Ask,
    mut handler: impl FnMut(Event) -> Next,
) -> Result<End, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| format!("{}: HTTP handshake failed: {e}", ask.target))?;
    let host = match &ask.target.endpoint {
        Endpoint::Unix(_) => "localhost".to_owned(),
        Endpoint::Tcp(addr) => addr.clone(),
    };
    let uri = format!("{}?{}", ask.target.path, ask.query);
    let mut request = Request::post(uri).header(HOST, host);
    if let Some(token) = &ask.token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let drive = async move {
        // The connection carries the body; once it ends, the body reports how.
        let _ = connection.await;
        std::future::pending::<Result<End, String>>().await
    };
    let work = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{} did not answer: {e}", ask.target))?;
        let status = response.status();
        let history = response
            .headers()
            .get(pcapcast_core::endpoint::HISTORY_HEADER)
            .and_then(|value| value.to_str().ok()?.parse().ok());
        let mut body = response.into_body();
        if !status.is_success() {
            // The reason is for one line: past 64 KiB the rest is not read.
            let mut text = Vec::new();
            while text.len() < 64 << 10 {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            text.extend_from_slice(&data);
                        }
                    }
                    Some(Err(_)) | None => break,
                }
            }
            let reason = one_line(&text);
            let hint = match reason.html {
                true => " (an HTML page: is this a pcapcast capture endpoint?)",
                false => "",
            };
            if status == hyper::StatusCode::NOT_FOUND {
                return Err(format!(
                    "{} has no capture at {} (404): give the path it is mounted at in --connect, e.g. tcp:HOST:PORT/debug/capture{}",
                    ask.target,
                    ask.target.path,
                    if reason.text.is_empty() { String::new() } else { format!(" ({})", reason.text) }
                ));
            }
            return Err(format!(
                "{} refused the capture ({status}): {}{hint}",
                ask.target, reason.text
            ));
        }
        if handler(Event::Attached { history }) == Next::Stop {
            return Ok(End::Stopped);
        }
        // One timer per tick, not one per frame: arming a timer takes the reactor's
        // timer lock and wakes the reactor, work that need not be done per frame.
        let mut tick = Box::pin(sleep(TICK));
        loop {
            let next = or(async { Some(body.frame().await) }, async {
                tick.as_mut().await;
                None
            })
            .await;
            if next.is_none() {
                tick.set(sleep(TICK));
            }
            let event = match next {
                Some(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Event::Data(data),
                    Err(_) => continue, // trailers
                },
                Some(Some(Err(e))) => return Ok(End::Broken(e.to_string())),
                Some(None) => return Ok(End::Closed),
                None => Event::Tick,
            };
            if handler(event) == Next::Stop {
                return Ok(End::Stopped);
            }
        }
    };
    // Each frame hyper hands the body wakes this task: polled again here at once.
    crate::repoll::repolled(or(work, drive)).await
}

/// The longest reason shown, in characters.
const REASON_CHARS: usize = 200;

/// A refusal's body, made one line for the terminal.
#[derive(Debug, PartialEq, Eq)]
struct Reason {
    text: String,
    /// The body was an HTML page, as another kind of server's error pages are.
    html: bool,
}

/// The body of a refusal as one line of at most [`REASON_CHARS`] characters: an HTML
/// page loses its head and markup, every run of white space or control characters
/// becomes one space.
fn one_line(body: &[u8]) -> Reason {
    let text = String::from_utf8_lossy(body);
    let html = text.trim_start().starts_with('<');
    let mut visible = text.into_owned();
    if html {
        let lower = visible.to_ascii_lowercase();
        if let (Some(start), Some(end)) = (lower.find("<head"), lower.find("</head>")) {
            if start < end {
                visible.replace_range(start..end + "</head>".len(), " ");
            }
        }
    }
    let mut line = String::new();
    let mut in_tag = false;
    for c in visible.chars() {
        let space = match c {
            '<' if html => {
                in_tag = true;
                true
            }
            '>' if html && in_tag => {
                in_tag = false;
                continue;
            }
            _ if in_tag => continue,
            c => c.is_whitespace() || c.is_control(),
        };
        if !space {
            line.push(c);
        } else if !line.is_empty() && !line.ends_with(' ') {
            line.push(' ');
        }
    }
    let mut line = line.trim_end().to_owned();
    if let Some((cut, _)) = line.char_indices().nth(REASON_CHARS) {
        line.truncate(cut);
        line.push_str("...");
    }
    Reason { text: line, html }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_html_error_page_becomes_one_short_line() {
        let page = b"<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 501</p>\n    </body>\n</html>\n";
        assert_eq!(
            one_line(page),
            Reason {
                text: "Error response Error code: 501".into(),
                html: true
            }
        );
        let long = "bad snaplen\r\n\t".repeat(100);
        let reason = one_line(long.as_bytes());
        assert!(!reason.html);
        assert!(reason.text.starts_with("bad snaplen bad snaplen"));
        assert_eq!(reason.text.chars().count(), REASON_CHARS + 3);
        assert_eq!(one_line("100 µs \u{1b}[31m".as_bytes()).text, "100 µs [31m");
    }
}
