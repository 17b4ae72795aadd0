//! Wireshark's extcap interface: a daemon's capture shows up as an interface that
//! Wireshark and tshark can capture from.

use std::fs::OpenOptions;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::Ordering;

use pcapcast_core::endpoint::to_query;
use pcapcast_core::{Format, History, Options};

use crate::capture::stop_signals;
use crate::client::{self, Ask, Event, Next};
use crate::recorder::{Flow, RecordError, Recorder};
use crate::target::{default_socket, Target};
use crate::RuntimeKind;

/// The interface pcapcast offers.
const INTERFACE: &str = "pcapcast";
/// The formats the extcap offers: its `--format` values, what Wireshark shows, the default.
const FORMATS: [(&str, &str, bool); 3] = [
    ("pcap", "pcapcast seed format (Tailscale before 2023)", true),
    (
        "tailscale",
        "Tailscale's current framing, with the addresses before NAT",
        false,
    ),
    (
        "pcapng",
        "pcapng: one interface per path, NAT as comments",
        false,
    ),
];
/// Where Debian's Wireshark looks for extcaps, if `tshark -G folders` cannot say.
const DEFAULT_EXTCAP_DIR: &str = "/usr/lib/x86_64-linux-gnu/wireshark/extcap";

/// Whether Wireshark called us as an extcap.
pub fn is_extcap_call(args: &[String]) -> bool {
    args.iter()
        .skip(1)
        .any(|a| a.starts_with("--extcap-") || a == "--capture")
}

/// The value after `name`, as `--name VALUE` or `--name=VALUE`.
fn value_of<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            return iter.next().map(String::as_str);
        }
        if let Some(value) = arg
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value);
        }
    }
    None
}

fn has(args: &[String], flag: &str) -> bool {
    args.iter().any(|a| a == flag)
}

