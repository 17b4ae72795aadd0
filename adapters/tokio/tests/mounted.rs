//! The endpoint mounted in a daemon's own server: the checks it can be asked for.

use std::net::SocketAddr;

use axum::extract::ConnectInfo;
use hyper::Request;
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
