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
//! - [`backoff`]: exponential backoff with jitter for redialling.

pub mod backoff;
pub mod batch;
pub mod config;
pub mod diode;
pub mod grpc;
pub mod metrics;
pub mod tls;

/// Sets up `tracing` output on stderr; `RUST_LOG` overrides `default`.
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
