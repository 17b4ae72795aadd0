//! Who may reach the capture endpoint over TCP: the host a request names (against DNS
//! rebinding) and its bearer token.

use std::net::IpAddr;

/// The checks of one TCP listener.
#[derive(Clone, Debug)]
pub(crate) struct TcpAccess {
    pub(crate) token: Option<String>,
    /// Names accepted besides loopback ones.
    pub(crate) hosts: Vec<String>,
}

impl TcpAccess {
    /// Whether `host` (a Host header, or the authority of an absolute-form target)
    /// names this server: localhost, a loopback address or a configured name.
    pub(crate) fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host);
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let literal = name.trim_start_matches('[').trim_end_matches(']');
        if literal.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(literal) || h.eq_ignore_ascii_case(name))
    }

    /// Whether `authorization` carries the token, when one is required.
    pub(crate) fn authorized(&self, authorization: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(token) => authorization.is_some_and(|a| bearer_matches(a, token)),
        }
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

/// `Bearer TOKEN` exactly (RFC 6750): the scheme in any case, one space, the token with
/// nothing around it. The comparison does not stop at the first difference, so that
/// timing tells nothing of the token.
fn bearer_matches(authorization: &str, token: &str) -> bool {
    let Some((scheme, given)) = authorization.split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return false;
    }
    let (a, b) = (given.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &byte) in b.iter().enumerate() {
        diff |= usize::from(byte ^ a.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_header_is_parsed_exactly() {
        let access = TcpAccess {
            token: Some("s3cret".into()),
            hosts: vec![],
        };
        for good in ["Bearer s3cret", "bearer s3cret", "BEARER s3cret"] {
            assert!(access.authorized(Some(good)), "{good:?}");
        }
        for bad in [
            "Bearer  s3cret",
            "Bearer s3cret ",
            "Bearer\ts3cret",
            "Bearer s3cre",
            "Bearer s3crett",
            "Bearer ",
            "Bearers3cret",
            "Basic s3cret",
            "s3cret",
            "",
        ] {
            assert!(!access.authorized(Some(bad)), "{bad:?}");
        }
        assert!(!access.authorized(None));
    }

    #[test]
    fn hosts_name_this_server_or_nothing() {
        let access = TcpAccess {
            token: None,
            hosts: vec!["capture.lan".into()],
        };
        for host in [
            "localhost",
            "LOCALHOST:80",
            "127.0.0.9:1",
            "[::1]:57012",
            "capture.lan:8",
        ] {
            assert!(access.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "[::2]:1",
            "user@localhost",
        ] {
            assert!(!access.host_allowed(host), "{host}");
        }
    }
}
