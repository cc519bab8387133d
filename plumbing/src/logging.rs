//! Logging helpers: tracing setup, warnings that cannot flood the log, and
//! the signals that stop a binary.

use std::time::{Duration, Instant};

/// Sets up `tracing` output on stderr; `RUST_LOG` overrides `default`.
pub fn init_logging(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// An error with its sources, `outer: inner: innermost`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Logs a warning at most once per interval, counting the ones it held back.
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    pub fn new(every: Duration) -> Self {
        RateLimited {
            every,
            last: None,
            suppressed: 0,
        }
    }

    pub fn warn(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return;
        }
        let held = std::mem::take(&mut self.suppressed);
        if held > 0 {
            tracing::warn!("{} (and {held} similar since the last report)", msg());
        } else {
            tracing::warn!("{}", msg());
        }
        self.last = Some(now);
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The end of every server binary's `main`: a start error is bad input
/// (exit status 2, one line); otherwise serve until SIGINT/SIGTERM, or exit
/// with status 1 if the server stops by itself.
pub async fn run_until_signal(started: Result<tokio::task::JoinHandle<()>, String>) {
    match started {
        Ok(server) => tokio::select! {
            _ = server => std::process::exit(1),
            _ = shutdown_signal() => tracing::info!("stopping on signal"),
        },
        Err(e) => crate::config::exit_bad_input(&e),
    }
}
