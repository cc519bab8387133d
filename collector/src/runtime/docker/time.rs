//! Docker's timestamps: RFC 3339 text to nanoseconds since the epoch and
//! back.
//!
//! Docker writes `2006-01-02T15:04:05.000000000Z` before every log line
//! (with `timestamps=true`), RFC 3339 with trailing zeros trimmed for
//! `State.StartedAt`, and a local offset (`+01:00`) in `/info`'s
//! `SystemTime`. The `time` crate parses all three.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Parses an RFC 3339 timestamp into nanoseconds since the epoch. `None`
/// for anything else, and for times outside what an `i64` of nanoseconds
/// holds (years ~1678–2262; Docker's "never started" is year 1).
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    let t = OffsetDateTime::parse(std::str::from_utf8(s).ok()?, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
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
