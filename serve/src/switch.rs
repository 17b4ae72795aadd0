//! The operator's switch: a daemon asks the environment whether its capture may run.

/// The variable that switches a daemon's capture off.
pub const DISABLE_VARIABLE: &str = "PCAPCAST_DISABLE";

/// Whether the capture may run, as the environment says: off when `PCAPCAST_DISABLE`
/// is set to anything but empty or `0`. A daemon that wants its operator to have this
/// switch passes it to `Capture::builder().enabled(..)`; nothing reads it otherwise.
///
/// # Examples
///
/// ```
/// use pcapcast_core::Capture;
///
/// let capture = Capture::builder()
///     .enabled(pcapcast_serve::enabled_by_environment())
///     .build();
/// # drop(capture);
/// ```
pub fn enabled_by_environment() -> bool {
    enabled_by(std::env::var_os(DISABLE_VARIABLE).as_deref())
}

fn enabled_by(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_none_or(|v| v.is_empty() || v == "0")
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    #[test]
    fn set_to_anything_but_zero_switches_it_off() {
        assert!(enabled_by(None));
        assert!(enabled_by(Some(OsStr::new(""))));
        assert!(enabled_by(Some(OsStr::new("0"))));
        assert!(!enabled_by(Some(OsStr::new("1"))));
        assert!(!enabled_by(Some(OsStr::new("yes"))));
    }
}
