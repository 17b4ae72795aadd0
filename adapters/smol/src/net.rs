//! Listeners for the capture endpoints: a Unix socket only its owner can open, or TCP.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path as FsPath, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};

use async_io::Async;
use futures_lite::{AsyncRead, AsyncWrite};
use pcapcast_core::endpoint::Peer;
use rustix::io::Errno;

/// Where a capture endpoint listens.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket, mode 0600; its file is removed when the listener is dropped.
    Unix(Async<UnixListener>, PathBuf),
    /// A TCP socket.
    Tcp(Async<TcpListener>),
}

/// An accepted connection.
///
/// Streams are async-io's `Async<UnixStream>` and `Async<TcpStream>`. async-net's
/// wrappers were used first: with them, about one run in ten of the 256-output test
/// left an HTTP response over a Unix socket stalled for good (its bytes buffered in
/// hyper, no write interest left in epoll, the client waiting in `recv`). With
/// `Async<UnixStream>` it passed 20 runs of 20; TCP, which never stalled there, was
/// moved too so that both kinds take the same path. The mechanism inside the wrapper
/// was not pinned down.
#[derive(Debug)]
pub enum Connection {
    /// Over a Unix socket.
    Unix(Async<UnixStream>),
    /// Over TCP.
    Tcp(Async<TcpStream>),
}

impl Listener {
    /// Listens on a Unix socket at `path` that only this user can open (mode 0600). The
    /// socket is made under a temporary name, restricted, then renamed into place, so
    /// that no one can connect before its mode is set. A stale socket left by a dead
    /// daemon is replaced; a live one, or any other file, is an error.
    ///
    /// # Errors
    ///
    /// `AddrInUse` when a daemon already listens there, `AlreadyExists` when `path` is
    /// not a socket, or the error of bind, chmod or rename.
    pub fn bind_unix(path: impl AsRef<FsPath>) -> io::Result<Listener> {
        let path = path.as_ref();
        check_unix_path(path)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let listener = Async::new(listener)?;
        Ok(Listener::Unix(listener, path.to_owned()))
    }

    /// Listens on TCP.
    ///
    /// # Errors
    ///
    /// The error of bind.
    pub async fn bind_tcp(addr: SocketAddr) -> io::Result<Listener> {
        Ok(Listener::Tcp(Async::<TcpListener>::bind(addr)?))
    }

    /// The local TCP address, for a TCP listener.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.get_ref().local_addr().ok(),
            Listener::Unix(..) => None,
        }
    }

    /// Where it listens, for logs and messages: `unix:PATH` or `tcp:ADDR`.
    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
            Listener::Tcp(l) => l
                .get_ref()
                .local_addr()
                .map_or_else(|_| "tcp:?".into(), |a| format!("tcp:{a}")),
        }
    }

    /// Accepts a connection and says who is at the other end.
    ///
    /// # Errors
    ///
    /// The error of accept.
    pub async fn accept(&self) -> io::Result<(Connection, Peer)> {
        match self {
            Listener::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                let peer = match rustix::net::sockopt::socket_peercred(&stream) {
                    Ok(cred) => Peer::Unix {
                        uid: Some(cred.uid.as_raw()),
                        pid: Some(cred.pid.as_raw_nonzero().get()),
                    },
                    Err(_) => Peer::Unix {
                        uid: None,
                        pid: None,
                    },
                };
                Ok((Connection::Unix(stream), peer))
            }
            Listener::Tcp(listener) => {
                let (stream, addr) = listener.accept().await?;
                Ok((Connection::Tcp(stream), Peer::Tcp(addr)))
            }
        }
    }
}

impl Listener {
    /// Accepts the next connection, riding out the errors after which accepting again
    /// can succeed. A client gone before it was accepted, or a network error that
    /// accept(2) passes on from the pending connection, is skipped at once; when
    /// descriptors or memory run out it pauses, since the connection still waiting
    /// would make accept fail again at once.
    pub(crate) async fn accept_next(&self) -> io::Result<(Connection, Peer)> {
        loop {
            let e = match self.accept().await {
                Ok(accepted) => return Ok(accepted),
                Err(e) => e,
            };
            match Errno::from_io_error(&e) {
                Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    async_io::Timer::after(ACCEPT_PAUSE).await;
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
                ) => {
                    tracing::debug!(error = %e, "accept failed");
                }
                _ if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) =>
                {
                    tracing::debug!(error = %e, "accept failed");
                }
                _ => return Err(e),
            }
        }
    }
}

/// How long accepting pauses when descriptors or memory run out.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl Connection {
    /// A second descriptor for the socket.
    pub(crate) fn duplicate_fd(&self) -> io::Result<OwnedFd> {
        match self {
            Connection::Unix(s) => s.as_fd().try_clone_to_owned(),
            Connection::Tcp(s) => s.as_fd().try_clone_to_owned(),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
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

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Connection::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Connection::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Connection::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Connection::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Unix(s) => Pin::new(s).poll_flush(cx),
            Connection::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Connection::Unix(s) => Pin::new(s).poll_close(cx),
            Connection::Tcp(s) => Pin::new(s).poll_close(cx),
        }
    }
}
