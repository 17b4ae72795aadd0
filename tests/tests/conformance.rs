//! One conformance suite, run unchanged against the smol and the tokio adapter.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use pcapcast_core::{Capture, Format, Options, Path};
use pcapcast_tests::{
    post, read, temp_dir, wait_until, Endpoint, HttpConfig, Runtime, Server, TestWriter,
};

#[path = "conformance/history.rs"]
mod history;

const LOOPBACK_ANY: &str = "127.0.0.1:0";

fn log(capture: &Capture, n: u32, size: usize) {
    for i in 0..n {
        let mut packet = vec![0x45u8; size.max(4)];
        packet[..4].copy_from_slice(&i.to_be_bytes());
        capture.log_packet(Path::from((i % 4) as u16), SystemTime::now(), &packet);
    }
}

fn seqs(bytes: &[u8]) -> Vec<u32> {
    read::parse(bytes)
        .records
        .iter()
        .map(|r| u32::from_be_bytes(r.packet[..4].try_into().unwrap()))
        .collect()
}

fn writers_attached_at_different_moments_get_whole_streams<R: Runtime>() {
    let capture = Capture::new();
    let early = TestWriter::default();
    let a = R::stream(capture.subscribe(Options::default()), early.clone());
    log(&capture, 100, 200);
    let late = TestWriter::default();
    let b = R::stream(
        capture.subscribe(Options::new().format(Format::Pcapng)),
        late.clone(),
    );
    log(&capture, 50, 1500);
    capture.close();
    let stats_a = a.join().unwrap().expect("writer a");
    let stats_b = b.join().unwrap().expect("writer b");
    assert_eq!(seqs(&early.contents()).len(), 150, "{}", R::NAME);
    assert_eq!(seqs(&late.contents()), (0..50).collect::<Vec<_>>());
    assert_eq!((stats_a.records, stats_b.records), (150, 50));
    assert_eq!(stats_a.bytes as usize, early.contents().len());
    assert_eq!(capture.num_outputs(), 0);
}

