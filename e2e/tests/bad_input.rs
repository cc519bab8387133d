//! Bad input at every door: what arrives on the gRPC ports of the collector,
//! the router and the RLP (garbage bytes, plain HTTP/1.1, clients without a
//! valid certificate, oversized and malformed messages) is refused without
//! hanging, and afterwards the process is alive and good clients still get
//! through. Bad command lines end every binary with status 2 and a message
//! that names the bad value.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use prost::Message as _;
use spillway_e2e::*;
use spillway_proto::v2::egress_client::EgressClient;
use spillway_proto::v2::ingress_client::IngressClient;
use spillway_proto::v2::{Envelope, EnvelopeBatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, ClientTlsConfig};
use tonic::{Request, Status, Streaming};

// ---------------------------------------------------------------- helpers

/// A router, an RLP reading from it and a collector shipping to it.
struct Stack {
    certs: Certs,
    router: Router,
    rlp: Rlp,
    collector: Collector,
    /// How many [`Probe`]s of this stack are open.
    probes: Arc<AtomicU64>,
}

impl Stack {
    fn start(router_extra: &[&str], collector_extra: &[&str]) -> Stack {
        let certs = Certs::new();
        let router = Router::start(&certs, router_extra);
        let rlp = Rlp::start(&certs, &[&router], &[]);
        let collector = Collector::start(&certs, &[&router], collector_extra);
        Stack {
            certs,
            router,
            rlp,
            collector,
            probes: Arc::default(),
        }
    }

    /// The three gRPC ports, named.
    fn doors(&self) -> [(Door, u16); 3] {
        [
            (Door::Collector, self.collector.port),
            (Door::Router, self.router.port),
            (Door::Rlp, self.rlp.port),
        ]
    }

    fn assert_alive(&mut self, after: &str) {
        for p in [
            &mut self.collector.proc,
            &mut self.router.proc,
            &mut self.rlp.proc,
        ] {
            assert!(p.alive(), "{} died after {after}", p.name);
        }
    }

    /// Every process is alive, and a well-behaved client gets through every
    /// door: a fresh BatchedReceiver subscription on the RLP receives an
    /// envelope sent with `Send` to the collector, and one sent to the router.
    async fn assert_healthy(&mut self, after: &str) {
        self.assert_alive(after);
        let mut probe = Probe::open(self, after).await;
        probe.through(self.collector.port, &self.certs, after).await;
        probe.through(self.router.port, &self.certs, after).await;
        self.assert_alive(after);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Door {
    Collector,
    Router,
    Rlp,
}

/// A consumer on the RLP for one source id, and the numbered logs sent to it.
struct Probe {
    source: String,
    _client: EgressClient<Channel>,
    stream: Streaming<EnvelopeBatch>,
    next: u64,
    open: Arc<AtomicU64>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Probe {
    async fn open(stack: &Stack, what: &str) -> Probe {
        static N: AtomicU64 = AtomicU64::new(0);
        let source = format!("probe-{}", N.fetch_add(1, Ordering::Relaxed));
        let mut client = stack.rlp.client(&stack.certs).await;
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            client.batched_receiver(request(&source, &[Kind::Log], "")),
        )
        .await
        .unwrap_or_else(|_| panic!("after {what}: the RLP did not answer a subscription"))
        .unwrap_or_else(|s| panic!("after {what}: the RLP refused a good subscription: {s:?}"))
        .into_inner();
        // Ready when the RLP has this stack's open probes as its consumers,
        // no more (a refused or dropped one still going), and has each on
        // the router: from then on nothing sent is lost for want of a
        // subscriber.
        let open = stack.probes.fetch_add(1, Ordering::SeqCst) + 1;
        let probe = Probe {
            source,
            _client: client,
            stream,
            next: 0,
            open: stack.probes.clone(),
        };
        eventually(
            Duration::from_secs(15),
            &format!("after {what}: {open} consumer(s) on the RLP and on the router"),
            || {
                metric(stack.rlp.metrics_port, "spillway_subscriptions") == Some(open)
                    && stack.router.subscriptions() == open
            },
        )
        .await;
        probe
    }

    /// Sends the next numbered log of this probe's source to the Ingress
    /// API on `port` with one `Send`, which must succeed; the consumer
    /// (ready since [`Probe::open`]) must receive exactly that log, once,
    /// and nothing else.
    async fn through(&mut self, port: u16, certs: &Certs, what: &str) {
        let n = self.next;
        self.next += 1;
        let mut ingress = IngressClient::new(channel(port, certs.client()).await);
        let batch = EnvelopeBatch {
            batch: vec![numbered_log(&self.source, n)],
        };
        tokio::time::timeout(Duration::from_secs(5), ingress.send(batch))
            .await
            .unwrap_or_else(|_| panic!("after {what}: a good Send to port {port} hung"))
            .unwrap_or_else(|s| panic!("after {what}: a good Send to port {port} failed: {s:?}"));
        let mut got = self
            .arrived(Duration::from_secs(15), what, |g| g.contains(&n))
            .await;
        // A copy would come right behind it.
        got.extend(
            self.arrived(Duration::from_millis(300), what, |_| false)
                .await,
        );
        assert_eq!(
            got,
            [n],
            "after {what}: sent log {n} to port {port} once; the consumer got these"
        );
    }

    /// The numbers of this probe's logs that arrive until `done` says so or
    /// `within` has passed. Anything else fails the test.
    async fn arrived(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&[u64]) -> bool,
    ) -> Vec<u64> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while !done(&got) {
            let batch = match tokio::time::timeout_at(deadline, self.stream.message()).await {
                Err(_) => break,
                Ok(Ok(Some(batch))) => batch,
                Ok(Ok(None)) => panic!("after {what}: the RLP ended the consumer's stream"),
                Ok(Err(s)) => panic!("after {what}: the consumer's stream failed: {s:?}"),
            };
            for e in batch.batch {
                assert_eq!(e.source_id, self.source, "after {what}: a stranger: {e:?}");
                got.push(
                    number_of(&e)
                        .unwrap_or_else(|| panic!("after {what}: an envelope nobody sent: {e:?}")),
                );
            }
        }
        got
    }
}

