//! Docker's timestamps: RFC 3339 text to nanoseconds since the epoch and
//! back, without a calendar library.
//!
//! Docker writes `2006-01-02T15:04:05.000000000Z` before every log line
//! (with `timestamps=true`), RFC 3339 with trailing zeros trimmed for
//! `State.StartedAt`, and a local offset (`+01:00`) in `/info`'s
//! `SystemTime`. All three parse here.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Now, in nanoseconds since the epoch (0 if the clock is before 1970).
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Parses an RFC 3339 timestamp (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`)
/// into nanoseconds since the epoch. `None` for anything else, and for
/// times outside what an `i64` of nanoseconds holds (years ~1678–2262).
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    let mut p = Parser { s, at: 0 };
    let year = p.digits(4)?;
    p.expect(b'-')?;
    let month = p.digits(2)?;
    p.expect(b'-')?;
    let day = p.digits(2)?;
    p.expect_any(b"Tt ")?;
    let hour = p.digits(2)?;
    p.expect(b':')?;
    let minute = p.digits(2)?;
    p.expect(b':')?;
    let second = p.digits(2)?;
    let nanos = p.fraction()?;
    let offset = p.offset()?;
    if p.at != s.len()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

/// Splits a log frame written with `timestamps=true` into its timestamp
/// and the rest: `b"2024-01-02T03:04:05.000000006Z hello\n"` gives the
/// time and `b"hello\n"`.
pub fn split_timestamp(frame: &[u8]) -> Option<(i64, &[u8])> {
    // The longest form is `2006-01-02T15:04:05.999999999+07:00` (35 bytes).
    let space = frame.iter().take(40).position(|&b| b == b' ')?;
    Some((parse_rfc3339(&frame[..space])?, &frame[space + 1..]))
}

/// `secs.nanos`, the form Docker's `since` parameters accept.
pub fn docker_since(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(NANOS_PER_SEC),
        ns.rem_euclid(NANOS_PER_SEC)
    )
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn digits(&mut self, n: usize) -> Option<i64> {
        let part = self.s.get(self.at..self.at + n)?;
        self.at += n;
        part.iter().try_fold(0i64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
        })
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        self.expect_any(&[want])
    }

    fn expect_any(&mut self, any: &[u8]) -> Option<()> {
        let b = *self.s.get(self.at)?;
        self.at += 1;
        any.contains(&b).then_some(())
    }

    /// `.123` → 123_000_000 ns; no fraction → 0. At most 9 digits.
    fn fraction(&mut self) -> Option<i64> {
        if self.s.get(self.at) != Some(&b'.') {
            return Some(0);
        }
        self.at += 1;
        let len = self.s[self.at..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(1..=9).contains(&len) {
            return None;
        }
        let value = self.digits(len)?;
        Some(value * 10i64.pow(9 - len as u32))
    }

    /// `Z` → 0; `+01:30` → 5400 (seconds east of UTC).
    fn offset(&mut self) -> Option<i64> {
        let sign = match *self.s.get(self.at)? {
            b'Z' | b'z' => {
                self.at += 1;
                return Some(0);
            }
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        self.at += 1;
        let hours = self.digits(2)?;
        self.expect(b':')?;
        let minutes = self.digits(2)?;
        (hours < 24 && minutes < 60).then_some(sign * (hours * 3600 + minutes * 60))
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<i64> {
        parse_rfc3339(s.as_bytes())
    }

    #[test]
    fn docker_log_timestamps() {
        assert_eq!(parse("1970-01-01T00:00:00.000000000Z"), Some(0));
        assert_eq!(parse("1970-01-01T00:00:01.000000002Z"), Some(1_000_000_002));
        // `date -u -d 2026-11-21T00:07:53Z +%s` = 1795219673
        assert_eq!(
            parse("2026-11-21T00:07:53.840214398Z"),
            Some(1_795_219_673_840_214_398)
        );
        assert_eq!(
            parse("2000-02-29T12:00:00Z"),
            Some(951_825_600 * NANOS_PER_SEC)
        );
    }

    #[test]
    fn trimmed_fractions_and_offsets() {
        assert_eq!(parse("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        assert_eq!(parse("1970-01-01T00:00:00.79151451Z"), Some(791_514_510));
        assert_eq!(parse("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse("1969-12-31T23:30:00-00:30"), Some(0));
        assert_eq!(parse("1969-12-31T23:59:59Z"), Some(-NANOS_PER_SEC));
    }

    #[test]
    fn bad_input_is_none_not_a_panic() {
        for bad in [
            "",
            "2024",
            "2024-01-02",
            "2024-01-02T03:04:05",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-01-02T24:00:00Z",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:05.1234567890Z",
            "2024-01-02T03:04:05Zjunk",
            "2024-01-02T03:04:05+0100",
            "2024-01-0xT03:04:05Z",
            "0001-01-01T00:00:00Z", // Docker's "never started": out of range
            "9999-12-31T23:59:59Z",
            "2024-01-02T03:04:05.\u{e9}Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn frames_split_at_the_first_space() {
        let (ts, rest) = split_timestamp(b"1970-01-01T00:00:01.000000000Z a b\n").unwrap();
        assert_eq!(ts, NANOS_PER_SEC);
        assert_eq!(rest, b"a b\n");
        let (_, empty) = split_timestamp(b"1970-01-01T00:00:01.000000000Z ").unwrap();
        assert_eq!(empty, b"");
        assert_eq!(split_timestamp(b"no timestamp here\n"), None);
        assert_eq!(split_timestamp(b"1970-01-01T00:00:01Z"), None, "no space");
        assert_eq!(split_timestamp(&[0xff; 100]), None);
    }

    #[test]
    fn since_is_seconds_dot_nanos() {
        assert_eq!(
            docker_since(1_795_219_673_840_214_398),
            "1795219673.840214398"
        );
        assert_eq!(docker_since(5), "0.000000005");
    }
}
