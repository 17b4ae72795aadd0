//! Which records from before an output attached it starts with.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::Error;

/// The records from before the attach an output starts with: what the capture retained
/// ([`Builder::retain`](crate::Builder::retain)) while nobody, or somebody else,
/// listened. The output hands them out first, in log order, then goes on with what is
/// logged after it attached: no gap, no duplicate. Records the retention had evicted
/// before the attach are not counted as drops.
///
/// Written and read as `none`, `all` or a duration: `30s`, `500ms`, `2m`, `1h`, `1.5s`
/// (also `us` and `ns`), the form of the endpoint's `history=` and the CLI's
/// `--history`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use pcapcast_core::History;
///
/// assert_eq!("all".parse::<History>()?, History::All);
/// assert_eq!("500ms".parse::<History>()?, History::Last(Duration::from_millis(500)));
/// assert_eq!("1.5s".parse::<History>()?, History::Last(Duration::from_millis(1500)));
/// assert_eq!(History::Last(Duration::from_secs(30)).to_string(), "30s");
/// assert!("30".parse::<History>().is_err());
/// # Ok::<(), pcapcast_core::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum History {
    /// Nothing from before the attach (the default).
    #[default]
    None,
    /// Everything retained.
    All,
    /// The retained records whose time (the `when` the datapath passed) is at most this
    /// long before the newest retained record's.
    Last(Duration),
}

impl History {
    /// Whether the output starts with anything from before its attach.
    pub fn is_none(self) -> bool {
        self == History::None
    }
}

/// Units a duration may be written in.
const UNITS: [(&str, u64); 6] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for History {
    type Err = Error;

    fn from_str(s: &str) -> Result<History, Error> {
        match s {
            "none" => Ok(History::None),
            "all" => Ok(History::All),
            _ => parse_duration(s)
                .map(History::Last)
                .map_err(|reason| Error::InvalidOption {
                    name: "history".into(),
                    reason: format!(
                        "{s:?}: {reason}; use all, none or a duration such as 30s or 500ms"
                    ),
                }),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, &'static str> {
    let (number, scale) = UNITS
        .iter()
        .filter_map(|&(unit, scale)| Some((s.strip_suffix(unit)?, scale)))
        // "500ms" also ends in "s": the unit that leaves no letter behind wins.
        .find(|(number, _)| {
            number
                .bytes()
                .last()
                .is_some_and(|b| !b.is_ascii_alphabetic())
        })
        .ok_or("a duration needs a unit (ns, us, ms, s, m or h)")?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(digits) {
        return Err("not a number");
    }
    let whole: u64 = whole.parse().map_err(|_| "too long")?;
    let mut nanos = whole.checked_mul(scale).ok_or("too long")?;
    // Each fractional digit is a tenth of the one before; below a nanosecond is dropped.
    let mut place = scale;
    for digit in fraction.unwrap_or("").bytes() {
        place /= 10;
        nanos = nanos
            .checked_add(u64::from(digit - b'0') * place)
            .ok_or("too long")?;
    }
    Ok(Duration::from_nanos(nanos))
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            History::None => f.write_str("none"),
            History::All => f.write_str("all"),
            History::Last(duration) => {
                let nanos = duration.as_nanos();
                // The largest unit that writes it exactly, so that it reads back the same.
                let (unit, scale) = UNITS
                    .iter()
                    .rev()
                    .find(|(_, scale)| nanos % u128::from(*scale) == 0)
                    .copied()
                    .unwrap_or(("ns", 1));
                write!(f, "{}{unit}", nanos / u128::from(scale))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for text in ["30s", "500ms", "2m", "1h", "250us", "7ns", "90s"] {
            let history: History = text.parse().unwrap();
            assert_eq!(history.to_string(), text);
        }
        assert_eq!(
            "0.25s".parse::<History>().unwrap(),
            History::Last(Duration::from_millis(250))
        );
        assert_eq!("1.5m".parse::<History>().unwrap().to_string(), "90s");
        assert_eq!("none".parse::<History>().unwrap(), History::None);
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, reason) in [
            ("30", "needs a unit"),
            ("s", "needs a unit"),
            ("-1s", "not a number"),
            ("1.s", "not a number"),
            (".5s", "not a number"),
            ("1e3s", "not a number"),
            ("99999999999999999999s", "too long"),
            ("9999999999h", "too long"),
            ("", "needs a unit"),
        ] {
            let error = text.parse::<History>().unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
            assert!(error.starts_with("option \"history\""), "{error}");
        }
    }
}
