//! Wireshark's extcap interface: a running daemon shows up as a capture interface.

use std::path::PathBuf;
use std::process::ExitCode;

pub fn is_extcap_call(args: &[String]) -> bool {
    args.iter()
        .skip(1)
        .any(|a| a.starts_with("--extcap-") || a == "--capture")
}

pub fn run(_args: &[String]) -> ExitCode {
    ExitCode::FAILURE
}

pub fn install(_install: bool, _dir: Option<PathBuf>) -> Result<ExitCode, String> {
    Err("not yet".into())
}
