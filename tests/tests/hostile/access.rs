//! Who gets in: other users racing the socket's creation or let in by a careless mode,
//! absolute-form targets naming another host, malformed tokens, and a flood of guesses.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pcapcast_core::{Capture, Path};
use pcapcast_tests::{connect, exchange, temp_dir, wait_until, Endpoint, HttpConfig, Runtime};
use rustix::fs::Mode;
use rustix::process::{Gid, Uid};

/// The unprivileged user the tests act as (`nobody`).
const OTHER_UID: u32 = 65534;

/// How many times the daemon's socket is made while another user knocks.
const STARTS: usize = 1000;

/// Makes the calling thread, and it alone, user and group 65534 with no capabilities:
/// Linux keeps credentials per thread, and the raw calls change only this one.
fn become_other_user() {
    rustix::thread::set_thread_groups(&[]).expect("drop groups (the tests run as root)");
    let gid = Gid::from_raw(OTHER_UID);
    rustix::thread::set_thread_res_gid(gid, gid, gid).expect("setresgid");
    let uid = Uid::from_raw(OTHER_UID);
    rustix::thread::set_thread_res_uid(uid, uid, uid).expect("setresuid");
}

/// Every name in `dir` and one level below it, as another user sees them.
fn names_in(dir: &FsPath) -> Vec<PathBuf> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if let Ok(inner) = std::fs::read_dir(&path) {
            names.extend(inner.flatten().map(|e| e.path()));
        }
        names.push(path);
    }
    names
}

/// Under `umask 000`, another user spins `connect()` on every name in the socket's
/// directory while the daemon's socket is made [`STARTS`] times: it must never get a connection, so
/// never a capture (the uid check, a second wall, is kept out of this by counting
/// connections, not answers).
pub(crate) fn the_socket_is_never_open_to_others_while_it_is_made<R: Runtime>() {
    let dir = temp_dir("race");
    let previous = rustix::process::umask(Mode::empty());
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let spinner = {
        let (dir, stop, attempts) = (dir.clone(), Arc::clone(&stop), Arc::clone(&attempts));
        std::thread::spawn(move || {
            become_other_user();
            let mut connected = Vec::new();
            let mut seen: Vec<PathBuf> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                for name in names_in(&dir) {
                    if !seen.contains(&name) {
                        seen.push(name);
                    }
                }
                // Names seen once are tried many times over between listings: a
                // predictable temporary name comes back at every start.
                for _ in 0..100 {
                    for name in &seen {
                        attempts.fetch_add(1, Ordering::Relaxed);
                        if UnixStream::connect(name).is_ok() {
                            connected.push(name.clone());
                        }
                    }
                }
            }
            connected
        })
    };
    for _ in 0..STARTS {
        R::bind_unix_once(&dir.join("d.sock"));
    }
    stop.store(true, Ordering::Relaxed);
    let connected = spinner.join().expect("the spinning thread");
    rustix::process::umask(previous);
    assert!(
        attempts.load(Ordering::Relaxed) > STARTS,
        "{}: the other user hardly tried",
        R::NAME
    );
    assert!(
        connected.is_empty(),
        "{}: another user connected to {connected:?}",
        R::NAME
    );
}

/// curl as user 65534 on `socket`, asking for a capture.
fn curl_as_other_user(socket: &FsPath) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(socket)
        .args(["-X", "POST", "http://localhost/capture", "-o", "/dev/null"])
        .output()
        .expect("setpriv and curl (the tests run as root, as CI does)")
}

