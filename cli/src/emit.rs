//! `spillway emit`: send test envelopes through a collector's Ingress API.
//!
//! Envelopes go out on one `BatchSender` stream, in batches of up to 100,
//! paced to `--rate` per second by sleeping until each batch is due on a
//! fixed schedule (envelope `i` is due `i / rate` seconds after the start),
//! so that timer jitter does not add up and a slow moment is caught up.
//!
//! Every envelope carries its sequence number (1, 2, ...): log payloads and
//! event bodies read `seq=<n> ts=<ns> ` padded with `x` to `--size` bytes,
//! where `ts` equals the envelope's timestamp, so that a consumer can check
//! order, loss and latency.

use std::time::Duration;

use anyhow::bail;
use spillway_plumbing::config::exit_bad_input;
use spillway_plumbing::grpc::{self, HostPort};
use spillway_plumbing::tls::TlsArgs;
use spillway_proto::now_nanos;
use spillway_proto::v2::{self, envelope::Message, ingress_client::IngressClient};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

/// Most envelopes in one batch.
const MAX_BATCH_LEN: u64 = 100;
/// Batches stay below about this many bytes (gRPC servers accept 4 MiB).
const MAX_BATCH_BYTES: u64 = 1024 * 1024;
/// Largest --size.
const MAX_SIZE: u64 = 1024 * 1024;
/// The name of emitted counters and timers.
const METRIC_NAME: &str = "spillway_emit";

/// Send numbered test envelopes to a collector at a fixed rate.
///
/// Log payloads read `seq=<n> ts=<ns> xxxx...`, numbered from 1, with `ts`
/// the envelope's timestamp in nanoseconds. A summary goes to stderr at the
/// end; the exit status is 1 if the stream fails.
#[derive(clap::Args, Debug)]
pub struct EmitArgs {
    /// Required: the collector's v2 Ingress gRPC address (the collector
    /// listens on 127.0.0.1:3458 by default).
    #[arg(long, value_name = "HOST:PORT")]
    pub collector: Option<HostPort>,

    /// Required: the source id of every envelope.
    #[arg(long, value_name = "ID")]
    pub source_id: Option<String>,

    /// The instance id of every envelope.
    #[arg(long, value_name = "ID", default_value = "0")]
    pub instance_id: String,

    /// Required: envelopes per second; 0 sends as fast as the stream allows.
    #[arg(long, value_name = "N")]
    pub rate: Option<u64>,

    /// Required: how many envelopes to send in all.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Log payload (and event body) size in bytes: the `seq=.. ts=.. `
    /// header padded with `x`. A size below the header's length gives just
    /// the header. At most 1 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=MAX_SIZE))]
    pub size: u64,

    /// What to send.
    #[arg(long, value_enum, default_value_t = EmitKind::Log)]
    pub kind: EmitKind,

    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The envelope type `spillway emit` sends.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmitKind {
    /// Logs (stdout) with the numbered, padded payload.
    Log,
    /// Counters named `spillway_emit` with delta 1.
    Counter,
    /// Gauges with one metric `seq` (unit `count`) holding the number.
    Gauge,
    /// Timers named `spillway_emit` from the start of the run until now.
    Timer,
    /// Events titled `spillway emit` with the numbered, padded body.
    Event,
}

/// What to send where, once the required flags are known to be there.
#[derive(Debug)]
struct Emitter {
    collector: HostPort,
    source_id: String,
    instance_id: String,
    rate: u64,
    count: u64,
    size: u64,
    kind: EmitKind,
}

impl EmitArgs {
    /// Checks that the required flags were given (on the command line, as
    /// variables or in --config); exits with status 2 if not.
    fn emitter(&self) -> Emitter {
        use crate::required;
        Emitter {
            collector: required(self.collector.clone(), "collector", "HOST:PORT"),
            source_id: required(self.source_id.clone(), "source-id", "ID"),
            instance_id: self.instance_id.clone(),
            rate: required(self.rate, "rate", "N"),
            count: required(self.count, "count", "N"),
            size: self.size,
            kind: self.kind,
        }
    }
}

impl Emitter {
    /// Envelopes per batch: at most 100 and about 1 MiB, and small enough
    /// at low rates that a batch goes out at least every 100 ms.
    fn batch_len(&self) -> u64 {
        let by_bytes = MAX_BATCH_BYTES / (self.size + 64);
        let by_rate = if self.rate == 0 {
            MAX_BATCH_LEN
        } else {
            self.rate / 10
        };
        by_bytes.min(by_rate).clamp(1, MAX_BATCH_LEN)
    }

