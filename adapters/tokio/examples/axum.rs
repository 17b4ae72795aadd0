//! A daemon with its own axum app mounts the capture endpoint in it: no second
//! listener. `GET /` is the app's; `POST /debug/capture` streams the capture, with the
//! same options as pcapcast's own server (`?format=pcapng&bpf=...`).
//!
//! ```text
//! cargo run --release -p pcapcast-tokio --example axum -- 127.0.0.1:8080
//! curl -X POST 'http://127.0.0.1:8080/debug/capture?format=pcapng' -o out.pcapng
//! pcapcast capture --connect tcp:127.0.0.1:8080/debug/capture -o out.pcap
//! ```
//!
//! The app's own middleware applies to the capture route like any other: put the
//! authentication layer you use for your admin routes on it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use pcapcast_tokio::core::endpoint::Peer;
use pcapcast_tokio::{Capture, CaptureService, Path};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(addr) => addr.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}"))
        })?,
        None => ([127, 0, 0, 1], 8080).into(),
    };
    let capture = Capture::new();

    // A small datapath: an IPv4 UDP packet every 10 ms, alternately each way.
    let datapath = capture.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut packet = *b"\x45\x00\x00\x1c\x00\x00\x40\x00\x40\x11\x00\x00\x64\x40\x00\x01\x64\x40\x00\x02\x30\x39\x00\x35\x00\x08\x00\x00";
        for n in 0u16.. {
            tick.tick().await;
            packet[4..6].copy_from_slice(&n.to_be_bytes());
            let path = [Path::FromLocal, Path::FromPeer][usize::from(n % 2)];
            datapath.log_packet(path, SystemTime::now(), &packet);
        }
    });

    // Its attach and detach logs name the client, from axum's ConnectInfo.
    let endpoint = CaptureService::new(capture).peer_from(|extensions| {
        let info = extensions.get::<ConnectInfo<SocketAddr>>()?;
        Some(Peer::Tcp(info.0))
    });
    let app = Router::new()
        .route(
            "/",
            get(|| async { "a daemon with its capture mounted at /debug/capture\n" }),
        )
        .route_service("/debug/capture", endpoint);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).await
}
