//! The endpoint mounted in axum names the peer from `ConnectInfo` in its attach log.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use hyper::Request;
use pcapcast_tokio::core::endpoint::Peer;
use pcapcast_tokio::{Capture, CaptureService};

fn request() -> Request<()> {
    let mut request = Request::post("/debug/capture?format=pcapng")
        .header("host", "localhost")
        .body(())
        .unwrap();
    let peer: SocketAddr = "10.0.0.9:4321".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

/// A writer for the test's log lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_attach_log_names_the_peer_from_connect_info() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // Global, in a test binary of its own: a scoped subscriber races with other
    // threads' first use of the same log lines, which then stay off.
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let capture = Capture::new();
    {
        let read: pcapcast_tokio::PeerFrom = |extensions| {
            let info = extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(Peer::Tcp(info.0))
        };
        let service = CaptureService::new(capture.clone()).peer_from(read);
        let response = service.respond(&request());
        assert_eq!(response.status(), 200);
        // Without the hook, axum's ConnectInfo is not a peer the service knows.
        let unnamed = CaptureService::new(capture.clone());
        assert_eq!(unnamed.respond(&request()).status(), 200);
    }
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let attached: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("capture attached"))
        .collect();
    assert_eq!(attached.len(), 2, "{logged}");
    assert!(attached[0].contains("peer=tcp 10.0.0.9:4321"), "{logged}");
    // Loud: at WARN, saying what it means.
    assert!(attached[0].contains("WARN"), "{logged}");
    assert!(
        attached[0].contains("decrypted traffic is being copied"),
        "{logged}"
    );
    assert!(attached[1].contains("peer=unknown"), "{logged}");
}
