//! The counting consumer: one gRPC Egress stream from the RLP (all logs of
//! every source), counting the emitters' lines.
//!
//! Lines are told apart by source id (the container name, one emitter per
//! container) and the `seq=` number the emitter writes; a bitset per
//! emitter finds duplicates. Latency is the time a batch arrives minus the
//! `ts=` the emitter wrote into the line (same host, same clock).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use spillway_e2e::{Certs, Rlp, v2};
use spillway_proto::now_nanos;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What the consumer saw.
pub struct Tally {
    /// Distinct lines.
    pub distinct: u64,
    /// Extra copies of lines already seen.
    pub dup: u64,
    /// Lines of an emitter of the run with a number out of range, or that
    /// do not parse: a harness or pipeline bug, reported.
    pub garbled: u64,
    /// Lines never seen, counted from the bitsets at the end (apart from
    /// `distinct`, counted as lines arrive: the two must add up).
    pub missing: u64,
    /// Latency, microseconds.
    pub latency_us: Histogram<u64>,
    /// Earliest emitter timestamp seen, ns since the epoch.
    pub first_ts: i64,
    /// When the last distinct line arrived, ns since the epoch.
    pub last_rx: i64,
}

/// A running consumer.
pub struct Consumer {
    progress: Arc<Progress>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<Tally>>,
}

#[derive(Default)]
struct Progress {
    distinct: AtomicU64,
}

impl Consumer {
    /// Subscribes to `rlp` for the lines of containers named
    /// `<prefix><n>`, `n` in `0..emitters`, each writing `lines` lines.
    pub async fn start(
        rlp: &Rlp,
        certs: &Certs,
        prefix: String,
        emitters: u32,
        lines: u64,
    ) -> Consumer {
        let mut stream = rlp.logs_of(certs, "").await;
        let progress = Arc::new(Progress::default());
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn({
            let progress = progress.clone();
            async move {
                let mut count = Counter::new(prefix, emitters, lines);
                loop {
                    let batch = tokio::select! {
                        _ = &mut stopped => break,
                        batch = stream.message() => batch,
                    };
                    let Some(batch) = batch? else {
                        anyhow::bail!("the RLP closed the stream");
                    };
                    count.batch(&batch.batch, now_nanos());
                    progress
                        .distinct
                        .store(count.tally.distinct, Ordering::Relaxed);
                }
                Ok(count.finish())
            }
        });
        Consumer {
            progress,
            stop,
            task,
        }
    }

    pub fn distinct(&self) -> u64 {
        self.progress.distinct.load(Ordering::Relaxed)
    }

    /// Waits until `sent` lines arrived, or none for `idle`, or `limit`.
    pub async fn drain(&self, sent: u64, idle: Duration, limit: Duration) {
        let deadline = Instant::now() + limit;
        let mut last = self.distinct();
        let mut last_change = Instant::now();
        while self.distinct() < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.distinct();
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() >= idle {
                break;
            }
        }
    }

    pub async fn finish(self) -> anyhow::Result<Tally> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// The counting itself, apart from the stream.
struct Counter {
    prefix: String,
    lines: u64,
    /// Seen line numbers per emitter, one bit each.
    seen: HashMap<String, Vec<u64>>,
    tally: Tally,
}

impl Counter {
    fn new(prefix: String, emitters: u32, lines: u64) -> Counter {
        let words = lines.div_ceil(64) as usize;
        let seen = (0..emitters)
            .map(|n| (format!("{prefix}{n}"), vec![0u64; words]))
            .collect();
        Counter {
            prefix,
            lines,
            seen,
            tally: Tally {
                distinct: 0,
                missing: 0,
                dup: 0,
                garbled: 0,
                // 1 µs to an hour; longer saturates.
                latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
                first_ts: i64::MAX,
                last_rx: 0,
            },
        }
    }

    fn batch(&mut self, batch: &[v2::Envelope], rx: i64) {
        for e in batch {
            if !e.source_id.starts_with(&self.prefix) {
                continue; // not this run's: other containers, self metrics
            }
            let Some(v2::envelope::Message::Log(log)) = &e.message else {
                continue;
            };
            let parsed = parse_line(&log.payload).filter(|(seq, _)| *seq < self.lines);
            let (Some(bits), Some((seq, ts))) = (self.seen.get_mut(&e.source_id), parsed) else {
                self.tally.garbled += 1;
                continue;
            };
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if bits[word] & bit != 0 {
                self.tally.dup += 1;
                continue;
            }
            bits[word] |= bit;
            let t = &mut self.tally;
            t.distinct += 1;
            t.first_ts = t.first_ts.min(ts);
            t.last_rx = rx;
            t.latency_us
                .saturating_record(((rx - ts).max(0) / 1000) as u64);
        }
    }
}

impl Counter {
    fn finish(mut self) -> Tally {
        let seen: u64 = self
            .seen
            .values()
            .flatten()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        self.tally.missing = self.lines * self.seen.len() as u64 - seen;
        self.tally
    }
}

/// `(seq, ts)` from `seq=<n> ts=<ns> …` (the emitter's line, without its
/// newline).
fn parse_line(payload: &[u8]) -> Option<(u64, i64)> {
    let mut fields = payload.split(|&b| b == b' ');
    let seq = std::str::from_utf8(fields.next()?.strip_prefix(b"seq=")?).ok()?;
    let ts = std::str::from_utf8(fields.next()?.strip_prefix(b"ts=")?).ok()?;
    Some((seq.parse().ok()?, ts.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(source: &str, seq: u64, ts: i64) -> v2::Envelope {
        v2::Envelope::log(
            ts,
            source,
            "0",
            format!("seq={seq} ts={ts} xxxx").into_bytes(),
            v2::log::Type::Out,
        )
    }

    #[test]
    fn parses_emitter_lines() {
        assert_eq!(parse_line(b"seq=7 ts=123 xxx"), Some((7, 123)));
        assert_eq!(parse_line(b"seq=7 ts=123"), Some((7, 123)));
        assert_eq!(parse_line(b"hello"), None);
        assert_eq!(parse_line(b"seq=x ts=1 "), None);
    }

    #[test]
    fn counts_distinct_duplicates_garbled_and_latency() {
        let mut c = Counter::new("run-".into(), 2, 100);
        let batch = vec![
            line("run-0", 0, 1_000_000),
            line("run-0", 1, 2_000_000),
            line("run-0", 1, 2_000_000), // duplicate
            line("run-1", 0, 1_500_000),
            line("run-1", 100, 1_000_000), // out of range
            line("run-9", 0, 1_000_000),   // not an emitter of the run
            line("other", 0, 1_000_000),   // not of the run at all
        ];
        c.batch(&batch, 4_000_000);
        let t = &c.tally;
        assert_eq!((t.distinct, t.dup, t.garbled), (3, 1, 2));
        assert_eq!(t.first_ts, 1_000_000);
        assert_eq!(t.last_rx, 4_000_000);
        // Equal within the histogram's 3 significant figures.
        assert!(t.latency_us.equivalent(t.latency_us.max(), 3000));
        assert!(t.latency_us.equivalent(t.latency_us.min(), 2000));
        assert_eq!(t.latency_us.len(), 3);
        // 2 emitters × 100 lines, 3 seen.
        assert_eq!(c.finish().missing, 197);
    }
}
