//! The RLP gateway (`GET /v2/read`, server-sent events) seen by a real HTTP
//! client: `curl` over TLS with a client certificate or a token, against
//! real processes (collector → router → RLP).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use spillway_e2e::*;
use spillway_proto::v2::{Envelope, EnvelopeBatch, envelope::Message};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// A streaming `curl -sN -i` on the gateway, read as blocks of lines, each
/// ended by a blank line: first the response head, then one SSE frame per
/// block. Killed when dropped.
struct Stream {
    curl: Child,
    blocks: mpsc::UnboundedReceiver<Vec<String>>,
}

impl Stream {
    /// A stream of the well-behaved client (our CA, a client certificate).
    fn open(certs: &Certs, port: u16, query: &str) -> Stream {
        Stream::open_with(
            &certs.curl_flags(),
            &format!("https://localhost:{port}/v2/read?{query}"),
        )
    }

    /// A stream of `curl` with `flags` on `url`.
    fn open_with(flags: &[String], url: &str) -> Stream {
        let mut curl = Command::new("curl")
            .args(["-sN", "-i"])
            .args(flags)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run curl");
        let mut stdout = BufReader::new(curl.stdout.take().expect("piped stdout"));
        let (tx, blocks) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut block = Vec::new();
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdout.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches('\n').trim_end_matches('\r');
                if text.starts_with(':') {
                    // An SSE comment: parsers ignore it (the gateway sends
                    // one first, so that the response head goes out at once).
                    continue;
                }
                if text.is_empty() {
                    if !block.is_empty() && tx.send(std::mem::take(&mut block)).is_err() {
                        return;
                    }
                } else {
                    block.push(text.to_string());
                }
            }
            // An unterminated last block is sent as it is, to be seen.
            if !block.is_empty() {
                let _ = tx.send(block);
            }
        });
        Stream { curl, blocks }
    }

    /// The next block; `None` once curl's output has ended.
    async fn try_next(&mut self, within: Duration) -> Result<Option<Vec<String>>, ()> {
        tokio::time::timeout(within, self.blocks.recv())
            .await
            .map_err(|_| ())
    }

    /// The next block; `None` once curl's output has ended. Fails the test
    /// after `within`.
    async fn next(&mut self, within: Duration) -> Option<Vec<String>> {
        self.try_next(within)
            .await
            .unwrap_or_else(|_| panic!("nothing from the gateway within {within:?}"))
    }

    /// The response head: status code and headers (names in lower case).
    async fn head(&mut self) -> (u16, BTreeMap<String, String>) {
        let head = self.next(WAIT).await.expect("a response head");
        let status = head[0]
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not a status line: {:?}", head[0]));
        let headers = head[1..]
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers)
    }

    /// Reads frames until `done` says so, returning the envelopes of the
    /// data frames (heartbeats are skipped). Fails the test after `within`.
    async fn envelopes_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self
                .next(left)
                .await
                .unwrap_or_else(|| panic!("the stream ended; so far: {got:?}"));
            got.extend(envelopes_of(&frame));
        }
        got
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.curl.kill();
        let _ = self.curl.wait();
    }
}

fn is_heartbeat(frame: &[String]) -> bool {
    frame.first().map(String::as_str) == Some("event: heartbeat")
}

/// The envelopes of a data frame: exactly one line, `data: <EnvelopeBatch
/// as protobuf-JSON>`. A heartbeat frame has none.
fn envelopes_of(frame: &[String]) -> Vec<Value> {
    if is_heartbeat(frame) {
        return Vec::new();
    }
    assert_eq!(
        frame.len(),
        1,
        "a data frame is one `data:` line: {frame:?}"
    );
    let json = frame[0]
        .strip_prefix("data: ")
        .unwrap_or_else(|| panic!("not a data line: {:?}", frame[0]));
    let batch: Value = serde_json::from_str(json).expect("the data is JSON");
    let envelopes = batch["batch"]
        .as_array()
        .unwrap_or_else(|| panic!("not an EnvelopeBatch: {json}"));
    assert!(!envelopes.is_empty(), "an empty batch was sent: {json}");
    envelopes.clone()
}

