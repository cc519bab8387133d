//! `--source files`: CRI log files, written by the test into a pod logs
//! directory of its own exactly as containerd and CRI-O write them, read by
//! the real collector and carried through a real router and RLP (mutual
//! TLS) to a gRPC consumer. No runtime is needed: the files are the
//! interface.
//!
//! Every test ends its writes with a sentinel line and waits for it, so
//! that "nothing more came" is known, not waited for: lines reach the
//! consumer in the order they were written.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spillway_e2e::*;
use spillway_proto::v2::{Envelope, envelope::Message, log::Type};

/// 2026-12-01T00:00:00Z in ns since the epoch; record `n` is stamped
/// `n` ns later.
const BASE: i64 = 1_796_083_200_000_000_000;

/// A CRI record stamped `BASE + n` ns.
fn record(n: u64, stream: &str, tag: &str, content: &str) -> String {
    format!("2026-12-01T00:00:00.{n:09}Z {stream} {tag} {content}\n")
}

/// Records `from..to` of stdout, each a full line `line <n>`.
fn numbered(from: u64, to: u64) -> String {
    (from..to)
        .map(|n| record(n, "stdout", "F", &format!("line {n}")))
        .collect()
}

/// A pod logs directory of the test's own, deleted at the end.
struct PodLogs {
    dir: PathBuf,
}

impl PodLogs {
    fn new(certs: &Certs) -> PodLogs {
        let dir = certs.dir.join("pods");
        std::fs::create_dir_all(&dir).unwrap();
        PodLogs { dir }
    }

    fn pod_dir(&self, namespace: &str, pod: &str, uid: &str) -> PathBuf {
        self.dir.join(format!("{namespace}_{pod}_{uid}"))
    }

    /// The log file of `container`'s first run, its directory created.
    fn log(&self, namespace: &str, pod: &str, uid: &str, container: &str) -> PathBuf {
        let dir = self.pod_dir(namespace, pod, uid).join(container);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("0.log")
    }
}

/// Appends `text` to `path` in one write (as a runtime writes a record).
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

struct Pipeline {
    certs: Certs,
    router: Router,
    rlp: Rlp,
    collector: Option<Collector>,
    pods: PodLogs,
}

impl Pipeline {
    /// Router, RLP and an empty pod logs directory; the collector comes
    /// with [`Pipeline::start_collector`].
    fn new() -> Pipeline {
        let certs = Certs::new();
        let router = Router::start(&certs, &[]);
        let rlp = Rlp::start(&certs, &[&router], &[]);
        let pods = PodLogs::new(&certs);
        Pipeline {
            certs,
            router,
            rlp,
            collector: None,
            pods,
        }
    }

    /// Starts a collector reading the pod logs directory, once ready.
    fn start_collector(&mut self) {
        let dir = self.pods.dir.display().to_string();
        self.collector = Some(Collector::start(
            &self.certs,
            &[&self.router],
            &[
                "--source",
                "files",
                "--pod-logs-dir",
                &dir,
                "--files-poll-interval",
                "20ms",
            ],
        ));
    }

    /// A pipeline with its collector started.
    fn start() -> Pipeline {
        let mut p = Pipeline::new();
        p.start_collector();
        p
    }

    fn collector(&mut self) -> &mut Collector {
        self.collector.as_mut().expect("started")
    }

    async fn consumer(&self, source_id: &str) -> tonic::Streaming<v2::EnvelopeBatch> {
        self.rlp.logs_of(&self.certs, source_id).await
    }

    fn metric(&self, sample: &str) -> Option<u64> {
        metric(self.collector.as_ref().expect("started").http_port, sample)
    }
}

fn payload(e: &Envelope) -> String {
    match &e.message {
        Some(Message::Log(l)) => String::from_utf8_lossy(&l.payload).into_owned(),
        other => panic!("not a log: {other:?}"),
    }
}