/// Answers one extcap call. Errors go to stderr, where Wireshark shows them.
pub fn run(args: &[String]) -> ExitCode {
    let interface = value_of(args, "--extcap-interface");
    if has(args, "--extcap-interfaces") {
        let target = Target::unix(default_socket());
        println!(
            "extcap {{version={}}}{{help=https://github.com/pcapcast}}",
            env!("CARGO_PKG_VERSION")
        );
        println!("interface {{value={INTERFACE}}}{{display=pcapcast datapath capture ({target})}}");
        return ExitCode::SUCCESS;
    }
    if interface.is_some_and(|i| i != INTERFACE) {
        eprintln!(
            "pcapcast: unknown interface {:?}: pcapcast offers {INTERFACE:?}",
            interface.unwrap_or("")
        );
        return ExitCode::FAILURE;
    }
    if has(args, "--extcap-dlts") {
        println!("dlt {{number=147}}{{name=USER0}}{{display=pcapcast seed format: a 2-byte path, then the IP packet}}");
        return ExitCode::SUCCESS;
    }
    if has(args, "--extcap-config") {
        let target = Target::unix(default_socket());
        println!(
            "arg {{number=0}}{{call=--connect}}{{display=Daemon endpoint}}{{type=string}}{{default={target}}}{{tooltip=unix:PATH or tcp:HOST:PORT}}"
        );
        println!(
            "arg {{number=1}}{{call=--token}}{{display=Bearer token (TCP only)}}{{type=password}}"
        );
        println!(
            "arg {{number=2}}{{call=--format}}{{display=Format}}{{type=selector}}{{tooltip=How each record is framed}}"
        );
        for (value, display, default) in FORMATS {
            println!("value {{arg=2}}{{value={value}}}{{display={display}}}{{default={default}}}");
        }
        println!(
            "arg {{number=3}}{{call=--history}}{{display=Start with the daemon's history}}{{type=string}}{{default=none}}{{validation=^(none|all|[0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))$}}{{tooltip=none, all, or a span back from the newest packet it retained: 30s, 500ms, 2m}}"
        );
        return ExitCode::SUCCESS;
    }
    let filter = value_of(args, "--extcap-capture-filter").filter(|f| !f.trim().is_empty());
    if !has(args, "--capture") {
        if let Some(expression) = filter {
            // Wireshark checks a capture filter this way: nothing printed means valid;
            // what is printed is shown as the reason it is not.
            return match crate::filter::compile(expression) {
                Ok(_) => ExitCode::SUCCESS,
                Err(message) => {
                    println!("{message}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    if has(args, "--capture") {
        return match capture(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("pcapcast: {message}");
                ExitCode::FAILURE
            }
        };
    }
    eprintln!("pcapcast: unknown extcap call; expected --extcap-interfaces, --extcap-dlts, --extcap-config or --capture");
    ExitCode::FAILURE
}

fn capture(args: &[String]) -> Result<(), String> {
    let fifo = value_of(args, "--fifo").ok_or("--capture needs --fifo PATH")?;
    // Open the fifo first: Wireshark waits for it, and shows our stderr once we exit.
    let out = OpenOptions::new()
        .write(true)
        .open(fifo)
        .map_err(|e| format!("cannot open the fifo {fifo}: {e}"))?;
    let target = match value_of(args, "--connect").filter(|v| !v.is_empty()) {
        Some(text) => text.parse::<Target>()?,
        None => Target::unix(default_socket()),
    };
    let format = match value_of(args, "--format").filter(|v| !v.is_empty()) {
        Some(name) => name.parse::<Format>().map_err(|e| e.to_string())?,
        None => Format::Pcap,
    };
    let history = match value_of(args, "--history").filter(|v| !v.is_empty()) {
        Some(text) => crate::parse_history(text)?,
        None => History::None,
    };
    let mut options = Options::new().format(format).history(history);
    if let Some(expression) =
        value_of(args, "--extcap-capture-filter").filter(|f| !f.trim().is_empty())
    {
        options = options.bpf(crate::filter::compile(expression)?);
    }
    let ask = Ask {
        target,
        query: to_query(&options),
        token: value_of(args, "--token")
            .filter(|t| !t.is_empty())
            .map(str::to_owned),
    };
    let stop = stop_signals();
    let mut recorder = Recorder::new(out, None);
    let mut failure = None;
    client::run(RuntimeKind::Smol, &ask, &stop, |event| {
        let fed = match event {
            Event::Data(bytes) => recorder.feed(bytes),
            // Wireshark shows what came within a tick.
            Event::Tick => recorder.tick().map(|()| Flow::More),
            Event::Attached { .. } => Ok(Flow::More),
        };
        {
            match fed {
                Ok(Flow::More) => {}
                Ok(Flow::Done) => return Next::Stop,
                // Wireshark stopped reading: a normal end.
                Err(RecordError::Write(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    return Next::Stop
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    return Next::Stop;
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            Next::Stop
        } else {
            Next::Continue
        }
    })?;
    let _ = recorder.finish();
    failure.map_or(Ok(()), Err)
}

/// `pcapcast extcap --install`: links this program into Wireshark's extcap folder.
pub fn install(install: bool, dir: Option<PathBuf>) -> Result<ExitCode, String> {
    let dir = dir.unwrap_or_else(extcap_dir);
    if !install {
        println!("Wireshark's extcap folder: {}", dir.display());
        println!("`pcapcast extcap --install` links pcapcast there; Wireshark then lists the interface {INTERFACE:?}.");
        return Ok(ExitCode::SUCCESS);
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let link = dir.join("pcapcast");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&exe, &link).map_err(|e| {
        format!(
            "cannot link {} to {}: {e} (the folder may need root)",
            link.display(),
            exe.display()
        )
    })?;
    println!(
        "installed the extcap at {} -> {}",
        link.display(),
        exe.display()
    );
    println!("`tshark -D` now lists {INTERFACE:?}; `pcapcast dissector --install` lets Wireshark decode it.");
    Ok(ExitCode::SUCCESS)
}

/// The extcap folder `tshark -G folders` names, or Debian's.
fn extcap_dir() -> PathBuf {
    let listed = Command::new("tshark")
        .args(["-G", "folders"])
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|line| {
                    let (name, path) = line.split_once(':')?;
                    (name.trim() == "Extcap path").then(|| PathBuf::from(path.trim()))
                })
        });
    listed
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| FsPath::new(DEFAULT_EXTCAP_DIR).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_argument_styles() {
        let args: Vec<String> = [
            "pcapcast",
            "--capture",
            "--fifo",
            "/tmp/f",
            "--extcap-version=4.0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(is_extcap_call(&args));
        assert_eq!(value_of(&args, "--fifo"), Some("/tmp/f"));
        assert_eq!(value_of(&args, "--extcap-version"), Some("4.0"));
        assert_eq!(value_of(&args, "--connect"), None);
    }
}
