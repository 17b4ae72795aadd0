//! Listeners for the capture endpoints: a Unix socket only its owner can open and only
//! its owner (or root, or users allowed) may talk to, or TCP; accepting that rides out
//! the errors a retry can cure.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pcapcast_core::endpoint::Peer;
use pcapcast_core::refusals::RefusalLog;
use rustix::io::Errno;

use crate::runtime::StdStream;
use crate::wait::{readable, sleep_until};
use crate::Runtime;

/// The room for a path in a Unix socket address (`sun_path`), its final NUL included.
const SUN_PATH_LEN: usize = 108;

/// How long accepting pauses when descriptors or memory run out.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Where a capture endpoint listens, on runtime `R`.
#[derive(Debug)]
pub struct Listener<R: Runtime> {
    socket: Socket,
    readiness: R::Readiness,
    runtime: R,
    /// Unix peers accepted besides this process's user and root.
    allowed_uids: Vec<u32>,
    refusals: Mutex<RefusalLog>,
}

#[derive(Debug)]
enum Socket {
    /// Its file is removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl<R: Runtime> Listener<R> {
    /// Listens on a Unix socket at `path` that only this user can open (mode 0600). The
    /// socket is bound inside a fresh directory beside `path` that only this user can
    /// enter (mode 0700), restricted there, then renamed into place: whatever the umask,
    /// no one else can connect before its mode is set. A stale socket left by a dead
    /// daemon is replaced; a live one, or any other file, is an error. Connections are
    /// accepted from this user and root only, unless [`Listener::allow_uids`] says more.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when a daemon already listens there, `AlreadyExists` when `path` is
    /// not a socket, `NotFound` when its directory does not exist, or the error of
    /// mkdir, bind, chmod or rename; each message names the path.
    ///
    /// # Panics
    ///
    /// On tokio, outside a tokio runtime: the socket is registered with the runtime's
    /// reactor at once (tokio panics with "there is no reactor running"). Bind it inside
    /// `Runtime::block_on` or a task. smol's reactor starts by itself.
    pub fn bind_unix(path: impl AsRef<FsPath>) -> io::Result<Listener<R>> {
        let path = path.as_ref();
        let listener = private_bind(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot listen on {}: {e}", path.display()),
            )
        })?;
        Listener::register(Socket::Unix(listener, path.to_owned()))
    }

    /// Also accepts Unix-socket connections from these users. By default only the
    /// daemon's own user and root may connect, whatever the socket file's mode says; a
    /// peer refused is closed at once, and refusals are logged at most once per
    /// [`REFUSAL_LOG_INTERVAL`](pcapcast_core::refusals::REFUSAL_LOG_INTERVAL) with
    /// their count. TCP listeners ignore it.
    #[must_use]
    pub fn allow_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Listener<R> {
        self.allowed_uids.extend(uids);
        self
    }

    /// Listens on TCP.
    ///
    /// # Errors
    ///
    /// The error of bind.
    pub async fn bind_tcp(addr: SocketAddr) -> io::Result<Listener<R>> {
        Listener::register(Socket::Tcp(TcpListener::bind(addr)?))
    }

    fn register(socket: Socket) -> io::Result<Listener<R>> {
        let fd = match &socket {
            Socket::Unix(l, _) => {
                l.set_nonblocking(true)?;
                l.as_fd().try_clone_to_owned()?
            }
            Socket::Tcp(l) => {
                l.set_nonblocking(true)?;
                l.as_fd().try_clone_to_owned()?
            }
        };
        let runtime = R::default();
        Ok(Listener {
            readiness: runtime.readiness(fd)?,
            socket,
            runtime,
            allowed_uids: Vec::new(),
            refusals: Mutex::new(RefusalLog::default()),
        })
    }

    /// The local TCP address, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.socket {
            Socket::Tcp(l) => l.local_addr().ok(),
            Socket::Unix(..) => None,
        }
    }

    /// Where it listens, for logs and messages: `unix:PATH` or `tcp:ADDR`.
    pub fn describe(&self) -> String {
        match (&self.socket, self.tcp_addr()) {
            (Socket::Unix(_, path), _) => format!("unix:{}", path.display()),
            (Socket::Tcp(_), Some(addr)) => format!("tcp:{addr}"),
            (Socket::Tcp(_), None) => "tcp:?".into(),
        }
    }

    /// Accepts a connection and says who is at the other end: its uid and pid on a Unix
    /// socket, where the system tells them, its address on TCP.
    ///
    /// # Errors
    ///
    /// The error of accept.
    pub async fn accept(&self) -> io::Result<(R::Stream, Peer)> {
        let (stream, peer) = self.accept_std().await?;
        Ok((self.runtime.stream(stream)?, peer))
    }

    async fn accept_std(&self) -> io::Result<(StdStream, Peer)> {
        loop {
            let accepted = match &self.socket {
                Socket::Unix(l, _) => l.accept().map(|(s, _)| {
                    let peer = unix_peer(&s);
                    (StdStream::Unix(s), peer)
                }),
                Socket::Tcp(l) => l.accept().map(|(s, a)| (StdStream::Tcp(s), Peer::Tcp(a))),
            };
            match accepted {
                Ok((stream, peer)) if !self.uid_allowed(&peer) => {
                    drop(stream);
                    self.refuse(&peer);
                }
                Ok((stream, peer)) => {
                    set_nonblocking(&stream)?;
                    return Ok((stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    readable(&self.runtime, &self.readiness).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Accepts the next connection, riding out the errors after which accepting again
    /// can succeed. A client gone before it was accepted, or a network error that
    /// accept(2) passes on from the pending connection, is skipped at once; when
    /// descriptors or memory run out it pauses, since the connection still waiting
    /// would make accept fail again at once.
    pub(crate) async fn accept_next(&self) -> io::Result<(StdStream, Peer)> {
        loop {
            let e = match self.accept_std().await {
                Ok(accepted) => return Ok(accepted),
                Err(e) => e,
            };
            match Errno::from_io_error(&e) {
                Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    sleep_until::<R>(Instant::now() + ACCEPT_PAUSE).await;
                }
                Some(
                    Errno::NETDOWN
                    | Errno::PROTO
                    | Errno::NOPROTOOPT
                    | Errno::HOSTDOWN
                    | Errno::NONET
                    | Errno::HOSTUNREACH
                    | Errno::OPNOTSUPP
                    | Errno::NETUNREACH,
                ) => tracing::debug!(error = %e, "accept failed"),
                _ if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
                {
                    tracing::debug!(error = %e, "accept failed")
                }
                _ => return Err(e),
            }
        }
    }

    /// Whether a peer may connect: on a Unix socket, one whose uid the system told and
    /// that is this process's, root's or an allowed one.
    fn uid_allowed(&self, peer: &Peer) -> bool {
        match peer {
            Peer::Unix { uid: Some(uid), .. } => {
                *uid == 0
                    || *uid == rustix::process::getuid().as_raw()
                    || self.allowed_uids.contains(uid)
            }
            Peer::Unix { uid: None, .. } => false,
            Peer::Tcp(_) | Peer::Unknown => true,
        }
    }

    /// Logs a refused peer, whose connection was dropped (closed) already.
    fn refuse(&self, peer: &Peer) {
        let mut refusals = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(refused) = refusals.refused(Instant::now()) {
            tracing::warn!(
                %peer,
                refused,
                "connection refused: another user (allow it with Listener::allow_uids)"
            );
        }
    }

    /// The runtime this listener was registered with.
    pub(crate) fn runtime(&self) -> &R {
        &self.runtime
    }
}

impl<R: Runtime> Drop for Listener<R> {
    fn drop(&mut self) {
        if let Socket::Unix(_, path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn unix_peer(stream: &UnixStream) -> Peer {
    let cred = rustix::net::sockopt::socket_peercred(stream).ok();
    Peer::Unix {
        uid: cred.map(|c| c.uid.as_raw()),
        pid: cred.map(|c| c.pid.as_raw_nonzero().get()),
    }
}

fn set_nonblocking(stream: &StdStream) -> io::Result<()> {
    match stream {
        StdStream::Unix(s) => s.set_nonblocking(true),
        StdStream::Tcp(s) => s.set_nonblocking(true),
    }
}

/// A second descriptor for a connection, to watch it while the first is written to.
pub(crate) fn duplicate(stream: &StdStream) -> io::Result<OwnedFd> {
    match stream {
        StdStream::Unix(s) => s.as_fd().try_clone_to_owned(),
        StdStream::Tcp(s) => s.as_fd().try_clone_to_owned(),
    }
}

/// Binds a Unix socket at `path` with mode 0600, so that no one else could ever
/// connect to it: bound and chmodded in a fresh 0700 directory beside `path`, then
/// renamed into place. (A umask would do it too, but it is the whole process's, and
/// other threads create files meanwhile.)
fn private_bind(path: &FsPath) -> io::Result<UnixListener> {
    // Bound under a short name and renamed, a longer path would work here but no
    // client could connect to it.
    if path.as_os_str().len() >= SUN_PATH_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a Unix socket's path must be shorter than {SUN_PATH_LEN} bytes"),
        ));
    }
    check_unix_path(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => FsPath::new("."),
    };
    if !parent.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("its directory {} does not exist", parent.display()),
        ));
    }
    let dir = private_dir(parent)?;
    let inner = dir.join("s");
    let bound = UnixListener::bind(&inner).and_then(|listener| {
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        Ok(listener)
    });
    if bound.is_err() {
        let _ = std::fs::remove_file(&inner);
    }
    let _ = std::fs::remove_dir(&dir);
    bound
}

/// Makes a new directory in `parent` that only this user can enter, under a name
/// nobody can have made first (one that exists is skipped, never reused).
fn private_dir(parent: &FsPath) -> io::Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
    for _ in 0..16 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!(".pcapcast-{}-{nanos:x}-{n}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// Refuses to replace a live socket or a file that is not a socket; removes a stale one.
fn check_unix_path(path: &FsPath) -> io::Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a daemon already listens on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}