/// A JSON string field, or a test failure naming what is missing.
fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a JSON string in {v}"))
}

/// Standard base64 with padding, as protobuf-JSON writes `bytes`.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert!(s.len().is_multiple_of(4), "base64 without padding: {s:?}");
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.trim_end_matches('=').bytes() {
        let sextet = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {s:?}"));
        acc = (acc << 6) | sextet as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// One `curl` request of the well-behaved client: (HTTP status, content
/// type, body).
fn curl(certs: &Certs, method: &str, port: u16, path: &str) -> (u16, String, String) {
    curl_with(
        &certs.curl_flags(),
        method,
        &format!("https://localhost:{port}{path}"),
    )
}

/// One `curl` request with `flags`: (HTTP status, content type, body); the
/// status is 0 when no HTTP response came (refused, TLS failed).
fn curl_with(flags: &[String], method: &str, url: &str) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-X", method, "-o", "-"])
        .args(["-w", "\n%{http_code} %{content_type}"])
        .args(flags)
        .arg(url)
        .output()
        .expect("cannot run curl");
    let text = String::from_utf8(out.stdout).expect("UTF-8 response");
    let (body, status) = text.rsplit_once('\n').expect("curl's -w line");
    let (code, content_type) = status.split_once(' ').unwrap_or((status, ""));
    (
        code.parse().expect("an HTTP status"),
        content_type.to_string(),
        body.to_string(),
    )
}

/// `path` answers with `status` and the JSON error `code` (and a message).
fn assert_error(certs: &Certs, port: u16, method: &str, path: &str, status: u16, code: &str) {
    let (got, content_type, body) = curl(certs, method, port, path);
    assert_eq!(got, status, "{method} {path}: {body}");
    assert_eq!(content_type, "application/json", "{method} {path}");
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body:?}"));
    assert_eq!(json["error"], code, "{method} {path}: {body}");
    assert!(
        !text(&json, "message").is_empty(),
        "{method} {path}: empty message"
    );
}

async fn send(collector: &Collector, certs: &Certs, batch: Vec<Envelope>) {
    let mut ingress = collector.client(certs).await;
    ingress.send(EnvelopeBatch { batch }).await.unwrap();
}

async fn subscribed(router: &Router, n: u64) {
    eventually(WAIT, &format!("{n} subscription(s) on the router"), || {
        router.subscriptions() >= n
    })
    .await;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn log_envelopes_arrive_as_protobuf_json_in_sse_frames() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);

    let mut stream = Stream::open(&certs, rlp.gateway_port, "source_id=gw&log");
    subscribed(&router, 1).await;

    let payloads: [(&[u8], v2::log::Type); 3] = [
        (b"hello gateway", v2::log::Type::Out),
        (&[0xff, 0xfe, b'o', b'k', 0x00, 0x80], v2::log::Type::Err),
        (b"", v2::log::Type::Out),
    ];
    let sent: Vec<Envelope> = payloads
        .iter()
        .enumerate()
        .map(|(i, (payload, ty))| {
            let mut e = Envelope::log(
                1_700_000_000_000_000_000 + i as i64,
                "gw",
                format!("{i}"),
                payload.to_vec(),
                *ty,
            );
            e.tags.insert("app".into(), "shop".into());
            e
        })
        .collect();
    send(&collector, &certs, sent.clone()).await;

    // The head comes with the first frame (see
    // `response_head_is_sent_before_the_first_frame`).
    let (status, headers) = stream.head().await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("text/event-stream")
    );
    let got = stream
        .envelopes_until(WAIT, |g| g.len() >= sent.len())
        .await;
    assert_eq!(got.len(), sent.len(), "{got:?}");

    for want in &sent {
        let e = got
            .iter()
            .find(|e| e["instance_id"] == want.instance_id.as_str())
            .unwrap_or_else(|| panic!("instance {} missing: {got:?}", want.instance_id));
        // int64 as a JSON string, proto field names.
        assert_eq!(text(e, "timestamp"), want.timestamp.to_string(), "{e}");
        assert_eq!(text(e, "source_id"), "gw", "{e}");
        assert_eq!(e["tags"]["app"], "shop", "{e}");
        assert_eq!(e["tags"]["host"], "e2e-host", "{e}");
        let Some(Message::Log(log)) = &want.message else {
            unreachable!()
        };
        assert_eq!(
            base64_decode(text(&e["log"], "payload")),
            log.payload.to_vec(),
            "{e}"
        );
        let ty = if log.r#type == v2::log::Type::Err as i32 {
            "ERR"
        } else {
            "OUT"
        };
        assert_eq!(e["log"]["type"], ty, "{e}");
    }
}

