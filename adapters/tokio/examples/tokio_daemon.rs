//! A daemon on tokio that embeds pcapcast: its datapath logs every packet it moves, and
//! the capture is served on a Unix socket and over PCAP-over-IP.
//!
//! ```text
//! cargo run -p pcapcast-tokio --example tokio_daemon
//! curl --unix-socket /tmp/pcapcast-tokio-example.sock -X POST http://localhost/capture -o out.pcap
//! tshark -i TCP@127.0.0.1:57013
//! ```

use std::time::{Duration, SystemTime};

use pcapcast_tokio::{serve_pcap_over_ip, Capture, HttpServer, Listener, Path};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let capture = Capture::new();

    // The datapath: here a task moving made-up UDP packets. With nobody attached, each
    // `log_packet` is one atomic load.
    let datapath = capture.clone();
    tokio::spawn(async move {
        let mut packet = *b"\x45\x00\x00\x1c\x00\x00\x40\x00\x40\x11\x00\x00\x64\x40\x00\x01\x64\x40\x00\x02\x30\x39\x00\x35\x00\x08\x00\x00";
        for n in (0..=u16::MAX).cycle() {
            packet[4..6].copy_from_slice(&n.to_be_bytes());
            let path = if n % 2 == 0 {
                Path::FromLocal
            } else {
                Path::FromPeer
            };
            datapath.log_packet(path, SystemTime::now(), &packet);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    let socket = std::env::temp_dir().join("pcapcast-tokio-example.sock");
    let http = HttpServer::new(capture.clone()).serve(Listener::bind_unix(&socket)?);
    let poip = serve_pcap_over_ip(
        capture.clone(),
        Listener::bind_tcp(([127, 0, 0, 1], 57013).into()).await?,
    );
    println!(
        "capture served on unix:{} and PCAP-over-IP on 127.0.0.1:57013",
        socket.display()
    );
    tokio::select! { r = http => r, r = poip => r }
}