/// 4 KiB of deterministic pseudo-random bytes that are not a TLS record (the
/// first byte is no TLS content type).
fn garbage() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    bytes[0] = 0xff;
    bytes
}

const PLAIN_HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/// Writes `bytes` on a raw TCP connection to `port` and reads until the
/// server closes it or fails it; returns what it answered. Panics if the
/// server does neither within 5 s.
async fn poke(port: u16, bytes: &[u8], what: &str) -> Vec<u8> {
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| panic!("cannot connect to port {port}: {e}"));
    // The server may hang up before it has read everything: fine.
    let _ = conn.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "port {port} neither answered {what} with an error nor closed the connection within 5 s \
         (got {} bytes so far)",
        answer.len()
    );
    answer
}

/// One envelope that should never arrive anywhere.
fn intruder() -> EnvelopeBatch {
    EnvelopeBatch {
        batch: vec![numbered_log("intruder", 0)],
    }
}

/// Connects to `door` with `tls` and makes one RPC (Ingress `Send` of
/// `batch`, or Egress `BatchedReceiver` on the RLP); `Err` says what
/// failed. Panics if nothing happened within 10 s.
async fn attempt(
    door: Door,
    port: u16,
    tls: ClientTlsConfig,
    batch: EnvelopeBatch,
    who: &str,
) -> Result<(), String> {
    let attempt = async {
        let ch = match try_channel(port, tls).await {
            Ok(ch) => ch,
            Err(e) => return Err(format!("connect: {e:?}")),
        };
        match door {
            Door::Collector | Door::Router => IngressClient::new(ch)
                .send(batch)
                .await
                .map(drop)
                .map_err(|s| format!("Send: {s:?}")),
            Door::Rlp => EgressClient::new(ch)
                .batched_receiver(request("", &[Kind::Log], ""))
                .await
                .map(drop)
                .map_err(|s| format!("BatchedReceiver: {s:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| {
            panic!("{door:?} (port {port}) neither accepted nor refused {who} within 10 s")
        })
}

/// The positive control of [`refused`]: the same RPC on the same door with
/// the test's good client TLS succeeds, so a refusal next to it is the
/// refused client's doing (not a wrong port, a dead process or a broken
/// RPC).
async fn accepted(stack: &Stack, door: Door, port: u16) {
    let control = EnvelopeBatch {
        batch: vec![numbered_log("control", 0)],
    };
    if let Err(e) = attempt(door, port, stack.certs.client(), control, "a good client").await {
        panic!("{door:?} (port {port}) refused a good client: {e}");
    }
}

/// Connects to `door` with `tls` and makes one RPC (see [`attempt`]).
/// Returns the error that refused the client; panics if the RPC succeeded.
/// The error must come from TLS (the handshake, or the first RPC under
/// TLS 1.3, which tonic reports as a transport error): never a refusal of
/// the RPC itself by a server that served the client.
async fn refused(door: Door, port: u16, tls: ClientTlsConfig, who: &str) -> String {
    match attempt(door, port, tls, intruder(), who).await {
        Ok(()) => panic!("{door:?} (port {port}) accepted an RPC from {who}"),
        Err(e) => {
            assert!(
                !e.contains("code: InvalidArgument")
                    && !e.contains("code: ResourceExhausted")
                    && !e.contains("code: Unimplemented"),
                "{door:?} (port {port}) served {who} and refused only the RPC: {e}"
            );
            e
        }
    }
}

/// A codec that sends and receives message bytes as they are, so that a
/// test can put anything on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `/loggregator.v2.Ingress/Send` on `port` with `body` as the
/// message bytes; returns the response message bytes.
async fn raw_send(port: u16, certs: &Certs, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel(port, certs.client()).await);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let call = grpc.unary(
        Request::new(body),
        PathAndQuery::from_static("/loggregator.v2.Ingress/Send"),
        RawCodec,
    );
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .unwrap_or_else(|_| panic!("a raw Send to port {port} hung"))
        .map(tonic::Response::into_inner)
}

/// A command line of `binary` that is valid in every respect, as
/// `(flag, value)` pairs (`value` empty for a switch).
fn good_args(binary: &str, certs: &Certs) -> Vec<(String, String)> {
    let addr = || format!("127.0.0.1:{}", free_port());
    let mut args: Vec<(String, String)> = match binary {
        "spillway-router" => vec![("--addr".into(), addr()), ("--metrics-addr".into(), addr())],
        "spillway-rlp" => vec![
            ("--router".into(), "localhost:1".into()),
            ("--addr".into(), addr()),
            ("--gateway-addr".into(), addr()),
            ("--metrics-addr".into(), addr()),
        ],
        "spillway-collector" => vec![
            ("--router".into(), "localhost:1".into()),
            ("--ingress-addr".into(), addr()),
            ("--http-addr".into(), addr()),
        ],
        other => panic!("no such binary {other}"),
    };
    let tls = certs.flags(match binary {
        "spillway-router" => "router",
        "spillway-rlp" => "rlp",
        _ => "collector",
    });
    args.extend(tls.chunks(2).map(|kv| (kv[0].clone(), kv[1].clone())));
    args
}

/// Replaces (or adds) `flag`'s value.
fn set(args: &mut Vec<(String, String)>, flag: &str, value: &str) {
    args.retain(|(f, _)| f != flag);
    args.push((flag.into(), value.into()));
}

fn flatten(args: &[(String, String)]) -> Vec<String> {
    args.iter()
        .flat_map(|(f, v)| [f.clone(), v.clone()])
        .filter(|s| !s.is_empty())
        .collect()
}

const BINARIES: [&str; 3] = ["spillway-collector", "spillway-router", "spillway-rlp"];

/// Runs `binary` with `args` and expects it to exit with status 2 within
/// 10 s, without panicking, with one of `needles` on stderr.
fn assert_exits_2(binary: &str, args: &[(String, String)], needles: &[&str]) {
    let args = flatten(args);
    let mut child = Command::new(bin(binary))
        .args(&args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{binary} {args:?} still runs after 10 s: the bad input was accepted");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "{binary} {args:?} exited with {status}; stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{binary} {args:?} panicked:\n{stderr}"
    );
    assert!(
        needles.iter().any(|n| stderr.contains(n)),
        "{binary} {args:?}: stderr names none of {needles:?}:\n{stderr}"
    );
}

// ------------------------------------------------------- network: raw TCP

/// 4 KiB of garbage on a raw TCP connection to each gRPC port gets the
/// connection closed (or an error) promptly, not an HTTP answer, and the
/// processes keep serving good clients.
#[tokio::test(flavor = "multi_thread")]
async fn garbage_bytes_are_dropped_at_every_grpc_port() {
    let mut stack = Stack::start(&[], &[]);
    stack.assert_healthy("start").await;
    for (door, port) in stack.doors() {
        let answer = poke(port, &garbage(), "4 KiB of garbage").await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "{door:?} answered garbage as HTTP: {:?}",
            String::from_utf8_lossy(&answer)
        );
        stack.assert_alive(&format!("garbage on the {door:?} port"));
    }
    stack.assert_healthy("garbage on every port").await;
}

