//! logspout-style routes, for real: containers on a real dockerd, the
//! collector capturing them (eBPF as root, else the Docker API), and
//! rsyslog from Debian as the receiver over UDP, TCP (octet-counted and
//! newline-framed) and mutual TLS.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use spillway_e2e::docker::{self, TestContainer};
use spillway_e2e::rsyslog::{self, Rsyslog};
use spillway_e2e::*;
use spillway_proto::v2::envelope::Message;

/// eBPF capture where it can run, else (by hand only) the Docker API.
fn source() -> &'static str {
    docker::capture_source()
}

fn skip() -> bool {
    docker::unavailable(false).is_some() || rsyslog::unavailable().is_some()
}

/// Waits until `input` holds `n` messages; returns them.
async fn received(r: &Rsyslog, input: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let got = r.received(input);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{input}: {} of {n} messages after {within:?}: {got:#?}\nrsyslogd: {}",
            got.len(),
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn find<'a>(messages: &'a [Value], msg: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["msg"].as_str().map(str::trim_start) == Some(msg))
        .unwrap_or_else(|| panic!("no message {msg:?} in {messages:#?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn rsyslog_receives_container_lines_over_udp_tcp_and_tls() {
    if skip() {
        return;
    }
    let _serial = docker::serial().await;
    let certs = Certs::new();
    let rsyslog = Rsyslog::start(&certs);
    let filter = "filter.name=*spw-routes-*";
    let port = |i| rsyslog.port(i);
    let tls_options = format!(
        "ca={}&cert={}&key={}&system_roots=false",
        certs.path("ca.pem"),
        certs.path("collector.pem"),
        certs.path("collector-key.pem")
    );
    let routes = [
        format!("syslog://127.0.0.1:{}?{filter}", port("udp")),
        format!(
            "syslog://127.0.0.1:{}?{filter}&format=rfc3164",
            port("udp3164")
        ),
        format!("syslog+tcp://127.0.0.1:{}?{filter}", port("tcp")),
        format!(
            "syslog+tcp://127.0.0.1:{}?{filter}&framing=lf",
            port("tcplf")
        ),
        format!(
            "syslog+tls://localhost:{}?{filter}&{tls_options}",
            port("tls")
        ),
        format!(
            "multiline+syslog+tcp://127.0.0.1:{}?{filter}&filter.sources=stderr",
            port("multiline")
        ),
    ];
    let mut flags = vec!["--source", source()];
    for r in &routes {
        flags.extend(["--route", r]);
    }
    let collector = Collector::start(&certs, &[], &flags);
    // A container the route filters leave out.
    let other = TestContainer::run("spw-other", &[], "echo not-routed");
    let script = r#"echo 'out-line é'; echo 'err "quoted" \ ] line' >&2; sleep 1
printf 'Exception in thread "main" java.lang.IllegalStateException: boom\n' >&2
i=1; while [ $i -le 19 ]; do printf '\tat com.example.Foo.bar(Foo.java:%d)\n' $i >&2; i=$((i+1)); done
sleep 1; echo done"#;
    let c = TestContainer::run("spw-routes", &["--label", "spillway.tag.team=pay"], script);

    for input in ["udp", "udp3164", "tcp", "tcplf", "tls"] {
        let all = received(&rsyslog, input, 23, Duration::from_secs(30)).await;
        let out = find(&all, "out-line é");
        let err = find(&all, r#"err "quoted" \ ] line"#);
        assert_eq!(out["pri"], "14", "{input}: stdout is user.info");
        assert_eq!(err["pri"], "11", "{input}: stderr is user.err");
        for m in [out, err] {
            assert_eq!(m["hostname"], "e2e-host", "{input}: {m}");
            assert_eq!(m["app"], c.name.as_str(), "{input}: {m}");
            assert_eq!(m["procid"], c.short_id(), "{input}: {m}");
        }
        if input != "udp3164" {
            let sd = out["sd"].as_str().unwrap();
            assert!(sd.starts_with("[tags@47450 "), "{input}: {sd}");
            for tag in [
                "team=\"pay\"".to_owned(),
                format!("container_name=\"{}\"", c.name),
                format!("container_id=\"{}\"", c.id),
                "host=\"e2e-host\"".to_owned(),
                "source_type=\"container\"".to_owned(),
            ] {
                assert!(sd.contains(&tag), "{input}: {tag} not in {sd}");
            }
            // Microseconds survive the trip.
            let time = out["time"].as_str().unwrap();
            assert!(
                time.contains('.') && time.ends_with("+00:00"),
                "{input}: {time}"
            );
        }
        assert!(
            all.iter().all(|m| m["msg"] != "not-routed"),
            "{input}: the filter let another container through"
        );
    }

    // The stack trace arrives as one message: 20 lines joined.
    let trace = received(&rsyslog, "multiline", 2, Duration::from_secs(30)).await;
    let mut expected =
        String::from("Exception in thread \"main\" java.lang.IllegalStateException: boom");
    for i in 1..=19 {
        expected += &format!("\n\tat com.example.Foo.bar(Foo.java:{i})");
    }
    find(&trace, &expected);
    find(&trace, r#"err "quoted" \ ] line"#);
    assert_eq!(trace.len(), 2, "stdout is not routed here: {trace:#?}");
    assert_eq!(c.wait(), 0);
    drop(other);
    drop(collector);
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_down_for_10s_costs_only_counted_lines() {
    if skip() {
        return;
    }
    let _serial = docker::serial().await;
    let certs = Certs::new();
    let mut rsyslog = Rsyslog::start(&certs);
    let route = format!(
        "syslog+tcp://127.0.0.1:{}?filter.name=*spw-down-*&buffer=20",
        rsyslog.port("tcp")
    );
    let collector = Collector::start(&certs, &[], &["--source", source(), "--route", &route]);
    let route_id = {
        let page = http_get(collector.http_port, "/routes").unwrap();
        let routes: Value = serde_json::from_str(&page).unwrap();
        routes[0]["id"].as_str().unwrap().to_owned()
    };
    // A numbered line with the second it was written, every ~10 ms.
    let c = TestContainer::run(
        "spw-down",
        &[],
        "i=0; while true; do echo \"n=$i t=$(date +%s)\"; i=$((i+1)); usleep 10000; done",
    );
    received(&rsyslog, "tcp", 50, Duration::from_secs(30)).await;
    rsyslog.stop();
    tokio::time::sleep(Duration::from_secs(10)).await;
    rsyslog.restart();
    // "Back" is when the route has redialled (within its 5 s backoff cap).
    let connected = || {
        let page =
            http_get(collector.http_port, &format!("/routes/{route_id}")).unwrap_or_default();
        serde_json::from_str::<Value>(&page).is_ok_and(|r| r["connected"] == true)
    };
    eventually(
        Duration::from_secs(10),
        "the route redials the receiver",
        connected,
    )
    .await;
    let back = now_s();
    tokio::time::sleep(Duration::from_secs(5)).await;
    docker::docker(&["kill", &c.id]);
    let stopped = now_s();

    // Every line written a second after the receiver came back (and a
    // second before the container was stopped) arrived.
    let lines = |all: &[Value]| -> Vec<(u64, u64)> {
        all.iter()
            .filter_map(|m| {
                let msg = m["msg"].as_str()?;
                let (n, t) = msg.strip_prefix("n=")?.split_once(" t=")?;
                Some((n.parse().ok()?, t.parse().ok()?))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (got, lo, hi) = loop {
        let got = lines(&rsyslog.received("tcp"));
        let after: Vec<u64> = got
            .iter()
            .filter(|(_, t)| *t > back && *t + 1 < stopped)
            .map(|(n, _)| *n)
            .collect();
        let (lo, hi) = (after.iter().min().copied(), after.iter().max().copied());
        if let (Some(lo), Some(hi)) = (lo, hi)
            && after.len() as u64 == hi - lo + 1
        {
            break (got, lo, hi);
        }
        assert!(
            Instant::now() < deadline,
            "lines after the receiver came back are missing: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(hi - lo > 100, "too few lines after the restart: {lo}..{hi}");
    // What was lost while it was down is counted on the route.
    let written = got.iter().map(|(n, _)| n).max().unwrap() + 1;
    let distinct: BTreeSet<u64> = got.iter().map(|(n, _)| *n).collect();
    let dropped = metric(
        collector.http_port,
        &format!("spillway_dropped_total{{direction=\"egress\",route=\"{route_id}\"}}"),
    )
    .unwrap_or(0);
    assert!(dropped > 0, "no drops counted for a 10 s outage");
    assert!(
        dropped <= written - distinct.len() as u64,
        "more drops counted ({dropped}) than lines missing ({})",
        written - distinct.len() as u64
    );
    let mut collector = collector;
    assert!(collector.proc.alive(), "the collector exited");
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_and_stuck_routes_never_slow_the_grpc_path() {
    if docker::unavailable(false).is_some() {
        return;
    }
    let _serial = docker::serial().await;
    let certs = Certs::new();
    let router = Router::start(&certs, &["--subscription-buffer", "200000"]);
    let rlp = Rlp::start(&certs, &[&router], &["--consumer-buffer", "200000"]);
    // Nothing listens on `closed`; `stuck` accepts and never reads.
    let closed = free_port();
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_port = stuck.local_addr().unwrap().port();
    let _held = std::thread::spawn(move || {
        let conns: Vec<_> = stuck.incoming().take(100).collect();
        std::thread::sleep(Duration::from_secs(600));
        drop(conns);
    });
    let routes = [
        format!("syslog+tcp://127.0.0.1:{closed}?filter.name=*spw-fast-*&buffer=100"),
        format!("syslog://127.0.0.1:{closed}?filter.name=*spw-fast-*"),
        format!("raw+tcp://127.0.0.1:{stuck_port}?filter.name=*spw-fast-*&buffer=100"),
    ];
    let mut flags = vec!["--source", source(), "--buffer-per-core", "200000"];
    for r in &routes {
        flags.extend(["--route", r]);
    }
    let collector = Collector::start(&certs, &[&router], &flags);
    let mut consumer = rlp.logs_of(&certs, "").await;
    // 30,000 lines of 600 B (18 MB: more than the stuck socket's buffers
    // hold) at about 5,000 lines/s, a rate capture keeps up with.
    const LINES: u64 = 30_000;
    let pad = "x".repeat(600);
    let c = TestContainer::run(
        "spw-fast",
        &[],
        &format!(
            "echo ready; until [ -e /tmp/go ]; do usleep 10000; done; \
             i=1; while [ $i -le {LINES} ]; do echo \"$i {pad}\"; \
             if [ $((i % 10)) = 0 ]; then usleep 2000; fi; i=$((i+1)); done"
        ),
    );
    // The lines start once the collector knows the container (its first
    // line arrived), so their lateness is the pipeline's alone.
    let deadline = Instant::now() + Duration::from_secs(60);
    'ready: loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, consumer.message())
            .await
            .expect("the container's first line within 60 s")
            .unwrap()
            .unwrap();
        for e in batch.batch {
            if e.tags.get("container_name") == Some(&c.name) {
                break 'ready;
            }
        }
    }
    let (ok, _, err) = docker::docker(&["exec", &c.name, "touch", "/tmp/go"]);
    assert!(ok, "docker exec failed: {err}");
    // Each line's copies, and how late the latest arrived after capture
    // stamped it: a route that held the gRPC path up, even only for its
    // write timeouts, shows here long before the deadline.
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    let mut latest = Duration::ZERO;
    let deadline = Instant::now() + Duration::from_secs(120);
    while (seen.len() as u64) < LINES {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = tokio::time::timeout(left, consumer.message())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "gRPC path delivered {} of {LINES}; collector metrics:\n{}",
                    seen.len(),
                    http_get(collector.http_port, "/metrics").unwrap_or_default()
                )
            })
            .unwrap()
            .unwrap();
        for e in batch.batch {
            if e.tags.get("container_name") != Some(&c.name) {
                continue;
            }
            if let Some(Message::Log(l)) = &e.message {
                let n: u64 = std::str::from_utf8(&l.payload)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                *seen.entry(n).or_default() += 1;
                let late = spillway_proto::now_nanos().saturating_sub(e.timestamp);
                latest = latest.max(Duration::from_nanos(late.try_into().unwrap_or(0)));
            }
        }
    }
    // Exactly once each, in the written range.
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        twice.is_empty(),
        "lines delivered more than once: {twice:?}"
    );
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (1..=LINES).collect::<Vec<_>>()
    );
    // Capture to consumer stays as prompt as without routes (well under a
    // second here; debug builds on a busy machine allowed 5 s).
    assert!(
        latest < Duration::from_secs(5),
        "a line reached the consumer {latest:?} after it was captured: the routes slowed the gRPC path"
    );
    // The routes lost what they could not deliver, and counted it.
    let page = http_get(collector.http_port, "/routes").unwrap();
    let views: Vec<Value> = serde_json::from_str(&page).unwrap();
    for v in &views {
        if v["adapter"] != "syslog" {
            assert!(v["dropped"].as_u64().unwrap() > 0, "no drops counted: {v}");
        }
    }
    let udp = views.iter().find(|v| v["adapter"] == "syslog").unwrap();
    assert!(
        udp["refused"].as_u64().unwrap() + udp["sent"].as_u64().unwrap() > 0,
        "the UDP route did nothing: {udp}"
    );
    let mut collector = collector;
    assert!(collector.proc.alive());
}
