//! PCAP-over-IP: every connection gets the seed-format stream at once.

use std::io;

use pcapcast_core::{Capture, Format, Options};

use crate::hang_up::HangUp;
use crate::net::duplicate;
use crate::write::stream_until;
use crate::{Listener, Runtime};

/// Serves the seed-format stream to every connection on `listener`, as
/// `tshark -i TCP@HOST:PORT` expects; [`serve_pcap_over_ip_with`] serves another classic
/// format (raw IP for Arkime's `pcap-over-ip-client` mode). The stream carries no
/// authentication, so a TCP listener must be on loopback; a Unix socket made by
/// [`Listener::bind_unix`] is private to its user.
///
/// Clients are expected to send nothing: what they send is discarded, and one that
/// closes its sending side is taken to have left, so its output is detached even when
/// the datapath is quiet. Each connection runs in a task of its own, spawned on the
/// runtime; dropping this future stops accepting, and [`Capture::close`] ends the
/// streams.
///
/// # Errors
///
/// `InvalidInput` for a TCP listener off loopback, or an error of accept that retrying
/// cannot cure (a client gone early is skipped; descriptors running out pause it).
pub async fn serve_pcap_over_ip<R: Runtime>(
    capture: Capture,
    listener: Listener<R>,
) -> io::Result<()> {
    serve_pcap_over_ip_with(capture, listener, Options::default()).await
}

/// [`serve_pcap_over_ip`] with the options each connection's output gets: a classic
/// pcap format (`Format::Pcap`, `Format::Tailscale` or `Format::RawIp`), snaplen, paths,
/// a filter.
///
/// # Errors
///
/// `InvalidInput` for pcapng (PCAP-over-IP readers take classic pcap), and as
/// [`serve_pcap_over_ip`].
pub async fn serve_pcap_over_ip_with<R: Runtime>(
    capture: Capture,
    listener: Listener<R>,
    options: Options,
) -> io::Result<()> {
    classic_pcap_only(&options)?;
    if let Some(addr) = listener.tcp_addr() {
        if !addr.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("PCAP-over-IP has no authentication: listen on loopback, not {addr}"),
            ));
        }
    }
    let runtime = listener.runtime().clone();
    tracing::info!(listen = %listener.describe(), "PCAP-over-IP ready");
    loop {
        let (stream, peer) = listener.accept_next().await?;
        let subscription = match capture.try_subscribe(options.clone()) {
            Ok(subscription) => subscription,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "PCAP-over-IP output refused");
                continue;
            }
        };
        tracing::warn!(
            %peer,
            options = %pcapcast_core::endpoint::to_query(&options),
            "PCAP-over-IP output attached: decrypted traffic is being copied to this reader"
        );
        let hang_up = HangUp::watch(&runtime, duplicate(&stream));
        let stream = match runtime.stream(stream) {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "PCAP-over-IP connection dropped");
                continue;
            }
        };
        runtime.spawn(async move {
            // What the socket took, not what the output handed out: the rest never
            // left this process.
            let (result, delivered) = stream_until::<R, _, _>(subscription, stream, hang_up).await;
            let (records, bytes) = (delivered.records(), delivered.bytes());
            match result {
                Ok(stats) => tracing::info!(%peer, records, bytes, dropped = stats.dropped, "PCAP-over-IP output ended"),
                Err(e) => tracing::info!(%peer, records, bytes, dropped = e.stats.dropped, error = %e.source, "PCAP-over-IP output detached"),
            }
        });
    }
}

/// PCAP-over-IP, served or pushed, carries classic pcap: readers (tshark's `TCP@`,
/// Arkime) take nothing else.
pub(crate) fn classic_pcap_only(options: &Options) -> io::Result<()> {
    if options.get_format() == Format::Pcapng {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "PCAP-over-IP carries classic pcap (what tshark and Arkime read): use the seed format, tailscale or raw IP, not pcapng",
        ));
    }
    Ok(())
}