fn a_failing_writer_is_detached_alone<R: Runtime>() {
    let capture = Capture::new();
    let failing = TestWriter::failing_after(1000);
    let good = TestWriter::default();
    let f = R::stream(capture.subscribe(Options::default()), failing);
    let g = R::stream(capture.subscribe(Options::default()), good.clone());
    for _ in 0..20 {
        log(&capture, 50, 100);
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = f.join().unwrap().expect_err("the failing writer fails");
    assert_eq!(error.source.kind(), std::io::ErrorKind::BrokenPipe);
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    log(&capture, 10, 100);
    capture.close();
    g.join().unwrap().expect("the good writer");
    assert_eq!(seqs(&good.contents()).len(), 1010, "{}", R::NAME);
}

fn a_stalled_writer_loses_records_alone<R: Runtime>() {
    let capture = Capture::builder()
        .batch_bytes(4096)
        .backlog_bytes(16 << 10)
        .build();
    let stalled = TestWriter::default();
    stalled.stalled.store(true, Ordering::SeqCst);
    let fast = TestWriter::default();
    let s = R::stream(
        capture.subscribe(Options::new().format(Format::Pcapng)),
        stalled.clone(),
    );
    let f = R::stream(capture.subscribe(Options::default()), fast.clone());
    let mut total = 0;
    for _ in 0..40 {
        log(&capture, 25, 100);
        total += 25;
        // The fast writer keeps up: wait until it has everything so far.
        assert!(wait_until(Duration::from_secs(5), || {
            let bytes = fast.contents();
            bytes.len() > 24 && read::parse(&bytes).records.len() == total
        }));
    }
    stalled.release();
    capture.close();
    let stats = s.join().unwrap().expect("stalled writer ends");
    f.join().unwrap().expect("fast writer ends");
    assert_eq!(
        read::parse(&fast.contents()).records.len(),
        1000,
        "{}",
        R::NAME
    );
    let slow = read::parse(&stalled.contents());
    assert!(stats.dropped > 0, "the stalled output lost records");
    assert_eq!(slow.records.len() as u64 + stats.dropped, 1000);
    let shown: u64 = slow.records.iter().map(|r| r.drops).sum();
    assert_eq!(shown, stats.dropped, "pcapng shows every loss");
}

fn records_are_flushed_after_the_interval<R: Runtime>() {
    let capture = Capture::new();
    let writer = TestWriter::default();
    let interval = Duration::from_millis(200);
    let handle = R::stream(
        capture.subscribe(Options::new().flush_interval(interval)),
        writer.clone(),
    );
    assert!(
        wait_until(Duration::from_secs(5), || writer.contents().len() == 24),
        "header at once"
    );
    let logged = Instant::now();
    log(&capture, 1, 60);
    assert!(wait_until(Duration::from_secs(5), || writer
        .contents()
        .len()
        > 24));
    let waited = logged.elapsed();
    assert!(
        waited >= interval - Duration::from_millis(20),
        "held back {waited:?}"
    );
    assert!(
        waited < interval + Duration::from_millis(1500),
        "flushed late: {waited:?}"
    );
    assert!(writer.flushes.load(Ordering::SeqCst) >= 2);
    capture.close();
    handle.join().unwrap().unwrap();
}

fn http_streams_the_capture<R: Runtime>(endpoint: Endpoint, host: &str) {
    let capture = Capture::new();
    let server = R::serve_http(capture.clone(), endpoint, HttpConfig::default());
    let target = "/capture?format=pcapng&snaplen=100&paths=from-peer,synth-to-local";
    let client = {
        let endpoint = server.endpoint.clone();
        let host = host.to_owned();
        std::thread::spawn(move || post(&endpoint, target, &host, "").expect("response"))
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    log(&capture, 40, 300);
    capture.close();
    let response = client.join().unwrap();
    assert_eq!(response.status, 200, "{}", R::NAME);
    assert_eq!(
        response.header("content-type"),
        Some("application/x-pcapng")
    );
    let file = read::parse(&response.body);
    assert_eq!(
        file.records.len(),
        20,
        "paths from-peer and synth-to-local of 40"
    );
    assert!(file
        .records
        .iter()
        .all(|r| r.packet.len() == 100 && r.orig_len == 300));
    assert_eq!(read::parse_with_pcap_file(&response.body), file);
}

fn http_refuses_what_it_should<R: Runtime>(endpoint: Endpoint, host: &str) {
    let capture = Capture::builder().max_outputs(1).build();
    let server = R::serve_http(capture.clone(), endpoint, HttpConfig::default());
    let ep = &server.endpoint;
    let status = |method: &str, target: &str| {
        let request =
            format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        pcapcast_tests::exchange(ep, request.as_bytes())
            .unwrap()
            .status
    };
    assert_eq!(status("GET", "/capture"), 405, "{}", R::NAME);
    assert_eq!(status("POST", "/nope"), 404);
    assert_eq!(status("POST", "/capture?snaplen=0"), 400);
    assert_eq!(status("POST", "/capture?format=gif"), 400);
    let body = post(ep, "/capture?color=red", host, "").unwrap();
    assert_eq!(body.status, 400);
    assert!(
        String::from_utf8_lossy(&body.body).contains("color"),
        "the bad option is named"
    );
    let with_body = format!("POST /capture HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    assert_eq!(
        pcapcast_tests::exchange(ep, with_body.as_bytes())
            .unwrap()
            .status,
        400
    );

    // One output is the limit: the second gets 503 while the first streams.
    let first = {
        let ep = ep.clone();
        let host = host.to_owned();
        std::thread::spawn(move || post(&ep, "/capture", &host, "").unwrap())
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    assert_eq!(post(ep, "/capture", host, "").unwrap().status, 503);
    capture.close();
    assert_eq!(first.join().unwrap().status, 200);
}

fn tcp_checks_host_and_token<R: Runtime>() {
    let capture = Capture::new();
    let config = HttpConfig {
        token: Some("s3cret".into()),
        ..HttpConfig::default()
    };
    let server = R::serve_http(
        capture.clone(),
        Endpoint::Tcp(LOOPBACK_ANY.parse().unwrap()),
        config,
    );
    let ep = &server.endpoint;
    assert_eq!(
        post(ep, "/capture", "evil.example", "").unwrap().status,
        403,
        "{}",
        R::NAME
    );
    assert_eq!(post(ep, "/capture", "localhost", "").unwrap().status, 401);
    assert_eq!(
        post(
            ep,
            "/capture",
            "localhost",
            "Authorization: Bearer nope\r\n"
        )
        .unwrap()
        .status,
        401
    );
    let ok = {
        let ep = ep.clone();
        std::thread::spawn(move || {
            post(
                &ep,
                "/capture",
                "127.0.0.1",
                "Authorization: Bearer s3cret\r\n",
            )
            .unwrap()
        })
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    capture.close();
    assert_eq!(ok.join().unwrap().status, 200);

    // Off loopback (every address), with the token the server must then have: a
    // request without it gets 401, a foreign Host 403, and nothing attaches.
    let capture = Capture::new();
    let config = HttpConfig {
        token: Some("s3cret".into()),
        ..HttpConfig::default()
    };
    let wide = R::serve_http(
        capture.clone(),
        Endpoint::Tcp("0.0.0.0:0".parse().unwrap()),
        config,
    );
    let ep = &wide.endpoint;
    assert_eq!(post(ep, "/capture", "localhost", "").unwrap().status, 401);
    assert_eq!(
        post(
            ep,
            "/capture",
            "evil.example",
            "Authorization: Bearer s3cret\r\n"
        )
        .unwrap()
        .status,
        403
    );
    assert_eq!(capture.num_outputs(), 0);
}

fn slow_headers_are_cut_off<R: Runtime>() {
    let capture = Capture::new();
    let config = HttpConfig {
        header_timeout: Some(Duration::from_millis(300)),
        ..HttpConfig::default()
    };
    let dir = temp_dir("slow");
    let server = R::serve_http(capture, Endpoint::Unix(dir.join("s.sock")), config);
    // The clock starts before the connection, so the server's own timer cannot have
    // started earlier than it.
    let start = Instant::now();
    let mut stream = pcapcast_tests::connect(&server.endpoint).unwrap();
    stream.write_all(b"POST /capture HTTP/1.1\r\nHo").unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest); // returns when the server closes
    let waited = start.elapsed();
    assert!(
        waited < Duration::from_secs(5),
        "{} kept a silent client {waited:?}",
        R::NAME
    );
    assert!(waited >= Duration::from_millis(250));
}

fn unix_sockets_are_private<R: Runtime>() {
    let dir = temp_dir("mode");
    let path = dir.join("c.sock");
    let server = R::serve_http(
        Capture::new(),
        Endpoint::Unix(path.clone()),
        HttpConfig::default(),
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", R::NAME);
    drop(server);
    assert!(!path.exists(), "the socket file goes with the server");
}

fn pcap_over_ip_serves_raw_ip<R: Runtime>() {
    let capture = Capture::new();
    let tcp = Endpoint::Tcp(LOOPBACK_ANY.parse().unwrap());
    let server =
        R::serve_pcap_over_ip_with(capture.clone(), tcp, Options::new().format(Format::RawIp));
    let reader = {
        let ep = server.endpoint.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            pcapcast_tests::connect(&ep)
                .unwrap()
                .read_to_end(&mut bytes)
                .unwrap();
            bytes
        })
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    // Disco frames are not IP: raw IP leaves them out.
    capture.log_packet(Path::Disco, SystemTime::now(), &[1, 2, 3]);
    log(&capture, 20, 80);
    capture.close();
    let file = read::parse(&reader.join().unwrap());
    assert_eq!(
        file.linktype,
        Some(101),
        "{}: LINKTYPE_RAW, as Arkime reads",
        R::NAME
    );
    assert_eq!(file.records.len(), 20);
}

#[test]
fn pcap_over_ip_refuses_pcapng_on_both_runtimes() {
    let pcapng = || Options::new().format(Format::Pcapng);
    let addr = LOOPBACK_ANY.parse().unwrap();
    let smol = ::smol::block_on(async {
        let listener = pcapcast_smol::Listener::bind_tcp(addr).await.unwrap();
        pcapcast_smol::serve_pcap_over_ip_with(Capture::new(), listener, pcapng()).await
    });
    let tokio = ::tokio::runtime::Runtime::new().unwrap().block_on(async {
        let listener = pcapcast_tokio::Listener::bind_tcp(addr).await.unwrap();
        pcapcast_tokio::serve_pcap_over_ip_with(Capture::new(), listener, pcapng()).await
    });
    for refused in [smol, tokio] {
        let e = refused.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("classic pcap"), "{e}");
    }
}

fn pcap_over_ip_streams_at_once<R: Runtime>(endpoint: Endpoint) {
    let capture = Capture::new();
    let server = R::serve_pcap_over_ip(capture.clone(), endpoint);
    let reader = {
        let ep = server.endpoint.clone();
        std::thread::spawn(move || {
            let mut stream = pcapcast_tests::connect(&ep).unwrap();
            let mut bytes = Vec::new();
            stream.read_to_end(&mut bytes).unwrap();
            bytes
        })
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    log(&capture, 30, 80);
    capture.close();
    let bytes = reader.join().unwrap();
    let file = read::parse(&bytes);
    assert_eq!(file.linktype, Some(147), "{}", R::NAME);
    assert_eq!(file.records.len(), 30);
}

/// An HTTP endpoint for `capture` on a Unix socket in `dir`, and the socket's path.
fn http_on_unix<R: Runtime>(
    capture: &Capture,
    dir: &std::path::Path,
) -> (Server, std::path::PathBuf) {
    let sock = dir.join("c.sock");
    let server = R::serve_http(
        capture.clone(),
        Endpoint::Unix(sock.clone()),
        HttpConfig::default(),
    );
    (server, sock)
}

fn curl_saves_a_valid_capture<R: Runtime>() {
    let dir = temp_dir("curl");
    let capture = Capture::new();
    let (_server, sock) = http_on_unix::<R>(&capture, &dir);
    let out = dir.join("out.pcap");
    let mut curl = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--unix-socket"])
        .arg(&sock)
        .args(["-X", "POST", "http://localhost/capture", "-o"])
        .arg(&out)
        .spawn()
        .expect("curl is installed (CI installs it)");
    assert!(wait_until(Duration::from_secs(10), || capture
        .num_outputs()
        == 1));
    log(&capture, 25, 500);
    capture.close();
    assert!(curl.wait().unwrap().success(), "{}", R::NAME);
    let file = read::parse(&std::fs::read(&out).unwrap());
    assert_eq!(file.records.len(), 25);
}

/// `tcpdump -ddd 'udp port 53'` over a raw-IP file (tcpdump 4.99.3, libpcap 1.10.3), in
/// a query: spaces as `+`.
const UDP_53: &str = "23,48+0+0+0,84+0+0+240,21+0+6+96,48+0+0+6,21+0+17+17,40+0+0+40,21+14+0+53,40+0+0+42,21+12+13+53,48+0+0+0,84+0+0+240,21+0+10+64,48+0+0+9,21+0+8+17,40+0+0+6,69+6+0+8191,177+0+0+0,72+0+0+0,21+2+0+53,72+0+0+2,21+0+1+53,6+0+0+65535,6+0+0+0";

/// An IPv4 packet of `protocol` (17 UDP, 6 TCP) to port `port`, numbered `i`.
fn ipv4_to_port(i: u32, protocol: u8, port: u16) -> Vec<u8> {
    let mut packet = vec![0u8; 40];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&40u16.to_be_bytes());
    packet[9] = protocol;
    packet[12..16].copy_from_slice(&[100, 64, 0, 1]);
    packet[16..20].copy_from_slice(&[100, 64, 0, 2]);
    packet[20..22].copy_from_slice(&40_000u16.to_be_bytes());
    packet[22..24].copy_from_slice(&port.to_be_bytes());
    packet[36..40].copy_from_slice(&i.to_be_bytes());
    packet
}

fn curl_filters_with_bpf<R: Runtime>() {
    let dir = temp_dir("curl-bpf");
    let capture = Capture::new();
    let (_server, sock) = http_on_unix::<R>(&capture, &dir);
    let curl = |query: &str, out: &std::path::Path| {
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "-w",
                "%{http_code}",
                "--unix-socket",
            ])
            .arg(&sock)
            .args([
                "-X",
                "POST",
                &format!("http://localhost/capture?{query}"),
                "-o",
            ])
            .arg(out)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl is installed (CI installs it)")
    };
    let refused = dir.join("refused.txt");
    let bad = curl("bpf=2,21+1+0+0,6+0+0+0", &refused)
        .wait_with_output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "400", "{}", R::NAME);
    let reason = std::fs::read_to_string(&refused).unwrap();
    assert!(reason.contains("at instruction 0"), "{reason}");

    let out = dir.join("dns.pcap");
    let filtered = curl(&format!("format=raw&bpf={UDP_53}"), &out);
    assert!(wait_until(Duration::from_secs(10), || capture
        .num_outputs()
        == 1));
    for i in 0..60u32 {
        let (protocol, port) = match i % 3 {
            0 => (17, 53),
            1 => (17, 54),
            _ => (6, 53),
        };
        capture.log_packet(
            Path::FromPeer,
            SystemTime::now(),
            &ipv4_to_port(i, protocol, port),
        );
    }
    capture.close();
    let done = filtered.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "200", "{}", R::NAME);
    let kept: Vec<u32> = read::parse(&std::fs::read(&out).unwrap())
        .records
        .iter()
        .map(|r| u32::from_be_bytes(r.packet[36..40].try_into().unwrap()))
        .collect();
    assert_eq!(
        kept,
        (0..60).step_by(3).collect::<Vec<u32>>(),
        "{}",
        R::NAME
    );
    assert_eq!(capture.stats().dropped, 0, "rejected packets are not drops");
}

