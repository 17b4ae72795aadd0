//! The capture endpoint's decisions, without I/O: which requests get a capture, with
//! which options, and which get which refusal. The adapters' HTTP servers ask
//! [`Policy::decide`] and only carry out the answer.

use std::fmt;
use std::net::SocketAddr;

use crate::access::TcpAccess;
use crate::{Bpf, Error, Format, History, Options, Path, TsResolution};

/// The path of the capture endpoint.
pub const CAPTURE_PATH: &str = "/capture";

/// The response header that tells, for an output that asked for history, how many
/// records from before its attach it starts with
/// ([`Subscription::history_len`](crate::Subscription::history_len)).
pub const HISTORY_HEADER: &str = "pcapcast-history-records";

/// The parts of an HTTP request the decision needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Request<'a> {
    /// The method, as sent.
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without the `?`.
    pub query: Option<&'a str>,
    /// The authority of an absolute-form target (`POST http://HOST/capture`), which
    /// must name this server as the Host header must.
    pub authority: Option<&'a str>,
    /// The `Host` header, if exactly one was sent.
    pub host: Option<&'a str>,
    /// The `Authorization` header, if exactly one was sent.
    pub authorization: Option<&'a str>,
    /// Whether the request announced a body (a capture request has none).
    pub has_body: bool,
}

/// Who is at the other end of a connection, for the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A Unix-socket peer, with its credentials where the system tells them.
    Unix {
        /// The peer's user id.
        uid: Option<u32>,
        /// The peer's process id.
        pid: Option<i32>,
    },
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A request a host's own server handed over, which did not say who sent it.
    Unknown,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix { uid, pid } => {
                f.write_str("unix")?;
                if let Some(uid) = uid {
                    write!(f, " uid={uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
            Peer::Tcp(addr) => write!(f, "tcp {addr}"),
            Peer::Unknown => f.write_str("unknown (the host's server did not say)"),
        }
    }
}

/// What the server must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Attach an output with these options and stream it as the body.
    Capture(Options),
    /// Refuse with this status and a one-line reason for the body.
    Refuse {
        /// HTTP status code.
        status: u16,
        /// What was wrong, for the person reading it.
        reason: String,
    },
}

impl Verdict {
    fn refuse(status: u16, reason: impl Into<String>) -> Verdict {
        Verdict::Refuse {
            status,
            reason: reason.into(),
        }
    }
}

/// Who may read captures through one listener.
///
/// # Examples
///
/// ```
/// use pcapcast_core::endpoint::{Policy, Request, Verdict};
///
/// let policy = Policy::unix();
/// let ok = policy.decide(&Request { method: "POST", path: "/capture",
///     query: Some("format=pcapng&snaplen=128"), ..Request::default() });
/// assert!(matches!(ok, Verdict::Capture(_)));
/// let bad = policy.decide(&Request { method: "POST", path: "/capture",
///     query: Some("snaplen=0"), ..Request::default() });
/// assert!(matches!(bad, Verdict::Refuse { status: 400, .. }));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Policy {
    tcp: Option<TcpAccess>,
    /// Mounted in a host's router, which chose the path already.
    any_path: bool,
}

impl Policy {
    /// A Unix socket: the file's mode already decided who connects; no Host or token
    /// check.
    pub fn unix() -> Policy {
        Policy::default()
    }

    /// Mounted in a daemon's own HTTP server (axum's `route_service`, a hyper or tower
    /// stack): the host's router picked the path, and its middleware (TLS, auth, Host
    /// checks) decided who gets here. Method, body and options are checked as
    /// everywhere.
    pub fn mounted() -> Policy {
        Policy {
            tcp: None,
            any_path: true,
        }
    }

