//! Where a daemon's capture endpoint is: the default Unix socket, or `--connect`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A capture endpoint to connect to: where the daemon listens, and the HTTP path of
/// its capture (`/capture` unless the daemon mounted it elsewhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The socket.
    pub endpoint: Endpoint,
    /// The HTTP path, from `/`.
    pub path: String,
}

/// Where a daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix socket.
    Unix(PathBuf),
    /// A TCP address, `HOST:PORT`.
    Tcp(String),
}

/// The path of pcapcast's own endpoint (`HttpServer`).
const CAPTURE_PATH: &str = pcapcast_core::endpoint::CAPTURE_PATH;

impl Target {
    /// The Unix socket at `path`, its capture at `/capture`.
    pub fn unix(path: PathBuf) -> Target {
        Target {
            endpoint: Endpoint::Unix(path),
            path: CAPTURE_PATH.to_owned(),
        }
    }

    fn at(endpoint: Endpoint, path: &str) -> Target {
        let path = match path {
            "" | "/" => CAPTURE_PATH.to_owned(),
            path => path.to_owned(),
        };
        Target { endpoint, path }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display())?,
            Endpoint::Tcp(addr) => write!(f, "tcp:{addr}")?,
        }
        if self.path != CAPTURE_PATH {
            f.write_str(&self.path)?;
        }
        Ok(())
    }
}

impl FromStr for Target {
    type Err = String;

    /// `unix:PATH`, `tcp:HOST:PORT` or `http://HOST:PORT`, each with the capture's
    /// HTTP path after it where the daemon mounted it elsewhere than `/capture`:
    /// `tcp:127.0.0.1:8080/debug/capture`, `unix:/run/d.sock/debug/capture` (the socket
    /// is the longest leading part of the path that is not a folder).
    fn from_str(s: &str) -> Result<Target, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let (socket, http_path) = split_socket_path(path);
            return Ok(Target::at(Endpoint::Unix(socket), http_path));
        }
        let Some(rest) = s.strip_prefix("tcp:").or_else(|| s.strip_prefix("http://")) else {
            return Err(format!(
                "{s:?}: use unix:PATH, tcp:HOST:PORT or http://HOST:PORT, with the capture's path after it if it is not /capture"
            ));
        };
        let (addr, http_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if addr.parse::<SocketAddr>().is_ok()
            || addr
                .rsplit_once(':')
                .is_some_and(|(host, p)| !host.is_empty() && p.parse::<u16>().is_ok())
        {
            return Ok(Target::at(Endpoint::Tcp(addr.to_owned()), http_path));
        }
        Err(format!("{addr:?} is not HOST:PORT"))
    }
}

/// Splits `unix:` text into the socket and the HTTP path after it: the socket ends at
/// the first leading part that exists and is not a folder; where none exists, it is the
/// whole text.
fn split_socket_path(text: &str) -> (PathBuf, &str) {
    for (at, _) in text.match_indices('/').skip(1) {
        let candidate = Path::new(&text[..at]);
        if std::fs::metadata(candidate).is_ok_and(|m| !m.is_dir()) {
            return (candidate.to_owned(), &text[at..]);
        }
    }
    (PathBuf::from(text), "")
}

impl Target {
    /// What a Unix target's path is when it is there but no socket ("a regular file",
    /// "a directory"...), so that a refused connection names it.
    pub fn not_a_socket(&self) -> Option<&'static str> {
        use std::os::unix::fs::FileTypeExt;
        let Endpoint::Unix(path) = &self.endpoint else {
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
        let tcp = |addr: &str, path: &str| Target {
            endpoint: Endpoint::Tcp(addr.into()),
            path: path.into(),
        };
        assert_eq!(
            "unix:/run/x.sock".parse(),
            Ok(Target::unix("/run/x.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:57012".parse(),
            Ok(tcp("127.0.0.1:57012", "/capture"))
        );
        assert_eq!(
            "tcp:localhost:80".parse(),
            Ok(tcp("localhost:80", "/capture"))
        );
        assert_eq!(
            "tcp:127.0.0.1:8080/debug/capture".parse(),
            Ok(tcp("127.0.0.1:8080", "/debug/capture"))
        );
        assert_eq!(
            "http://[::1]:8080/".parse(),
            Ok(tcp("[::1]:8080", "/capture"))
        );
        assert_eq!("http://d.lan:80/x/y".parse(), Ok(tcp("d.lan:80", "/x/y")));
        assert!("tcp:nowhere".parse::<Target>().is_err());
        assert!("tcp::80".parse::<Target>().is_err());
        assert!("/run/x.sock".parse::<Target>().is_err());
        assert!("https://d.lan:443/capture".parse::<Target>().is_err());
    }

    #[test]
    fn a_unix_target_ends_its_socket_where_the_path_stops_being_a_folder() {
        let dir = std::env::temp_dir().join(format!("pcapcast-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("d.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let text = format!("unix:{}/debug/capture", socket.display());
        let target: Target = text.parse().unwrap();
        assert_eq!(target.endpoint, Endpoint::Unix(socket.clone()));
        assert_eq!(target.path, "/debug/capture");
        assert_eq!(target.to_string(), text);
        // Nothing there: all of it is the socket's path, for the error to name.
        let missing: Target = format!("unix:{}/nobody.sock", dir.display())
            .parse()
            .unwrap();
        assert_eq!(missing.endpoint, Endpoint::Unix(dir.join("nobody.sock")));
        assert_eq!(missing.path, "/capture");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
