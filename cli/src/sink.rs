//! Where `pcapcast capture` writes: a file, stdout, or a viewer (Wireshark, tshark)
//! reading its stdin.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};

use crate::dissector;
use crate::recorder::Output;

/// Where the stream goes. Unbuffered: the recorder buffers, and knows what landed.
pub enum Sink {
    /// `-o FILE`.
    File {
        /// The file, opened at the start without cutting what it holds: it is emptied
        /// at the first write, which comes only once the daemon has answered 200, so a
        /// daemon that is not there or refuses leaves an existing capture as it was.
        file: File,
        /// Its name, as given.
        path: String,
        /// Whether the first write has emptied it.
        started: bool,
    },
    /// `-o -`: stdout's descriptor, written without std's line buffer in between.
    Stdout(File),
    /// No `-o`: Wireshark or tshark reads the stream.
    Viewer {
        /// The viewer's input.
        stdin: ChildStdin,
        /// The viewer, waited for at the end.
        child: Child,
        /// The dissector it loads, removed at the end.
        _dissector: TempFile,
    },
}

impl Sink {
    /// The destination, as messages name it.
    pub fn name(&self) -> String {
        match self {
            Sink::File { path, .. } => path.clone(),
            Sink::Stdout(_) => "stdout".to_owned(),
            Sink::Viewer { .. } => "the viewer's input".to_owned(),
        }
    }

    /// Whether the reader of stdout or of the viewer's pipe went away (the pipe or
    /// socket closed), seen without writing: a capture that has nothing to write (a
    /// filter that matches nothing) would otherwise never learn it.
    pub fn reader_gone(&self) -> bool {
        match self {
            Sink::File { .. } => false,
            Sink::Stdout(stdout) => hung_up(stdout),
            Sink::Viewer { stdin, .. } => hung_up(stdin),
        }
    }

    /// After a capture that is not whole: a file left empty (no header came) is
    /// removed, so that no 0-byte file passes for a capture.
    pub fn remove_if_empty(&self) {
        if let Sink::File { file, path, .. } = self {
            if file.metadata().is_ok_and(|m| m.is_file() && m.len() == 0) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// POLLERR or POLLHUP on `fd`, asked with a zero timeout: a pipe whose reader closed
/// reports POLLERR, a socket whose peer left POLLHUP; a file or terminal reports neither.
fn hung_up(fd: &impl AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&now)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
}

impl Sink {
    /// The file to write, emptied on its first write; a device (`-o /dev/null`) or a
    /// fifo has nothing to empty.
    fn started(file: &mut File, started: &mut bool) -> io::Result<()> {
        if !*started {
            if file.metadata()?.is_file() {
                file.set_len(0)?;
            }
            *started = true;
        }
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::File { file, started, .. } => {
                Sink::started(file, started)?;
                file.write(buf)
            }
            Sink::Stdout(w) => w.write(buf),
            Sink::Viewer { stdin, .. } => stdin.write(buf),
        }
    }

    /// One `writev` for what the recorder gathered.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Sink::File { file, started, .. } => {
                Sink::started(file, started)?;
                file.write_vectored(bufs)
            }
            Sink::Stdout(w) => w.write_vectored(bufs),
            Sink::Viewer { stdin, .. } => stdin.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::File { file, .. } => file.flush(),
            Sink::Stdout(w) => w.flush(),
            Sink::Viewer { stdin, .. } => stdin.flush(),
        }
    }
}

impl Output for Sink {
    fn cut_back(&mut self, len: u64) -> io::Result<bool> {
        match self {
            // Nothing written yet: what the file holds is not this capture's.
            Sink::File { started: false, .. } => Ok(true),
            // Stdout redirected to a file is cut back as that file.
            Sink::File { file, .. } | Sink::Stdout(file) => file.cut_back(len),
            Sink::Viewer { .. } => Ok(false),
        }
    }
}

/// A file removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// Writes `contents` to `name` in a new folder of the temporary directory that only
    /// this user can enter. The folder is made, not reused, so a name planted there
    /// beforehand (a link to another file) cannot redirect the write.
    fn private(name: &str, contents: &str) -> io::Result<TempFile> {
        use std::os::unix::fs::DirBuilderExt;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("pcapcast-{}-{nonce}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = TempFile(dir.join(name));
        std::fs::write(&file.0, contents)?;
        Ok(file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Opens `-o OUTPUT` (`-` for stdout); without it starts Wireshark, or tshark with
/// `tshark`, on a pipe.
///
/// # Errors
///
/// Why the output cannot be opened or the viewer started, on one line.
pub fn open(output: Option<&str>, tshark: bool) -> Result<Sink, String> {
    match output {
        Some("-") => io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .map(|fd| Sink::Stdout(File::from(fd)))
            .map_err(|e| format!("cannot write to stdout: {e}")),
        Some(path) => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(|file| Sink::File {
                file,
                path: path.to_owned(),
                started: false,
            })
            .map_err(|e| format!("cannot create {path}: {e}")),
        None => {
            let lua = TempFile::private("pcapcast.lua", dissector::SOURCE)
                .map_err(|e| format!("cannot write the dissector: {e}"))?;
            let script = format!("lua_script:{}", lua.0.display());
            let (program, mut command) = if tshark {
                ("tshark", Command::new("tshark"))
            } else {
                ("wireshark", Command::new("wireshark"))
            };
            if !tshark {
                command.arg("-k");
            }
            command
                .args(["-i", "-", "-X", &script])
                .stdin(Stdio::piped());
            let mut child = command.spawn().map_err(|e| {
                format!("cannot start {program} ({e}): install it, or write to a file with -o FILE or to stdout with -o -")
            })?;
            let stdin = child.stdin.take().ok_or("no pipe to the viewer")?;
            Ok(Sink::Viewer {
                stdin,
                child,
                _dissector: lua,
            })
        }
    }
}

/// Once the capture ended: a viewer's input is closed and it is waited for, so that it
/// shows what it has.
pub fn close_viewer(sink: Sink) {
    if let Sink::Viewer {
        stdin, mut child, ..
    } = sink
    {
        drop(stdin);
        let _ = child.wait();
    }
}
