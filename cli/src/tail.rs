//! `spillway tail`: subscribe to an RLP and print envelopes as they arrive.
//!
//! The subscription is one `BatchedReceiver` call on the RLP's v2 Egress
//! API. Its selectors are the cross product of the `--source-id`s (none
//! given: any source) and the envelope types asked for (none asked for: all
//! five). Each received batch is written to a locked, buffered stdout and
//! flushed, so lines appear promptly without a system call per line.
//!
//! When the stream ends or fails, the error goes to stderr and the
//! subscription is made again after a backoff: the RLP may be restarting.
//! Errors that retrying cannot fix (a TLS handshake that fails, a
//! subscription the RLP rejects, an RLP that keeps dropping the connection
//! before answering) end the program with status 1 instead, as long as the
//! RLP has never accepted the subscription.

use std::io::{self, BufWriter, Write};

use anyhow::bail;
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::config::exit_bad_input;
use spillway_plumbing::grpc::{self, HostPort};
use spillway_plumbing::tls::TlsArgs;
use spillway_proto::Kind;
use spillway_proto::v2::{self, egress_client::EgressClient, selector::Message as Select};
use tonic::{Code, Status};

use crate::format;

/// Largest batch the client accepts from the RLP.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Print envelopes from an RLP as they arrive, one line each.
///
/// Without type flags every type is selected. Type flags and --source-id
/// combine: `--source-id a --source-id b --log --counter cpu` selects logs
/// and `cpu` counters of both a and b.
#[derive(clap::Args, Debug)]
pub struct TailArgs {
    /// Required: the RLP's v2 Egress gRPC address (the RLP listens on port
    /// 8083 by default).
    #[arg(long, value_name = "HOST:PORT")]
    pub rlp: Option<HostPort>,

    /// Only envelopes from this source id; repeat for several sources.
    /// Without it, envelopes from any source.
    #[arg(long, value_name = "ID")]
    pub source_id: Vec<String>,

    #[command(flatten)]
    pub types: TypeFlags,

    /// Share the stream with other subscribers that give the same shard id:
    /// each envelope goes to only one of them. Without it (or with a shard
    /// id no one else uses) this subscriber gets everything selected.
    #[arg(long, value_name = "ID", default_value = "")]
    pub shard_id: String,

    /// Route counters and gauges by name within the shard group, so the same
    /// metric always reaches the same subscriber.
    #[arg(long, value_name = "NAME", default_value = "")]
    pub deterministic_name: String,

    /// Print each envelope as one line of protobuf-JSON (proto field names,
    /// 64-bit integers as strings, payloads base64) instead of readable
    /// text.
    #[arg(long)]
    pub json: bool,

    /// Exit (status 0) after printing this many envelopes. Without it, run
    /// until interrupted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Which envelope types to select; none of them means all.
#[derive(clap::Args, Debug, Default)]
pub struct TypeFlags {
    /// Select logs.
    #[arg(long)]
    pub log: bool,

    /// Select counters named NAME; repeat for several names. Without NAME
    /// (or with an empty one), select every counter.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub counter: Vec<String>,

    /// Select gauges whose metric names are exactly the comma-separated set
    /// NAMES (e.g. `cpu,memory`); repeat for several sets. Without NAMES (or
    /// with an empty one), select every gauge.
    #[arg(long, value_name = "NAMES", num_args = 0..=1, default_missing_value = "")]
    pub gauge: Vec<String>,

    /// Select timers.
    #[arg(long)]
    pub timer: bool,

    /// Select events.
    #[arg(long)]
    pub event: bool,
}

impl TypeFlags {
    /// The selector messages asked for, with an empty source id to be filled
    /// in per source.
    fn messages(&self) -> Vec<Select> {
        let any_type = self.log
            || self.timer
            || self.event
            || !self.counter.is_empty()
            || !self.gauge.is_empty();
        if !any_type {
            return Kind::ALL
                .iter()
                .filter_map(|&kind| v2::Selector::of(kind, "").message)
                .collect();
        }

        let mut messages = Vec::new();
        if self.log {
            messages.push(Select::Log(v2::LogSelector {}));
        }
        // Any counter covers every named one.
        let counters: Vec<String> = if self.counter.iter().any(String::is_empty) {
            vec![String::new()]
        } else {
            dedup(self.counter.iter().cloned())
        };
        messages.extend(
            counters
                .into_iter()
                .map(|name| Select::Counter(v2::CounterSelector { name })),
        );
        // A gauge selector names a set of metric names; an empty set is any gauge.
        let sets: Vec<Vec<String>> = self.gauge.iter().map(|names| name_set(names)).collect();
        let sets = if sets.iter().any(Vec::is_empty) {
            vec![Vec::new()]
        } else {
            dedup(sets)
        };
        messages.extend(
            sets.into_iter()
                .map(|names| Select::Gauge(v2::GaugeSelector { names })),
        );
        if self.timer {
            messages.push(Select::Timer(v2::TimerSelector {}));
        }
        if self.event {
            messages.push(Select::Event(v2::EventSelector {}));
        }
        messages
    }
}

/// `"cpu, memory,,cpu"` → `["cpu", "memory"]`: trimmed, sorted, no empties or
/// duplicates (a gauge selector names a set).
fn name_set(names: &str) -> Vec<String> {
    let mut set: Vec<String> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    set.sort();
    set.dedup();
    set
}

/// The items in their first order, without repeats.
fn dedup<T: PartialEq>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

impl TailArgs {
    /// The selectors: every source id (or any source) × every type asked for.
    pub fn selectors(&self) -> Vec<v2::Selector> {
        let sources = if self.source_id.is_empty() {
            vec![String::new()]
        } else {
            dedup(self.source_id.iter().cloned())
        };
        let messages = self.types.messages();
        sources
            .iter()
            .flat_map(|source_id| {
                messages.iter().map(|message| v2::Selector {
                    source_id: source_id.clone(),
                    message: Some(message.clone()),
                })
            })
            .collect()
    }

