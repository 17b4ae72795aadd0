//! A daemon on tokio that embeds pcapcast: its datapath logs every packet it moves, with
//! the addresses NAT rewrote, and the capture is served on a Unix socket and on TCP with
//! a bearer token.
//!
//! ```text
//! cargo run -p pcapcast-tokio --example tokio_daemon
//! curl --unix-socket /tmp/pcapcast-tokio-example.sock -X POST 'http://localhost/capture?format=tailscale' -o out.pcap
//! pcapcast capture --connect tcp:127.0.0.1:8081 --token example-token --format pcapng -o out.pcapng
//! ```

use std::time::{Duration, SystemTime};

use pcapcast_tokio::core::Meta;
use pcapcast_tokio::{Capture, HttpServer, Listener, Path};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let capture = Capture::new();

    // The datapath: here a task that forwards made-up DNS queries the way a subnet
    // router would, DNATing them from a service address to the host that answers, and
    // logs each with the destination it had before (`--format tailscale` or pcapng show
    // it). With nobody attached, each call is one atomic load.
    let datapath = capture.clone();
    tokio::spawn(async move {
        let service: std::net::SocketAddr = ([100, 64, 0, 53], 53).into();
        let before_nat = Meta::new().dnat(service);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut query = *b"\x45\x00\x00\x1c\x00\x00\x40\x00\x40\x11\x00\x00\x64\x40\x00\x02\x64\x40\x00\x01\x30\x39\x00\x35\x00\x08\x00\x00";
        for id in 0u16.. {
            tick.tick().await;
            query[4..6].copy_from_slice(&id.to_be_bytes());
            datapath.log_packet_with(Path::FromPeer, SystemTime::now(), &query, &before_nat);
        }
    });

    // One endpoint on a Unix socket, for the CLI on this host, and one on TCP that asks
    // for a bearer token (the token is what allows a TCP endpoint off loopback).
    let socket = std::env::temp_dir().join("pcapcast-tokio-example.sock");
    let token = std::env::var("PCAPCAST_TOKEN").unwrap_or_else(|_| "example-token".into());
    let on_unix = HttpServer::new(capture.clone()).serve(Listener::bind_unix(&socket)?);
    let tcp = Listener::bind_tcp(([127, 0, 0, 1], 8081).into()).await?;
    let on_tcp = HttpServer::new(capture).token(token).serve(tcp);
    println!(
        "capture served on unix:{} and tcp:127.0.0.1:8081",
        socket.display()
    );
    tokio::try_join!(on_unix, on_tcp).map(|_| ())
}
