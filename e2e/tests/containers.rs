//! Container output, captured for real: a real dockerd, containers from an
//! imported busybox image, the collector with `--source ebpf` (eBPF in this
//! kernel) and with `--source docker` (the Docker API), a router, an RLP
//! and a gRPC consumer.
//!
//! Each scenario runs once per source. Container tests run one at a time
//! (`docker::serial`): every collector captures every container on the
//! host.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use spillway_e2e::docker::{self, IMAGE, TestContainer};
use spillway_e2e::*;
use spillway_proto::v2::{Envelope, envelope::Message, log::Type};

/// A router, an RLP and a collector with container capture from `source`.
struct Pipeline {
    certs: Certs,
    router: Router,
    rlp: Rlp,
    collector: Collector,
}

impl Pipeline {
    fn start(source: &str, collector_flags: &[&str]) -> Pipeline {
        let certs = Certs::new();
        let router = Router::start(&certs, &["--subscription-buffer", "200000"]);
        let rlp = Rlp::start(&certs, &[&router], &["--consumer-buffer", "200000"]);
        let mut flags = vec!["--source", source];
        flags.extend_from_slice(collector_flags);
        let collector = Collector::start(&certs, &[&router], &flags);
        Pipeline {
            certs,
            router,
            rlp,
            collector,
        }
    }

    /// A consumer of the logs of `source_id` (any source when empty).
    async fn consumer(&self, source_id: &str) -> tonic::Streaming<v2::EnvelopeBatch> {
        self.rlp.logs_of(&self.certs, source_id).await
    }
}

/// A busy host process (not in a container) writing lines into a pipe:
/// a shell pipeline in its own process group, killed whole when dropped.
struct HostNoise(std::process::Child);

impl HostNoise {
    fn start() -> HostNoise {
        use std::os::unix::process::CommandExt as _;
        let script =
            "i=0; while [ $i -lt 1000000 ]; do echo host-noise; i=$((i+1)); done | cat > /dev/null";
        let child = std::process::Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .spawn()
            .unwrap();
        HostNoise(child)
    }
}

impl Drop for HostNoise {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the negative pid
        // names the process group the pipeline runs in.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn payload(e: &Envelope) -> &[u8] {
    match &e.message {
        Some(Message::Log(l)) => &l.payload,
        other => panic!("not a log: {other:?}"),
    }
}

fn text(e: &Envelope) -> String {
    String::from_utf8_lossy(payload(e)).into_owned()
}

fn log_type(e: &Envelope) -> Type {
    match &e.message {
        Some(Message::Log(l)) => Type::try_from(l.r#type).unwrap(),
        _ => panic!("not a log"),
    }
}

fn lines_of(got: &[Envelope], t: Type) -> Vec<String> {
    got.iter().filter(|e| log_type(e) == t).map(text).collect()
}

fn now_nanos() -> i64 {
    spillway_proto::now_nanos()
}

/// Holds the container-test lock for a scenario, or says why it is skipped.
async fn prepare(source: &str) -> Option<tokio::sync::MutexGuard<'static, ()>> {
    let guard = docker::serial().await;
    docker::unavailable(source == "ebpf")
        .is_none()
        .then_some(guard)
}

macro_rules! for_both_sources {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread")]
            async fn ebpf() {
                super::$scenario("ebpf").await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn docker_api() {
                super::$scenario("docker").await
            }
        }
    };
}