/// A plain-text HTTP/1.1 request to each (TLS-only, HTTP/2-only) gRPC port
/// is not served: the connection is closed or failed promptly, and the
/// processes keep serving good clients.
#[tokio::test(flavor = "multi_thread")]
async fn plain_http1_is_refused_at_every_grpc_port() {
    let mut stack = Stack::start(&[], &[]);
    for (door, port) in stack.doors() {
        let answer = poke(port, PLAIN_HTTP, "a plain HTTP/1.1 request").await;
        assert!(
            !answer.starts_with(b"HTTP/"),
            "{door:?} served plain HTTP/1.1 without TLS: {:?}",
            String::from_utf8_lossy(&answer)
        );
        stack.assert_alive(&format!("plain HTTP on the {door:?} port"));
    }
    stack.assert_healthy("plain HTTP on every port").await;
}

// ------------------------------------------------------ network: mutual TLS

/// A client that presents no certificate cannot connect and make an RPC on
/// any gRPC port (with TLS 1.3 the refusal may only show on the first RPC).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_a_certificate_is_refused() {
    let mut stack = Stack::start(&[], &[]);
    for (door, port) in stack.doors() {
        accepted(&stack, door, port).await;
        let tls = stack.certs.client_tls("ca.pem", None);
        let e = refused(door, port, tls, "a client without a certificate").await;
        eprintln!("{door:?} refused a client without a certificate: {e}");
    }
    stack.assert_healthy("clients without a certificate").await;
}

