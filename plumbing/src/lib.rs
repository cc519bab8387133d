//! Plumbing shared by the Spillway binaries.
//!
//! - [`diode`]: lossy lock-free buffers that drop the oldest item instead of
//!   blocking a producer, and count what they dropped.
//! - [`batch`]: turning a diode into batches that flush when full or after a
//!   short linger.
//! - [`tls`]: the `--tls-*` flags and mutual-TLS configs for tonic.
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
pub mod diode;
pub mod egress;
pub mod grpc;
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

/// Parses durations such as `50ms`, `15s`, `2m` (clap value parser).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 50ms, 15s or 2m"))?;
    Ok(match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" | "" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        _ => return Err(format!("`{s}` is not a duration like 50ms, 15s or 2m")),
    })
}