for_both_sources!(stdout_and_stderr_arrive_as_written);
async fn stdout_and_stderr_arrive_as_written(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    let p = Pipeline::start(source, &[]);
    // The container's name is its source id; create it first to know it.
    let script = r#"
        echo out-1
        echo err-1 >&2
        printf 'two-'; sleep 0.2; echo writes
        printf '\377\376 not utf-8\n'
        ln -sf /dev/stdout /tmp/access.log; echo via-dev-stdout >> /tmp/access.log
        echo not-captured-regular-file > /tmp/file.log
        nc -l -p 9000 > /dev/null &
        until echo not-captured-socket | nc 127.0.0.1 9000 2> /dev/null; do sleep 0.05; done
        echo err-2 >&2
        echo out-last
        sleep 1
    "#;
    let c = TestContainer::create("basic", &["--label", "spillway.tag.team=core"], script);
    let mut consumer = p.consumer(&c.name).await;
    // Every log from any source: a host process must never show up.
    let mut everything = p.consumer("").await;
    let host_noise = HostNoise::start();
    let before = now_nanos();
    c.start();
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| {
        g.iter().any(|e| text(e) == "out-last")
    })
    .await;
    // Anything late (wrongly captured) would come now.
    let mut got = got;
    got.extend(collect_until(&mut consumer, Duration::from_millis(700), |_| false).await);
    let after = now_nanos();
    drop(host_noise);
    let all = collect_until(&mut everything, Duration::from_millis(300), |_| false).await;
    assert!(
        all.iter().any(|e| text(e) == "out-last"),
        "the catch-all consumer works"
    );
    assert!(
        !all.iter().any(|e| text(e).contains("host-noise")),
        "a busy host process is never captured ({source})"
    );

    assert_eq!(
        lines_of(&got, Type::Out),
        vec![
            "out-1",
            "two-writes",
            &String::from_utf8_lossy(b"\xff\xfe not utf-8"),
            "via-dev-stdout",
            "out-last"
        ],
        "stdout, in order, nothing else ({source})"
    );
    assert_eq!(lines_of(&got, Type::Err), vec!["err-1", "err-2"]);
    let binary = got
        .iter()
        .find(|e| text(e).ends_with(" not utf-8"))
        .unwrap();
    if source == "ebpf" {
        assert_eq!(payload(binary), b"\xff\xfe not utf-8", "bytes unchanged");
    } // Docker's json-file log driver has already replaced them with U+FFFD.
    for e in &got {
        assert_eq!(e.source_id, c.name);
        assert_eq!(e.instance_id, c.short_id());
        assert_eq!(e.tags["container_id"], c.id);
        assert_eq!(e.tags["container_name"], c.name);
        assert_eq!(e.tags["image"], IMAGE);
        assert_eq!(e.tags["host"], "e2e-host");
        assert_eq!(e.tags["source_type"], "container");
        assert_eq!(e.tags["team"], "core");
        assert!(!e.tags.contains_key("partial"));
        assert!(
            (before..=after).contains(&e.timestamp),
            "timestamp {} of {:?} is when it was written",
            e.timestamp,
            text(e)
        );
    }
    let stamps: Vec<i64> = got
        .iter()
        .filter(|e| log_type(e) == Type::Out)
        .map(|e| e.timestamp)
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "write order");
    drop(p.collector);
}

for_both_sources!(long_lines_are_cut_into_pieces);
async fn long_lines_are_cut_into_pieces(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    let p = Pipeline::start(source, &[]);
    // 100 KiB of 'x' through tr (many writes), then the newline.
    // Registered before the pipeline runs (the sleep): a container that
    // exits before the collector knows it has its writes placed by fd,
    // and `head`'s writes into the pipe to `tr` would count as stdout too
    // (a known limit, see docs/design/ebpf-capture.md).
    let script = "sleep 0.5; head -c 102400 /dev/zero | tr '\\0' x; echo; echo done";
    let c = TestContainer::create("long", &[], script);
    let mut consumer = p.consumer(&c.name).await;
    c.start();
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| {
        g.iter().any(|e| text(e) == "done")
    })
    .await;
    let pieces: Vec<&Envelope> = got.iter().filter(|e| text(e) != "done").collect();
    let sizes: Vec<usize> = pieces.iter().map(|e| payload(e).len()).collect();
    assert_eq!(
        sizes,
        vec![16384, 16384, 16384, 16384, 16384, 16384, 4096],
        "16 KiB pieces, nothing lost ({source})"
    );
    let partial: Vec<bool> = pieces
        .iter()
        .map(|e| e.tags.contains_key("partial"))
        .collect();
    assert_eq!(partial, vec![true, true, true, true, true, true, false]);
    assert!(pieces[..6].iter().all(|e| e.tags["partial"] == "true"));
    assert!(pieces.iter().all(|e| payload(e).iter().all(|&b| b == b'x')));
}

