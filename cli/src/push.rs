//! `pcapcast demo --push tcp:HOST:PORT`: the demo's capture pushed to a PCAP-over-IP
//! collector that listens (Arkime's `pcap-over-ip-server` mode), on the chosen runtime.

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use pcapcast_core::{Capture, Format, Options};

use crate::target::{Endpoint, Target};
use crate::RuntimeKind;

/// What a push sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum PushFormat {
    /// Bare IP packets (LINKTYPE_RAW), for collectors without pcapcast's dissector,
    /// such as Arkime; disco frames are left out.
    #[default]
    Raw,
    /// The seed format: each packet with its path (LINKTYPE_USER0).
    Pcap,
}

impl From<PushFormat> for Format {
    fn from(format: PushFormat) -> Format {
        match format {
            PushFormat::Raw => Format::RawIp,
            PushFormat::Pcap => Format::Pcap,
        }
    }
}

/// Reads `tcp:HOST:PORT`, resolved once, now, to its first address.
pub fn parse_collector(s: &str) -> Result<SocketAddr, String> {
    let target = s.parse::<Target>()?;
    if target.path != pcapcast_core::endpoint::CAPTURE_PATH {
        return Err(format!(
            "{s:?}: a collector takes no HTTP path: give tcp:HOST:PORT"
        ));
    }
    match target.endpoint {
        Endpoint::Tcp(addr) => addr
            .to_socket_addrs()
            .map_err(|e| format!("{addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("{addr} resolves to no address")),
        Endpoint::Unix(_) => Err(format!(
            "{s:?}: a collector listens on TCP: give tcp:HOST:PORT"
        )),
    }
}

/// A push running on a thread of its own.
#[derive(Debug)]
pub struct Pushing {
    thread: JoinHandle<()>,
}

impl Pushing {
    /// After the capture closed: gives the push up to `limit` to send what it holds.
    pub fn finish(self, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.thread.is_finished() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts pushing `capture` to `collector` with `options` (whose format is a classic
/// one), until the capture closes. The push logs its connections, and the records lost
/// at each reconnect, as warnings.
pub fn start(
    kind: RuntimeKind,
    capture: Capture,
    collector: SocketAddr,
    options: Options,
) -> Result<Pushing, String> {
    let runtime = match kind {
        RuntimeKind::Smol => None,
        RuntimeKind::Tokio => Some(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start tokio: {e}"))?,
        ),
    };
    let thread = thread::spawn(move || {
        let pushed = match runtime {
            None => smol::block_on(
                pcapcast_smol::Push::new(capture, collector)
                    .options(options)
                    .run(),
            ),
            Some(runtime) => runtime.block_on(
                pcapcast_tokio::Push::new(capture, collector)
                    .options(options)
                    .run(),
            ),
        };
        if let Err(e) = pushed {
            tracing::error!(%collector, error = %e, "the push to the PCAP-over-IP collector stopped");
        }
    });
    Ok(Pushing { thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_are_tcp_addresses() {
        assert_eq!(
            parse_collector("tcp:127.0.0.1:57012"),
            Ok("127.0.0.1:57012".parse().unwrap())
        );
        assert!(parse_collector("tcp:localhost:57012").is_ok());
        assert!(parse_collector("unix:/run/x.sock")
            .unwrap_err()
            .contains("listens on TCP"));
        assert!(parse_collector("127.0.0.1:57012").is_err());
        assert!(parse_collector("tcp:nowhere").is_err());
    }
}
