//! Where a container's output was delivered up to, so that a reopened log
//! stream (Docker's `since` is in whole seconds) skips what was sent.

use super::START_SLACK;

/// How far a container's output was delivered: the newest timestamp, and
/// how many messages carried it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Cursor {
    ts: i64,
    seen: u32,
}

impl Cursor {
    /// Before a container's first message: from when the collector
    /// started, or from when the container started (less [`START_SLACK`])
    /// if that is later.
    pub(super) fn start(started_at: i64, collector_started: i64) -> Self {
        let slack = START_SLACK.as_nanos() as i64;
        Cursor {
            ts: collector_started.max(started_at.saturating_sub(slack)),
            seen: 0,
        }
    }

    pub(super) fn advance(&mut self, ts: i64) {
        if ts > self.ts {
            *self = Cursor { ts, seen: 1 };
        } else if ts == self.ts {
            self.seen = self.seen.saturating_add(1);
        }
    }

    /// Docker's `since`: whole seconds, rounded down.
    pub(super) fn since(&self) -> i32 {
        let secs = self.ts.div_euclid(1_000_000_000);
        i32::try_from(secs.max(0)).unwrap_or(i32::MAX)
    }
}

/// Which messages of a (re)opened stream are new: it starts with what was
/// delivered from the cursor's second on.
#[derive(Debug)]
pub(super) struct Resume {
    from: Cursor,
    skipped: u32,
    caught_up: bool,
}

impl From<Cursor> for Resume {
    fn from(from: Cursor) -> Self {
        Resume {
            from,
            skipped: 0,
            caught_up: false,
        }
    }
}

impl Resume {
    pub(super) fn admit(&mut self, ts: i64) -> bool {
        if self.caught_up {
            return true;
        }
        if ts < self.from.ts {
            return false;
        }
        if ts == self.from.ts && self.skipped < self.from.seen {
            self.skipped += 1;
            return false;
        }
        // From the first new message on, the stream is new (Docker sends
        // messages in the order it stored them).
        self.caught_up = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    fn admitted(from: Cursor, stamps: &[i64]) -> Vec<i64> {
        let mut resume = Resume::from(from);
        stamps
            .iter()
            .copied()
            .filter(|&ts| resume.admit(ts))
            .collect()
    }

    #[test]
    fn the_first_read_starts_at_the_later_of_collector_and_container_start() {
        // Running before the collector started: from the collector's start.
        assert_eq!(Cursor::start(5 * SEC, 100 * SEC).ts, 100 * SEC);
        // Started later: from its start, less the slack.
        assert_eq!(Cursor::start(200 * SEC, 100 * SEC).ts, 199 * SEC);
        // Unknown start.
        assert_eq!(Cursor::start(0, 100 * SEC).ts, 100 * SEC);
        let c = Cursor::start(200 * SEC + 5, 100 * SEC);
        assert_eq!(c.since(), 199, "whole seconds, rounded down");
        assert_eq!(
            admitted(c, &[198 * SEC, c.ts - 1, c.ts, c.ts + 1]),
            vec![c.ts, c.ts + 1]
        );
    }

    #[test]
    fn a_reopened_stream_skips_what_was_delivered() {
        let mut cursor = Cursor::default();
        for ts in [10, 20, 30] {
            cursor.advance(ts);
        }
        assert_eq!(cursor, Cursor { ts: 30, seen: 1 });
        assert_eq!(admitted(cursor, &[10, 20, 30, 31, 40]), vec![31, 40]);
    }

    #[test]
    fn pieces_of_a_long_line_share_a_timestamp() {
        // Three pieces of one line were delivered, then the stream broke.
        let mut cursor = Cursor::default();
        for ts in [7, 7, 7] {
            cursor.advance(ts);
        }
        assert_eq!(cursor, Cursor { ts: 7, seen: 3 });
        // Reopened: the first three are old, the other pieces are new.
        assert_eq!(admitted(cursor, &[5, 7, 7, 7, 7, 7, 9]), vec![7, 7, 9]);
    }

    #[test]
    fn once_caught_up_everything_passes() {
        // stdout and stderr may be stored slightly out of timestamp order.
        let cursor = Cursor { ts: 10, seen: 1 };
        assert_eq!(admitted(cursor, &[10, 12, 11, 9]), vec![12, 11, 9]);
        let mut c = Cursor { ts: 12, seen: 1 };
        c.advance(11);
        assert_eq!(c, Cursor { ts: 12, seen: 1 }, "never goes back");
    }

    #[test]
    fn since_saturates() {
        assert_eq!(Cursor { ts: -5, seen: 0 }.since(), 0);
        assert_eq!(
            Cursor {
                ts: i64::MAX,
                seen: 0
            }
            .since(),
            i32::MAX
        );
    }
}