/// A client whose certificate (right name) comes from another CA cannot
/// connect and make an RPC on any gRPC port.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_from_another_ca_is_refused() {
    let mut stack = Stack::start(&[], &[]);
    for (door, port) in stack.doors() {
        accepted(&stack, door, port).await;
        let tls = stack
            .certs
            .client_tls("ca.pem", Some(("other.pem", "other-key.pem")));
        let e = refused(door, port, tls, "a client certified by another CA").await;
        eprintln!("{door:?} refused a certificate from another CA: {e}");
    }
    stack
        .assert_healthy("clients certified by another CA")
        .await;
}

/// A client that trusts another CA (and so not the server's certificate)
/// fails on every gRPC port, even with a good client certificate.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_does_not_trust_the_server_fails() {
    let mut stack = Stack::start(&[], &[]);
    for (door, port) in stack.doors() {
        accepted(&stack, door, port).await;
        let tls = stack
            .certs
            .client_tls("other-ca.pem", Some(("client.pem", "client-key.pem")));
        let e = refused(door, port, tls, "a client trusting another CA").await;
        eprintln!("{door:?}: a client trusting another CA failed: {e}");
    }
    stack.assert_healthy("clients trusting another CA").await;
}

// ------------------------------------------------------- network: messages

/// With `--max-message-bytes 65536`, a ~200 KiB `Send` to the collector and
/// to the router gets an error status and none of it is delivered; a normal
/// `Send` afterwards reaches the consumer.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_batch_gets_an_error_status() {
    let limit = ["--max-message-bytes", "65536"];
    let mut stack = Stack::start(&limit, &limit);
    let mut probe = Probe::open(&stack, "start").await;
    probe
        .through(stack.collector.port, &stack.certs, "start")
        .await;

    // 50 logs of 4 KiB of the probe's source: the probe fails if any arrives.
    let big = EnvelopeBatch {
        batch: (0..50)
            .map(|_| {
                Envelope::log(
                    spillway_proto::now_nanos(),
                    &probe.source,
                    "0",
                    vec![b'x'; 4096],
                    v2::log::Type::Out,
                )
            })
            .collect(),
    };
    assert!(big.encoded_len() > 200_000, "{}", big.encoded_len());

    for (door, port) in [
        (Door::Collector, stack.collector.port),
        (Door::Router, stack.router.port),
    ] {
        let mut ingress = IngressClient::new(channel(port, stack.certs.client()).await);
        let sent = tokio::time::timeout(Duration::from_secs(10), ingress.send(big.clone()))
            .await
            .unwrap_or_else(|_| panic!("{door:?}: an oversized Send hung"));
        let status = sent.expect_err("an oversized Send was accepted");
        eprintln!("{door:?} refused an oversized Send: {status:?}");

        let what = format!("an oversized Send to the {door:?}");
        stack.assert_alive(&what);
        // The same connection still works, and so does the whole path.
        ingress
            .send(EnvelopeBatch { batch: Vec::new() })
            .await
            .unwrap_or_else(|s| panic!("after {what}: the same client cannot send: {s:?}"));
        probe.through(port, &stack.certs, &what).await;
    }
    stack.assert_healthy("oversized batches").await;
}

