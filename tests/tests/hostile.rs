//! Hostile clients and failing readers, on both adapters: garbage, oversized and
//! Hostile clients and failing readers, on both adapters: garbage, oversized and
//! dribbled headers, bad options, pipelined requests, other users (racing the socket's
//! creation, or let in by its mode), token guesses, a thousand readers that hang up
//! mid-record, 256 outputs at once, and a close while everything streams; readers that
//! stall, in `hostile/stalled.rs`.

use std::io::{Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pcapcast_core::{Capture, Path};
use pcapcast_tests::{
    connect, exchange, post, read, temp_dir, wait_until, Endpoint, HttpConfig, Runtime,
};

#[path = "hostile/access.rs"]
mod access;
#[path = "hostile/stalled.rs"]
mod stalled;

/// What a hostile request must get.
#[derive(Debug)]
enum Expect {
    /// This status.
    Status(u16),
    /// One of these statuses, or the connection closed without an answer.
    RefusedOrClosed(&'static [u16]),
}

fn status_of(endpoint: &Endpoint, request: &[u8]) -> Option<u16> {
    exchange(endpoint, request).ok().map(|r| r.status)
}

fn hostile_requests_get_the_right_answer<R: Runtime>() {
    let capture = Capture::new();
    let config = HttpConfig {
        header_timeout: Some(Duration::from_millis(500)),
        ..HttpConfig::default()
    };
    let dir = temp_dir("hostile");
    let server = R::serve_http(capture.clone(), Endpoint::Unix(dir.join("h.sock")), config);
    let ep = &server.endpoint;
    let huge_header = format!(
        "POST /capture HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let table: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("garbage", b"\x00\x01\x02\xff garbage\r\n\r\n".to_vec(), Expect::RefusedOrClosed(&[400])),
        ("header over the limit", huge_header.into_bytes(), Expect::RefusedOrClosed(&[400, 431])),
        ("unknown method", b"BREW /capture HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), Expect::Status(405)),
        ("bad option", b"POST /capture?snaplen=-3 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), Expect::Status(400)),
        ("duplicated option", b"POST /capture?format=raw&format=raw HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), Expect::Status(400)),
        ("unknown option", b"POST /capture?colour=red HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(), Expect::Status(400)),
        ("a body on the POST", b"POST /capture HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n\r\nbody".to_vec(), Expect::Status(400)),
        ("chunked body", b"POST /capture HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec(), Expect::Status(400)),
        ("not HTTP/1", b"POST /capture HTTP/9.9\r\nHost: localhost\r\n\r\n".to_vec(), Expect::RefusedOrClosed(&[400, 505])),
    ];
    for (name, request, expect) in table {
        let got = status_of(ep, &request);
        match expect {
            Expect::Status(status) => assert_eq!(got, Some(status), "{}: {name}", R::NAME),
            Expect::RefusedOrClosed(statuses) => {
                assert!(
                    got.is_none_or(|s| statuses.contains(&s)),
                    "{}: {name}: got {got:?}",
                    R::NAME
                )
            }
        }
    }

    // Headers one byte at a time, slower than the limit: cut off before the end.
    let mut slow = connect(ep).unwrap();
    let request = b"POST /capture HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let start = Instant::now();
    let mut cut_off = false;
    for byte in request {
        if slow.write_all(&[*byte]).is_err() {
            cut_off = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut answer = Vec::new();
    let _ = slow.read_to_end(&mut answer);
    let answered_200 = answer.starts_with(b"HTTP/1.1 200");
    assert!(
        cut_off || !answered_200,
        "{}: a dribbling client got a capture",
        R::NAME
    );
    assert!(start.elapsed() < Duration::from_secs(10));

    // Two requests on one connection: each gets its own answer.
    let pipelined = b"POST /nope HTTP/1.1\r\nHost: localhost\r\n\r\nGET /capture HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut stream = connect(ep).unwrap();
    stream.write_all(pipelined).unwrap();
    let mut both = Vec::new();
    stream.read_to_end(&mut both).unwrap();
    let text = String::from_utf8_lossy(&both);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["404", "405"], "{}", R::NAME);

    // And the daemon goes on serving.
    let client = {
        let ep = ep.clone();
        std::thread::spawn(move || post(&ep, "/capture", "localhost", "").unwrap())
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 40]);
    capture.close();
    let response = client.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(read::parse(&response.body).records.len(), 1);
}

fn another_user_cannot_connect<R: Runtime>() {
    let capture = Capture::new();
    let dir = temp_dir("user");
    let server = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("private.sock")),
        HttpConfig::default(),
    );
    let Endpoint::Unix(socket) = &server.endpoint else {
        unreachable!()
    };
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "curl",
            "-s",
            "--max-time",
            "5",
            "--unix-socket",
        ])
        .arg(socket)
        .args(["-X", "POST", "http://localhost/capture", "-o", "/dev/null"])
        .output()
        .expect("setpriv and curl (the tests run as root, as CI does)");
    // curl exits 7 when it cannot connect.
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}: {}",
        R::NAME,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(capture.num_outputs(), 0);
}

/// A small deterministic generator, so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

fn readers_hang_up_mid_record_a_thousand_times<R: Runtime>() {
    let capture = Capture::new();
    let dir = temp_dir("hangup");
    let http = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("h.sock")),
        HttpConfig::default(),
    );
    let poip = R::serve_pcap_over_ip(
        capture.clone(),
        Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
    );
    let running = Arc::new(AtomicBool::new(true));
    let datapath = {
        let (capture, running) = (capture.clone(), Arc::clone(&running));
        std::thread::spawn(move || {
            while running.load(Ordering::Relaxed) {
                for _ in 0..50 {
                    capture.log_packet(Path::FromLocal, SystemTime::now(), &[0x45; 333]);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut rng = Lcg(0x5eed);
    for i in 0..1000 {
        let mut stream = if i % 2 == 0 {
            let mut s = connect(&http.endpoint).unwrap();
            s.write_all(b"POST /capture?format=pcapng HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .unwrap();
            s
        } else {
            connect(&poip.endpoint).unwrap()
        };
        let mut left = rng.next(5000) as usize;
        let mut buffer = [0u8; 512];
        while left > 0 {
            match stream.read(&mut buffer[..left.min(512)]) {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n,
            }
        }
        drop(stream); // hang up, most likely mid-record
    }
    running.store(false, Ordering::Relaxed);
    datapath.join().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || capture.num_outputs() == 0),
        "{}: {} outputs still attached",
        R::NAME,
        capture.num_outputs()
    );
}

/// How a quiet client leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    /// It closes the socket.
    Close,
    /// It shuts down its sending side and waits.
    ShutdownWrite,
}

/// A blocking client socket that can shut down one side.
enum Client {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

impl Client {
    fn connect(endpoint: &Endpoint) -> Client {
        match endpoint {
            Endpoint::Unix(path) => {
                Client::Unix(std::os::unix::net::UnixStream::connect(path).unwrap())
            }
            Endpoint::Tcp(addr) => Client::Tcp(std::net::TcpStream::connect(addr).unwrap()),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            Client::Unix(s) => s.write_all(bytes).unwrap(),
            Client::Tcp(s) => s.write_all(bytes).unwrap(),
        }
    }

    fn shutdown_write(&self) {
        match self {
            Client::Unix(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
            Client::Tcp(s) => s.shutdown(std::net::Shutdown::Write).unwrap(),
        }
    }
}

/// Clients that leave while the datapath logs nothing: no write will fail for them, so
/// the server has to notice from the socket itself, or their outputs stay attached.
fn quiet_clients_that_leave_are_detached<R: Runtime>() {
    let capture = Capture::new();
    let dir = temp_dir("quiet");
    let http = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("h.sock")),
        HttpConfig::default(),
    );
    let poip_unix = R::serve_pcap_over_ip(capture.clone(), Endpoint::Unix(dir.join("p.sock")));
    let poip_tcp = R::serve_pcap_over_ip(
        capture.clone(),
        Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
    );
    let request: &[u8] = b"POST /capture HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let servers = [
        ("HTTP", &http.endpoint, request),
        ("PCAP-over-IP on Unix", &poip_unix.endpoint, &[][..]),
        ("PCAP-over-IP on TCP", &poip_tcp.endpoint, &[][..]),
    ];
    for (name, endpoint, request) in servers {
        for leave in [Leave::Close, Leave::ShutdownWrite] {
            let mut client = Client::connect(endpoint);
            client.send(request);
            assert!(
                wait_until(Duration::from_secs(10), || capture.num_outputs() == 1),
                "{}: {name}: the output never attached",
                R::NAME
            );
            let kept = match leave {
                Leave::Close => {
                    drop(client);
                    None
                }
                Leave::ShutdownWrite => {
                    client.shutdown_write();
                    Some(client)
                }
            };
            assert!(
                wait_until(Duration::from_secs(10), || capture.num_outputs() == 0),
                "{}: {name}: after {leave:?} the output stayed attached",
                R::NAME
            );
            drop(kept);
        }
    }
    // A PCAP-over-IP client that sends bytes and stays is still served: what it sends
    // is thrown away, and only its leaving ends the output.
    for endpoint in [&poip_unix.endpoint, &poip_tcp.endpoint] {
        let mut client = Client::connect(endpoint);
        assert!(wait_until(Duration::from_secs(10), || capture
            .num_outputs()
            == 1));
        client.send(&[0x55; 100_000]);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(capture.num_outputs(), 1, "{}: a talkative client", R::NAME);
        drop(client);
        assert!(wait_until(Duration::from_secs(10), || capture
            .num_outputs()
            == 0));
    }
}

fn many_outputs<R: Runtime>(per_kind: usize) {
    let capture = Capture::builder()
        .max_outputs(4 * per_kind)
        .backlog_bytes(1 << 20)
        .build();
    let dir = temp_dir("many");
    let servers = [
        R::serve_http(
            capture.clone(),
            Endpoint::Unix(dir.join("h.sock")),
            HttpConfig::default(),
        ),
        R::serve_http(
            capture.clone(),
            Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
            HttpConfig::default(),
        ),
        R::serve_pcap_over_ip(capture.clone(), Endpoint::Unix(dir.join("p.sock"))),
        R::serve_pcap_over_ip(
            capture.clone(),
            Endpoint::Tcp("127.0.0.1:0".parse().unwrap()),
        ),
    ];
    let mut readers = Vec::new();
    for (kind, server) in servers.iter().enumerate() {
        for _ in 0..per_kind {
            let ep = server.endpoint.clone();
            readers.push(std::thread::spawn(move || {
                let mut stream = connect(&ep).unwrap();
                let mut bytes = Vec::new();
                if kind < 2 {
                    stream
                        .write_all(b"POST /capture HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                        .unwrap();
                    return pcapcast_tests::read_response(&mut stream).unwrap().body;
                }
                stream.read_to_end(&mut bytes).unwrap();
                bytes
            }));
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || capture.num_outputs()
            == 4 * per_kind),
        "{}: {} of {} attached",
        R::NAME,
        capture.num_outputs(),
        4 * per_kind
    );
    // The datapath logs as fast as it can for a while, then the daemon closes.
    let start = Instant::now();
    let mut logged = 0u64;
    while start.elapsed() < Duration::from_millis(500) {
        for _ in 0..100 {
            capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 200]);
        }
        logged += 100;
    }
    capture.close();
    for reader in readers {
        let bytes = reader.join().unwrap();
        let file = read::parse(&bytes); // panics on a torn record
        assert!(!file.records.is_empty());
        assert!(file.records.len() as u64 <= logged);
    }
    assert_eq!(capture.num_outputs(), 0);
}

fn closing_ends_every_output_on_a_whole_record<R: Runtime>() {
    let capture = Capture::new();
    let dir = temp_dir("close");
    let http = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("h.sock")),
        HttpConfig::default(),
    );
    let poip = R::serve_pcap_over_ip(capture.clone(), Endpoint::Unix(dir.join("p.sock")));
    let mut readers = Vec::new();
    for format in ["pcap", "pcapng", "raw", "tailscale", "pcap&snaplen=77"] {
        let ep = http.endpoint.clone();
        let target = format!("/capture?format={format}");
        readers.push(std::thread::spawn(move || {
            post(&ep, &target, "localhost", "").unwrap().body
        }));
    }
    for _ in 0..2 {
        let ep = poip.endpoint.clone();
        readers.push(std::thread::spawn(move || {
            let mut bytes = Vec::new();
            connect(&ep).unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        }));
    }
    assert!(wait_until(Duration::from_secs(10), || capture
        .num_outputs()
        == 7));
    let datapath = {
        let capture = capture.clone();
        std::thread::spawn(move || {
            let nat = pcapcast_core::Meta::new().snat("[fd7a::1]:7".parse().unwrap());
            for i in 0..200_000u32 {
                let meta = if i % 3 == 0 { nat } else { Default::default() };
                capture.log_packet_with(
                    Path::from((i % 5) as u16),
                    SystemTime::now(),
                    &i.to_be_bytes().repeat(100),
                    &meta,
                );
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    capture.close(); // while the datapath still logs
    datapath.join().unwrap();
    for reader in readers {
        let file = read::parse(&reader.join().unwrap());
        assert!(!file.records.is_empty(), "{}", R::NAME);
    }
}

macro_rules! hostile {
    ($runtime:ident, $rt:ty) => {
        mod $runtime {
            use super::*;

            #[test]
            fn hostile_requests() {
                pcapcast_tests::checked(|| hostile_requests_get_the_right_answer::<$rt>());
            }
            #[test]
            fn other_users_are_refused() {
                pcapcast_tests::checked(|| another_user_cannot_connect::<$rt>());
            }
            #[test]
            fn the_socket_is_private_while_made() {
                pcapcast_tests::checked(|| {
                    access::the_socket_is_never_open_to_others_while_it_is_made::<$rt>()
                });
            }
            #[test]
            fn the_uid_check_refuses_others() {
                pcapcast_tests::checked(|| {
                    access::the_uid_check_refuses_another_user_whatever_the_mode::<$rt>()
                });
            }
            #[test]
            fn tokens_and_authorities() {
                pcapcast_tests::checked(|| {
                    access::tokens_and_authorities_are_checked_exactly::<$rt>()
                });
            }
            #[test]
            fn thousand_hangups() {
                pcapcast_tests::checked(|| readers_hang_up_mid_record_a_thousand_times::<$rt>());
            }
            #[test]
            fn quiet_clients_leave() {
                pcapcast_tests::checked(|| quiet_clients_that_leave_are_detached::<$rt>());
            }
            #[test]
            fn outputs_256() {
                pcapcast_tests::checked(|| many_outputs::<$rt>(64));
            }
            #[test]
            fn stalled_256_give_way() {
                pcapcast_tests::checked(|| {
                    stalled::a_new_capture_gets_in_past_256_stalled_readers::<$rt>()
                });
            }
            #[test]
            fn stalled_reader_detached() {
                pcapcast_tests::checked(|| {
                    stalled::a_stalled_reader_is_detached_after_the_limit::<$rt>()
                });
            }
            #[test]
            fn close_while_streaming() {
                pcapcast_tests::checked(|| closing_ends_every_output_on_a_whole_record::<$rt>());
            }
        }
    };
}

hostile!(smol, pcapcast_tests::Smol);
hostile!(tokio, pcapcast_tests::Tokio);