for_both_sources!(running_restarted_and_tty_containers_are_captured);
async fn running_restarted_and_tty_containers_are_captured(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    // Started before the collector: captured from the collector's start on.
    let early = TestContainer::run(
        "early",
        &[],
        "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done",
    );
    std::thread::sleep(Duration::from_millis(300));
    let p = Pipeline::start(source, &[]);
    let mut consumer = p.consumer(&early.name).await;
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| g.len() >= 10).await;
    let ticks: Vec<u64> = got
        .iter()
        .map(|e| text(e).strip_prefix("tick-").unwrap().parse().unwrap())
        .collect();
    assert!(
        ticks.len() >= 10,
        "the running container is captured: {ticks:?}"
    );
    assert!(
        ticks.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive once captured: {ticks:?}"
    );
    assert!(
        ticks[0] > 0,
        "not replayed from before the collector started"
    );
    drop(early);

    // A restarted container: captured in both lives.
    let twice = TestContainer::create("restart", &[], "echo life; sleep 0.5");
    let mut consumer = p.consumer(&twice.name).await;
    twice.start();
    assert_eq!(twice.wait(), 0);
    twice.start();
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| g.len() >= 2).await;
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        vec!["life", "life"],
        "one line per life ({source})"
    );

    // A TTY container: one pty, everything is stdout.
    let tty = TestContainer::create(
        "tty",
        &["-t"],
        "echo on-tty; echo also-on-tty >&2; sleep 0.5",
    );
    let mut consumer = p.consumer(&tty.name).await;
    tty.start();
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| g.len() >= 2).await;
    assert_eq!(
        got.iter()
            .map(|e| (text(e), log_type(e)))
            .collect::<Vec<_>>(),
        vec![
            ("on-tty".to_owned(), Type::Out),
            ("also-on-tty".to_owned(), Type::Out)
        ],
        "TTY lines, without the \\r ({source})"
    );
}

for_both_sources!(ignored_containers_are_not_collected);
async fn ignored_containers_are_not_collected(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    let p = Pipeline::start(source, &[]);
    // All share one source id, so one consumer sees them all.
    let sid = format!("ignore-test-{}", std::process::id());
    let label = format!("spillway.source_id={sid}");
    let script = "echo from-$HOSTNAME; sleep 1; echo again-$HOSTNAME; sleep 0.5";
    let mut consumer = p.consumer(&sid).await;
    let ignored = [
        TestContainer::create(
            "ign-env",
            &["--label", &label, "-e", "SPILLWAY=ignore"],
            script,
        ),
        TestContainer::create(
            "ign-lsp",
            &["--label", &label, "-e", "LOGSPOUT=ignore"],
            script,
        ),
        TestContainer::create(
            "ign-label",
            &["--label", &label, "--label", "spillway.ignore=true"],
            script,
        ),
    ];
    let kept = TestContainer::create("kept", &["--label", &label], script);
    for c in ignored.iter().chain([&kept]) {
        c.start();
    }
    for c in ignored.iter().chain([&kept]) {
        c.wait();
    }
    let got = collect_until(&mut consumer, Duration::from_secs(3), |_| false).await;
    let names: Vec<&str> = got
        .iter()
        .map(|e| e.tags["container_name"].as_str())
        .collect();
    assert_eq!(
        names,
        vec![kept.name.as_str(), kept.name.as_str()],
        "only the container that is not ignored ({source})"
    );
}

