//! The pace of a replay: `--speed`, and the cap on any single wait.

use std::time::Duration;

use super::Replay;

/// The longest wait between two packets of a replay: a file whose times jump (a clock
/// set years ahead) would otherwise stall it for as long.
pub const MAX_WAIT: Duration = Duration::from_secs(1);

impl Replay {
    /// Shortens every wait between two packets that `speed` makes longer than
    /// [`MAX_WAIT`] to that; a warning names the first such packet's record.
    pub fn cap_waits(&mut self, speed: Speed) -> Option<String> {
        let Speed::Times(factor) = speed else {
            return None;
        };
        let longest = Duration::try_from_secs_f64(MAX_WAIT.as_secs_f64() * factor).ok()?;
        let (mut removed, mut capped) = (Duration::ZERO, 0u64);
        let mut first = None;
        let mut previous = Duration::ZERO;
        for packet in &mut self.packets {
            let gap = packet.at.saturating_sub(previous);
            previous = packet.at;
            if gap > longest {
                capped += 1;
                removed += gap - longest;
                first.get_or_insert((packet.record, gap));
            }
            packet.at -= removed;
        }
        let (record, gap) = first?;
        let others = match capped {
            1 => String::new(),
            2 => " (and 1 later wait)".to_owned(),
            n => format!(" (and {} later waits)", n - 1),
        };
        Some(format!(
            "record {record} comes {gap:.3?} after the packet before it: that wait is cut to {MAX_WAIT:?}{others}"
        ))
    }
}

/// How fast to replay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// The recorded pace, scaled: 2 is twice as fast.
    Times(f64),
    /// As fast as the datapath logs.
    Max,
}

/// Parses `--speed`: a factor above 0, or `max`.
pub fn parse_speed(s: &str) -> Result<Speed, String> {
    if s == "max" {
        return Ok(Speed::Max);
    }
    match s.parse::<f64>() {
        Ok(factor) if (MIN_FACTOR..=MAX_FACTOR).contains(&factor) => Ok(Speed::Times(factor)),
        _ => Err(format!(
            "{s:?} is not a speed: use a factor from {MIN_FACTOR} to {MAX_FACTOR} (1 is the recorded pace) or max"
        )),
    }
}

/// The slowest and the fastest pace a factor gives: a thousandth of the recorded one, a
/// million times it.
const MIN_FACTOR: f64 = 0.001;
const MAX_FACTOR: f64 = 1_000_000.0;

impl Speed {
    /// How long after the replay's start a packet recorded `at` is due; `Duration::MAX`
    /// past what a `Duration` holds.
    pub fn due(self, at: Duration) -> Duration {
        match self {
            Speed::Times(factor) => {
                Duration::try_from_secs_f64(at.as_secs_f64() / factor).unwrap_or(Duration::MAX)
            }
            Speed::Max => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speeds() {
        assert_eq!(parse_speed("max"), Ok(Speed::Max));
        assert_eq!(parse_speed("2"), Ok(Speed::Times(2.0)));
        for bad in ["0", "-1", "fast", "1e-300", "1e300", "NaN", "inf"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert_eq!(Speed::Times(0.001).due(Duration::MAX), Duration::MAX);
        assert_eq!(
            Speed::Times(2.0).due(Duration::from_secs(3)),
            Duration::from_millis(1500)
        );
    }
}
