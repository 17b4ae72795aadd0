//! The Wireshark Lua dissector, embedded.

use std::path::PathBuf;
use std::process::ExitCode;

/// The dissector's source.
pub const SOURCE: &str = include_str!("../pcapcast.lua");

/// Wireshark's personal plugin folder.
pub fn plugin_dir() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".local/lib/wireshark/plugins"))
}

pub fn run(install: bool) -> Result<ExitCode, String> {
    if !install {
        print!("{SOURCE}");
        return Ok(ExitCode::SUCCESS);
    }
    let dir = plugin_dir().ok_or("HOME is not set: cannot find Wireshark's plugin folder")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join("pcapcast.lua");
    std::fs::write(&path, SOURCE).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!(
        "installed the dissector at {}; Wireshark and tshark load it at start",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
