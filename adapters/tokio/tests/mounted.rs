//! The endpoint mounted in a daemon's own server: the checks it can be asked for, and
//! the peer it reads from axum's `ConnectInfo`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::ConnectInfo;
use hyper::Request;
use pcapcast_tokio::core::endpoint::Peer;
use pcapcast_tokio::{Capture, CaptureService};

fn request(host: &str, authorization: Option<&str>) -> Request<()> {
    let mut request = Request::post("/debug/capture?format=pcapng").header("host", host);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let mut request = request.body(()).unwrap();
    let peer: SocketAddr = "10.0.0.9:4321".parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

#[test]
fn a_mounted_endpoint_checks_its_token_and_host() {
    let capture = Capture::new();
    let service = CaptureService::new(capture.clone())
        .token("s3cret")
        .allow_host("daemon.lan");
    let status = |host, authorization| service.respond(&request(host, authorization)).status();
    assert_eq!(status("daemon.lan:8080", Some("Bearer s3cret")), 200);
    assert_eq!(status("localhost", Some("Bearer s3cret")), 200);
    assert_eq!(status("daemon.lan", None), 401);
    assert_eq!(status("daemon.lan", Some("Bearer  s3cret")), 401);
    assert_eq!(status("evil.example", Some("Bearer s3cret")), 403);
    let refused = service.respond(&request("daemon.lan", Some("Bearer guess")));
    assert_eq!(
        refused.headers()["connection"],
        "close",
        "one guess a connection"
    );
    // Without them, the host's middleware decides alone.
    let open = CaptureService::new(capture);
    assert_eq!(open.respond(&request("anything", None)).status(), 200);
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
    let capture = Capture::new();
    tracing::subscriber::with_default(subscriber, || {
        let read: pcapcast_tokio::PeerFrom = |extensions| {
            let info = extensions.get::<ConnectInfo<SocketAddr>>()?;
            Some(Peer::Tcp(info.0))
        };
        let service = CaptureService::new(capture.clone()).peer_from(read);
        let response = service.respond(&request("localhost", None));
        assert_eq!(response.status(), 200);
        // Without the hook, axum's ConnectInfo is not a peer the service knows.
        let unnamed = CaptureService::new(capture.clone());
        assert_eq!(unnamed.respond(&request("localhost", None)).status(), 200);
    });
    let logged = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let attached: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("capture attached"))
        .collect();
    assert_eq!(attached.len(), 2, "{logged}");
    assert!(attached[0].contains("peer=tcp 10.0.0.9:4321"), "{logged}");
    assert!(attached[1].contains("peer=unknown"), "{logged}");
}
