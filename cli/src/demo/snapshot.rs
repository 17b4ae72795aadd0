//! The demo's snapshots: on SIGUSR1, what the capture retained goes into a pcapng file
//! in the current directory, named with the time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_lite::{future::block_on, StreamExt};
use pcapcast_core::{Capture, Format, Options};

/// Raised by SIGUSR1, lowered by whoever writes the snapshot.
pub fn requests() -> Arc<AtomicBool> {
    let asked = Arc::new(AtomicBool::new(false));
    // Registration fails only for forbidden signals, which this is not.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&asked));
    asked
}

/// What a snapshot wrote.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub records: u64,
    pub dropped: u64,
}

/// Writes what `capture` retained into a new pcapng file in the current directory. No
/// runtime: the snapshot's stream is polled on this thread. The capture goes on.
///
/// # Errors
///
/// The file could not be made or written; a partial file is removed.
pub fn write(capture: &Capture, now: SystemTime) -> Result<Written, String> {
    let (path, mut file) =
        create(now).map_err(|e| format!("cannot create a snapshot file: {e}"))?;
    let mut snapshot = capture.snapshot(Options::new().format(Format::Pcapng));
    let written = (|| -> io::Result<()> {
        while let Some(bytes) = block_on(snapshot.next()) {
            file.write_all(&bytes)?;
        }
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(format!(
            "writing the snapshot {} failed: {e}",
            path.display()
        ));
    }
    Ok(Written {
        path,
        records: snapshot.stats().records,
        dropped: snapshot.dropped(),
    })
}

/// `pcapcast-snapshot-YYYYmmddTHHMMSSZ.pcapng`, with `-2`, `-3`… when that second has one.
fn create(now: SystemTime) -> io::Result<(PathBuf, File)> {
    let stamp = utc_stamp(now);
    for n in 1u32.. {
        let suffix = if n == 1 {
            String::new()
        } else {
            format!("-{n}")
        };
        let path = PathBuf::from(format!("pcapcast-snapshot-{stamp}{suffix}.pcapng"));
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns by its 1000th name")
}

/// The UTC time as `YYYYmmddTHHMMSSZ`.
fn utc_stamp(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The Gregorian date `days` after 1970-01-01: eras of 400 years (146,097 days) that
/// start on March 1st, so that the leap day ends each year.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stamps_are_utc_dates() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc_stamp(at(0)), "19700101T000000Z");
        // 2000-02-29 23:59:59, a leap day of a century divisible by 400.
        assert_eq!(utc_stamp(at(951_868_799)), "20000229T235959Z");
        assert_eq!(utc_stamp(at(951_868_800)), "20000301T000000Z");
        // 2026-12-04 18:30:00.
        assert_eq!(utc_stamp(at(1_796_409_000)), "20261204T183000Z");
        // 2100-03-01, after a February of 28 days.
        assert_eq!(utc_stamp(at(4_107_542_400)), "21000301T000000Z");
    }
}