for_both_sources!(fifty_containers_every_line_once_in_order);
async fn fifty_containers_every_line_once_in_order(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    const CONTAINERS: usize = 50;
    const LINES: u64 = 10_000;
    let p = Pipeline::start(source, &["--buffer-per-core", "200000"]);
    let sid = format!("fifty-{}", std::process::id());
    let label = format!("spillway.source_id={sid}");
    let mut consumer = p.consumer(&sid).await;
    // About 1,000 lines/s per container: 50 lines, then a 50 ms pause.
    let script = format!(
        "i=0; while [ $i -lt {LINES} ]; do echo \"line $i\"; i=$((i+1)); \
         [ $((i % 50)) -eq 0 ] && sleep 0.05; done; sleep 1"
    );
    let containers: Vec<TestContainer> = (0..CONTAINERS)
        .map(|_| TestContainer::create("fifty", &["--label", &label], &script))
        .collect();
    // Started from another thread: the consumer must read meanwhile.
    let starter = tokio::task::spawn_blocking(move || {
        for c in &containers {
            c.start();
        }
        containers
    });
    let total = CONTAINERS as u64 * LINES;
    // As long as lines keep coming: the Docker source reads the log files
    // and may fall behind (a debug build on two cores), but must catch up.
    let mut got = Vec::new();
    loop {
        let before = got.len();
        let more = collect_until(&mut consumer, Duration::from_secs(20), |g| {
            (before + g.len()) as u64 >= total
        })
        .await;
        got.extend(more);
        if got.len() as u64 >= total || got.len() == before {
            break;
        }
    }
    let containers = starter.await.unwrap();
    let mut per_container: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &got {
        let n = text(e).strip_prefix("line ").unwrap().parse().unwrap();
        per_container
            .entry(e.instance_id.clone())
            .or_default()
            .push(n);
    }
    let summary: BTreeMap<&str, usize> = per_container
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect();
    let drops = |port: u16| {
        ["ingress", "egress"].map(|d| {
            metric(
                port,
                &format!("spillway_dropped_total{{direction=\"{d}\"}}"),
            )
            .unwrap_or(0)
        })
    };
    let capture_drops: Vec<String> = http_get(p.collector.http_port, "/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("spillway_capture_dropped_total"))
        .map(str::to_owned)
        .collect();
    eprintln!(
        "got {} of {total}; drops (ingress, egress): collector {:?}, router {:?}, rlp {:?}; \
         capture {capture_drops:?}",
        got.len(),
        drops(p.collector.http_port),
        drops(p.router.metrics_port),
        drops(p.rlp.metrics_port),
    );
    assert_eq!(
        per_container.len(),
        CONTAINERS,
        "every container arrived ({source}): {summary:?}"
    );
    for c in &containers {
        let seen = &per_container[c.short_id()];
        assert_eq!(
            *seen,
            (0..LINES).collect::<Vec<_>>(),
            "container {} sent {LINES} lines; got {} ({source}), each once and in order",
            c.name,
            seen.len()
        );
    }
    assert_eq!(
        metric(
            p.collector.http_port,
            "spillway_dropped_total{direction=\"ingress\"}"
        )
        .unwrap_or(0),
        0
    );
}

for_both_sources!(short_lived_containers_every_line_with_its_tags);
/// Containers that print a few lines and exit at once, started together:
/// every line arrives once, with its own container's tags. The eBPF source
/// places what such a container wrote by the cgroup it came from, even when
/// the container is gone before the collector could look at its process,
/// and even when it was removed at once (`--rm`: every other one, with the
/// eBPF source only, since the Docker API cannot give a removed
/// container's log).
async fn short_lived_containers_every_line_with_its_tags(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    const CONTAINERS: usize = 40;
    const LINES: u64 = 10;
    let p = Pipeline::start(source, &[]);
    let sid = format!("brief-{}", std::process::id());
    let label = format!("spillway.source_id={sid}");
    let mut consumer = p.consumer(&sid).await;
    let script = format!("i=0; while [ $i -lt {LINES} ]; do echo \"line $i\"; i=$((i+1)); done");
    let containers: Vec<TestContainer> = (0..CONTAINERS)
        .map(|i| {
            let mut opts = vec!["--label", label.as_str()];
            if source == "ebpf" && i % 2 == 1 {
                opts.push("--rm");
            }
            TestContainer::create("brief", &opts, &script)
        })
        .collect();
    let by_name: HashMap<String, String> = containers
        .iter()
        .map(|c| (c.name.clone(), c.id.clone()))
        .collect();
    // All at once, from several threads.
    let starter = tokio::task::spawn_blocking(move || {
        std::thread::scope(|s| {
            for chunk in containers.chunks(CONTAINERS / 4) {
                s.spawn(move || chunk.iter().for_each(TestContainer::start));
            }
        });
        containers
    });
    let total = CONTAINERS as u64 * LINES;
    let got = collect_until(&mut consumer, Duration::from_secs(30), |g| {
        g.len() as u64 >= total
    })
    .await;
    let _containers = starter.await.unwrap();
    // A little longer: duplicates would come now.
    let late = collect_until(&mut consumer, Duration::from_millis(500), |_| false).await;
    let mut per_container: HashMap<String, Vec<u64>> = HashMap::new();
    for e in got.iter().chain(&late) {
        let name = &e.tags["container_name"];
        assert_eq!(
            by_name.get(name),
            Some(&e.tags["container_id"]),
            "a line of {name} with the right container id ({source})"
        );
        let n = text(e).strip_prefix("line ").unwrap().parse().unwrap();
        per_container.entry(name.clone()).or_default().push(n);
    }
    let lines: usize = per_container.values().map(Vec::len).sum();
    eprintln!(
        "{source}: {lines} lines of {total} from {} of {CONTAINERS} containers",
        per_container.len()
    );
    for name in by_name.keys() {
        let seen = per_container.get(name).cloned().unwrap_or_default();
        assert_eq!(
            seen,
            (0..LINES).collect::<Vec<_>>(),
            "container {name}: {LINES} lines, each once and in order ({source})"
        );
    }
}

/// A container that writes a burst at once, before the collector can have
/// registered it: with eBPF its lines are captured unclaimed and replayed
/// when Docker says whose they are. The replay of 60,000 lines must not
/// overflow the 10,000-envelope shard diode, nor stop when the container
/// exits before it is done: every line, once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_before_registration_arrives_whole() {
    let source = "ebpf";
    let Some(_serial) = prepare(source).await else {
        return;
    };
    const LINES: u64 = 60_000;
    let p = Pipeline::start(source, &[]);
    let c = TestContainer::create("burst", &[], &format!("seq 1 {LINES}"));
    let mut consumer = p.consumer(&c.name).await;
    c.start();
    let got = collect_until(&mut consumer, Duration::from_secs(60), |g| {
        g.len() as u64 >= LINES
    })
    .await;
    let late = collect_until(&mut consumer, Duration::from_millis(500), |_| false).await;
    assert_numbered(got.iter().chain(&late), LINES);
}

