//! Where an output that asks for history starts in the log.

use super::{records, Log, Point};
use crate::{History, Timestamp};

/// Where an output starts: `at` is the first record it may hand out; a `floor` leaves
/// out the records before the attach whose time is older than it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryStart {
    pub(crate) at: Point,
    pub(crate) floor: Option<Timestamp>,
}

impl Log {
    /// Where an output attaching now starts for `history`; the caller has just collected
    /// the rings, so that every record logged so far is in a sealed batch.
    pub(crate) fn history_start(&self, history: History) -> HistoryStart {
        let queue = &self.sealed.queue;
        let from_batch = |index: usize, floor| {
            let batch = &queue[index];
            HistoryStart {
                at: Point {
                    seq: batch.first_seq,
                    kinds: batch.kinds_to_start,
                },
                floor,
            }
        };
        let live = HistoryStart {
            at: self.end(),
            floor: None,
        };
        match history {
            History::None => live,
            History::All if queue.is_empty() => live,
            History::All => from_batch(0, None),
            History::Last(span) => {
                let times = |index: usize| {
                    let batch = &queue[index];
                    records(&batch.data, &batch.side).map(|record| record.ts)
                };
                // By the callers' times, which need not grow with the log's order: the
                // newest is the latest time anywhere, and older records are left out
                // wherever they lie.
                let Some(newest) = (0..queue.len()).flat_map(times).max() else {
                    return live;
                };
                let floor = newest.saturating_sub(span);
                match (0..queue.len()).find(|&index| times(index).any(|ts| ts >= floor)) {
                    Some(index) => from_batch(index, Some(floor)),
                    None => live,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::log::tests::write;
    use crate::ring::ring;
    use crate::Path;

    fn log_with_times(seconds: &[u32]) -> Log {
        let mut log = Log::new(4096, 1 << 20, 1 << 20);
        let (mut writer, reader) = ring(1, 1 << 16);
        log.adopt(&mut vec![reader]);
        for (i, &second) in seconds.iter().enumerate() {
            write(
                &mut writer,
                Path::FromPeer,
                Timestamp::new(second, 0),
                &[0x45; 100],
            );
            // One batch a record, so that starts fall on record boundaries.
            if i % 2 == 1 {
                log.collect();
            }
        }
        log.collect();
        log
    }

    #[test]
    fn none_starts_at_the_end_and_all_at_the_oldest() {
        let log = log_with_times(&[10, 11, 12, 13]);
        assert_eq!(log.history_start(History::None).at.seq, 4);
        let all = log.history_start(History::All);
        assert_eq!((all.at.seq, all.floor), (0, None));
    }

    #[test]
    fn last_goes_back_from_the_latest_time() {
        let log = log_with_times(&[10, 11, 20, 12, 13, 14]);
        let start = log.history_start(History::Last(Duration::from_secs(2)));
        // The latest time is 20, not the last record's 14: from 18 on, only that one.
        assert_eq!(start.floor, Some(Timestamp::new(18, 0)));
        assert_eq!(start.at.seq, 2, "the batch that holds the record at 20");
        let start = log.history_start(History::Last(Duration::from_secs(100)));
        assert_eq!((start.at.seq, start.floor), (0, Some(Timestamp::MIN)));
    }

    #[test]
    fn an_empty_log_has_no_history() {
        let log = Log::new(4096, 1 << 20, 1 << 20);
        for history in [History::All, History::Last(Duration::from_secs(1))] {
            assert_eq!(log.history_start(history).at.seq, 0);
        }
    }
}