/// `Send` with bytes that are not a valid EnvelopeBatch (a length-delimited
/// field whose length runs past the end, a truncated field, an invalid wire
/// type) gets InvalidArgument (the caller's fault, not the server's) from
/// the collector and the router, each counted as `malformed`, and a normal
/// send works afterwards. Valid bytes through the same raw codec succeed,
/// so the errors come from the bytes, not from the test's codec.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_protobuf_gets_an_error_status() {
    let mut stack = Stack::start(&[], &[]);
    let bad: [(&str, Vec<u8>); 3] = [
        (
            "a length running past the end",
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
        ),
        ("a truncated field", vec![0x0a, 0x05, 0x01]),
        ("wire type 7", vec![0x0f, 0x00]),
    ];
    for (door, port, metrics_port) in [
        (
            Door::Collector,
            stack.collector.port,
            stack.collector.http_port,
        ),
        (Door::Router, stack.router.port, stack.router.metrics_port),
    ] {
        let good = EnvelopeBatch {
            batch: vec![numbered_log("raw-codec", 0)],
        }
        .encode_to_vec();
        let answer = raw_send(port, &stack.certs, good)
            .await
            .unwrap_or_else(|s| panic!("{door:?}: valid bytes through the raw codec: {s:?}"));
        assert!(answer.is_empty(), "SendResponse has no fields: {answer:?}");

        for (what, bytes) in &bad {
            let status = raw_send(port, &stack.certs, bytes.clone())
                .await
                .expect_err(&format!("{door:?} accepted {what}"));
            eprintln!("{door:?} refused {what}: {status:?}");
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{door:?} on {what}: {status:?}"
            );
            stack.assert_alive(&format!("{what} to the {door:?}"));
        }
        assert_eq!(
            refused_messages(metrics_port, "malformed"),
            Some(bad.len() as u64),
            "{door:?}: every malformed message is counted"
        );
    }
    stack.assert_healthy("malformed protobuf").await;
}

/// `spillway_refused_messages_total{reason}` on the metrics page at `port`.
fn refused_messages(port: u16, reason: &str) -> Option<u64> {
    metric(
        port,
        &format!("spillway_refused_messages_total{{reason=\"{reason}\"}}"),
    )
}

/// The peak resident memory (VmHWM) of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status:\n{status}"));
    kb * 1024
}

/// One 4 MB ingress message of two million empty envelopes (within the
/// message size limit) is refused with ResourceExhausted by the collector
/// and the router before it is decoded: the peak memory of each process
/// grows by less than 64 MiB (decoded, it would take some 500 MB), the
/// refusal is counted as `too_many_envelopes`, and afterwards everything
/// still gets through. So is one envelope of two million empty tags
/// (`too_many_tags`).
#[tokio::test(flavor = "multi_thread")]
async fn a_message_of_two_million_empty_envelopes_is_refused_without_bloat() {
    let mut stack = Stack::start(&[], &[]);
    let empty: Vec<u8> = [0x0a, 0x00].repeat(2_000_000);
    // One envelope (batch field 1) of two million empty tags (field 9).
    let tags: Vec<u8> = {
        let envelope = [0x4a, 0x00].repeat(2_000_000);
        let mut batch = vec![0x0a];
        prost::encoding::encode_varint(envelope.len() as u64, &mut batch);
        batch.extend(envelope);
        batch
    };
    let doors = [
        (
            Door::Collector,
            stack.collector.port,
            stack.collector.http_port,
            stack.collector.proc.pid().unwrap(),
        ),
        (
            Door::Router,
            stack.router.port,
            stack.router.metrics_port,
            stack.router.proc.pid().unwrap(),
        ),
    ];
    for (door, port, metrics_port, pid) in doors {
        for (what, bytes, reason) in [
            ("two million empty envelopes", &empty, "too_many_envelopes"),
            (
                "an envelope of two million empty tags",
                &tags,
                "too_many_tags",
            ),
        ] {
            let before = peak_rss(pid);
            let status = raw_send(port, &stack.certs, bytes.clone())
                .await
                .expect_err(&format!("{door:?} accepted {what}"));
            assert_eq!(
                status.code(),
                tonic::Code::ResourceExhausted,
                "{door:?}, {what}: {status:?}"
            );
            let grown = peak_rss(pid).saturating_sub(before);
            assert!(
                grown < 64 << 20,
                "{door:?}, {what}: peak memory grew by {} MiB",
                grown >> 20
            );
            assert_eq!(
                refused_messages(metrics_port, reason),
                Some(1),
                "{door:?}, {what}"
            );
            stack.assert_alive(&format!("{what} to the {door:?}"));
        }
    }
    stack.assert_healthy("two million empty envelopes").await;
}