/// The same burst written after the collector registered the container:
/// one drain round of the ring holds more lines than the shard diode, so
/// the writes that find it full wait in the loop's backlog for the lane
/// instead of overwriting the diode's oldest lines.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_after_registration_arrives_whole() {
    let source = "ebpf";
    let Some(_serial) = prepare(source).await else {
        return;
    };
    const LINES: u64 = 60_000;
    let p = Pipeline::start(source, &[]);
    let c = TestContainer::create(
        "burst-live",
        &[],
        &format!("echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; seq 1 {LINES}"),
    );
    let mut consumer = p.consumer(&c.name).await;
    c.start();
    // A line arrives only once its container is registered (an unclaimed
    // write waits for that), so the burst comes after it.
    let ready = collect_until(&mut consumer, Duration::from_secs(30), |g| !g.is_empty()).await;
    assert_eq!(ready.iter().map(text).collect::<Vec<_>>(), ["ready"]);
    let (ok, _, err) = docker::docker(&["exec", &c.name, "touch", "/tmp/go"]);
    assert!(ok, "docker exec failed: {err}");
    let got = collect_until(&mut consumer, Duration::from_secs(60), |g| {
        g.len() as u64 >= LINES
    })
    .await;
    let late = collect_until(&mut consumer, Duration::from_millis(500), |_| false).await;
    assert_numbered(got.iter().chain(&late), LINES);
}

