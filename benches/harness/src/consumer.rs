//! The counting consumer: one gRPC Egress stream from the RLP (all logs of
//! every source), counting the emitters' lines.
//!
//! Lines are told apart by the emitter that wrote them and the `seq=`
//! number the emitter writes; a bitset per emitter finds duplicates. The
//! emitter is the `src=<n>` the line carries (emitter `n` runs in container
//! `<prefix><n>`), or for lines without one the envelope's source id (the
//! container name). Each distinct line's envelope is checked against the
//! container that wrote it: source id and tag `container_name` its name,
//! tag `container_id` its id. Latency is the time a batch arrives minus the
//! `ts=` the emitter wrote into the line (same host, same clock).

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
    /// Distinct lines whose envelope did not name their container (see
    /// [`tags_match`]).
    pub wrong_tags: u64,
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
    /// Container ids by emitter number, known once the containers exist
    /// (before they write).
    ids: std::sync::Mutex<Option<Vec<String>>>,
}

/// How the wait for the last lines ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every line arrived.
    All,
    /// Nothing new arrived for the idle time.
    Idle,
    /// The time bound.
    Limit,
}

impl DrainEnd {
    pub fn name(self) -> &'static str {
        match self {
            DrainEnd::All => "all",
            DrainEnd::Idle => "idle",
            DrainEnd::Limit => "limit",
        }
    }
}

impl Consumer {
    /// Subscribes to `rlp` for the lines of containers named
    /// `<prefix><n>`, `n` in `0..emitters`, each writing `lines` lines.
    /// The containers' ids are given later ([`Consumer::expect_ids`]).
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
                    if count.ids.is_none() {
                        count.ids = progress.ids.lock().unwrap().clone();
                    }
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

    /// The ids of the containers, by emitter number: the tags to check.
    /// Until given, lines are checked by name only; give them before the
    /// emitters write.
    pub fn expect_ids(&self, ids: Vec<String>) {
        *self.progress.ids.lock().unwrap() = Some(ids);
    }

