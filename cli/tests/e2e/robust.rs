//! Captures that do not end as asked: a full disk, daemons that die or send broken
//! streams, servers that are no pcapcast, bad socket paths, a reader that leaves. Each gets its exit status, one clear line, and a file that
//! ends on a whole record.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use pcapcast_core::{Encoder, Options};
use pcapcast_tests::{temp_dir, wait_until};

use super::{exit_within, pcapcast, signal, Demo, PCAPCAST};

/// A file system mounted for a test, unmounted when dropped, passed or failed.
struct Mounted(PathBuf);

impl Mounted {
    /// A 2 MiB tmpfs at `dir`; where tmpfs cannot be mounted, a loop-mounted ext2 image
    /// of that size. The tests run as root, as CI does: failing both fails the test.
    fn small_disk(dir: &Path) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let tmpfs = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount runs");
        if tmpfs.success() {
            return Mounted(dir.to_owned());
        }
        let image = dir.with_extension("img");
        let file = std::fs::File::create(&image).unwrap();
        file.set_len(2 << 20).unwrap();
        let made = Command::new("mkfs.ext2")
            .args(["-q", "-F"])
            .arg(&image)
            .status()
            .expect("mkfs.ext2 runs");
        assert!(made.success(), "mkfs.ext2");
        let looped = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            looped.success(),
            "neither a tmpfs nor a loop image could be mounted"
        );
        Mounted(dir.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

pub(super) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The number after `before` in `text`.
fn number_after(text: &str, before: &str) -> u64 {
    let at = text
        .rfind(before)
        .unwrap_or_else(|| panic!("{before:?} in {text}"))
        + before.len();
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a number after {before:?}: {text}"))
}

/// capinfos reads the file with no error (no record cut short); its packet count.
pub(super) fn capinfos_count(file: &Path) -> u64 {
    let out = Command::new("capinfos")
        .args(["-M", "-c"])
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "capinfos: {}", stderr(&out));
    number_after(
        &String::from_utf8_lossy(&out.stdout),
        "Number of packets:   ",
    )
}

pub(super) fn a_full_disk_leaves_whole_records_and_true_counts(runtime: &str) {
    let dir = temp_dir("full");
    let disk = Mounted::small_disk(&dir.join("disk"));
    let demo = Demo::start(runtime, &dir, &["--rate", "3000"]);
    let file = disk.0.join("full.pcap");
    let out = pcapcast(&[
        "capture",
        "--runtime",
        runtime,
        "--connect",
        &demo.connect(),
        "--stats",
        "-o",
        file.to_str().unwrap(),
    ]);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{runtime}: {said}");
    let failure = said.lines().last().unwrap();
    assert!(
        failure.starts_with(&format!(
            "pcapcast: writing {} failed: No space left on device",
            file.display()
        )),
        "{failure}"
    );
    let packets = capinfos_count(&file);
    assert!(packets > 1000, "{runtime}: the disk held {packets} packets");
    assert_eq!(number_after(failure, "it holds the "), packets, "{said}");
    let counts = said.lines().rfind(|l| l.contains(" packets, ")).unwrap();
    assert_eq!(
        number_after(counts, "pcapcast: "),
        packets,
        "the live line: {said}"
    );
    assert_eq!(
        number_after(counts, "packets, "),
        std::fs::metadata(&file).unwrap().len(),
        "bytes"
    );
}

/// A server that answers one capture request with `response`, then closes.
fn serve_once(response: Vec<u8>) -> (String, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("tcp:{}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8; 1];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
            request.push(byte[0]);
        }
        let _ = stream.write_all(&response);
    });
    (target, server)
}

