//! Runs the `spillway` binary against fake RLP and collector gRPC servers
//! (plaintext, on loopback) and checks what it prints and sends.

use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spillway_proto::v2::egress_server::{Egress, EgressServer};
use spillway_proto::v2::ingress_server::{Ingress, IngressServer};
use spillway_proto::v2::{self, envelope::Message, selector::Message as Select};
use tokio_stream::{Stream, StreamExt};
use tonic::{Code, Request, Response, Status, Streaming};

/// Runs `spillway ARGS` with no SPILLWAY_* variables, killing it after 20 s.
async fn spillway(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SPILLWAY_") {
            cmd.env_remove(key);
        }
    }
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn spillway");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("spillway {:?} did not finish", cmd.get_args());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        child
            .stdout
            .take()
            .unwrap()
            .read_to_end(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        Output {
            status,
            stdout,
            stderr,
        }
    })
    .await
    .unwrap()
}

async fn serve(router: tonic::transport::server::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

/// What the fake RLP does on its n-th subscription (the last one repeats).
#[derive(Clone)]
enum Script {
    Reject(Code),
    /// Sends the batches, then ends the stream (`true`) or keeps it open.
    Batches(Vec<v2::EnvelopeBatch>, bool),
}

#[derive(Default)]
struct FakeRlp {
    script: Vec<Script>,
    calls: AtomicUsize,
    requests: Mutex<Vec<v2::EgressBatchRequest>>,
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<v2::EnvelopeBatch, Status>> + Send>>;
type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<v2::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Egress for FakeRlp {
    type ReceiverStream = EnvelopeStream;
    type BatchedReceiverStream = BatchStream;

    async fn receiver(
        &self,
        _: Request<v2::EgressRequest>,
    ) -> Result<Response<EnvelopeStream>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn batched_receiver(
        &self,
        request: Request<v2::EgressBatchRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.script[n.min(self.script.len() - 1)].clone() {
            Script::Reject(code) => Err(Status::new(code, "rejected by the fake")),
            Script::Batches(batches, end) => {
                let sent = tokio_stream::iter(batches.into_iter().map(Ok));
                let stream: BatchStream = if end {
                    Box::pin(sent)
                } else {
                    Box::pin(sent.chain(tokio_stream::pending()))
                };
                Ok(Response::new(stream))
            }
        }
    }
}

async fn fake_rlp(script: Vec<Script>) -> (Arc<FakeRlp>, String) {
    let rlp = Arc::new(FakeRlp {
        script,
        ..Default::default()
    });
    let router =
        tonic::transport::Server::builder().add_service(EgressServer::from_arc(Arc::clone(&rlp)));
    (rlp, serve(router).await.to_string())
}

const TS: i64 = 1_795_216_320_123_456_789; // 2026-11-20T23:12:00.123456789Z

fn log(payload: &[u8], ty: v2::log::Type) -> v2::Envelope {
    let mut e = v2::Envelope::log(TS, "app", "0", payload.to_vec(), ty);
    e.tags.insert("host".into(), "h1".into());
    e
}

fn counter() -> v2::Envelope {
    v2::Envelope {
        timestamp: TS,
        source_id: "app".into(),
        instance_id: "0".into(),
        message: Some(Message::Counter(v2::Counter {
            name: "requests".into(),
            delta: 1,
            total: 5,
        })),
        ..Default::default()
    }
}

fn batch(envelopes: Vec<v2::Envelope>) -> v2::EnvelopeBatch {
    v2::EnvelopeBatch { batch: envelopes }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_prints_readable_lines_and_stops_at_count() {
    let (rlp, addr) = fake_rlp(vec![Script::Batches(
        vec![
            batch(vec![log(b"hello\n", v2::log::Type::Out), counter()]),
            batch(vec![log(b"bad \xff byte", v2::log::Type::Err)]),
            batch(vec![counter()]),
        ],
        false,
    )])
    .await;
    let out = spillway(&[
        "tail",
        "--rlp",
        &addr,
        "--insecure-plaintext",
        "--source-id",
        "app",
        "--log",
        "--counter",
        "--shard-id",
        "g1",
        "--count",
        "3",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "2026-11-20T23:12:00.123456789Z app/0 OUT hello [host=h1]\n\
         2026-11-20T23:12:00.123456789Z app/0 COUNTER requests delta=1 total=5\n\
         2026-11-20T23:12:00.123456789Z app/0 ERR bad \u{fffd} byte [host=h1]\n"
    );

    let requests = rlp.requests.lock().unwrap();
    let r = &requests[0];
    assert_eq!(r.shard_id, "g1");
    assert!(r.use_preferred_tags);
    let selectors: Vec<_> = r
        .selectors
        .iter()
        .map(|s| (s.source_id.as_str(), s.message.clone().unwrap()))
        .collect();
    assert_eq!(
        selectors,
        vec![
            ("app", Select::Log(v2::LogSelector {})),
            (
                "app",
                Select::Counter(v2::CounterSelector {
                    name: String::new()
                })
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_json_and_reconnect_after_the_stream_ends() {
    let (rlp, addr) = fake_rlp(vec![
        Script::Batches(vec![batch(vec![log(b"one", v2::log::Type::Out)])], true),
        Script::Batches(vec![batch(vec![counter()])], false),
    ])
    .await;
    let out = spillway(&[
        "tail",
        "--rlp",
        &addr,
        "--insecure-plaintext",
        "--json",
        "--count",
        "2",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["log"]["payload"], "b25l");
    assert_eq!(lines[0]["timestamp"], TS.to_string());
    assert_eq!(lines[1]["counter"]["name"], "requests");
    assert!(text(&out.stderr).contains("reconnecting"));
    let requests = rlp.requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].selectors.len(), 5, "no type flags: all five");
}

#[tokio::test(flavor = "multi_thread")]
async fn tail_exits_1_when_the_rlp_rejects_the_subscription() {
    let (_, addr) = fake_rlp(vec![Script::Reject(Code::InvalidArgument)]).await;
    let out = spillway(&["tail", "--rlp", &addr, "--insecure-plaintext", "--log"]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("InvalidArgument") && stderr.contains("rejected by the fake"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_2() {
    for args in [
        &["tail", "--rlp", "no-port"][..],
        &["tail", "--rlp", "127.0.0.1:1"],
        &[
            "tail",
            "--rlp",
            "127.0.0.1:1",
            "--tls-ca",
            "/nonexistent",
            "--tls-cert",
            "/x",
            "--tls-key",
            "/y",
        ],
        &[
            "emit",
            "--collector",
            "127.0.0.1:1",
            "--source-id",
            "a",
            "--rate",
            "1",
        ],
        &[
            "emit",
            "--collector",
            "127.0.0.1:1",
            "--source-id",
            "a",
            "--rate",
            "-1",
            "--count",
            "1",
        ],
    ] {
        let out = spillway(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[derive(Default)]
struct FakeCollector {
    batches: Mutex<Vec<v2::EnvelopeBatch>>,
}

#[tonic::async_trait]
impl Ingress for FakeCollector {
    async fn sender(
        &self,
        _: Request<Streaming<v2::Envelope>>,
    ) -> Result<Response<v2::IngressResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }

    async fn batch_sender(
        &self,
        request: Request<Streaming<v2::EnvelopeBatch>>,
    ) -> Result<Response<v2::BatchSenderResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.batches.lock().unwrap().push(batch);
        }
        Ok(Response::new(v2::BatchSenderResponse {}))
    }

    async fn send(
        &self,
        _: Request<v2::EnvelopeBatch>,
    ) -> Result<Response<v2::SendResponse>, Status> {
        Err(Status::unimplemented("not in this fake"))
    }
}

async fn fake_collector() -> (Arc<FakeCollector>, String) {
    let collector = Arc::new(FakeCollector::default());
    let router = tonic::transport::Server::builder()
        .add_service(IngressServer::from_arc(Arc::clone(&collector)));
    (collector, serve(router).await.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_sends_numbered_logs_in_batches() {
    let (collector, addr) = fake_collector().await;
    let out = spillway(&[
        "emit",
        "--collector",
        &addr,
        "--insecure-plaintext",
        "--source-id",
        "load",
        "--instance-id",
        "7",
        "--rate",
        "0",
        "--count",
        "250",
        "--size",
        "60",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("sent 250 envelopes"));

    let batches = collector.batches.lock().unwrap();
    assert!(
        batches
            .iter()
            .all(|b| !b.batch.is_empty() && b.batch.len() <= 100)
    );
    let envelopes: Vec<_> = batches.iter().flat_map(|b| &b.batch).collect();
    assert_eq!(envelopes.len(), 250);
    for (i, e) in envelopes.iter().enumerate() {
        assert_eq!(
            (e.source_id.as_str(), e.instance_id.as_str()),
            ("load", "7")
        );
        let Some(Message::Log(log)) = &e.message else {
            panic!("{e:?}")
        };
        assert_eq!(log.payload.len(), 60);
        let want = format!("seq={} ts={} ", i + 1, e.timestamp);
        assert!(log.payload.starts_with(want.as_bytes()), "{log:?}");
        assert!(log.payload.ends_with(b"x"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_paces_to_the_rate() {
    let (collector, addr) = fake_collector().await;
    let started = Instant::now();
    let out = spillway(&[
        "emit",
        "--collector",
        &addr,
        "--insecure-plaintext",
        "--source-id",
        "load",
        "--rate",
        "200",
        "--count",
        "100",
        "--kind",
        "gauge",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The last batch of 20 is due 0.4 s after the start.
    assert!(started.elapsed() >= Duration::from_millis(400));
    let batches = collector.batches.lock().unwrap();
    assert_eq!(batches.len(), 5);
    let first = &batches[0].batch;
    let last = &batches[4].batch;
    let spread = last[0].timestamp - first[0].timestamp;
    assert!(spread >= 350_000_000, "{spread} ns");
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_exits_1_when_the_collector_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let out = spillway(&[
        "emit",
        "--collector",
        &addr,
        "--insecure-plaintext",
        "--source-id",
        "a",
        "--rate",
        "0",
        "--count",
        "10",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Unavailable"));
}
