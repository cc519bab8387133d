//! The Docker-API source against the running dockerd: containers from
//! `spillway-test/busybox` write, the watcher and the log source read,
//! and the envelopes in the diodes are checked.
//!
//! Without a reachable Docker daemon the tests print "skipped: no Docker
//! daemon" and pass, except under the strict flag
//! (`cargo xtask test`), where they must run. Every
//! container they create is removed (see [`Cleanup`]).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spillway_collector::capture;
use spillway_collector::output::{self, Output, Shards};
use spillway_collector::runtime::docker::{self, Containers, Event};
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::v2::{Envelope, envelope::Message, log::Type};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const IMAGE: &str = "spillway-test/busybox";
const HOST: &str = "test-host";
const DEADLINE: Duration = Duration::from_secs(20);

/// The watcher and the log source, with everything they produce.
struct Harness {
    diodes: Shards,
    got: Mutex<Vec<Envelope>>,
    events: Arc<Mutex<Vec<Event>>>,
    known: Containers,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.tasks.iter().for_each(JoinHandle::abort);
    }
}

/// Whether dockerd answers; `false` (skip) unless under the strict flag,
/// where it must.
async fn docker_reachable() -> bool {
    let reachable = match docker::connect(&docker::default_host()) {
        Ok(d) => d.ping().await.is_ok(),
        Err(_) => false,
    };
    if !reachable {
        spillway_testenv::skip(
            "the Docker source tests",
            &format!("no Docker daemon at {}", docker::default_host()),
        );
    }
    reachable
}

impl Harness {
    /// Starts the watcher and the Docker-API log source; `None`: skip.
    async fn start() -> Option<Harness> {
        if !docker_reachable().await {
            return None;
        }
        Some(Harness::start_with(&docker::default_host()))
    }

    /// [`Harness::start`] with Docker at `uri`.
    fn start_with(uri: &str) -> Harness {
        static LOGGING: std::sync::Once = std::sync::Once::new();
        LOGGING.call_once(|| spillway_plumbing::init_logging("info"));
        let docker = docker::connect(uri).unwrap();
        let diodes = output::shards(4, 100_000);
        let out = Output::new(
            diodes.clone(),
            HOST,
            Arc::new(SelfMetrics::new("collector")),
            spillway_routes::Hub::new(),
        );
        let known = Containers::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let (to_source, source_rx) = mpsc::unbounded_channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        // Records the events on their way to the source.
        let record = {
            let events = events.clone();
            tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    events.lock().unwrap().push(e.clone());
                    if to_source.send(e).is_err() {
                        return;
                    }
                }
            })
        };
        let tasks = vec![
            docker::watch_into(docker.clone(), tx, known.clone()),
            record,
            capture::docker_api::spawn(docker, source_rx, out),
        ];
        Harness {
            diodes,
            got: Mutex::new(Vec::new()),
            events,
            known,
            tasks,
        }
    }

    /// The envelopes of container `id` so far.
    fn of(&self, id: &str) -> Vec<Envelope> {
        let mut got = self.got.lock().unwrap();
        for diode in self.diodes.iter() {
            // A container's lines are all in one shard, in order.
            while let Some(e) = diode.pop() {
                got.push(prost::Message::decode(e).expect("an encoded envelope"));
            }
        }
        got.iter()
            .filter(|e| e.tags.get("container_id").map(String::as_str) == Some(id))
            .cloned()
            .collect()
    }

    /// Waits until container `id` sent at least `n` envelopes; returns all.
    async fn wait_for(&self, id: &str, n: usize) -> Vec<Envelope> {
        let start = Instant::now();
        loop {
            let got = self.of(id);
            if got.len() >= n {
                return got;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "waited for {n} envelopes from {id}, got {:?}",
                payloads(&got)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until an event matching `f` was sent.
    async fn wait_event(&self, what: &str, f: impl Fn(&Event) -> bool) {
        let start = Instant::now();
        while !self.events.lock().unwrap().iter().any(&f) {
            assert!(start.elapsed() < DEADLINE, "waited for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn sent_running(&self, id: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Running(c) if c.id == id))
    }
}

/// Removes the containers a test created, however it ends.
#[derive(Default)]
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.0)
                .output();
        }
    }
}

