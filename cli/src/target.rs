//! Where a daemon's capture endpoint is: the default Unix socket, or `--connect`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A capture endpoint to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Target, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            if addr.parse::<SocketAddr>().is_ok()
                || addr
                    .rsplit_once(':')
                    .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                return Ok(Target::Tcp(addr.to_owned()));
            }
            return Err(format!("{addr:?} is not HOST:PORT"));
        }
        Err(format!("{s:?}: use unix:PATH or tcp:HOST:PORT"))
    }
}

impl Target {
    /// What a Unix target's path is when it is there but no socket ("a regular file",
    /// "a directory"...), so that a refused connection names it.
    pub fn not_a_socket(&self) -> Option<&'static str> {
        use std::os::unix::fs::FileTypeExt;
        let Target::Unix(path) = self else {
            return None;
        };
        let kind = std::fs::metadata(path).ok()?.file_type();
        Some(if kind.is_socket() {
            return None;
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_file() {
            "a regular file"
        } else if kind.is_fifo() {
            "a fifo"
        } else {
            "a device"
        })
    }
}

/// The socket a daemon serves by default and `pcapcast capture` attaches to:
/// `$PCAPCAST_SOCKET`, else `$XDG_RUNTIME_DIR/pcapcast.sock`, else
/// `/tmp/pcapcast-UID/pcapcast.sock`.
pub fn default_socket() -> PathBuf {
    if let Some(path) = std::env::var_os("PCAPCAST_SOCKET") {
        return PathBuf::from(path);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("pcapcast.sock");
    }
    own_socket_dir().join("pcapcast.sock")
}

/// `/tmp/pcapcast-UID`: the one folder pcapcast makes for a socket, this user's own.
fn own_socket_dir() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir().join(format!("pcapcast-{uid}"))
}

/// Checks that the folder of `socket` exists. Only the default socket's own folder
/// (`/tmp/pcapcast-UID`) is made when missing, mode 0700; any other missing folder is
/// an error that names it, since a daemon running as root must not create folders
/// wherever a path points.
pub fn prepare_socket_dir(socket: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => return Ok(()),
    };
    if dir.is_dir() {
        return Ok(());
    }
    if dir != own_socket_dir() {
        return Err(format!(
            "the folder {} of the socket does not exist: create it, or choose another --socket",
            dir.display()
        ));
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the folder {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Target::Unix("/run/x.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:57012".parse(),
            Ok(Target::Tcp("127.0.0.1:57012".into()))
        );
        assert_eq!(
            "tcp:localhost:80".parse(),
            Ok(Target::Tcp("localhost:80".into()))
        );
        assert!("tcp:nowhere".parse::<Target>().is_err());
        assert!("/run/x.sock".parse::<Target>().is_err());
    }
}