    /// Envelope number `seq` (from 1). `started` is the run's start, in ns.
    fn envelope(&self, seq: u64, started: i64) -> v2::Envelope {
        let ts = now_nanos();
        let message = match self.kind {
            EmitKind::Log => Message::Log(v2::Log {
                payload: payload(seq, ts, self.size).into(),
                r#type: v2::log::Type::Out as i32,
            }),
            EmitKind::Counter => Message::Counter(v2::Counter {
                name: METRIC_NAME.into(),
                delta: 1,
                total: 0,
            }),
            EmitKind::Gauge => Message::Gauge(v2::Gauge {
                metrics: [(
                    "seq".to_owned(),
                    v2::GaugeValue {
                        unit: "count".into(),
                        value: seq as f64,
                    },
                )]
                .into(),
            }),
            EmitKind::Timer => Message::Timer(v2::Timer {
                name: METRIC_NAME.into(),
                start: started,
                stop: ts,
            }),
            EmitKind::Event => Message::Event(v2::Event {
                title: "spillway emit".into(),
                body: String::from_utf8_lossy(&payload(seq, ts, self.size)).into_owned(),
            }),
        };
        v2::Envelope {
            timestamp: ts,
            source_id: self.source_id.clone(),
            instance_id: self.instance_id.clone(),
            message: Some(message),
            ..Default::default()
        }
    }
}

/// `seq=<seq> ts=<ts> ` padded with `x` to `size` bytes.
fn payload(seq: u64, ts: i64, size: u64) -> Vec<u8> {
    let mut payload = format!("seq={seq} ts={ts} ").into_bytes();
    let size = usize::try_from(size).unwrap_or(usize::MAX);
    if payload.len() < size {
        payload.resize(size, b'x');
    }
    payload
}

/// When envelope `index` (from 0) is due, counted from the start.
fn due(index: u64, rate: u64) -> Duration {
    let nanos = u128::from(index) * 1_000_000_000 / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Runs `spillway emit`: sends `--count` envelopes, then prints a summary.
pub async fn run(args: EmitArgs) -> anyhow::Result<()> {
    let emitter = args.emitter();
    let tls = args.tls.load().unwrap_or_else(|e| exit_bad_input(&e));
    let channel = grpc::channel(&emitter.collector, &tls).unwrap_or_else(|e| exit_bad_input(&e));
    let mut client = IngressClient::new(channel);

    // The stream's body is fed from this channel; a short queue keeps the
    // pacing honest (we cannot run far ahead of what the wire takes).
    let (tx, rx) = mpsc::channel::<v2::EnvelopeBatch>(4);
    let rpc = tokio::spawn(async move { client.batch_sender(ReceiverStream::new(rx)).await });

    let start = Instant::now();
    let started = now_nanos();
    let batch_len = emitter.batch_len();
    let mut sent: u64 = 0;
    while sent < emitter.count {
        if emitter.rate > 0 {
            tokio::time::sleep_until(start + due(sent, emitter.rate)).await;
        }
        let len = batch_len.min(emitter.count - sent);
        let batch = (sent + 1..=sent + len)
            .map(|seq| emitter.envelope(seq, started))
            .collect();
        if tx.send(v2::EnvelopeBatch { batch }).await.is_err() {
            // The call is over early; its result says why.
            break;
        }
        sent += len;
    }
    drop(tx); // ends the stream, so the collector answers

    let result = rpc.await?;
    let elapsed = start.elapsed().as_secs_f64();
    match result {
        Err(status) => bail!(
            "stream to {} failed ({sent} of {} envelopes were queued): {}",
            emitter.collector,
            emitter.count,
            crate::describe(&status)
        ),
        Ok(_) if sent < emitter.count => bail!(
            "{} ended the stream after {sent} of {} envelopes",
            emitter.collector,
            emitter.count
        ),
        Ok(_) => {
            let rate = if elapsed > 0.0 {
                sent as f64 / elapsed
            } else {
                0.0
            };
            eprintln!(
                "spillway emit: sent {sent} envelopes to {} in {elapsed:.3} s ({rate:.0}/s)",
                emitter.collector
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(flags: &[&str]) -> Emitter {
        let args = [
            "spillway",
            "emit",
            "--collector",
            "127.0.0.1:3458",
            "--source-id",
            "app",
        ]
        .iter()
        .chain(flags)
        .map(std::ffi::OsString::from);
        match crate::Cli::try_parse_from(args).unwrap().command {
            crate::Command::Emit(e) => e.emitter(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn payload_is_numbered_timestamped_and_padded() {
        let p = payload(7, 1_700_000_000_000_000_000, 40);
        assert_eq!(p.len(), 40);
        assert_eq!(p, b"seq=7 ts=1700000000000000000 xxxxxxxxxxx");
        assert_eq!(payload(12, 5, 3), b"seq=12 ts=5 ");
    }

    #[test]
    fn log_envelopes() {
        let args = parse(&["--rate", "10", "--count", "5", "--instance-id", "3"]);
        let e = args.envelope(4, 0);
        assert_eq!(e.source_id, "app");
        assert_eq!(e.instance_id, "3");
        let Some(Message::Log(log)) = &e.message else {
            panic!("{e:?}")
        };
        assert_eq!(log.payload.len(), 100);
        let header = format!("seq=4 ts={} ", e.timestamp);
        assert!(log.payload.starts_with(header.as_bytes()));
    }

    #[test]
    fn other_kinds() {
        for (kind, want) in [
            ("counter", spillway_proto::Kind::Counter),
            ("gauge", spillway_proto::Kind::Gauge),
            ("timer", spillway_proto::Kind::Timer),
            ("event", spillway_proto::Kind::Event),
        ] {
            let e = parse(&["--rate", "1", "--count", "1", "--kind", kind]).envelope(1, 0);
            assert_eq!(e.kind(), Some(want));
        }
    }

    #[test]
    fn batches_and_schedule() {
        assert_eq!(parse(&["--rate", "0", "--count", "1"]).batch_len(), 100);
        assert_eq!(parse(&["--rate", "5", "--count", "1"]).batch_len(), 1);
        assert_eq!(parse(&["--rate", "500", "--count", "1"]).batch_len(), 50);
        assert_eq!(
            parse(&["--rate", "100000", "--count", "1"]).batch_len(),
            100
        );
        let big = parse(&["--rate", "0", "--count", "1", "--size", "1048576"]);
        assert_eq!(big.batch_len(), 1);
        assert_eq!(due(0, 10), Duration::ZERO);
        assert_eq!(due(5, 10), Duration::from_millis(500));
        assert_eq!(due(3, 1_000_000), Duration::from_micros(3));
    }

    #[test]
    fn bad_flags_are_rejected() {
        let base = ["spillway", "emit", "--collector", "h:1", "--source-id", "a"];
        for extra in [
            &["--rate", "x", "--count", "1"][..],
            &["--rate", "1", "--count", "1", "--size", "2000000"],
            &["--rate", "1", "--count", "1", "--kind", "metric"],
        ] {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            assert!(crate::Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