/// Asserts that `envelopes` are the lines `1..=lines`, each once, in order.
fn assert_numbered<'a>(envelopes: impl Iterator<Item = &'a Envelope>, lines: u64) {
    let numbers: Vec<u64> = envelopes.map(|e| text(e).parse().unwrap()).collect();
    assert_eq!(numbers.len() as u64, lines, "every line once");
    assert!(numbers.iter().copied().eq(1..=lines), "in order");
}

/// One `write(2)` of 70,000 bytes from a container (eBPF capture reads at
/// most 64 KiB of a syscall): its first 64 KiB arrive, in 16 KiB pieces,
/// the rest is lost, and the loss is counted once as `truncated`. The lines
/// before and after it arrive whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_single_write_over_64_kib_is_cut_at_64_kib_and_counted() {
    let Some(_serial) = prepare("ebpf").await else {
        return;
    };
    let p = Pipeline::start("ebpf", &[]);
    let truncated = || {
        metric(
            p.collector.http_port,
            "spillway_capture_dropped_total{reason=\"truncated\"}",
        )
        .unwrap_or(0)
    };
    let before = truncated();
    // 69,999 'x' and a newline in a file, then written with one dd block
    // (one read, one write of 70,000 bytes).
    // Registered before the pipe to `tr` matters (see
    // long_lines_are_cut_into_pieces): the sleep.
    let script = "head -c 69999 /dev/zero | tr '\\0' x > /tmp/big; echo >> /tmp/big; \
                  sleep 0.5; echo before; dd if=/tmp/big bs=70000 count=1 2>/dev/null; \
                  echo; echo after";
    let c = TestContainer::create("big-write", &[], script);
    let mut consumer = p.consumer(&c.name).await;
    c.start();
    let got = collect_until(&mut consumer, Duration::from_secs(20), |g| {
        g.iter().any(|e| text(e) == "after")
    })
    .await;
    let texts: Vec<String> = got.iter().map(text).collect();
    assert_eq!(texts.first().map(String::as_str), Some("before"));
    assert_eq!(texts.last().map(String::as_str), Some("after"));
    let xs: usize = got
        .iter()
        .map(|e| payload(e).iter().filter(|&&b| b == b'x').count())
        .sum();
    assert_eq!(xs, 64 * 1024, "exactly the first 64 KiB of the write");
    let pieces: Vec<usize> = got[1..got.len() - 1]
        .iter()
        .map(|e| payload(e).len())
        .collect();
    assert_eq!(&pieces[..4], [16384; 4], "16 KiB pieces: {pieces:?}");
    eventually(
        Duration::from_secs(10),
        "the truncated write is counted once",
        || truncated() == before + 1,
    )
    .await;
}