/// `--max-batch-envelopes`: a batch of exactly the limit passes whole (every
/// envelope arrives at the consumer), one envelope more is refused whole
/// with ResourceExhausted and counted, at the collector and at the router.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_at_the_envelope_limit_passes_and_one_more_is_refused() {
    let limit = ["--max-batch-envelopes", "500"];
    let mut stack = Stack::start(&limit, &limit);
    let mut probe = Probe::open(&stack, "start").await;
    probe
        .through(stack.collector.port, &stack.certs, "start")
        .await;
    let doors = [
        (
            Door::Collector,
            stack.collector.port,
            stack.collector.http_port,
        ),
        (Door::Router, stack.router.port, stack.router.metrics_port),
    ];
    for (door, port, metrics_port) in doors {
        let first = probe.next;
        let batch = |n: u64| EnvelopeBatch {
            batch: (first..first + n)
                .map(|i| numbered_log(&probe.source, i))
                .collect(),
        };
        let mut ingress = IngressClient::new(channel(port, stack.certs.client()).await);
        let status = ingress
            .send(batch(501))
            .await
            .expect_err(&format!("{door:?} accepted 501 envelopes"));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            refused_messages(metrics_port, "too_many_envelopes"),
            Some(1),
            "{door:?}"
        );
        ingress
            .send(batch(500))
            .await
            .unwrap_or_else(|s| panic!("{door:?} refused 500 envelopes: {s:?}"));
        probe.next += 501;
        let got = collect_until(&mut probe.stream, Duration::from_secs(20), |g| {
            g.len() >= 500
        })
        .await;
        let mut numbers: Vec<u64> = got.iter().filter_map(number_of).collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (first..first + 500).collect::<Vec<_>>(),
            "{door:?}: the batch at the limit arrives whole, once, and nothing of the refused one"
        );
    }
    stack.assert_healthy("batches at the envelope limit").await;
}

