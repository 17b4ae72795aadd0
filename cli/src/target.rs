//! Where a daemon's capture endpoint is: the default Unix socket, or `--connect`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    let uid = rustix::process::getuid().as_raw();
    std::env::temp_dir()
        .join(format!("pcapcast-{uid}"))
        .join("pcapcast.sock")
}

/// Makes the folder of a socket, private to this user when it is ours to make.
pub fn prepare_socket_dir(socket: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        _ => Ok(()),
    }
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
