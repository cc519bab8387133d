//! Plumbing shared by the Spillway binaries.
//!
//! - [`diode`]: lossy lock-free buffers that drop the oldest item instead of
//!   blocking a producer, and count what they dropped.
//! - [`batch`]: turning a diode into batches that flush when full or after a
//!   short linger.
//! - [`tls`]: the `--tls-*` flags and mutual-TLS configs for tonic.
//! - [`health`]: readiness, as `/health` reports it.
//! - [`conn`]: accepting connections with handshake timeouts and backoff.
//! - [`grpc`]: `HOST:PORT` endpoints, server limits, client channels.
//! - [`metrics`]: the self metrics every binary keeps, served as Prometheus
//!   text and emitted as counter envelopes.
//! - [`config`]: flags from the command line, `SPILLWAY_*` variables and a
//!   `--config` TOML file, with exit status 2 on bad input.
//! - [`egress`]: serving a subscription's diode as a v2 Egress stream.
//! - [`ingress`]: the v2 Ingress gRPC service, feeding any sink.
//! - [`logging`]: tracing setup, rate-limited warnings, shutdown signals.
//! - [`backoff`]: exponential backoff with jitter for redialling.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod conn;
pub mod diode;
pub mod egress;
pub mod fnv;
pub mod grpc;
pub mod health;
pub mod ingress;
pub mod logging;
pub mod metrics;
pub mod tls;

pub use logging::init_logging;

/// This machine's hostname, for the `host` tag and instance ids.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A clap value parser for a `usize` flag that must lie in `lo..=hi`, so
/// that 0 (where nothing would work) and huge values (which would panic or
/// exhaust memory when allocated) are refused with exit status 2 and one
/// line naming the flag and the range.
pub fn usize_in(lo: usize, hi: usize) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(lo as u64..=hi as u64)
}

/// Parses durations such as `50ms`, `15s`, `2m` (clap value parser):
/// more than zero and at most 30 days.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let bad =
        || format!("`{s}` is not a duration like 50ms, 15s or 2m (more than 0, at most 30 days)");
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(bad)?),
        _ => return Err(bad()),
    };
    if d.is_zero() || d > Duration::from_secs(30 * 24 * 3600) {
        return Err(bad());
    }
    Ok(d)
}

/// [`parse_duration`], or zero (`0`, `0ms`): for waits that may be off.
pub fn parse_duration_or_zero(s: &str) -> Result<std::time::Duration, String> {
    match s.trim_end_matches(|c: char| c.is_ascii_alphabetic()) {
        "0" if matches!(s, "0" | "0ms" | "0s" | "0m") => Ok(std::time::Duration::ZERO),
        _ => parse_duration(s),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn zero_is_a_duration_only_where_asked() {
        use super::{parse_duration, parse_duration_or_zero};
        assert!(parse_duration("0ms").is_err());
        for zero in ["0", "0ms", "0s", "0m"] {
            assert_eq!(parse_duration_or_zero(zero), Ok(Duration::ZERO));
        }
        assert_eq!(parse_duration_or_zero("2ms"), Ok(Duration::from_millis(2)));
        assert!(parse_duration_or_zero("0x").is_err());
        assert!(parse_duration_or_zero("-1ms").is_err());
    }

    #[test]
    fn durations_parse_and_bad_ones_are_refused() {
        assert_eq!(super::parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(super::parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(super::parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in [
            "0s",
            "0",
            "5h",
            "x",
            "",
            "99999999999999999999m",
            "31000000m",
        ] {
            assert!(super::parse_duration(bad).is_err(), "{bad}");
        }
    }
}