for_both_sources!(a_container_lane_fails_over_and_back_in_order);
/// A container's ordered lane keeps to one router while it is up, moves to
/// the other when it dies (failover), and back when that one dies in turn
/// after the first returned (failback). Through both moves the lines
/// arrive in order and none twice; lines in flight to a killed router are
/// lost with it (nothing acknowledges them), so gaps are allowed.
async fn a_container_lane_fails_over_and_back_in_order(source: &str) {
    let Some(_serial) = prepare(source).await else {
        return;
    };
    let certs = Certs::new();
    let mut routers = [Router::start(&certs, &[]), Router::start(&certs, &[])];
    let rlp = Rlp::start(&certs, &[&routers[0], &routers[1]], &[]);
    let _collector = Collector::start(
        &certs,
        &[&routers[0], &routers[1]],
        &["--source", source, "--links-per-router", "1"],
    );
    let c = TestContainer::create(
        "lanes",
        &[],
        "i=1; while [ ! -e /tmp/stop ]; do echo $i; i=$((i+1)); usleep 1000; done; echo $i",
    );
    // The consumer reads all along (a buffer would fill while routers
    // come and go), until told that the container stopped.
    let mut consumer = rlp.logs_of(&certs, &c.name).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut got = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                got.extend(
                    collect_until(&mut consumer, Duration::from_millis(200), |_| false).await,
                );
            }
            got.extend(collect_until(&mut consumer, Duration::from_secs(3), |_| false).await);
            got
        }
    });
    c.start();
    // Envelopes that show which router carries the lane, and what the
    // other router may get meanwhile from elsewhere (the collector's own
    // metrics, dealt over both routers; other containers on the host).
    const CARRIED: u64 = 1500;
    const NOISE: u64 = CARRIED / 3;
    let received = |r: &Router| metric(r.metrics_port, "spillway_ingress_total").unwrap_or(0);
    // Waits until router `to` got `n` more envelopes than `base`; returns
    // how many more the other router got meanwhile.
    let carried = async |routers: &[Router; 2], to: usize, base: [u64; 2], n: u64, what: &str| {
        eventually(Duration::from_secs(30), what, || {
            received(&routers[to]) >= base[to] + n
        })
        .await;
        received(&routers[1 - to]).saturating_sub(base[1 - to])
    };
    let now = |routers: &[Router; 2]| [received(&routers[0]), received(&routers[1])];

    // The lane's router: the one whose ingress grows by the lines.
    let base = now(&routers);
    eventually(Duration::from_secs(30), "lines reach a router", || {
        let grew = now(&routers);
        grew[0] >= base[0] + CARRIED || grew[1] >= base[1] + CARRIED
    })
    .await;
    let grew = now(&routers);
    let first = usize::from(grew[1] - base[1] > grew[0] - base[0]);
    let second = 1 - first;
    let other = grew[second] - base[second];
    assert!(
        other < NOISE,
        "one router carries the lane: {base:?} -> {grew:?}"
    );

    // Failover.
    routers[first].proc.kill();
    let base = now(&routers);
    carried(
        &routers,
        second,
        base,
        CARRIED,
        "the other router takes the lane",
    )
    .await;

    // The first router returns: the lane stays where it is.
    routers[first].proc.restart();
    wait_port(routers[first].port);
    eventually(Duration::from_secs(20), "the RLP subscribed again", || {
        routers[first].subscriptions() == 1
    })
    .await;
    let base = now(&routers);
    let moved = carried(&routers, second, base, CARRIED, "the lane stays").await;
    assert!(
        moved < NOISE,
        "the lane stayed on the second router: {moved} went to the first"
    );

    // Failback: the second router dies, the lane goes back to the first.
    routers[second].proc.kill();
    let base = now(&routers);
    carried(
        &routers,
        first,
        base,
        CARRIED,
        "the lane goes back to the first router",
    )
    .await;

    let (ok, _, err) = docker::docker(&["exec", &c.name, "touch", "/tmp/stop"]);
    assert!(ok, "docker exec failed: {err}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = reader.await.unwrap();
    let numbers: Vec<u64> = got.iter().map(|e| text(e).parse().unwrap()).collect();
    assert!(numbers.len() >= 1500, "{} lines arrived", numbers.len());
    let out_of_order: Vec<_> = numbers.windows(2).filter(|w| w[1] <= w[0]).collect();
    assert!(
        out_of_order.is_empty(),
        "lines out of order or twice: {out_of_order:?}"
    );
    let lost = numbers.last().unwrap() - numbers.len() as u64;
    println!(
        "{source}: {} lines, {lost} lost in flight to killed routers",
        numbers.len()
    );
}