    /// Waits until `sent` lines arrived, or none for `idle`, or `limit`.
    pub async fn drain(&self, sent: u64, idle: Duration, limit: Duration) -> DrainEnd {
        let deadline = Instant::now() + limit;
        let mut last = self.distinct();
        let mut last_change = Instant::now();
        loop {
            if self.distinct() >= sent {
                return DrainEnd::All;
            }
            if Instant::now() >= deadline {
                return DrainEnd::Limit;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.distinct();
            if now != last {
                (last, last_change) = (now, Instant::now());
            } else if last_change.elapsed() >= idle {
                return DrainEnd::Idle;
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
    /// Seen line numbers per emitter (by number), one bit each.
    seen: Vec<Vec<u64>>,
    /// Container ids by emitter number, once known.
    ids: Option<Vec<String>>,
    tally: Tally,
}

impl Counter {
    fn new(prefix: String, emitters: u32, lines: u64) -> Counter {
        let words = lines.div_ceil(64) as usize;
        Counter {
            prefix,
            lines,
            seen: vec![vec![0u64; words]; emitters as usize],
            ids: None,
            tally: Tally {
                distinct: 0,
                missing: 0,
                wrong_tags: 0,
                dup: 0,
                garbled: 0,
                // 1 µs to an hour; longer saturates.
                latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
                first_ts: i64::MAX,
                last_rx: 0,
            },
        }
    }

    /// The emitter number of a container name of the run.
    fn emitter_of(&self, source_id: &str) -> Option<usize> {
        source_id.strip_prefix(&self.prefix)?.parse().ok()
    }

    fn batch(&mut self, batch: &[v2::Envelope], rx: i64) {
        for e in batch {
            let Some(v2::envelope::Message::Log(log)) = &e.message else {
                continue;
            };
            let line = parse_line(&log.payload);
            let ours = e.source_id.starts_with(&self.prefix);
            // The writer: what the line says, else what the envelope says.
            let writer = match line.as_ref().and_then(|l| l.src) {
                Some(src) => src.parse::<usize>().ok(),
                None if ours => self.emitter_of(&e.source_id),
                None => continue, // not this run's: other containers, self metrics
            };
            let line = line.filter(|l| l.seq < self.lines);
            let (Some(n), Some(line)) = (writer.filter(|&n| n < self.seen.len()), line) else {
                if ours {
                    self.tally.garbled += 1;
                }
                continue;
            };
            let bits = &mut self.seen[n];
            let (word, bit) = ((line.seq / 64) as usize, 1u64 << (line.seq % 64));
            if bits[word] & bit != 0 {
                self.tally.dup += 1;
                continue;
            }
            bits[word] |= bit;
            let name = format!("{}{n}", self.prefix);
            let id = self
                .ids
                .as_ref()
                .and_then(|ids| ids.get(n))
                .map(String::as_str);
            let ts = line.ts;
            let t = &mut self.tally;
            if !tags_match(e, &name, id) {
                t.wrong_tags += 1;
            }
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
            .iter()
            .flatten()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        self.tally.missing = self.lines * self.seen.len() as u64 - seen;
        self.tally
    }
}

/// Does envelope `e` name the container `name` (with id `id`, when
/// known): source id and tag `container_name` the name, tag
/// `container_id` the id? (The emitters' containers have no label that
/// changes the source id.)
pub fn tags_match(e: &v2::Envelope, name: &str, id: Option<&str>) -> bool {
    e.source_id == name
        && e.tags.get("container_name").map(String::as_str) == Some(name)
        && id.is_none_or(|id| e.tags.get("container_id").map(String::as_str) == Some(id))
}

/// The header of an emitter's line.
#[derive(Debug, PartialEq)]
struct Line<'a> {
    seq: u64,
    /// Unix ns of the write.
    ts: i64,
    /// The emitter's number, when the line says.
    src: Option<&'a str>,
}

/// `seq=<n> ts=<ns> [src=<emitter>] …` (the emitter's line, without its
/// newline).
fn parse_line(payload: &[u8]) -> Option<Line<'_>> {
    let mut fields = payload.split(|&b| b == b' ');
    let seq = std::str::from_utf8(fields.next()?.strip_prefix(b"seq=")?).ok()?;
    let ts = std::str::from_utf8(fields.next()?.strip_prefix(b"ts=")?).ok()?;
    let src = fields
        .next()
        .and_then(|f| f.strip_prefix(b"src="))
        .and_then(|s| std::str::from_utf8(s).ok());
    Some(Line {
        seq: seq.parse().ok()?,
        ts: ts.parse().ok()?,
        src,
    })
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

    /// A line of emitter `src` in an envelope naming `source` and tagged
    /// with `tags`.
    fn tagged(source: &str, src: u32, seq: u64, tags: &[(&str, &str)]) -> v2::Envelope {
        let mut e = v2::Envelope::log(
            1,
            source,
            "0",
            format!("seq={seq} ts=1 src={src} xxxx").into_bytes(),
            v2::log::Type::Out,
        );
        e.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        e
    }

    #[test]
    fn parses_emitter_lines() {
        let l = |seq, ts, src| Some(Line { seq, ts, src });
        assert_eq!(parse_line(b"seq=7 ts=123 xxx"), l(7, 123, None));
        assert_eq!(parse_line(b"seq=7 ts=123"), l(7, 123, None));
        assert_eq!(parse_line(b"seq=7 ts=123 src=4 xx"), l(7, 123, Some("4")));
        assert_eq!(parse_line(b"seq=7 ts=123 src=4"), l(7, 123, Some("4")));
        assert_eq!(parse_line(b"hello"), None);
        assert_eq!(parse_line(b"seq=x ts=1 "), None);
    }

    #[test]
    fn checks_each_lines_container_tags() {
        let mut c = Counter::new("run-".into(), 3, 10);
        c.ids = Some(vec!["id0".into(), "id1".into(), "id2".into()]);
        let right = |n: u32, seq| {
            let name = format!("run-{n}");
            let id = format!("id{n}");
            tagged(
                &name,
                n,
                seq,
                &[("container_name", &name), ("container_id", &id)],
            )
        };
        let batch = vec![
            right(0, 0),
            right(1, 0),
            right(2, 0),
            right(2, 0), // a duplicate is not checked again
            // Emitter 1's line in an envelope naming container 0.
            tagged(
                "run-0",
                1,
                1,
                &[("container_name", "run-0"), ("container_id", "id0")],
            ),
            // Right name, wrong id.
            tagged(
                "run-2",
                2,
                1,
                &[("container_name", "run-2"), ("container_id", "id0")],
            ),
            // No tags at all.
            tagged("run-1", 1, 2, &[]),
            // Emitter 0's line under a source id that is not the run's.
            tagged("unknown", 0, 1, &[]),
            // Neither the run's nor an emitter's line: ignored.
            line("other", 0, 1),
        ];
        c.batch(&batch, 10);
        let t = &c.tally;
        assert_eq!((t.distinct, t.dup, t.garbled), (7, 1, 0));
        assert_eq!(t.wrong_tags, 4);
        // Lines counted against the emitter that wrote them.
        assert_eq!(c.seen[1][0], 0b111);
        assert_eq!(c.seen[0][0], 0b11);
        assert_eq!(c.finish().missing, 30 - 7);
    }

    #[test]
    fn tags_without_ids_are_checked_by_name() {
        let e = tagged("run-0", 0, 0, &[("container_name", "run-0")]);
        assert!(tags_match(&e, "run-0", None));
        assert!(!tags_match(&e, "run-0", Some("id0")));
        assert!(!tags_match(&e, "run-1", None));
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