    /// [`Policy::mounted`] with checks of its own, for a daemon that mounts the endpoint
    /// where other clients reach it (a server on `0.0.0.0`): with a `token`, requests
    /// must carry `Authorization: Bearer TOKEN`; with `hosts`, their Host header and an
    /// absolute-form target must name a loopback host or one of them. Neither given:
    /// [`Policy::mounted`].
    ///
    /// # Examples
    ///
    /// ```
    /// use pcapcast_core::endpoint::{Policy, Request, Verdict};
    ///
    /// let policy = Policy::mounted_with(Some("s3cret".into()), vec!["daemon.lan".into()]);
    /// let asked = |authorization| Request { method: "POST", path: "/debug/capture",
    ///     host: Some("daemon.lan:8080"), authorization, ..Request::default() };
    /// assert!(matches!(policy.decide(&asked(Some("Bearer s3cret"))), Verdict::Capture(_)));
    /// assert!(matches!(policy.decide(&asked(None)), Verdict::Refuse { status: 401, .. }));
    /// ```
    pub fn mounted_with(token: Option<String>, hosts: Vec<String>) -> Policy {
        let checks = token.is_some() || !hosts.is_empty();
        Policy {
            tcp: checks.then_some(TcpAccess { token, hosts }),
            any_path: true,
        }
    }

    /// TCP on `local`: requests must name a loopback host, `local`'s address or one of
    /// `hosts` in their Host header and in an absolute-form target's authority (against
    /// DNS rebinding), and carry `Authorization: Bearer TOKEN` (exactly so) when a token
    /// is set.
    ///
    /// # Errors
    ///
    /// [`Error::TokenRequired`] when `local` is not a loopback address and no token
    /// is given.
    pub fn tcp(
        local: SocketAddr,
        token: Option<String>,
        hosts: Vec<String>,
    ) -> Result<Policy, Error> {
        if !local.ip().is_loopback() && token.is_none() {
            return Err(Error::TokenRequired { addr: local });
        }
        let mut hosts = hosts;
        if !local.ip().is_unspecified() {
            hosts.push(local.ip().to_string());
        }
        Ok(Policy {
            tcp: Some(TcpAccess { token, hosts }),
            any_path: false,
        })
    }

    /// Decides what to answer to `request`. Checks come in this order: Host and
    /// authority (403), token (401), path (404), method (405), body (400), options (400).
    pub fn decide(&self, request: &Request<'_>) -> Verdict {
        if let Some(tcp) = &self.tcp {
            if !request.host.is_some_and(|host| tcp.host_allowed(host)) {
                return Verdict::refuse(
                    403,
                    "the Host header must name this server (localhost, a loopback address or a configured name)",
                );
            }
            if !request.authority.is_none_or(|host| tcp.host_allowed(host)) {
                return Verdict::refuse(
                    403,
                    "the request target's authority must name this server (localhost, a loopback address or a configured name)",
                );
            }
            if !tcp.authorized(request.authorization) {
                return Verdict::refuse(401, "a capture needs `Authorization: Bearer TOKEN`");
            }
        }
        if !self.any_path && request.path != CAPTURE_PATH {
            return Verdict::refuse(
                404,
                format!(
                    "no such endpoint {:?}: use POST {CAPTURE_PATH}",
                    request.path
                ),
            );
        }
        if request.method != "POST" {
            return Verdict::refuse(
                405,
                format!("method {} is not allowed: use POST", request.method),
            );
        }
        if request.has_body {
            return Verdict::refuse(
                400,
                "a capture request has no body: put the options in the query string",
            );
        }
        match parse_query(request.query.unwrap_or("")) {
            Ok(options) => Verdict::Capture(options),
            Err(e) => Verdict::refuse(400, e.to_string()),
        }
    }
}