impl Cleanup {
    /// `docker run -d --name spillway-test-… [args] IMAGE sh -c script`;
    /// returns the name and the full id.
    fn run(&mut self, what: &str, args: &[&str], script: &str) -> (String, String) {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "spillway-test-{}-{}-{what}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let mut argv = vec!["run", "-d", "--network", "none", "--name", &name];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&[IMAGE, "sh", "-c", script]);
        // Named before it exists, so that even a half-made one goes.
        self.0.push(name.clone());
        let id = docker_cli(&argv);
        (name, id)
    }
}

fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn log_of(e: &Envelope) -> (Type, &[u8]) {
    match &e.message {
        Some(Message::Log(log)) => (
            Type::try_from(log.r#type).expect("a log type"),
            &log.payload,
        ),
        other => panic!("not a log: {other:?}"),
    }
}

fn payloads(envelopes: &[Envelope]) -> Vec<String> {
    envelopes
        .iter()
        .map(|e| String::from_utf8_lossy(log_of(e).1).into_owned())
        .collect()
}

fn lines_of(envelopes: &[Envelope], want: Type) -> Vec<String> {
    envelopes
        .iter()
        .filter(|e| log_of(e).0 == want)
        .map(|e| String::from_utf8_lossy(log_of(e).1).into_owned())
        .collect()
}

/// A Unix socket in front of dockerd's whose connections can be cut and
/// refused: Docker "restarting" without restarting it.
struct Proxy {
    path: PathBuf,
    refuse: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    fn start(docker_socket: PathBuf) -> Proxy {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "spillway-docker-proxy-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("binding the proxy socket");
        let refuse = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (refuse, connections) = (refuse.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if refuse.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let docker_socket = docker_socket.clone();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut docker) = UnixStream::connect(&docker_socket).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut docker).await;
                        }
                    });
                    connections.lock().unwrap().push(conn);
                }
            })
        };
        Proxy {
            path,
            refuse,
            connections,
            accept,
        }
    }

    fn uri(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Cuts every connection and refuses new ones until [`Proxy::up`].
    fn down(&self) {
        self.refuse.store(true, Ordering::SeqCst);
        for conn in self.connections.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn up(&self) {
        self.refuse.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
        self.accept.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_lines_carry_the_contract_fields() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let before = spillway_proto::now_nanos();
    let (name, id) = cleanup.run(
        "fields",
        &[
            "--label",
            "spillway.tag.team=payments",
            "--label",
            "other=x",
        ],
        "echo out1; echo err1 >&2; echo out2; echo out3; echo err2 >&2",
    );
    let got = h.wait_for(&id, 5).await;
    assert_eq!(lines_of(&got, Type::Out), ["out1", "out2", "out3"]);
    assert_eq!(lines_of(&got, Type::Err), ["err1", "err2"]);
    for e in &got {
        assert_eq!(e.source_id, name);
        assert_eq!(e.instance_id, id[..12]);
        assert_eq!(e.tags["container_id"], id);
        assert_eq!(e.tags["container_name"], name);
        assert_eq!(e.tags["image"], IMAGE);
        assert_eq!(e.tags["host"], HOST);
        assert_eq!(e.tags["source_type"], "container");
        assert_eq!(e.tags["team"], "payments");
        assert!(!e.tags.contains_key("other") && !e.tags.contains_key("partial"));
        // Docker's timestamp: when it was written.
        assert!(
            e.timestamp > before - 1_000_000_000 && e.timestamp <= spillway_proto::now_nanos(),
            "{}",
            e.timestamp
        );
    }
    let out_times: Vec<i64> = got
        .iter()
        .filter(|e| log_of(e).0 == Type::Out)
        .map(|e| e.timestamp)
        .collect();
    assert!(out_times.is_sorted(), "{out_times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_output_is_out() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let (_, id) = cleanup.run("tty", &["-t"], "echo tty1; echo tty2 >&2; echo tty3");
    let got = h.wait_for(&id, 3).await;
    assert_eq!(
        lines_of(&got, Type::Out),
        ["tty1", "tty2", "tty3"],
        "no \\r"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opted_out_containers_send_nothing() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let say = "echo secret; sleep 30";
    let (_, by_env) = cleanup.run("env", &["-e", "SPILLWAY=ignore"], say);
    let (_, by_logspout_env) = cleanup.run("lsenv", &["-e", "LOGSPOUT=ignore"], say);
    let (_, by_label) = cleanup.run("label", &["--label", "spillway.ignore=true"], say);
    // Started after them: once it is reported, they were decided on.
    let (_, marker) = cleanup.run("marker", &[], "echo marker; sleep 30");
    h.wait_for(&marker, 1).await;
    for id in [by_env, by_logspout_env, by_label] {
        assert!(!h.sent_running(&id), "{id} was reported running");
        assert!(h.known.get(&id).is_none());
        assert!(h.of(&id).is_empty(), "{id} sent {:?}", payloads(&h.of(&id)));
    }
    assert!(h.known.get(&marker).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_running_before_the_watcher_is_read_from_then_on() {
    if !docker_reachable().await {
        return;
    }
    let mut cleanup = Cleanup::default();
    let (name, id) = cleanup.run(
        "before",
        &[],
        "echo early; until [ -e /tmp/go ]; do sleep 0.05; done; echo late; sleep 30",
    );
    let start = Instant::now();
    while !docker_cli(&["logs", &name]).contains("early") {
        assert!(start.elapsed() < DEADLINE, "the container never wrote");
        std::thread::sleep(Duration::from_millis(20));
    }
    let h = Harness::start().await.unwrap();
    docker_cli(&["exec", &name, "touch", "/tmp/go"]);
    // Lines come in order, so "early" would come before "late".
    let got = h.wait_for(&id, 1).await;
    assert_eq!(payloads(&got), ["late"]);
    assert_eq!(h.known.find(&name).map(|c| c.id.clone()), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_written_in_two_writes_is_one_line() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let (_, id) = cleanup.run("writes", &[], "printf part; sleep 0.2; echo rest; echo end");
    let got = h.wait_for(&id, 2).await;
    assert_eq!(payloads(&got), ["partrest", "end"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_line_comes_in_16k_pieces() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let (_, id) = cleanup.run(
        "long",
        &[],
        "head -c 102400 /dev/zero | tr '\\0' x; echo; echo after",
    );
    let got = h.wait_for(&id, 8).await;
    let sizes: Vec<(usize, bool)> = got
        .iter()
        .map(|e| (log_of(e).1.len(), e.tags.contains_key("partial")))
        .collect();
    let piece = (16 * 1024, true);
    assert_eq!(
        sizes,
        [
            piece,
            piece,
            piece,
            piece,
            piece,
            piece,
            (4096, false),
            (5, false)
        ]
    );
    assert!(
        got[..7]
            .iter()
            .all(|e| log_of(e).1.iter().all(|&b| b == b'x'))
    );
    assert_eq!(payloads(&got[7..]), ["after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_bytes_pass_unchanged() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    // Docker's default json-file log driver stores lines as JSON strings
    // and so replaces invalid UTF-8 with U+FFFD before anyone can read it;
    // the `local` driver keeps bytes, and so does this source.
    let (_, id) = cleanup.run(
        "bytes",
        &["--log-driver", "local"],
        "printf '\\377\\376bin\\200\\n'",
    );
    let got = h.wait_for(&id, 1).await;
    assert_eq!(log_of(&got[0]).1, b"\xff\xfebin\x80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_container_goes_on_without_repeats() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let (name, id) = cleanup.run("restart", &[], "cat /proc/sys/kernel/random/uuid");
    h.wait_for(&id, 1).await;
    h.wait_event(
        "Stopped",
        |e| matches!(e, Event::Stopped { id: i } if *i == id),
    )
    .await;
    docker_cli(&["start", &name]);
    // A repeat of the first run's line would come before the second's.
    let got = payloads(&h.wait_for(&id, 2).await);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_ne!(got[0], got[1], "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_applies_to_the_lines_after_it() {
    let Some(h) = Harness::start().await else {
        return;
    };
    let mut cleanup = Cleanup::default();
    let (name, id) = cleanup.run(
        "rename",
        &[],
        "echo a; until [ -e /tmp/go ]; do sleep 0.05; done; echo b; sleep 30",
    );
    h.wait_for(&id, 1).await;
    let renamed = format!("{name}-renamed");
    docker_cli(&["rename", &name, &renamed]);
    cleanup.0.push(renamed.clone());
    h.wait_event(
        "Running with the new name",
        |e| matches!(e, Event::Running(c) if c.name == renamed),
    )
    .await;
    docker_cli(&["exec", &renamed, "touch", "/tmp/go"]);
    let got = h.wait_for(&id, 2).await;
    let names: Vec<(&str, &str)> = got
        .iter()
        .map(|e| (e.source_id.as_str(), e.tags["container_name"].as_str()))
        .collect();
    assert_eq!(names, [(&*name, &*name), (&*renamed, &*renamed)]);
    assert_eq!(h.known.get(&id).map(|c| c.name.clone()), Some(renamed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_going_away_loses_and_repeats_nothing() {
    if !docker_reachable().await {
        return;
    }
    let host = docker::default_host();
    let Some(socket) = host.strip_prefix("unix://") else {
        spillway_testenv::skip(
            "the Docker restart test",
            "DOCKER_HOST is not a Unix socket",
        );
        return;
    };
    let proxy = Proxy::start(socket.into());
    let h = Harness::start_with(&proxy.uri());
    let mut cleanup = Cleanup::default();
    let (counter, counter_id) = cleanup.run(
        "counter",
        &[],
        "i=0; while true; do echo $i; i=$((i+1)); sleep 0.01; done",
    );
    let (quitter, quitter_id) = cleanup.run(
        "quitter",
        &[],
        "echo q1; until [ -e /tmp/go ]; do sleep 0.05; done; echo q2",
    );
    h.wait_for(&counter_id, 10).await;
    h.wait_for(&quitter_id, 1).await;

    proxy.down();
    // While Docker is away: one container writes on, the other ends.
    let seen = h.of(&counter_id).len();
    docker_cli(&["exec", &quitter, "touch", "/tmp/go"]);
    let start = Instant::now();
    while docker_cli(&["inspect", "-f", "{{.State.Running}}", &quitter]) != "false"
        || docker_cli(&["logs", &counter]).lines().count() < seen + 20
    {
        assert!(start.elapsed() < DEADLINE, "the containers did not go on");
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = docker_cli(&["logs", &counter]).lines().count();
    proxy.up();

    // The counter's lines come on from where they were, once each.
    let got = payloads(&h.wait_for(&counter_id, written).await);
    let want: Vec<String> = (0..got.len()).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
    // The one that ended while Docker was away is read to its end and
    // reported stopped.
    assert_eq!(payloads(&h.wait_for(&quitter_id, 2).await), ["q1", "q2"]);
    h.wait_event(
        "Stopped after the reconnect",
        |e| matches!(e, Event::Stopped { id } if *id == quitter_id),
    )
    .await;
    assert!(h.known.get(&quitter_id).is_none());
    assert!(h.known.get(&counter_id).is_some());
}