    /// The subscription sent to the RLP.
    pub fn request(&self) -> v2::EgressBatchRequest {
        v2::EgressBatchRequest {
            shard_id: self.shard_id.clone(),
            legacy_selector: None,
            use_preferred_tags: true,
            selectors: self.selectors(),
            deterministic_name: self.deterministic_name.clone(),
        }
    }
}

/// Runs `spillway tail` until `--count` envelopes were printed, or forever.
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let rlp = crate::required(args.rlp.clone(), "rlp", "HOST:PORT");
    let tls = args.tls.load().unwrap_or_else(|e| exit_bad_input(&e));
    let channel = grpc::channel(&rlp, &tls).unwrap_or_else(|e| exit_bad_input(&e));
    let mut client = EgressClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let request = args.request();
    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed: u64 = 0;
    let mut backoff = Backoff::for_peers();
    let mut first_contact = FirstContact::default();

    loop {
        let failure = match client.batched_receiver(request.clone()).await {
            Err(status) => status,
            Ok(response) => {
                first_contact.accepted();
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) => {
                            backoff.reset();
                            for envelope in &batch.batch {
                                format::write_envelope(&mut out, envelope, args.json)?;
                                printed += 1;
                                if args.count == Some(printed) {
                                    out.flush()?;
                                    return Ok(());
                                }
                            }
                            out.flush()?;
                        }
                        Ok(None) => break Status::unavailable("the RLP ended the stream"),
                        Err(status) => break status,
                    }
                }
            }
        };
        if let Some(reason) = first_contact.give_up(&failure) {
            bail!("{rlp}: {reason}");
        }
        eprintln!(
            "spillway tail: {rlp}: {}; reconnecting",
            crate::describe(&failure)
        );
        backoff.wait().await;
    }
}

/// How often in a row the RLP may drop the connection before it ever
/// answered, until that counts as a misconfiguration.
const DROPS_BEFORE_GIVING_UP: u32 = 3;

/// Decides whether a failure should end the program instead of being
/// retried. Once the RLP has accepted the subscription, every failure is
/// retried (the RLP or the network may come back); before that, failures
/// that cannot go away by themselves end it.
#[derive(Debug, Default)]
struct FirstContact {
    accepted: bool,
    /// Calls in a row that failed after the TCP connection was made but
    /// before the RLP answered.
    drops: u32,
}

impl FirstContact {
    /// The RLP answered the subscription.
    fn accepted(&mut self) {
        self.accepted = true;
    }

    /// `Some(reason)` when `failure` should end the program.
    fn give_up(&mut self, failure: &Status) -> Option<String> {
        if self.accepted {
            return None;
        }
        if is_permanent(failure) {
            return Some(crate::describe(failure));
        }
        // An RLP that rejects our client certificate (TLS 1.3 tells the
        // client only after the handshake) or that speaks TLS to our
        // plaintext shows up as a connection dropped mid-call: `Unknown`
        // (broken pipe), `Cancelled` (connection closed) or `Internal`
        // (garbled HTTP/2). A refused or timed-out connection is
        // `Unavailable`, and may well be an RLP that is still starting.
        if matches!(
            failure.code(),
            Code::Unknown | Code::Cancelled | Code::Internal
        ) {
            self.drops += 1;
        } else {
            self.drops = 0;
        }
        (self.drops >= DROPS_BEFORE_GIVING_UP).then(|| {
            format!(
                "{} (the RLP dropped the connection {} times before answering: check that \
                 both sides use TLS, or both --insecure-plaintext, and that the RLP trusts \
                 the CA that signed --tls-cert)",
                crate::describe(failure),
                self.drops
            )
        })
    }
}