/// With the default limits, a 6 MB batch like the real Loggregator agent's
/// (100 logs of 60 KiB, on a BatchSender stream) passes whole from the
/// collector, and from the router, to the consumer: the limit is 10 MiB, as
/// in Loggregator. A batch over 10 MiB is refused with OutOfRange by the
/// hop that receives it, and counted there as `too_large`.
#[tokio::test(flavor = "multi_thread")]
async fn a_six_megabyte_agent_batch_passes_and_an_oversized_one_is_counted() {
    let mut stack = Stack::start(&[], &[]);
    let mut probe = Probe::open(&stack, "start").await;
    probe
        .through(stack.collector.port, &stack.certs, "start")
        .await;
    let doors = [
        (
            Door::Collector,
            stack.collector.port,
            stack.collector.http_port,
        ),
        (Door::Router, stack.router.port, stack.router.metrics_port),
    ];
    for (door, port, metrics_port) in doors {
        let first = probe.next;
        let batch = |n: u64| EnvelopeBatch {
            batch: (first..first + n)
                .map(|i| {
                    let mut e = numbered_log(&probe.source, i);
                    if let Some(v2::envelope::Message::Log(l)) = &mut e.message {
                        let mut payload = l.payload.to_vec();
                        payload.push(b' ');
                        payload.resize(60 * 1024, b'p');
                        l.payload = payload.into();
                    }
                    e
                })
                .collect(),
        };
        let six = batch(100);
        assert!(six.encoded_len() > 6_000_000, "{}", six.encoded_len());
        let mut ingress = IngressClient::new(channel(port, stack.certs.client()).await);
        ingress
            .batch_sender(futures::stream::iter([six]))
            .await
            .unwrap_or_else(|s| panic!("{door:?} refused a 6 MB batch: {s:?}"));
        probe.next += 190;
        let got = collect_until(&mut probe.stream, Duration::from_secs(30), |g| {
            g.len() >= 100
        })
        .await;
        // "line N pppp...": the number before the padding.
        let mut numbers: Vec<u64> = got
            .iter()
            .filter_map(|e| match &e.message {
                Some(v2::envelope::Message::Log(l)) if l.payload.len() == 60 * 1024 => {
                    let text = std::str::from_utf8(&l.payload).ok()?;
                    text.strip_prefix("line ")?.split(' ').next()?.parse().ok()
                }
                _ => None,
            })
            .collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (first..first + 100).collect::<Vec<_>>(),
            "{door:?}: all 100 logs of 60 KiB arrive, once"
        );

        let eleven = batch(190);
        assert!(eleven.encoded_len() > 10 << 20, "{}", eleven.encoded_len());
        let status = ingress
            .batch_sender(futures::stream::iter([eleven.clone()]))
            .await
            .expect_err(&format!("{door:?} accepted an 11 MB batch"));
        assert_eq!(
            status.code(),
            tonic::Code::OutOfRange,
            "{door:?}: {status:?}"
        );
        assert_eq!(
            refused_messages(metrics_port, "too_large"),
            Some(1),
            "{door:?}: the oversized batch is counted where it was refused"
        );
        // The same through the unary Send, which tonic refuses before any
        // handler runs.
        let status = ingress
            .send(eleven)
            .await
            .expect_err(&format!("{door:?} accepted an 11 MB Send"));
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
        assert_eq!(
            refused_messages(metrics_port, "too_large"),
            Some(2),
            "{door:?}: an oversized Send is counted too"
        );
    }
    stack.assert_healthy("6 MB and 11 MB batches").await;
}

/// A subscription without selectors, or with a selector that names no
/// envelope type, gets InvalidArgument from the RLP and from the router,
/// and both keep serving.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_without_a_usable_selector_is_invalid() {
    let mut stack = Stack::start(&[], &[]);
    let requests = [
        ("no selectors", v2::EgressBatchRequest::default()),
        (
            "a selector without a type",
            v2::EgressBatchRequest {
                selectors: vec![v2::Selector {
                    source_id: "x".into(),
                    message: None,
                }],
                ..Default::default()
            },
        ),
    ];
    for (door, port) in [
        (Door::Rlp, stack.rlp.port),
        (Door::Router, stack.router.port),
    ] {
        let mut egress = EgressClient::new(channel(port, stack.certs.client()).await);
        for (what, req) in &requests {
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                egress.batched_receiver(req.clone()),
            )
            .await
            .unwrap_or_else(|_| panic!("{door:?} hung on {what}"));
            let status = answer
                .map(drop)
                .expect_err(&format!("{door:?} accepted {what}"));
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{door:?} on {what}: {status:?}"
            );
        }
    }
    stack
        .assert_healthy("subscriptions without selectors")
        .await;
}