fn chunk(bytes: &[u8]) -> Vec<u8> {
    [format!("{:x}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat()
}

const CHUNKED_200: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.tcpdump.pcap\r\nTransfer-Encoding: chunked\r\n\r\n";
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The seed format's file header and two records of 40-byte packets.
fn header_and_records() -> (Vec<u8>, Vec<u8>) {
    let encoder = Encoder::new(Options::default());
    let (mut header, mut records) = (BytesMut::new(), BytesMut::new());
    encoder.put_header(&mut header);
    for _ in 0..2 {
        let when = SystemTime::now();
        encoder.put_record(
            &mut records,
            pcapcast_core::Path::FromPeer,
            when,
            &[0x45; 40],
        );
    }
    (header.to_vec(), records.to_vec())
}

/// `pcapcast capture` from a server answering `response` into a file: its output, the
/// file's bytes (None when it was removed).
fn capture_from(runtime: &str, response: Vec<u8>) -> (Output, Option<Vec<u8>>) {
    let (target, server) = serve_once(response);
    let file = temp_dir("fake").join("out.pcap");
    let out = Command::new("timeout")
        .args([
            "30",
            PCAPCAST,
            "capture",
            "--runtime",
            runtime,
            "--connect",
            &target,
            "-o",
        ])
        .arg(&file)
        .output()
        .unwrap();
    server.join().unwrap();
    (out, std::fs::read(&file).ok())
}

pub(super) fn broken_streams_exit_2_on_a_whole_record(runtime: &str) {
    let (header, records) = header_and_records();
    let record = records.len() / 2;
    let half = &records[..record + record / 2];
    let cases: [(&str, Vec<u8>, &str, Option<usize>); 4] = [
        (
            "a 200 and no file header",
            [CHUNKED_200, LAST_CHUNK].concat(),
            "the stream ended before its file header",
            None,
        ),
        (
            "a record cut off, then a clean end",
            [CHUNKED_200, &chunk(&header), &chunk(half), LAST_CHUNK].concat(),
            "the stream ended in the middle of a record",
            Some(header.len() + record),
        ),
        (
            "half a record, then the connection closes",
            [CHUNKED_200, &chunk(&header), &chunk(half)].concat(),
            "the daemon went away",
            Some(header.len() + record),
        ),
        (
            "bad chunking",
            [CHUNKED_200, &chunk(&header), b"zz\r\n", &records].concat(),
            "the daemon went away",
            Some(header.len()),
        ),
    ];
    for (case, response, says, kept) in cases {
        let (out, file) = capture_from(runtime, response);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{runtime}, {case}: {said}");
        assert_eq!(said.lines().count(), 1, "{case}: {said}");
        assert!(said.contains(says), "{runtime}, {case}: {said}");
        assert_eq!(
            file.as_ref().map(Vec::len),
            kept,
            "{runtime}, {case}: the file"
        );
        if let Some(kept) = kept {
            assert_eq!(file.unwrap(), [&header[..], &records[..]].concat()[..kept]);
        }
    }
    // A clean end after a whole record is a whole capture.
    let whole = [CHUNKED_200, &chunk(&header), &chunk(&records), LAST_CHUNK].concat();
    let (out, file) = capture_from(runtime, whole);
    assert_eq!(out.status.code(), Some(0), "{runtime}: {}", stderr(&out));
    assert_eq!(file.unwrap(), [header, records].concat());
}

pub(super) fn a_daemon_killed_mid_capture_exits_2(runtime: &str) {
    let dir = temp_dir("killed");
    let mut demo = Demo::start(runtime, &dir, &["--rate", "500"]);
    let file = dir.join("killed.pcap");
    let mut capture = Command::new(PCAPCAST)
        .args([
            "capture",
            "--runtime",
            runtime,
            "--connect",
            &demo.connect(),
            "-o",
        ])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() > 10_000)
    }));
    signal(&demo.child, rustix::process::Signal::KILL);
    let status = exit_within(&mut capture, Duration::from_secs(10));
    let mut said = String::new();
    capture
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut said)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{runtime}: {said}");
    assert!(said.contains("the daemon went away"), "{said}");
    let packets = number_after(&said, "last whole record, ");
    assert_eq!(capinfos_count(&file), packets, "{runtime}: {said}");
    let _ = demo.child.wait();
}

pub(super) fn a_web_servers_error_page_is_one_line(runtime: &str) {
    let page = "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: 501</p>\n        <p>Message: Unsupported method ('POST').</p>\n        <p>Error code explanation: 501 - Server does not support this operation.</p>\n    </body>\n</html>\n";
    let response = format!(
        "HTTP/1.1 501 Unsupported method ('POST')\r\nContent-Type: text/html;charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
        page.len()
    );
    let (out, file) = capture_from(runtime, response.into_bytes());
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{runtime}: {said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.len() < 400, "{said}");
    assert!(
        said.contains("501") && said.contains("Unsupported method") && !said.contains('<'),
        "{said}"
    );
    assert!(
        said.contains("is this a pcapcast capture endpoint?"),
        "{said}"
    );
    assert_eq!(file, None, "no empty file left");
}