/// Parses capture options from a query string: `format=pcap|pcapng|raw|tailscale`,
/// `snaplen=N`, `paths=NAME,NAME,...`, `resolution=us|ns`, `bpf=PROGRAM` (what
/// `tcpdump -ddd` prints, joined by commas, spaces as `+` or `%20`),
/// `history=all|none|DURATION` ([`History`]: `30s`, `500ms`), `follow=true|false`. Each
/// at most once; nothing else.
///
/// # Errors
///
/// [`Error::InvalidOption`] naming the option and what was wrong.
///
/// # Examples
///
/// ```
/// use pcapcast_core::{endpoint::parse_query, Format, Path};
///
/// let options = parse_query("format=raw&paths=from-peer,254")?;
/// assert_eq!(options.get_format(), Format::RawIp);
/// assert!(options.keeps(Path::Disco) && !options.keeps(Path::FromLocal));
/// assert!(parse_query("snaplen=1&snaplen=2").is_err());
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
pub fn parse_query(query: &str) -> Result<Options, Error> {
    let mut options = Options::default();
    let mut seen: Vec<&str> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let invalid = |reason: String| Error::InvalidOption {
            name: name.to_owned(),
            reason,
        };
        if seen.contains(&name) {
            return Err(invalid("given more than once".into()));
        }
        seen.push(name);
        let value = percent_decode(value).ok_or_else(|| invalid("bad percent-encoding".into()))?;
        options = match name {
            "format" => options.format(
                value
                    .parse::<Format>()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "snaplen" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| invalid(format!("{value:?} is not a number")))?;
                u32::try_from(n)
                    .map_err(|_| Error::SnaplenOutOfRange { snaplen: n })
                    .and_then(|n| options.snaplen(n))
                    .map_err(|e| invalid(e.to_string()))?
            }
            "paths" => {
                let paths = value
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::parse::<Path>)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| invalid(e.to_string()))?;
                options.paths(paths)
            }
            "resolution" => options.resolution(
                value
                    .parse::<TsResolution>()
                    .map_err(|e| invalid(e.to_string()))?,
            ),
            "bpf" => options.bpf(Bpf::from_bytecode(&value).map_err(|e| invalid(e.to_string()))?),
            // History's own error names the option already.
            "history" => options.history(value.parse::<History>()?),
            "follow" => options.follow(match value.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid(format!("{value:?}: use true or false"))),
            }),
            _ => return Err(invalid(
                "unknown option: use format, snaplen, paths, resolution, bpf, history or follow"
                    .into(),
            )),
        };
    }
    Ok(options)
}

/// The query string that asks for `options`, the inverse of [`parse_query`].
pub fn to_query(options: &Options) -> String {
    let mut query = format!(
        "format={}&snaplen={}",
        options.get_format().name(),
        options.get_snaplen()
    );
    if options.get_resolution() == TsResolution::Nanos {
        query.push_str("&resolution=ns");
    }
    if let Some(paths) = options.kept_paths() {
        let names: Vec<String> = paths.map(|p| u16::from(p).to_string()).collect();
        query.push_str("&paths=");
        query.push_str(&names.join(","));
    }
    if let Some(bpf) = options.get_bpf() {
        // The bytecode is digits, spaces and commas: only the spaces need escaping.
        query.push_str("&bpf=");
        query.push_str(&bpf.to_string().replace(' ', "+"));
    }
    if !options.get_history().is_none() {
        query.push_str(&format!("&history={}", options.get_history()));
    }
    if !options.get_follow() {
        query.push_str("&follow=false");
    }
    query
}

fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = value.get(i + 1..i + 3)?;
                // from_str_radix alone would take a sign: "%+5".
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(query: &str) -> Request<'_> {
        Request {
            method: "POST",
            path: CAPTURE_PATH,
            query: Some(query),
            host: Some("localhost:8080"),
            ..Request::default()
        }
    }

    fn status(verdict: Verdict) -> u16 {
        match verdict {
            Verdict::Capture(_) => 200,
            Verdict::Refuse { status, .. } => status,
        }
    }

    #[test]
    fn statuses_follow_the_design() {
        let unix = Policy::unix();
        assert_eq!(status(unix.decide(&post(""))), 200);
        assert_eq!(
            status(unix.decide(&Request {
                method: "GET",
                ..post("")
            })),
            405
        );
        assert_eq!(
            status(unix.decide(&Request {
                path: "/",
                ..post("")
            })),
            404
        );
        assert_eq!(status(unix.decide(&post("format=gif"))), 400);
        assert_eq!(status(unix.decide(&post("colour=red"))), 400);
        assert_eq!(status(unix.decide(&post("snaplen=262145"))), 400);
        assert_eq!(status(unix.decide(&post("paths=from-peer,sideways"))), 400);
        assert_eq!(status(unix.decide(&post("format=raw&format=raw"))), 400);
        assert_eq!(
            status(unix.decide(&Request {
                has_body: true,
                ..post("")
            })),
            400
        );
    }

    #[test]
    fn the_bad_option_is_named() {
        let Verdict::Refuse { reason, .. } = Policy::unix().decide(&post("snaplen=abc")) else {
            panic!("refused expected");
        };
        assert!(reason.contains("snaplen"), "{reason}");
    }

    #[test]
    fn a_number_too_big_is_out_of_range_not_garbage() {
        let Err(e) = parse_query("snaplen=4294967296") else {
            panic!("refused expected");
        };
        let reason = e.to_string();
        assert!(reason.contains("4294967296 is out of range"), "{reason}");
    }

    #[test]
    fn percent_escapes_take_two_hex_digits_and_no_sign() {
        assert!(parse_query("format=%+5").is_err());
        assert!(parse_query("format=%-1").is_err());
        assert!(parse_query("format=%7").is_err());
        assert_eq!(
            parse_query("format=%70cap").unwrap().get_format(),
            Format::Pcap
        );
    }

    #[test]
    fn a_mounted_endpoint_takes_any_path_and_checks_the_rest() {
        let mounted = Policy::mounted();
        let at = |method, path, query| Request {
            method,
            path,
            query: Some(query),
            ..Request::default()
        };
        assert_eq!(
            status(mounted.decide(&at("POST", "/debug/capture", "format=pcapng"))),
            200
        );
        assert_eq!(
            status(mounted.decide(&at("GET", "/debug/capture", ""))),
            405
        );
        assert_eq!(status(mounted.decide(&at("POST", "/x", "snaplen=0"))), 400);
        assert_eq!(
            status(Policy::unix().decide(&at("POST", "/debug/capture", ""))),
            404
        );
    }

    #[test]
    fn a_filter_travels_in_the_query() {
        let program = "5,48 0 0 0,84 0 0 240,21 0 1 96,6 0 0 65535,6 0 0 0";
        let options = Options::new().bpf(Bpf::from_bytecode(program).unwrap());
        let query = to_query(&options);
        assert!(query.ends_with("&bpf=5,48+0+0+0,84+0+0+240,21+0+1+96,6+0+0+65535,6+0+0+0"));
        assert_eq!(parse_query(&query).unwrap(), options);
        let escaped = parse_query(
            "bpf=5,48%200%200%200,84%200%200%20240,21%200%201%2096,6%200%200%2065535,6%200%200%200",
        );
        assert_eq!(escaped.unwrap(), options);
        let unix = Policy::unix();
        let answer = unix.decide(&post("bpf=2,21+1+0+0,6+0+0+0"));
        assert_eq!(status(answer.clone()), 400);
        let Verdict::Refuse { reason, .. } = answer else {
            unreachable!("refused above")
        };
        assert!(reason.contains("at instruction 0: a jump"), "{reason}");
    }

    #[test]
    fn every_format_has_its_query_name() {
        for format in [
            Format::Pcap,
            Format::RawIp,
            Format::Pcapng,
            Format::Tailscale,
        ] {
            let query = format!("format={}", format.name());
            assert_eq!(parse_query(&query).unwrap().get_format(), format);
            let options = Options::new().format(format);
            assert_eq!(parse_query(&to_query(&options)).unwrap(), options);
        }
    }

    #[test]
    fn tcp_checks_host_then_token() {
        let loopback: SocketAddr = "127.0.0.1:57012".parse().unwrap();
        let open = Policy::tcp(loopback, None, vec![]).unwrap();
        assert_eq!(status(open.decide(&post(""))), 200);
        for host in ["127.0.0.1:57012", "[::1]:1", "LOCALHOST", "127.3.4.5"] {
            assert_eq!(
                status(open.decide(&Request {
                    host: Some(host),
                    ..post("")
                })),
                200,
                "{host}"
            );
        }
        for host in [
            Some("evil.example:57012"),
            Some("localhost.evil.example"),
            None,
        ] {
            assert_eq!(
                status(open.decide(&Request { host, ..post("") })),
                403,
                "{host:?}"
            );
        }

        let wide: SocketAddr = "0.0.0.0:57012".parse().unwrap();
        assert_eq!(
            Policy::tcp(wide, None, vec![]).unwrap_err(),
            Error::TokenRequired { addr: wide }
        );
        let guarded = Policy::tcp(wide, Some("s3cret".into()), vec!["capture.lan".into()]).unwrap();
        let named = Request {
            host: Some("capture.lan:57012"),
            ..post("")
        };
        assert_eq!(status(guarded.decide(&named)), 401);
        let wrong = Request {
            authorization: Some("Bearer s3cre"),
            ..named
        };
        assert_eq!(status(guarded.decide(&wrong)), 401);
        let right = Request {
            authorization: Some("Bearer s3cret"),
            ..named
        };
        assert_eq!(status(guarded.decide(&right)), 200);
        let two_spaces = Request {
            authorization: Some("Bearer  s3cret"),
            ..named
        };
        assert_eq!(status(guarded.decide(&two_spaces)), 401);
    }

    #[test]
    fn an_absolute_target_must_name_this_server_too() {
        let loopback: SocketAddr = "127.0.0.1:57012".parse().unwrap();
        let open = Policy::tcp(loopback, None, vec![]).unwrap();
        let evil = Request {
            authority: Some("evil.example"),
            ..post("")
        };
        let Verdict::Refuse { status, reason } = open.decide(&evil) else {
            panic!("an evil authority got a capture");
        };
        assert_eq!(status, 403);
        assert!(reason.contains("authority"), "{reason}");
        let local = Request {
            authority: Some("127.0.0.1:57012"),
            ..post("")
        };
        assert_eq!(self::status(open.decide(&local)), 200);
    }

    #[test]
    fn queries_round_trip() {
        let options = Options::new()
            .format(Format::Pcapng)
            .snaplen(96)
            .unwrap()
            .resolution(TsResolution::Nanos)
            .paths([Path::Disco, Path::FromLocal]);
        assert_eq!(parse_query(&to_query(&options)).unwrap(), options);
        assert_eq!(
            parse_query("paths=from%2Dpeer").unwrap(),
            Options::new().paths([Path::FromPeer])
        );
        for history in ["all", "30s", "500ms", "1.5s"] {
            let options = parse_query(&format!("history={history}&follow=false")).unwrap();
            assert!(!options.get_follow());
            assert_eq!(parse_query(&to_query(&options)).unwrap(), options);
        }
        assert_eq!(
            parse_query("history=none").unwrap(),
            Options::new(),
            "none is the default"
        );
    }

    #[test]
    fn bad_history_and_follow_say_why() {
        for (query, reason) in [
            ("history=30", "needs a unit"),
            ("history=yesterday", "needs a unit"),
            ("history=-5s", "not a number"),
            ("follow=no", "use true or false"),
            ("history=all&history=all", "given more than once"),
        ] {
            let error = parse_query(query).unwrap_err().to_string();
            assert!(error.contains(reason), "{query}: {error}");
            assert!(error.contains(query.split('=').next().unwrap()), "{error}");
            let verdict = Policy::unix().decide(&post(query));
            assert_eq!(status(verdict), 400, "{query}");
        }
    }
}