/// A socket file made 0666 by hand still refuses another user: the daemon checks the
/// peer's uid and closes the connection unanswered. A user allowed by
/// `Listener::allow_uids` gets its capture.
pub(crate) fn the_uid_check_refuses_another_user_whatever_the_mode<R: Runtime>() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("uid");
    let capture = Capture::new();
    let server = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("open.sock")),
        HttpConfig::default(),
    );
    let Endpoint::Unix(socket) = server.endpoint.clone() else {
        unreachable!()
    };
    let open = std::fs::Permissions::from_mode(0o666);
    std::fs::set_permissions(&socket, open.clone()).unwrap();
    let answer = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            become_other_user();
            // The kernel lets it connect (mode 0666); the daemon must not answer.
            let mut stream = UnixStream::connect(&socket).expect("connect as another user");
            let request = b"POST /capture HTTP/1.1\r\nHost: localhost\r\n\r\n";
            let _ = stream.write_all(request);
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).map(|_| answer)
        })
        .join()
        .expect("the other user's thread")
    };
    // Closed unanswered: an empty read, or a reset when the request arrived after the
    // close.
    match answer {
        Ok(bytes) => assert!(
            bytes.is_empty(),
            "{}: another user got {:?}",
            R::NAME,
            String::from_utf8_lossy(&bytes)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{}", R::NAME),
    }
    // And curl, as such a user would run it, gets nothing either.
    let out = curl_as_other_user(&socket);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000", "{}", R::NAME);
    assert_eq!(capture.num_outputs(), 0);
    drop(server);

    let allowed = R::serve_http(
        capture.clone(),
        Endpoint::Unix(dir.join("allowed.sock")),
        HttpConfig {
            allowed_uids: vec![OTHER_UID],
            ..HttpConfig::default()
        },
    );
    let Endpoint::Unix(socket) = allowed.endpoint.clone() else {
        unreachable!()
    };
    std::fs::set_permissions(&socket, open).unwrap();
    let curl = std::thread::spawn(move || curl_as_other_user(&socket));
    assert!(
        wait_until(Duration::from_secs(5), || capture.num_outputs() == 1),
        "{}: the allowed user got no capture",
        R::NAME
    );
    capture.close();
    let out = curl.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", R::NAME);
}

fn tcp_server<R: Runtime>(capture: &Capture) -> pcapcast_tests::Server {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    R::serve_http(
        capture.clone(),
        Endpoint::Tcp(loopback),
        HttpConfig {
            token: Some("s3cret".into()),
            ..HttpConfig::default()
        },
    )
}

/// Over real TCP: an absolute-form target naming another host is refused even with a
/// good Host header and token; `Bearer  TOKEN` (two spaces) is no token; a thousand
/// pipelined guesses get one 401, then the connection closes.
pub(crate) fn tokens_and_authorities_are_checked_exactly<R: Runtime>() {
    let capture = Capture::new();
    let server = tcp_server::<R>(&capture);
    let ep = &server.endpoint;
    let evil = b"POST http://evil.example/capture HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer s3cret\r\nConnection: close\r\n\r\n";
    let answer = exchange(ep, evil).unwrap();
    let reason = String::from_utf8_lossy(&answer.body);
    assert_eq!(answer.status, 403, "{}: {reason}", R::NAME);
    assert!(reason.contains("authority"), "{}: {reason}", R::NAME);

    let two_spaces = b"POST /capture HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer  s3cret\r\nConnection: close\r\n\r\n";
    assert_eq!(exchange(ep, two_spaces).unwrap().status, 401, "{}", R::NAME);

    let mut guesses = Vec::new();
    for i in 0..1000 {
        let guess = format!(
            "POST /capture HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer guess{i}\r\n\r\n"
        );
        guesses.extend_from_slice(guess.as_bytes());
    }
    let mut stream = connect(ep).unwrap();
    // The server stops reading after the first guess: what it never read may make the
    // rest of the write fail, which is the point.
    let _ = stream.write_all(&guesses);
    let mut answers = Vec::new();
    let _ = stream.read_to_end(&mut answers);
    let text = String::from_utf8_lossy(&answers);
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "{}: {text:.300}",
        R::NAME
    );
    assert!(text.starts_with("HTTP/1.1 401"), "{}: {text:.300}", R::NAME);

    // The right token still works afterwards.
    let client = {
        let ep = ep.clone();
        std::thread::spawn(move || {
            pcapcast_tests::post(
                &ep,
                "/capture",
                "localhost",
                "Authorization: Bearer s3cret\r\n",
            )
            .unwrap()
        })
    };
    assert!(wait_until(Duration::from_secs(5), || capture.num_outputs() == 1));
    capture.log_packet(Path::FromPeer, SystemTime::now(), &[0x45; 40]);
    capture.close();
    assert_eq!(client.join().unwrap().status, 200, "{}", R::NAME);
}

#[test]
fn bind_errors_name_the_path() {
    let dir = temp_dir("bind-error");
    let socket = dir.join("missing").join("x.sock");
    let e = pcapcast_smol::Listener::bind_unix(&socket).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let message = e.to_string();
    assert!(message.contains(socket.to_str().unwrap()), "{message}");
    assert!(
        message.contains(dir.join("missing").to_str().unwrap()),
        "{message}"
    );
}