pub(super) fn a_socket_path_that_is_no_socket_is_named(runtime: &str) {
    let dir = temp_dir("nosocket");
    let file = dir.join("plain");
    std::fs::write(&file, "not a socket").unwrap();
    for (path, what) in [(&file, "is a regular file"), (&dir, "is a directory")] {
        let target = format!("unix:{}", path.display());
        let out = pcapcast(&[
            "capture",
            "--runtime",
            runtime,
            "--connect",
            &target,
            "-o",
            "/dev/null",
        ]);
        let said = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(
            said.contains(&format!("{target} {what}, not a socket")),
            "{runtime}: {said}"
        );
    }
}

pub(super) fn a_reader_that_leaves_ends_a_capture_with_nothing_to_write(runtime: &str) {
    let dir = temp_dir("hangup");
    let demo = Demo::start(runtime, &dir, &[]);
    let mut capture = Command::new(PCAPCAST)
        .args([
            "capture",
            "--runtime",
            runtime,
            "--connect",
            &demo.connect(),
        ])
        .args(["-f", "udp port 9", "-o", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // As `| head -c 1`: one byte of the file header, then the reader is gone.
    let mut stdout = capture.stdout.take().unwrap();
    stdout.read_exact(&mut [0u8; 1]).unwrap();
    drop(stdout);
    let left = Instant::now();
    let status = exit_within(&mut capture, Duration::from_secs(10));
    let took = left.elapsed();
    assert!(
        status.success(),
        "{runtime}: a closed pipe is a normal end: {status}"
    );
    assert!(
        took < Duration::from_secs(3),
        "{runtime}: ended {took:?} after its reader"
    );
}

#[test]
fn capture_help_documents_the_exit_status() {
    let help = pcapcast(&["capture", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    for code in [
        "  0  the capture is whole",
        "  1  nothing was captured",
        "  2  the capture was cut short",
        "  3  writing the output failed",
    ] {
        assert!(text.contains(code), "{code}: {text}");
    }
    let usage = pcapcast(&["capture", "--no-such-option"]);
    assert_eq!(
        usage.status.code(),
        Some(1),
        "bad usage is 1, not clap's 2 (a cut capture)"
    );
}

/// A failed attach leaves an existing capture as it was: no daemon, a refusal, several
/// daemons none of which is there. A capture that is answered replaces it.
pub(super) fn a_failed_attach_keeps_the_output_file(runtime: &str) {
    let dir = temp_dir("keep-file");
    let file = dir.join("precious.pcap");
    let precious = b"an earlier capture, 1.7 MB in real life".to_vec();
    let capture = |connects: &[String]| {
        std::fs::write(&file, &precious).unwrap();
        let mut command = Command::new("timeout");
        command.args(["30", PCAPCAST, "capture", "-q", "--runtime", runtime]);
        for connect in connects {
            command.args(["--connect", connect]);
        }
        let out = command.arg("-o").arg(&file).output().unwrap();
        (out.status.code(), std::fs::read(&file).unwrap_or_default())
    };
    let missing = format!("unix:{}", dir.join("nobody.sock").display());
    let (code, kept) = capture(std::slice::from_ref(&missing));
    assert_eq!(
        (code, kept.as_slice()),
        (Some(1), precious.as_slice()),
        "{runtime}: no daemon"
    );
    let refusal = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nno.\n".to_vec();
    let (target, server) = serve_once(refusal);
    let (code, kept) = capture(&[target]);
    server.join().unwrap();
    assert_eq!(
        (code, kept.as_slice()),
        (Some(1), precious.as_slice()),
        "{runtime}: a 401"
    );
    let other = format!("unix:{}", dir.join("nobody-else.sock").display());
    let (code, kept) = capture(&[missing, other]);
    assert_ne!(code, Some(0), "{runtime}: several daemons, none there");
    assert_eq!(kept, precious, "{runtime}: several daemons, none there");
    // Answered: the file is the capture now.
    let (header, records) = header_and_records();
    let body = [CHUNKED_200, &chunk(&header), &chunk(&records), LAST_CHUNK].concat();
    let (target, server) = serve_once(body);
    let (code, written) = capture(&[target]);
    server.join().unwrap();
    assert_eq!(code, Some(0), "{runtime}");
    assert_eq!(
        written,
        [header, records].concat(),
        "{runtime}: the capture replaced it"
    );
}
