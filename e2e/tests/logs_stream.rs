//! `/logs` with curl: text and JSON, filters, two clients at once, and a
//! client that stops reading without stalling the other.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use spillway_e2e::docker::{self, TestContainer};
use spillway_e2e::*;

/// `curl -sN` of a path, its lines sent to a channel.
fn stream(port: u16, path: &str, json: bool) -> (Child, mpsc::Receiver<String>) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sN", &format!("http://127.0.0.1:{port}{path}")]);
    if json {
        cmd.args(["-H", "Accept: application/json"]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("curl runs");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn take(rx: &mpsc::Receiver<String>, n: usize, what: &str, c: &Collector) -> Vec<String> {
    let mut got = Vec::new();
    while got.len() < n {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => got.push(l),
            Err(_) => panic!(
                "{what}: {} of {n} lines: {:?}\ncollector: {}\nmetrics: {}",
                got.len(),
                got.last(),
                c.proc.log(),
                http_get(c.http_port, "/metrics").unwrap_or_default()
            ),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn text_json_filters_and_a_stalled_client() {
    if docker::unavailable(false).is_some() {
        return;
    }
    let _serial = docker::serial().await;
    let certs = Certs::new();
    let source = docker::capture_source();
    let collector = Collector::start(&certs, &[], &["--source", source]);
    let port = collector.http_port;

    let (mut text_client, text) = stream(port, "/logs/name:*spw-logs-*", false);
    let (mut json_client, json) = stream(
        port,
        "/logs?filter.sources=stderr&filter.labels=team:pay*",
        true,
    );
    // A client that asks for everything and never reads a byte.
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stalled, "GET /logs HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // Clients must be attached before the lines come.
    eventually(Duration::from_secs(10), "three /logs clients", || {
        metric(port, "spillway_logs_clients") == Some(3)
    })
    .await;
    assert_eq!(
        http_get(port, "/logs/bogus").map(|b| b.contains("no such stream")),
        Some(true)
    );

    // 30,000 lines of 600 B (18 MB: more than the stalled client's buffer
    // and sockets hold) at about 5,000 lines/s, a rate capture keeps up
    // with (at full speed, eBPF capture itself drops lines: see the
    // benchmarks).
    const LINES: usize = 30_000;
    let pad = "y".repeat(600);
    let script = format!(
        "echo 'err one' >&2; until [ -e /tmp/go ]; do usleep 10000; done; \
         i=1; while [ $i -le {LINES} ]; do echo \"$i {pad}\"; \
         if [ $((i % 10)) = 0 ]; then usleep 2000; fi; i=$((i+1)); done; echo 'err two' >&2"
    );
    let c = TestContainer::run("spw-logs", &["--label", "team=payments"], &script);
    let _other = TestContainer::run("spw-unlabelled", &[], "echo 'err other' >&2");
    // The lines start once the collector knows the container (its first
    // line reached a client), so none waits for that.
    let mut objects = take(&json, 1, "JSON client", &collector);
    let (ok, _, err) = docker::docker(&["exec", &c.name, "touch", "/tmp/go"]);
    assert!(ok, "docker exec failed: {err}");

    // Text: every line, prefixed with the container name.
    let lines = take(&text, LINES + 2, "text client", &collector);
    let prefix = format!("{}|", c.name);
    assert!(
        lines.iter().all(|l| l.starts_with(&prefix)),
        "{:?}",
        &lines[..3]
    );
    let numbers: Vec<usize> = lines
        .iter()
        .filter_map(|l| l[prefix.len()..].split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(
        numbers,
        (1..=LINES).collect::<Vec<_>>(),
        "all stdout lines, in order"
    );

    // JSON: only stderr of the labelled container.
    objects.extend(take(&json, 1, "JSON client", &collector));
    let objects: Vec<Value> = objects
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects[0]["message"], "err one");
    assert_eq!(objects[1]["message"], "err two");
    for o in &objects {
        assert_eq!(o["stream"], "stderr");
        assert_eq!(o["container"]["name"], c.name.as_str());
        assert_eq!(o["source_id"], c.name.as_str());
        assert_eq!(o["tags"]["container_id"], c.id.as_str());
    }
    assert!(
        json.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing else"
    );

    // The stalled client lost its own oldest lines, counted.
    let dropped = metric(
        port,
        "spillway_dropped_total{direction=\"egress\",stream=\"logs\"}",
    )
    .unwrap_or(0);
    assert!(dropped > 0, "the stalled client dropped nothing");
    let _ = text_client.kill();
    let _ = json_client.kill();
    drop(stalled);
}
