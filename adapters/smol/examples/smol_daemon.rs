//! A daemon on smol that embeds pcapcast: its datapath logs every packet it moves, and
//! the capture is served on a Unix socket and over PCAP-over-IP.
//!
//! ```text
//! cargo run -p pcapcast-smol --example smol_daemon
//! curl --unix-socket /tmp/pcapcast-smol-example.sock -X POST http://localhost/capture -o out.pcap
//! tshark -i TCP@127.0.0.1:57012
//! ```

use std::time::{Duration, SystemTime};

use pcapcast_smol::{serve_pcap_over_ip, Capture, HttpServer, Listener, Path};

fn main() -> std::io::Result<()> {
    let capture = Capture::new();

    // The datapath: here a thread moving made-up UDP packets. With nobody attached,
    // each `log_packet` is one atomic load.
    let datapath = capture.clone();
    std::thread::spawn(move || {
        let mut packet = *b"\x45\x00\x00\x1c\x00\x00\x40\x00\x40\x11\x00\x00\x64\x40\x00\x01\x64\x40\x00\x02\x30\x39\x00\x35\x00\x08\x00\x00";
        for n in (0..=u16::MAX).cycle() {
            packet[4..6].copy_from_slice(&n.to_be_bytes());
            let path = if n % 2 == 0 {
                Path::FromLocal
            } else {
                Path::FromPeer
            };
            datapath.log_packet(path, SystemTime::now(), &packet);
            std::thread::sleep(Duration::from_millis(10));
        }
    });

    smol::block_on(async {
        let socket = std::env::temp_dir().join("pcapcast-smol-example.sock");
        let http = HttpServer::new(capture.clone()).serve(Listener::bind_unix(&socket)?);
        let poip = serve_pcap_over_ip(
            capture.clone(),
            Listener::bind_tcp(([127, 0, 0, 1], 57012).into()).await?,
        );
        println!(
            "capture served on unix:{} and PCAP-over-IP on 127.0.0.1:57012",
            socket.display()
        );
        futures_lite::future::or(http, poip).await
    })
}
