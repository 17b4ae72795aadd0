//! How a command ended, and the exit status that says so: the one place that maps
//! outcomes to codes.

use std::process::ExitCode;

/// What `capture --help` says of the exit status; the codes are [`Outcome::code`]'s.
pub const EXIT_STATUS: &str = "\
Exit status:
  0  the capture is whole: it ended as asked (-c, --duration, Ctrl-C or SIGTERM), the
     daemon closed it cleanly after a whole record, or the reader of -o - went away
  1  nothing was captured: bad usage or options, no daemon, or the daemon refused
  2  the capture was cut short: the daemon went away or its stream broke (bad
     chunking, a record cut off, no file header); the file ends on a whole record
  3  writing the output failed (a full disk): the file is cut back to its last whole
     record, and the counts printed are what it holds";

/// How a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ended as asked, or the daemon closed the capture cleanly.
    Whole,
    /// Bad usage or input, or no capture to be had: why, on one line.
    Refused(String),
    /// The capture stopped before it was asked to: why, on one line.
    CutShort(String),
    /// The output could not be written: why, on one line.
    WriteFailed(String),
}

impl Outcome {
    /// The exit status, as [`EXIT_STATUS`] documents it.
    pub fn code(&self) -> u8 {
        match self {
            Outcome::Whole => 0,
            Outcome::Refused(_) => 1,
            Outcome::CutShort(_) => 2,
            Outcome::WriteFailed(_) => 3,
        }
    }

    /// Prints the reason, if any, on stderr, and gives the exit status.
    pub fn exit(self) -> ExitCode {
        let code = self.code();
        match self {
            Outcome::Whole => {}
            Outcome::Refused(why) | Outcome::CutShort(why) | Outcome::WriteFailed(why) => {
                eprintln!("pcapcast: {why}");
            }
        }
        ExitCode::from(code)
    }

    /// A command line clap refused is bad usage (exit 1, not clap's 2, which here
    /// means a capture cut short); help and version print and exit 0.
    pub fn from_clap(error: &clap::Error) -> ExitCode {
        let _ = error.print();
        if error.use_stderr() {
            ExitCode::from(Outcome::Refused(String::new()).code())
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_has_its_documented_code() {
        let outcomes = [
            Outcome::Whole,
            Outcome::Refused("x".into()),
            Outcome::CutShort("x".into()),
            Outcome::WriteFailed("x".into()),
        ];
        for outcome in outcomes {
            let line = format!("  {}  ", outcome.code());
            assert!(EXIT_STATUS.contains(&line), "{outcome:?}");
        }
    }
}
