//! `--connect` with an HTTP path: a daemon that mounted its capture in its own server at
//! `/debug/capture`, and nothing at `/capture`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use pcapcast_tokio::{Capture, CaptureService, Path};

use super::{pcapcast, read, temp_dir};

/// A daemon's own server on tokio: its capture at `/debug/capture`, 404 elsewhere. Logs
/// a packet every 5 ms. Returns its address; it runs until the test process ends.
fn daemon_with_capture_at_debug() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let capture = Capture::new();
            let datapath = capture.clone();
            tokio::spawn(async move {
                loop {
                    datapath.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 28]);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            let endpoint = CaptureService::new(capture);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let endpoint = endpoint.clone();
                let service = hyper::service::service_fn(move |request: Request<_>| {
                    let endpoint = endpoint.clone();
                    async move {
                        let response = match request.uri().path() {
                            "/debug/capture" => endpoint.respond(&request).map(|b| b.boxed()),
                            _ => {
                                let body = Full::new(Bytes::from_static(b"not here\n"));
                                let mut response =
                                    Response::new(body.map_err(|n| match n {}).boxed());
                                *response.status_mut() = StatusCode::NOT_FOUND;
                                response
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

pub(super) fn connect_takes_the_capture_s_http_path(runtime: &str) {
    let addr = daemon_with_capture_at_debug();
    let dir = temp_dir("mounted");
    let file = dir.join("debug.pcap");
    for connect in [
        format!("tcp:{addr}/debug/capture"),
        format!("http://{addr}/debug/capture"),
    ] {
        let out = pcapcast(&[
            "capture",
            "--runtime",
            runtime,
            "--connect",
            &connect,
            "-c",
            "20",
            "-o",
            file.to_str().unwrap(),
        ]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{runtime} {connect}: {said}");
        let records = read::parse(&std::fs::read(&file).unwrap()).records;
        assert_eq!(records.len(), 20, "{runtime} {connect}");
    }
    // At /capture the daemon has nothing: the message says so, and how to name it.
    let out = pcapcast(&[
        "capture",
        "--runtime",
        runtime,
        "--connect",
        &format!("tcp:{addr}"),
        "-c",
        "1",
        "-o",
        file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{runtime}: {said}");
    assert!(
        said.contains("has no capture at /capture (404)"),
        "{runtime}: {said}"
    );
    assert!(
        said.contains("tcp:HOST:PORT/debug/capture"),
        "{runtime}: {said}"
    );
}