/// Loggregator's gateway flushes the head (200, text/event-stream) as soon
/// as it subscribes, before any frame; so does Spillway's, even for a quiet
/// source (else clients would see nothing for up to --heartbeat-interval).
#[tokio::test(flavor = "multi_thread")]
async fn response_head_is_sent_before_the_first_frame() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);

    let mut stream = Stream::open(&certs, rlp.gateway_port, "source_id=quiet&log");
    subscribed(&router, 1).await;
    let head = stream.try_next(Duration::from_secs(3)).await;
    assert!(
        matches!(&head, Ok(Some(h)) if h[0].contains(" 200")),
        "no response head within 3 s of subscribing: {head:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn counter_and_gauge_names_select_exactly() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);

    let mut stream = Stream::open(
        &certs,
        rlp.gateway_port,
        "counter.name=hits&gauge.name=cpu,mem",
    );
    subscribed(&router, 1).await;

    let gauge = |names: &[&str]| {
        let mut g = v2::Gauge::default();
        for n in names {
            g.metrics.insert(
                n.to_string(),
                v2::GaugeValue {
                    unit: "u".into(),
                    value: 1.0,
                },
            );
        }
        Envelope {
            timestamp: spillway_proto::now_nanos(),
            source_id: "sel".into(),
            message: Some(Message::Gauge(g)),
            ..Default::default()
        }
    };
    send(
        &collector,
        &certs,
        vec![
            Envelope::counter("sel", "other", 1, 0),
            gauge(&["cpu"]),
            gauge(&["cpu", "mem", "disk"]),
            Envelope::counter("sel", "hits", 1, 0),
            gauge(&["cpu", "mem"]),
            numbered_log("sel", 1),
        ],
    )
    .await;
    assert_eq!(stream.head().await.0, 200);

    let is_counter =
        |e: &Value, delta: &str| e["counter"]["name"] == "hits" && e["counter"]["delta"] == delta;
    let gauge_names = |e: &Value| -> Option<BTreeSet<String>> {
        Some(e["gauge"]["metrics"].as_object()?.keys().cloned().collect())
    };
    let cpu_mem: BTreeSet<String> = ["cpu".to_string(), "mem".to_string()].into();
    let mut got = stream
        .envelopes_until(WAIT, |g| {
            g.iter().any(|e| is_counter(e, "1"))
                && g.iter().any(|e| gauge_names(e).as_ref() == Some(&cpu_mem))
        })
        .await;
    // What was not selected would have come with what was; a second
    // `hits` counter, sent after, marks the end of what to wait for.
    send(
        &collector,
        &certs,
        vec![Envelope::counter("sel", "hits", 7, 0)],
    )
    .await;
    got.extend(
        stream
            .envelopes_until(WAIT, |g| g.iter().any(|e| is_counter(e, "7")))
            .await,
    );
    for e in &got {
        assert!(
            e["counter"]["name"] == "hits" || gauge_names(e).as_ref() == Some(&cpu_mem),
            "not selected, but received: {e}"
        );
    }
    assert_eq!(got.len(), 3, "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn heartbeat_frames_while_there_is_no_data() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &["--heartbeat-interval", "1s"]);

    let mut stream = Stream::open(&certs, rlp.gateway_port, "source_id=quiet&log");
    let (status, _) = stream.head().await;
    assert_eq!(status, 200);
    for _ in 0..2 {
        let frame = stream.next(Duration::from_secs(5)).await.expect("a frame");
        assert_eq!(frame.len(), 2, "{frame:?}");
        assert_eq!(frame[0], "event: heartbeat");
        let secs: u64 = frame[1]
            .strip_prefix("data: ")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not `data: <unix seconds>`: {frame:?}"));
        assert!(
            secs.abs_diff(unix_now()) <= 5,
            "heartbeat time {secs} is not now ({})",
            unix_now()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_timeout_sends_closing_and_ends_the_stream() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &["--stream-timeout", "3s"]);

    let opened = Instant::now();
    let mut stream = Stream::open(&certs, rlp.gateway_port, "source_id=quiet&log");
    let (status, _) = stream.head().await;
    assert_eq!(status, 200);
    let frame = stream.next(WAIT).await.expect("a closing frame");
    assert_eq!(
        frame,
        ["event: closing", "data: closing due to stream timeout"]
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(2500),
        "closed after {:?}, before the 3 s stream timeout",
        opened.elapsed()
    );
    assert_eq!(stream.next(WAIT).await, None, "nothing after closing");

    // curl exits on its own, and cleanly: the chunked body was ended.
    let mut exit = None;
    eventually(WAIT, "curl exits", || {
        exit = stream.curl.try_wait().unwrap();
        exit.is_some()
    })
    .await;
    assert!(exit.unwrap().success(), "curl: {exit:?}");
    // The RLP let go of the stream.
    eventually(WAIT, "the RLP has no stream open", || {
        metric(rlp.metrics_port, "spillway_subscriptions") == Some(0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_json_with_their_http_status() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &["--max-streams", "1"]);
    let port = rlp.gateway_port;

    assert_error(&certs, port, "GET", "/v2/read", 400, "empty_query");
    assert_error(
        &certs,
        port,
        "GET",
        "/v2/read?source_id=x",
        400,
        "missing_envelope_type",
    );
    assert_error(
        &certs,
        port,
        "GET",
        "/v2/read?log&counter.name=",
        400,
        "missing_counter_name",
    );
    assert_error(
        &certs,
        port,
        "GET",
        "/v2/read?gauge.name=",
        400,
        "missing_gauge_name",
    );
    assert_error(&certs, port, "GET", "/v2/nothing-here", 404, "not_found");
    let (status, _, body) = curl(&certs, "POST", port, "/v2/read?log");
    assert_eq!(status, 405, "POST: {body}");

    // One stream open, the most allowed: the next is refused.
    let mut first = Stream::open(&certs, port, "source_id=x&log");
    eventually(WAIT, "the RLP serves the first stream", || {
        metric(rlp.metrics_port, "spillway_subscriptions") == Some(1)
    })
    .await;
    assert_error(
        &certs,
        port,
        "GET",
        "/v2/read?log",
        503,
        "streaming_unavailable",
    );
    assert!(
        first.curl.try_wait().unwrap().is_none(),
        "the first stream is still open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_goes_away_frees_its_stream() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);

    let stream = Stream::open(&certs, rlp.gateway_port, "source_id=x&log");
    subscribed(&router, 1).await;
    drop(stream);
    eventually(WAIT, "the RLP closed the stream", || {
        metric(rlp.metrics_port, "spillway_subscriptions") == Some(0)
    })
    .await;
    eventually(WAIT, "the router dropped the subscription", || {
        router.subscriptions() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_clients_with_one_shard_id_split_the_stream() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);

    let query = "source_id=shard&log&shard_id=g";
    let mut a = Stream::open(&certs, rlp.gateway_port, query);
    let mut b = Stream::open(&certs, rlp.gateway_port, query);
    subscribed(&router, 2).await;

    const N: u64 = 200;
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let batch = chunk.iter().map(|&n| numbered_log("shard", n)).collect();
        send(&collector, &certs, batch).await;
    }

    let number = |e: &Value| -> u64 {
        let payload = base64_decode(text(&e["log"], "payload"));
        String::from_utf8(payload)
            .ok()
            .and_then(|p| p.strip_prefix("line ")?.parse().ok())
            .unwrap_or_else(|| panic!("not a numbered log: {e}"))
    };
    // Frames from either client, until N envelopes came in all, then for a
    // moment longer: duplicates would come on top.
    let mut got: [Vec<u64>; 2] = Default::default();
    let mut heads = [false; 2];
    let deadline = Instant::now() + WAIT;
    let mut quiet_from: Option<Instant> = None;
    loop {
        let total = got[0].len() + got[1].len();
        if total as u64 >= N && quiet_from.is_none() {
            quiet_from = Some(Instant::now());
        }
        let until = match quiet_from {
            Some(t) => t + Duration::from_millis(500),
            None => deadline,
        };
        let (i, block) = tokio::select! {
            f = a.blocks.recv() => (0, f),
            f = b.blocks.recv() => (1, f),
            _ = tokio::time::sleep_until(until.into()) => break,
        };
        let block = block.unwrap_or_else(|| panic!("stream {i} ended"));
        if !heads[i] {
            heads[i] = true; // the response head
            continue;
        }
        got[i].extend(envelopes_of(&block).iter().map(number));
    }

    let mut all: Vec<u64> = got.concat();
    all.sort_unstable();
    let want: Vec<u64> = (0..N).collect();
    assert_eq!(all, want, "each envelope exactly once across the group");
    assert!(
        !got[0].is_empty() && !got[1].is_empty(),
        "both clients got a share: {} and {}",
        got[0].len(),
        got[1].len()
    );
}

/// A client that stops reading (its socket buffers full) has its stream
/// ended after two heartbeat intervals without taking a frame, so it cannot
/// keep its stream slot or its subscriptions forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_loses_its_stream() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    // Plain HTTP (the loopback opt-out) for a raw client that never reads.
    let rlp = Rlp::start(
        &certs,
        &[&router],
        &["--heartbeat-interval", "1s", "--gateway-insecure-plaintext"],
    );
    let collector = Collector::start(&certs, &[&router], &[]);

    // A raw connection that asks for a stream and never reads.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", rlp.gateway_port)).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        b"GET /v2/read?log&source_id=flood HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    subscribed(&router, 1).await;

    // Far more than the socket buffers hold.
    let mut ingress = collector.client(&certs).await;
    let payload = vec![b'z'; 8 * 1024];
    for _ in 0..100 {
        let batch = (0..100)
            .map(|_| v2::Envelope::log(1, "flood", "0", payload.clone(), v2::log::Type::Out))
            .collect();
        ingress.send(v2::EnvelopeBatch { batch }).await.unwrap();
    }
    eventually(
        Duration::from_secs(20),
        "the stalled stream was ended",
        || metric(rlp.metrics_port, "spillway_subscriptions") == Some(0),
    )
    .await;
    eventually(WAIT, "the router dropped the subscription", || {
        router.subscriptions() == 0
    })
    .await;
    drop(stalled);
}

/// Gauges of NaN and ±Infinity: protobuf-JSON (and Loggregator's gateway)
/// writes them as the strings "NaN", "Infinity", "-Infinity", which
/// go-loggregator reads back; `null` would read as 0. The same from
/// `spillway tail --json`.
#[tokio::test(flavor = "multi_thread")]
async fn special_gauge_values_are_protobuf_json_strings() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);

    let mut stream = Stream::open(&certs, rlp.gateway_port, "source_id=odd&gauge");
    let mut tail = Command::new(bin("spillway"))
        .args(["tail", "--rlp", &format!("localhost:{}", rlp.port)])
        .args([
            "--source-id",
            "odd",
            "--gauge",
            "",
            "--json",
            "--count",
            "1",
        ])
        .args(["--tls-ca", &certs.path("ca.pem")])
        .args(["--tls-cert", &certs.path("client.pem")])
        .args(["--tls-key", &certs.path("client-key.pem")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    subscribed(&router, 2).await;

    let mut gauge = v2::Gauge::default();
    for (name, value) in [
        ("nan", f64::NAN),
        ("inf", f64::INFINITY),
        ("ninf", f64::NEG_INFINITY),
        ("plain", 0.25),
    ] {
        gauge.metrics.insert(
            name.into(),
            v2::GaugeValue {
                unit: "u".into(),
                value,
            },
        );
    }
    let envelope = Envelope {
        timestamp: 1,
        source_id: "odd".into(),
        message: Some(Message::Gauge(gauge)),
        ..Default::default()
    };
    let mut ingress =
        v2::ingress_client::IngressClient::new(channel(router.port, certs.client()).await);
    ingress
        .send(EnvelopeBatch {
            batch: vec![envelope],
        })
        .await
        .unwrap();

    let check = |e: &Value| {
        let m = &e["gauge"]["metrics"];
        assert_eq!(m["nan"]["value"], "NaN", "{e}");
        assert_eq!(m["inf"]["value"], "Infinity", "{e}");
        assert_eq!(m["ninf"]["value"], "-Infinity", "{e}");
        assert_eq!(m["plain"]["value"], 0.25, "{e}");
    };
    assert_eq!(stream.head().await.0, 200);
    let got = stream.envelopes_until(WAIT, |g| !g.is_empty()).await;
    assert_eq!(got.len(), 1, "{got:?}");
    check(&got[0]);

    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WAIT;
        while tail.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tail --count 1 did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
        tail.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    check(&lines[0]);
}

/// Resident memory of a process, in KiB, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// An idle SSE stream costs little: its buffers grow with what it holds, not
/// to their capacity up front (a preallocated 10,000-envelope buffer cost
/// ~2 MB per stream in the RLP, ~160 KiB per subscription in the router).
/// Measured with 200 streams held open by one `curl --parallel`.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_stream_costs_little_memory() {
    const STREAMS: u64 = 200;
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &["--max-streams", "1000"]);
    // Warm up: the first stream brings in what every stream shares.
    let _first = Stream::open(&certs, rlp.gateway_port, "source_id=idle&log");
    subscribed(&router, 1).await;
    let (rlp_pid, router_pid) = (rlp.proc.pid().unwrap(), router.proc.pid().unwrap());
    let (rlp_before, router_before) = (rss_kib(rlp_pid), rss_kib(router_pid));

    let url = format!(
        "https://localhost:{}/v2/read?source_id=idle&log",
        rlp.gateway_port
    );
    let mut curl = Command::new("curl");
    curl.args(["-sN", "--parallel", "--parallel-immediate"])
        .args(certs.curl_flags())
        .args(["--parallel-max", &STREAMS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for _ in 0..STREAMS {
        curl.args(["-o", "/dev/null", &url]);
    }
    let mut curl = curl.spawn().expect("cannot run curl");
    eventually(Duration::from_secs(30), "every stream subscribed", || {
        router.subscriptions() == STREAMS + 1
    })
    .await;
    let per_stream = |before: u64, after: u64| after.saturating_sub(before) / STREAMS;
    let rlp_each = per_stream(rlp_before, rss_kib(rlp_pid));
    let router_each = per_stream(router_before, rss_kib(router_pid));
    let _ = curl.kill();
    let _ = curl.wait();
    eprintln!("per idle stream: RLP {rlp_each} KiB, router {router_each} KiB");
    assert!(rlp_each < 200, "RLP: {rlp_each} KiB per idle stream");
    assert!(
        router_each < 64,
        "router: {router_each} KiB per idle subscription"
    );
}

/// The gateway serves only TLS and lets a request read only with a client
/// certificate of the RLP's CA or one of the tokens of
/// `--gateway-token-file` (`Authorization: TOKEN` or `Bearer TOKEN`).
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_serves_tls_and_requires_a_certificate_or_a_token() {
    let certs = Certs::new();
    let tokens = certs.dir.join("tokens");
    std::fs::write(&tokens, "# readers\nr3ader-token\n").unwrap();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(
        &certs,
        &[&router],
        &["--gateway-token-file", tokens.to_str().unwrap()],
    );
    let port = rlp.gateway_port;
    let url = format!("https://localhost:{port}/v2/read?source_id=auth&log");
    let ca = ["--cacert".to_string(), certs.path("ca.pem")];
    let with = |extra: &[&str]| -> Vec<String> {
        ca.iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };

    // Positive controls first: a client certificate, and each token form.
    let mut by_cert = Stream::open(&certs, port, "source_id=auth&log");
    assert_eq!(by_cert.head().await.0, 200);
    let mut by_bearer =
        Stream::open_with(&with(&["-H", "Authorization: Bearer r3ader-token"]), &url);
    assert_eq!(by_bearer.head().await.0, 200);
    let mut by_bare = Stream::open_with(&with(&["-H", "Authorization: r3ader-token"]), &url);
    assert_eq!(by_bare.head().await.0, 200);
    subscribed(&router, 3).await;

    // Without either, or with a wrong token: 401, as JSON.
    for extra in [
        &[][..],
        &["-H", "Authorization: Bearer wrong"][..],
        &["-H", "Authorization: r3ader-token-and-more"][..],
        &["-H", "Authorization: Basic r3ader-token"][..],
    ] {
        let (status, content_type, body) = curl_with(&with(extra), "GET", &url);
        assert_eq!(status, 401, "{extra:?}: {body}");
        assert_eq!(content_type, "application/json");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"], "unauthorized", "{body}");
    }

    // A certificate of another CA fails the handshake, even with a token.
    let other = with(&[
        "--cert",
        &certs.path("other.pem"),
        "--key",
        &certs.path("other-key.pem"),
        "-H",
        "Authorization: Bearer r3ader-token",
    ]);
    assert_eq!(curl_with(&other, "GET", &url).0, 0, "no HTTP response");

    // Plain HTTP on the gateway's port gets no HTTP answer.
    let plain = format!("http://127.0.0.1:{port}/v2/read?source_id=auth&log");
    let (status, _, _) = curl_with(
        &["-H".into(), "Authorization: r3ader-token".into()],
        "GET",
        &plain,
    );
    assert_ne!(status, 200, "plain HTTP must not be served");

    // The authorized streams carry data.
    let mut ingress =
        v2::ingress_client::IngressClient::new(channel(router.port, certs.client()).await);
    ingress
        .send(EnvelopeBatch {
            batch: vec![numbered_log("auth", 1)],
        })
        .await
        .unwrap();
    for s in [&mut by_cert, &mut by_bearer, &mut by_bare] {
        let got = s.envelopes_until(WAIT, |g| !g.is_empty()).await;
        assert_eq!(got.len(), 1, "{got:?}");
    }
}

/// Plain HTTP only on loopback, and only when asked: the RLP refuses
/// `--gateway-insecure-plaintext` on any other address (status 2).
#[test]
fn plain_http_gateway_only_on_loopback() {
    let certs = Certs::new();
    let out = Command::new(bin("spillway-rlp"))
        .args(["--router", "localhost:1", "--gateway-insecure-plaintext"])
        .args(["--addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--gateway-addr", &format!("0.0.0.0:{}", free_port())])
        .args(certs.flags("rlp"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
}