fn tshark_reads_pcap_over_ip<R: Runtime>() {
    let capture = Capture::new();
    let server = R::serve_pcap_over_ip(
        capture.clone(),
        Endpoint::Tcp(LOOPBACK_ANY.parse().unwrap()),
    );
    let Endpoint::Tcp(addr) = server.endpoint else {
        unreachable!()
    };
    let tshark = Command::new("timeout")
        .args([
            "60",
            "tshark",
            "-i",
            &format!("TCP@{addr}"),
            "-c",
            "10",
            "-T",
            "fields",
            "-e",
            "frame.len",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tshark is installed (CI installs it)");
    assert!(wait_until(Duration::from_secs(30), || capture
        .num_outputs()
        == 1));
    // Keep logging until tshark has its ten packets and leaves.
    let datapath = {
        let capture = capture.clone();
        std::thread::spawn(move || {
            for _ in 0..300 {
                log(&capture, 2, 98);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let output = tshark.wait_with_output().unwrap();
    assert!(output.status.success(), "{}: tshark failed", R::NAME);
    let lengths: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lengths.len(), 10);
    assert!(lengths.iter().all(|l| l == "100"), "{lengths:?}");
    capture.close();
    datapath.join().unwrap();
}

use std::io::{Read, Write};

macro_rules! conformance {
    ($runtime:ident, $rt:ty) => {
        mod $runtime {
            use super::*;

            #[test]
            fn writers_get_whole_streams() {
                pcapcast_tests::checked(|| {
                    writers_attached_at_different_moments_get_whole_streams::<$rt>()
                });
            }
            #[test]
            fn failing_writer_is_detached_alone() {
                pcapcast_tests::checked(|| a_failing_writer_is_detached_alone::<$rt>());
            }
            #[test]
            fn stalled_writer_loses_records_alone() {
                pcapcast_tests::checked(|| a_stalled_writer_loses_records_alone::<$rt>());
            }
            #[test]
            fn flush_interval() {
                pcapcast_tests::checked(|| records_are_flushed_after_the_interval::<$rt>());
            }
            #[test]
            fn http_over_unix() {
                let dir = temp_dir("http");
                http_streams_the_capture::<$rt>(Endpoint::Unix(dir.join("h.sock")), "localhost");
            }
            #[test]
            fn http_over_tcp() {
                http_streams_the_capture::<$rt>(
                    Endpoint::Tcp(LOOPBACK_ANY.parse().unwrap()),
                    "127.0.0.1",
                );
            }
            #[test]
            fn http_statuses_unix() {
                let dir = temp_dir("status");
                http_refuses_what_it_should::<$rt>(Endpoint::Unix(dir.join("s.sock")), "localhost");
            }
            #[test]
            fn http_statuses_tcp() {
                http_refuses_what_it_should::<$rt>(
                    Endpoint::Tcp(LOOPBACK_ANY.parse().unwrap()),
                    "localhost",
                );
            }
            #[test]
            fn tcp_host_and_token() {
                pcapcast_tests::checked(|| tcp_checks_host_and_token::<$rt>());
            }
            #[test]
            fn slow_headers() {
                pcapcast_tests::checked(|| slow_headers_are_cut_off::<$rt>());
            }
            #[test]
            fn private_unix_sockets() {
                pcapcast_tests::checked(|| unix_sockets_are_private::<$rt>());
            }
            #[test]
            fn pcap_over_ip_tcp() {
                pcap_over_ip_streams_at_once::<$rt>(Endpoint::Tcp(LOOPBACK_ANY.parse().unwrap()));
            }
            #[test]
            fn pcap_over_ip_unix() {
                let dir = temp_dir("poip");
                pcap_over_ip_streams_at_once::<$rt>(Endpoint::Unix(dir.join("p.sock")));
            }
            #[test]
            fn curl() {
                pcapcast_tests::checked(|| curl_saves_a_valid_capture::<$rt>());
            }
            #[test]
            fn pcap_over_ip_raw() {
                pcapcast_tests::checked(|| pcap_over_ip_serves_raw_ip::<$rt>());
            }
            #[test]
            fn curl_bpf() {
                pcapcast_tests::checked(|| curl_filters_with_bpf::<$rt>());
            }
            #[test]
            fn tshark_pcap_over_ip() {
                pcapcast_tests::checked(|| tshark_reads_pcap_over_ip::<$rt>());
            }
            #[test]
            fn curl_history() {
                pcapcast_tests::checked(|| history::curl_gets_history_then_live::<$rt>());
            }
            #[test]
            fn snapshot_over_http() {
                pcapcast_tests::checked(|| history::a_snapshot_ends_by_itself::<$rt>());
            }
            #[test]
            fn pcap_over_ip_history() {
                pcapcast_tests::checked(|| history::pcap_over_ip_starts_with_history::<$rt>());
            }
            #[test]
            fn switched_off() {
                pcapcast_tests::checked(|| {
                    history::a_capture_switched_off_refuses_with_403::<$rt>()
                });
            }
            #[test]
            fn push_history() {
                pcapcast_tests::checked(|| history::push_starts_with_history::<$rt>());
            }
        }
    };
}

conformance!(smol, pcapcast_tests::Smol);
conformance!(tokio, pcapcast_tests::Tokio);