/// Failures that retrying will not fix: TLS trouble, a subscription the RLP
/// rejects, refused credentials, or a peer that is not an RLP.
fn is_permanent(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::InvalidArgument
            | Code::ResourceExhausted
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
    ) || crate::is_tls_failure(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(flags: &[&str]) -> TailArgs {
        let args = ["spillway", "tail", "--rlp", "rlp:8083"]
            .iter()
            .chain(flags)
            .map(std::ffi::OsString::from);
        match crate::Cli::try_parse_from(args).unwrap().command {
            crate::Command::Tail(t) => t,
            other => panic!("{other:?}"),
        }
    }

    fn selectors(flags: &[&str]) -> Vec<(String, Select)> {
        parse(flags)
            .selectors()
            .into_iter()
            .map(|s| (s.source_id, s.message.unwrap()))
            .collect()
    }

    fn counter(name: &str) -> Select {
        Select::Counter(v2::CounterSelector { name: name.into() })
    }

    fn gauge(names: &[&str]) -> Select {
        Select::Gauge(v2::GaugeSelector {
            names: names.iter().map(|n| n.to_string()).collect(),
        })
    }

    #[test]
    fn no_flags_select_every_type_of_any_source() {
        let s = selectors(&[]);
        let kinds: Vec<_> = parse(&[])
            .selectors()
            .iter()
            .map(|s| s.kind().unwrap())
            .collect();
        assert_eq!(kinds, Kind::ALL);
        assert!(s.iter().all(|(source, _)| source.is_empty()));
        assert!(s.contains(&(String::new(), counter(""))));
        assert!(s.contains(&(String::new(), gauge(&[]))));
    }

    #[test]
    fn sources_times_types() {
        let s = selectors(&["--source-id", "a", "--source-id", "b", "--log", "--timer"]);
        assert_eq!(
            s,
            vec![
                ("a".into(), Select::Log(v2::LogSelector {})),
                ("a".into(), Select::Timer(v2::TimerSelector {})),
                ("b".into(), Select::Log(v2::LogSelector {})),
                ("b".into(), Select::Timer(v2::TimerSelector {})),
            ]
        );
    }

    #[test]
    fn counters_and_gauges_by_name() {
        let s = selectors(&["--counter", "cpu", "--counter", "mem", "--counter", "cpu"]);
        assert_eq!(
            s,
            vec![
                (String::new(), counter("cpu")),
                (String::new(), counter("mem"))
            ]
        );

        // A bare --counter (followed by another flag) means any counter.
        let s = selectors(&["--counter", "cpu", "--counter", "--event"]);
        assert_eq!(
            s,
            vec![
                (String::new(), counter("")),
                (String::new(), Select::Event(v2::EventSelector {})),
            ]
        );

        let s = selectors(&["--gauge", "mem, cpu", "--gauge", "disk"]);
        assert_eq!(
            s,
            vec![
                (String::new(), gauge(&["cpu", "mem"])),
                (String::new(), gauge(&["disk"])),
            ]
        );
        let s = selectors(&["--gauge=", "--gauge", "disk"]);
        assert_eq!(s, vec![(String::new(), gauge(&[]))]);
        let s = selectors(&["--gauge"]);
        assert_eq!(s, vec![(String::new(), gauge(&[]))]);
    }

    #[test]
    fn request_fields() {
        let r = parse(&[
            "--shard-id",
            "group",
            "--deterministic-name",
            "dn",
            "--log",
            "--count",
            "3",
        ])
        .request();
        assert_eq!(r.shard_id, "group");
        assert_eq!(r.deterministic_name, "dn");
        assert!(r.use_preferred_tags);
        assert!(r.legacy_selector.is_none());
        assert_eq!(r.selectors.len(), 1);
    }

    #[test]
    fn bad_flags_are_rejected() {
        for bad in [
            &["spillway", "tail", "--rlp", "nope"][..],
            &["spillway", "tail", "--rlp", "a:1", "--count", "0"],
            &["spillway", "tail", "--rlp", "a:1", "--count", "-1"],
            &[
                "spillway",
                "tail",
                "--rlp",
                "a:1",
                "--insecure-plaintext",
                "--tls-ca",
                "x",
            ],
        ] {
            assert!(crate::Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permanent_failures() {
        assert!(is_permanent(&Status::invalid_argument("no selectors")));
        assert!(is_permanent(&Status::resource_exhausted("too many")));
        assert!(!is_permanent(&Status::unavailable("connection refused")));
        assert!(!is_permanent(&Status::unknown("transport error")));
    }

    #[test]
    fn first_contact_gives_up_only_before_the_rlp_answered() {
        let mut c = FirstContact::default();
        assert!(
            c.give_up(&Status::unavailable("tcp connect error"))
                .is_none()
        );
        assert!(
            c.give_up(&Status::invalid_argument("no selectors"))
                .is_some()
        );

        // Dropped connections: the third in a row ends it, a refused
        // connection in between starts the count again.
        let dropped = Status::unknown("transport error: broken pipe");
        assert!(c.give_up(&dropped).is_none());
        assert!(c.give_up(&dropped).is_none());
        assert!(
            c.give_up(&Status::unavailable("tcp connect error"))
                .is_none()
        );
        assert!(c.give_up(&Status::cancelled("connection closed")).is_none());
        assert!(c.give_up(&Status::internal("h2 protocol error")).is_none());
        let reason = c.give_up(&dropped).unwrap();
        assert!(reason.contains("3 times"), "{reason}");

        let mut c = FirstContact::default();
        c.accepted();
        assert!(c.give_up(&Status::invalid_argument("x")).is_none());
        for _ in 0..5 {
            assert!(c.give_up(&dropped).is_none());
        }
    }
}