fn log_type(e: &Envelope) -> Type {
    match &e.message {
        Some(Message::Log(l)) => Type::try_from(l.r#type).unwrap(),
        other => panic!("not a log: {other:?}"),
    }
}

/// Reads until an envelope with payload `sentinel` came (at most 30 s).
async fn until_sentinel(
    stream: &mut tonic::Streaming<v2::EnvelopeBatch>,
    sentinel: &str,
) -> Vec<Envelope> {
    let got = collect_until(stream, Duration::from_secs(30), |got| {
        got.iter().any(|e| payload(e) == sentinel)
    })
    .await;
    assert!(
        got.iter().any(|e| payload(e) == sentinel),
        "{sentinel:?} did not come; got {:?}",
        got.iter().map(payload).collect::<Vec<_>>()
    );
    got
}

/// Reads until `n` envelopes came (at most 30 s); fails with fewer.
async fn exactly(stream: &mut tonic::Streaming<v2::EnvelopeBatch>, n: usize) -> Vec<Envelope> {
    let got = collect_until(stream, Duration::from_secs(30), |got| got.len() >= n).await;
    assert_eq!(
        got.len(),
        n,
        "{:?}",
        got.iter().map(payload).collect::<Vec<_>>()
    );
    got
}

/// The payloads `line <from>` .. `line <to - 1>`.
fn lines(from: u64, to: u64) -> Vec<String> {
    (from..to).map(|n| format!("line {n}")).collect()
}

fn s(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_carry_the_pod_tags_and_partial_records_are_joined() {
    let mut p = Pipeline::new();
    let mut web_consumer = p.consumer("web").await;
    let mut db_consumer = p.consumer("db-0").await;
    // Written before the collector starts: read from the file's start.
    let web = p.pods.log("shop", "web-7d9f8b6c5d-x2b4k", "uid-web", "app");
    append(&web, &record(1, "stdout", "F", "hello"));
    p.start_collector();
    append(&web, &record(2, "stderr", "F", "oops"));
    append(&web, &record(3, "stdout", "P", "par"));
    append(&web, &record(4, "stderr", "F", ""));
    append(&web, "this is not a CRI record\n");
    append(&web, &record(5, "stdout", "P", "ti"));
    append(&web, &record(6, "stdout", "F", "al"));
    // A pod that appears while the collector runs (a StatefulSet's).
    let db = p.pods.log("shop", "db-0", "uid-db", "postgres");
    append(&db, &record(7, "stdout", "F", "ready"));

    let got = exactly(&mut web_consumer, 4).await;
    let seen: Vec<(String, Type, i64)> = got
        .iter()
        .map(|e| (payload(e), log_type(e), e.timestamp))
        .collect();
    assert_eq!(
        seen,
        [
            ("hello".to_string(), Type::Out, BASE + 1),
            ("oops".to_string(), Type::Err, BASE + 2),
            (String::new(), Type::Err, BASE + 4),
            // Joined, stamped with its first record's time.
            ("partial".to_string(), Type::Out, BASE + 3),
        ]
    );
    for e in &got {
        assert_eq!(e.source_id, "web");
        assert_eq!(e.instance_id, "web-7d9f8b6c5d-x2b4k");
        assert_eq!(
            e.tags,
            s(&[
                ("namespace", "shop"),
                ("pod", "web-7d9f8b6c5d-x2b4k"),
                ("pod_uid", "uid-web"),
                ("container", "app"),
                ("host", "e2e-host"),
                ("source_type", "container"),
            ])
        );
    }
    let db_got = exactly(&mut db_consumer, 1).await;
    assert_eq!(payload(&db_got[0]), "ready");
    assert_eq!(db_got[0].source_id, "db-0");
    assert_eq!(db_got[0].tags["container"], "postgres");
    assert_eq!(
        p.metric("spillway_capture_dropped_total{reason=\"malformed\"}"),
        Some(1),
        "the record that is not CRI is counted"
    );
    assert_eq!(p.metric("spillway_files_followed"), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_by_rename_and_by_truncation_loses_and_repeats_nothing() {
    let p = Pipeline::start();
    let mut consumer = p.consumer("agent").await;
    let log = p
        .pods
        .log("kube-system", "agent-x7k2p", "uid-agent", "agent");
    append(&log, &numbered(0, 100));
    let mut got = exactly(&mut consumer, 100).await;

    // The kubelet's rotation: rename, the runtime writes on into the
    // renamed file until it reopens, then the new file.
    let rotated = log.with_file_name("0.log.20261201-000000");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &numbered(100, 150));
    append(&log, &numbered(150, 250));
    got.extend(exactly(&mut consumer, 150).await);

    // copytruncate: copied away, then truncated in place, then written on.
    std::fs::copy(&log, log.with_file_name("0.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    // As long as what was there: only the first bytes tell the change.
    append(&log, &numbered(250, 350));
    append(&log, &record(999, "stdout", "F", "end"));
    got.extend(until_sentinel(&mut consumer, "end").await);

    let mut expected = lines(0, 350);
    expected.push("end".into());
    assert_eq!(got.iter().map(payload).collect::<Vec<_>>(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_resumes_where_it_was_even_in_a_rotated_file() {
    let mut p = Pipeline::start();
    let mut consumer = p.consumer("api").await;
    let log = p.pods.log("shop", "api-5c6b7d8f9-qwz2x", "uid-api", "api");
    append(&log, &numbered(0, 100));
    let mut got = exactly(&mut consumer, 100).await;
    // A line the runtime cut: its first piece before the restart.
    append(&log, &record(100, "stdout", "P", "half-"));

    p.collector().proc.kill();
    // Written while the collector is down, and the file rotated meanwhile:
    // the renamed file is read on from its saved position.
    append(&log, &record(101, "stdout", "F", "joined"));
    append(&log, &numbered(102, 150));
    std::fs::rename(&log, log.with_file_name("0.log.20261201-000000")).unwrap();
    append(&log, &numbered(150, 200));
    p.collector().proc.restart();
    p.collector().wait_ready();
    append(&log, &numbered(200, 300));
    append(&log, &record(999, "stdout", "F", "end"));
    got.extend(until_sentinel(&mut consumer, "end").await);

    let mut expected = lines(0, 100);
    expected.push("half-joined".into());
    expected.extend(lines(102, 300));
    expected.push("end".into());
    assert_eq!(got.iter().map(payload).collect::<Vec<_>>(), expected);
    let joined = got.iter().find(|e| payload(e) == "half-joined").unwrap();
    assert_eq!(joined.timestamp, BASE + 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pod_is_read_to_its_end_and_let_go() {
    let mut p = Pipeline::start();
    let mut gone_consumer = p.consumer("gone").await;
    let mut kept_consumer = p.consumer("kept").await;
    let gone = p.pods.log("ns", "gone-x7k2p", "uid-gone", "c");
    let kept = p.pods.log("ns", "kept-8hq4z", "uid-kept", "c");
    append(&gone, &numbered(0, 10));
    append(&kept, &numbered(0, 10));
    let mut gone_got = exactly(&mut gone_consumer, 10).await;
    let mut kept_got = exactly(&mut kept_consumer, 10).await;
    assert_eq!(p.metric("spillway_files_followed"), Some(2));

    // Its last lines, then the pod is removed at once.
    append(&gone, &numbered(10, 20));
    append(&gone, &record(999, "stdout", "F", "end"));
    std::fs::remove_dir_all(p.pods.pod_dir("ns", "gone-x7k2p", "uid-gone")).unwrap();
    gone_got.extend(until_sentinel(&mut gone_consumer, "end").await);
    let mut expected = lines(0, 20);
    expected.push("end".into());
    assert_eq!(gone_got.iter().map(payload).collect::<Vec<_>>(), expected);

    eventually(Duration::from_secs(20), "the deleted file let go", || {
        p.metric("spillway_files_followed") == Some(1)
    })
    .await;
    append(&kept, &numbered(10, 20));
    kept_got.extend(exactly(&mut kept_consumer, 10).await);
    assert_eq!(
        kept_got.iter().map(payload).collect::<Vec<_>>(),
        lines(0, 20)
    );
    assert!(p.collector().proc.alive());
    let http_port = p.collector().http_port;
    let positions = std::fs::read_to_string(
        p.certs
            .dir
            .join(format!("state-{http_port}"))
            .join("files-positions.json"),
    )
    .unwrap();
    assert!(!positions.contains("uid-gone"), "{positions}");
    assert!(positions.contains("uid-kept"), "{positions}");
}