/// What the collector acknowledges within its `--max-message-bytes` is
/// shipped in messages a router with the same limit accepts: two 40 KB
/// `Send`s in a row reach the consumer (in separate messages). A `Send` of
/// exactly the limit no longer fits once the collector adds its `host` tag:
/// it is dropped at the shipper and counted, and the stream stays healthy.
#[tokio::test(flavor = "multi_thread")]
async fn what_the_collector_accepts_fits_through_a_router_with_the_same_limit() {
    let limit = ["--max-message-bytes", "65536"];
    // A long linger makes the collector put all three sends in one batch.
    let mut collector_flags = limit.to_vec();
    collector_flags.extend(["--batch-interval", "200ms"]);
    let mut stack = Stack::start(&limit, &collector_flags);
    let mut probe = Probe::open(&stack, "start").await;
    probe
        .through(stack.collector.port, &stack.certs, "start")
        .await;

    let log = |size: usize| EnvelopeBatch {
        batch: vec![Envelope::log(
            spillway_proto::now_nanos(),
            &probe.source,
            "0",
            vec![b'y'; size],
            v2::log::Type::Out,
        )],
    };
    let mut edge = 65_000;
    while log(edge + 1).encoded_len() <= 65_536 {
        edge += 1;
    }
    assert_eq!(log(edge).encoded_len(), 65_536);

    let mut ingress = IngressClient::new(channel(stack.collector.port, stack.certs.client()).await);
    for size in [40_000, edge, 40_000] {
        ingress
            .send(log(size))
            .await
            .unwrap_or_else(|s| panic!("the collector refused a {size}-byte log: {s:?}"));
    }
    let got = collect_until(&mut probe.stream, Duration::from_secs(10), |g| {
        g.iter().filter(|e| e.encoded_len() > 30_000).count() >= 2
    })
    .await;
    let sizes: Vec<usize> = got
        .iter()
        .filter_map(|e| match &e.message {
            Some(v2::envelope::Message::Log(l)) if l.payload.len() > 30_000 => {
                Some(l.payload.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(sizes, vec![40_000, 40_000], "both 40 KB logs arrive");
    eventually(
        Duration::from_secs(5),
        "the oversized envelope is counted",
        || {
            metric(
                stack.collector.http_port,
                "spillway_dropped_total{direction=\"egress\"}",
            ) == Some(1)
        },
    )
    .await;
    drop(probe);
    stack
        .assert_healthy("an envelope that outgrew the limit")
        .await;
}

// ---------------------------------------------------------- command lines

/// The command lines the bad-input tests start from are valid: each binary
/// keeps running with them. (Otherwise the tests below could pass for the
/// wrong reason.)
#[test]
fn the_good_command_lines_start() {
    let certs = Certs::new();
    for binary in BINARIES {
        let args = good_args(binary, &certs);
        let mut child = Command::new(bin(binary))
            .args(flatten(&args))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let still = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(still, None, "{binary} {args:?} did not keep running");
    }
}

/// A listen address that is no address: status 2, naming it.
#[test]
fn a_bad_listen_address_exits_2() {
    let certs = Certs::new();
    for (binary, flag) in [
        ("spillway-collector", "--ingress-addr"),
        ("spillway-router", "--addr"),
        ("spillway-rlp", "--addr"),
    ] {
        let mut args = good_args(binary, &certs);
        set(&mut args, flag, "not-an-address");
        assert_exits_2(binary, &args, &["not-an-address"]);
    }
}

/// `--router` wants HOST:PORT, not a URL: status 2, naming it.
#[test]
fn a_router_url_exits_2() {
    let certs = Certs::new();
    for binary in ["spillway-collector", "spillway-rlp"] {
        let mut args = good_args(binary, &certs);
        set(&mut args, "--router", "http://x:1");
        assert_exits_2(binary, &args, &["http://x:1"]);
    }
}

/// A `--tls-cert` file that does not exist (the other TLS flags valid):
/// status 2, naming the file.
#[test]
fn a_missing_tls_cert_file_exits_2() {
    let certs = Certs::new();
    for binary in BINARIES {
        let mut args = good_args(binary, &certs);
        set(&mut args, "--tls-cert", "/nonexistent/cert.pem");
        assert_exits_2(binary, &args, &["/nonexistent/cert.pem"]);
    }
}

/// A `--config` file with a key that is no flag: status 2, naming the key.
#[test]
fn an_unknown_config_key_exits_2() {
    let certs = Certs::new();
    let file = certs.dir.join("unknown-key.toml");
    std::fs::write(&file, "no-such-key = \"1\"\n").unwrap();
    for binary in BINARIES {
        let mut args = good_args(binary, &certs);
        set(&mut args, "--config", &file.display().to_string());
        assert_exits_2(binary, &args, &["no-such-key"]);
    }
}

/// Neither TLS flags nor `--insecure-plaintext`: status 2, saying what is
/// needed.
#[test]
fn no_tls_and_no_plaintext_exits_2() {
    let certs = Certs::new();
    for binary in BINARIES {
        let mut args = good_args(binary, &certs);
        args.retain(|(f, _)| !f.starts_with("--tls-"));
        assert_exits_2(binary, &args, &["--tls-ca", "--insecure-plaintext"]);
    }
}
