//! `spillway`: the operator and consumer command line tool.
//!
//! Two subcommands talk Loggregator v2 gRPC:
//!
//! - [`tail`]: subscribe to an RLP's Egress API and print envelopes as they
//!   arrive, readable or as protobuf-JSON ([`format`]).
//! - [`emit`]: send numbered, timestamped test envelopes at a fixed rate
//!   through a collector's Ingress API.
//!
//! Flags come from the command line, `SPILLWAY_<FLAG>` environment variables
//! or a `--config` TOML file (see `spillway_plumbing::config`). Bad flags or
//! files exit with status 2 and one line on stderr; a failed run exits 1.

mod emit;
mod format;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Spillway's command line tool: read envelopes from an RLP (`tail`) and
/// send test envelopes into a collector (`emit`).
///
/// Every flag can also be given as an environment variable
/// SPILLWAY_<FLAG_IN_CAPS> (e.g. SPILLWAY_TLS_CA), or as a key in the TOML
/// file named by --config (e.g. `tls-ca = "/etc/spillway/ca.pem"`).
#[derive(Parser, Debug)]
#[command(name = "spillway", version)]
struct Cli {
    /// TOML file with values for the subcommand's flags, keyed by long flag
    /// name (`rlp = "rlp.example:8083"`, `source-id = ["a", "b"]`,
    /// `insecure-plaintext = true`). Flags on the command line and
    /// SPILLWAY_* variables win over the file.
    #[arg(long, global = true, value_name = "FILE", display_order = 1000)]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Tail(tail::TailArgs),
    Emit(emit::EmitArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli: Cli = spillway_plumbing::config::parse();
    // Warnings (such as the one for --insecure-plaintext) go to stderr.
    spillway_plumbing::init_logging("warn");

    let (name, result) = match cli.command {
        Command::Tail(args) => ("tail", tail::run(args).await),
        Command::Emit(args) => ("emit", emit::run(args).await),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `spillway tail | head` closes our stdout: that is a normal end.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("spillway {name}: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The value of a flag the subcommand cannot do without. Such flags are
/// optional to clap so that they can also come from the --config file
/// (which is read after a first parse); a missing one exits with status 2.
pub(crate) fn required<T>(value: Option<T>, long: &str, value_name: &str) -> T {
    value.unwrap_or_else(|| {
        let var = format!("SPILLWAY_{}", long.to_uppercase().replace('-', "_"));
        spillway_plumbing::config::exit_bad_input(&format!(
            "missing --{long} {value_name} (give it as a flag, as {var} or as `{long}` in --config)"
        ))
    })
}

/// A gRPC status as one line: the code, the message and whatever the
/// underlying errors (connect, TLS, HTTP/2) add to it.
pub(crate) fn describe(status: &tonic::Status) -> String {
    let mut text = format!("{:?}", status.code());
    if !status.message().is_empty() {
        text.push_str(": ");
        text.push_str(status.message());
    }
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let more = err.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = err.source();
    }
    text.replace('\n', " ")
}

/// Whether `status` says the TLS handshake failed (unknown CA, wrong server
/// name, rejected client certificate, TLS against a plaintext port). Tonic
/// reports these as `Unavailable` or `Unknown` with the rustls error in the
/// message or source chain, so this looks at the text.
pub(crate) fn is_tls_failure(status: &tonic::Status) -> bool {
    let text = describe(status).to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "alert",
        "corrupt message",
        "peer is incompatible",
    ]
    .iter()
    .any(|word| text.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn describe_and_tls_detection() {
        let s = tonic::Status::unavailable("tcp connect error: Connection refused (os error 111)");
        assert_eq!(
            describe(&s),
            "Unavailable: tcp connect error: Connection refused (os error 111)"
        );
        assert!(!is_tls_failure(&s));
        let s = tonic::Status::unavailable("invalid peer certificate: UnknownIssuer");
        assert!(is_tls_failure(&s));
    }
}
