//! Routes that would crash, hang or bloat the collector are refused (or,
//! saved by an older version, skipped) while the collector stays healthy:
//! numeric options bounded, file options read only from small regular
//! files, templates under a fuel bound, a limit on the number of routes,
//! the routes API atomic with its state file, and logspout's route JSON.

use std::process::Command;

use serde_json::{Value, json};
use spillway_e2e::*;

fn curl(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    http_call(port, method, path, body, None)
}

/// `curl` → (status, body).
fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// POSTs `uri` as a route: (status, the error message or the route's id).
fn post_uri(port: u16, uri: &str) -> (u16, String) {
    let (code, body) = curl(port, "POST", "/routes", Some(&json!({ "uri": uri })));
    let v = json(&body);
    let text = v["error"]
        .as_str()
        .or(v["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    (code, text)
}

fn route_ids(port: u16) -> Vec<String> {
    let (code, body) = curl(port, "GET", "/routes", None);
    assert_eq!(code, 200, "{body}");
    json(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The collector answers `/health` and takes an envelope on ingress.
async fn assert_healthy(collector: &Collector, certs: &Certs, after: &str) {
    assert_eq!(
        curl(collector.http_port, "GET", "/health", None).0,
        200,
        "/health after {after}"
    );
    let mut client = collector.client(certs).await;
    let sent = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.send(v2::EnvelopeBatch {
            batch: vec![numbered_log("hardening", 1)],
        }),
    )
    .await;
    assert!(matches!(sent, Ok(Ok(_))), "ingress after {after}: {sent:?}");
}

/// Runs the collector with `args` until it exits: (status, stderr).
fn collector_exit(certs: &Certs, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin("spillway-collector"))
        .args(["--insecure-plaintext", "--source", "none"])
        .args(["--ingress-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--state-dir", &certs.dir.join("exit").display().to_string()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn numeric_route_options_are_bounded() {
    let certs = Certs::new();
    let collector = Collector::start(&certs, &[], &[]);
    let port = collector.http_port;
    for (uri, needle) in [
        (
            "syslog://127.0.0.1:9?buffer=18446744073709551615",
            "buffer=\"18446744073709551615\"",
        ),
        ("syslog://127.0.0.1:9?buffer=1000000000", "from 1 to 100000"),
        ("syslog://127.0.0.1:9?buffer=0", "buffer=\"0\""),
        ("syslog://127.0.0.1:9?buffer=-1", "buffer=\"-1\""),
        (
            "multiline+raw+tcp://127.0.0.1:9?multiline.max_bytes=18446744073709551615",
            "multiline.max_bytes",
        ),
        ("syslog://127.0.0.1:9?max_datagram=70000", "max_datagram"),
    ] {
        let (code, error) = post_uri(port, uri);
        assert_eq!(code, 400, "{uri}: {error}");
        assert!(error.contains(needle), "{uri}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    assert!(route_ids(port).is_empty());
    assert_healthy(&collector, &certs, "out-of-range options").await;
    // Positive control: the largest values are taken.
    for uri in [
        "syslog://127.0.0.1:9?buffer=100000",
        "multiline+raw+tcp://127.0.0.1:9?multiline.max_bytes=16777216",
    ] {
        let (code, text) = post_uri(port, uri);
        assert_eq!(code, 201, "{uri}: {text}");
    }
    assert_eq!(route_ids(port).len(), 2);
    assert_healthy(&collector, &certs, "routes at the limits").await;

    // The same through --route: exit 2 and one line naming the value.
    let (status, stderr) = collector_exit(
        &certs,
        &[
            "--route",
            "syslog://127.0.0.1:9?buffer=18446744073709551615",
        ],
    );
    assert_eq!(status, Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("buffer="))
        .unwrap_or_else(|| panic!("no line names buffer=: {stderr}"));
    assert!(line.contains("from 1 to 100000"), "{line}");
}

#[tokio::test]
async fn a_bad_saved_route_is_skipped_and_the_rest_start() {
    let certs = Certs::new();
    let state = certs.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let saved = json!([
        {"id": "huge", "adapter": "syslog", "address": "127.0.0.1:9",
         "options": {"buffer": "18446744073709551615"}},
        {"id": "not-a-route", "adapter": 7},
        {"id": "good", "adapter": "raw+tcp", "address": "127.0.0.1:9",
         "filters": {"name": "web-*"}, "options": {"buffer": "50"}},
    ])
    .to_string();
    std::fs::write(state.join("routes.json"), &saved).unwrap();
    let state_flag = state.display().to_string();
    let collector = Collector::start(&certs, &[], &["--state-dir", &state_flag]);
    assert_eq!(route_ids(collector.http_port), ["good"]);
    let (_, body) = curl(collector.http_port, "GET", "/routes/good", None);
    let good = json(&body);
    assert_eq!(good["filters"]["name"], "web-*");
    assert_eq!(good["options"]["buffer"], "50");
    assert_healthy(&collector, &certs, "a bad saved route").await;
    let log = collector.proc.log();
    assert!(
        log.lines()
            .any(|l| l.contains("saved route huge") && l.contains("buffer=")),
        "{log}"
    );
    assert!(log.contains("saved route #2"), "{log}");
    assert_eq!(
        std::fs::read_to_string(state.join("routes.json.bak")).unwrap(),
        saved
    );
}

#[tokio::test]
async fn file_options_read_only_small_regular_files() {
    let certs = Certs::new();
    let collector = Collector::start(&certs, &[], &[]);
    let port = collector.http_port;
    let fifo = certs.dir.join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let fifo = fifo.display().to_string();
    let big = certs.path("big.pem");
    std::fs::write(&big, vec![b'a'; 2 << 20]).unwrap();
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("client.pem"),
        certs.path("client-key.pem"),
    );
    let tls = "syslog+tls://127.0.0.1:6514?system_roots=false";
    for (uri, needle) in [
        (format!("{tls}&ca={fifo}"), "not a regular file"),
        (
            format!("{tls}&ca={ca}&cert={cert}&key={fifo}"),
            "not a regular file",
        ),
        (format!("{tls}&ca=/dev/zero"), "not a regular file"),
        (format!("{tls}&ca=/dev/urandom"), "not a regular file"),
        (
            format!("{tls}&ca={}", certs.dir.display()),
            "not a regular file",
        ),
        (format!("{tls}&ca={big}"), "larger than 1048576 bytes"),
    ] {
        let (code, error) = post_uri(port, &uri);
        assert_eq!(code, 400, "{uri}: {error}");
        assert!(error.contains(needle), "{uri}: {error}");
        assert_healthy(&collector, &certs, &uri).await;
    }
    assert!(route_ids(port).is_empty());
    // Positive control: real files are read.
    let (code, text) = post_uri(port, &format!("{tls}&ca={ca}&cert={cert}&key={key}"));
    assert_eq!(code, 201, "{text}");

    // The same through --route: exit 2, naming the option (and no hang:
    // the FIFO has no writer).
    let (status, stderr) = collector_exit(&certs, &["--route", &format!("{tls}&ca={fifo}")]);
    assert_eq!(status, Some(2), "{stderr}");
    assert!(
        stderr.contains("ca=") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// A TCP receiver on loopback: the first line it gets.
fn first_line(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(conn).read_line(&mut line).unwrap();
        line
    })
}

#[tokio::test]
async fn expensive_templates_are_refused_and_cheap_ones_render() {
    let certs = Certs::new();
    let collector = Collector::start(&certs, &[], &[]);
    let port = collector.http_port;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = listener.local_addr().unwrap().port();
    let nested =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    for _ in 0..4 {
        let (code, body) = curl(
            port,
            "POST",
            "/routes",
            Some(&json!({
                "adapter": "raw+tcp", "address": format!("127.0.0.1:{receiver}"),
                "options": {"include": "metrics", "template": nested},
            })),
        );
        assert_eq!(code, 400, "{body}");
        let error = json(&body)["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("option template=") && error.contains("too much work"),
            "{error}"
        );
    }
    // Syslog header fields are templates too.
    let (code, error) = post_uri(
        port,
        &format!(
            "syslog+tcp://127.0.0.1:{receiver}?hostname={}",
            nested.replace('%', "%25").replace(' ', "%20")
        ),
    );
    assert_eq!(code, 400, "{error}");
    assert!(error.contains("hostname="), "{error}");
    assert!(route_ids(port).is_empty());

    // Positive control: a cheap template renders each metric.
    let got = first_line(listener);
    let (code, body) = curl(
        port,
        "POST",
        "/routes",
        Some(&json!({
            "adapter": "raw+tcp", "address": format!("127.0.0.1:{receiver}"),
            "options": {"include": "metrics",
                        "template": "{% for i in range(3) %}{{ source_id }}{% endfor %}!"},
        })),
    );
    assert_eq!(code, 201, "{body}");
    let mut client = collector.client(&certs).await;
    client
        .send(v2::EnvelopeBatch {
            batch: vec![v2::Envelope::counter("tpl", "hits", 1, 1)],
        })
        .await
        .unwrap();
    assert_eq!(got.join().unwrap(), "tpltpltpl!\n");
    assert_healthy(&collector, &certs, "templates").await;
}

/// The collector's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// POSTs `n` copies of `body` with one client (one kept-alive
/// connection); the status of each, 0 where none came.
fn post_many(port: u16, body: &Value, n: usize) -> Vec<u16> {
    let agent = http_agent();
    let url = format!("http://127.0.0.1:{port}/routes");
    let body = body.to_string();
    (0..n)
        .map(|_| {
            let sent = agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(&body);
            sent.map_or(0, |response| {
                let status = response.status().as_u16();
                // Read to the end, so the connection can take the next one.
                let _ = response.into_body().read_to_vec();
                status
            })
        })
        .collect()
}

#[tokio::test]
async fn the_number_of_routes_is_limited() {
    let certs = Certs::new();
    for bad in ["0", "100001", "many"] {
        let (status, stderr) = collector_exit(&certs, &["--max-routes", bad]);
        assert_eq!(status, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("--max-routes"), "{bad}: {stderr}");
    }
    // --route flags count too.
    let (status, stderr) = collector_exit(
        &certs,
        &[
            "--max-routes",
            "1",
            "--route",
            "syslog://127.0.0.1:9",
            "--route",
            "syslog://127.0.0.1:10",
        ],
    );
    assert_eq!(status, Some(2), "{stderr}");
    assert!(stderr.contains("--max-routes 1"), "{stderr}");

    let collector = Collector::start(
        &certs,
        &[],
        &["--max-routes", "3", "--route", "syslog://127.0.0.1:9"],
    );
    let port = collector.http_port;
    // A route's size is bounded too: 64 KiB of JSON at most.
    let long = "x".repeat(70 << 10);
    let (code, _) = curl(
        port,
        "POST",
        "/routes",
        Some(&json!({"uri": "raw://127.0.0.1:9", "options": {"template": long}})),
    );
    assert_eq!(code, 413);
    let body = json!({"uri": "syslog://127.0.0.1:9"});
    assert_eq!(post_many(port, &body, 3), [201, 201, 400]);
    let (code, error) = post_uri(port, "syslog://127.0.0.1:9");
    assert_eq!(code, 400);
    assert!(error.contains("--max-routes 3"), "{error}");
    let ids = route_ids(port);
    assert_eq!(ids.len(), 3);
    let api_route = ids.iter().find(|i| !i.starts_with("flag-")).unwrap();
    assert_eq!(
        curl(port, "DELETE", &format!("/routes/{api_route}"), None).0,
        204
    );
    assert_eq!(post_uri(port, "syslog://127.0.0.1:9").0, 201);
}

#[tokio::test]
async fn an_idle_route_costs_little_memory() {
    let certs = Certs::new();
    let collector = Collector::start(&certs, &[], &[]);
    let pid = collector.proc.pid().unwrap();
    let before = rss_kib(pid);
    let n = 1000;
    let codes = post_many(
        collector.http_port,
        &json!({"uri": "syslog://127.0.0.1:9"}),
        n,
    );
    assert!(codes.iter().all(|c| *c == 201), "{codes:?}");
    assert_eq!(route_ids(collector.http_port).len(), n);
    let per_route = (rss_kib(pid).saturating_sub(before)) / n as u64;
    eprintln!("{per_route} KiB per idle route");
    assert!(per_route < 24, "{per_route} KiB per idle route");
}

/// A mount made for a test, undone when dropped.
struct Mount(std::path::PathBuf);

impl Mount {
    fn run(args: &[&str]) {
        let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `dir` mounted read-only on itself.
    fn read_only(dir: &std::path::Path) -> Mount {
        let d = dir.to_str().unwrap();
        Self::run(&["mount", "--bind", d, d]);
        let m = Mount(dir.into());
        Self::run(&["mount", "-o", "remount,bind,ro", d]);
        m
    }

    /// A tmpfs of `kib` KiB on `dir`.
    fn tmpfs(dir: &std::path::Path, kib: u64) -> Mount {
        let d = dir.to_str().unwrap();
        Self::run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={kib}k"),
            "tmpfs",
            d,
        ]);
        Mount(dir.into())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn the_routes_api_is_atomic_with_its_state_file() {
    if !spillway_e2e::docker::is_root() {
        return skip("mount tests", "needs root (mount)");
    }
    let certs = Certs::new();
    let state = certs.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let state_flag = state.display().to_string();
    let collector = Collector::start(&certs, &[], &["--state-dir", &state_flag]);
    let port = collector.http_port;
    let add = |id: &str| {
        curl(
            port,
            "POST",
            "/routes",
            Some(&json!({"id": id, "uri": "syslog://127.0.0.1:9"})),
        )
    };
    assert_eq!(add("keep").0, 201);

    // Read-only state directory: nothing changes, and the API says so.
    {
        let _ro = Mount::read_only(&state);
        let (code, body) = curl(port, "DELETE", "/routes/keep", None);
        assert_eq!(code, 500, "{body}");
        assert!(
            json(&body)["error"]
                .as_str()
                .unwrap()
                .contains("cannot save")
        );
        let (code, body) = add("new");
        assert_eq!(code, 500, "{body}");
        assert_eq!(route_ids(port), ["keep"]);
    }
    // Positive control: writable again, DELETE works.
    assert_eq!(curl(port, "DELETE", "/routes/keep", None).0, 204);
    assert!(route_ids(port).is_empty());

    // A full disk: the route is not added, no temporary file is left.
    {
        let _full = Mount::tmpfs(&state, 64);
        let mut filler = std::fs::File::create(state.join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        while std::io::Write::write_all(&mut filler, &chunk).is_ok() {}
        let (code, body) = add("full");
        assert_eq!(code, 500, "{body}");
        let left: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["filler"]);
        assert!(route_ids(port).is_empty());
        drop(filler);
        std::fs::remove_file(state.join("filler")).unwrap();
        assert_eq!(add("fits").0, 201);
        assert!(
            std::fs::read_to_string(state.join("routes.json"))
                .unwrap()
                .contains("\"fits\"")
        );
    }
}

#[tokio::test]
async fn a_corrupt_routes_file_is_set_aside() {
    let certs = Certs::new();
    let state = certs.dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("routes.json"), "{not json").unwrap();
    let state_flag = state.display().to_string();
    let collector = Collector::start(&certs, &[], &["--state-dir", &state_flag]);
    let port = collector.http_port;
    assert!(route_ids(port).is_empty());
    assert_healthy(&collector, &certs, "a corrupt routes.json").await;
    let log = collector.proc.log();
    assert!(
        log.contains("is not a routes file") && log.contains("routes.json.bak"),
        "{log}"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("routes.json.bak")).unwrap(),
        "{not json"
    );
    assert_eq!(post_uri(port, "syslog://127.0.0.1:9").0, 201);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("routes.json")).unwrap()).unwrap();
    assert_eq!(saved.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn logspout_route_json_is_accepted_and_answered() {
    let certs = Certs::new();
    let state = certs.dir.join("state");
    let state_flag = state.display().to_string();
    let start = || Collector::start(&certs, &[], &["--state-dir", &state_flag]);
    let collector = start();
    let port = collector.http_port;
    // As logspout's README and routesapi take it.
    let logspout = json!({
        "adapter": "syslog+tcp",
        "address": "127.0.0.1:514",
        "filter_name": "web*",
        "filter_sources": ["stdout"],
        "filter_labels": ["com.example.foo:bar*"],
        "filter_id": "abc123",
        "options": {"format": "rfc3164"},
    });
    let (code, body) = curl(port, "POST", "/routes", Some(&logspout));
    assert_eq!(code, 201, "{body}");
    let route = json(&body);
    let id = route["id"].as_str().unwrap().to_owned();
    let check = |r: &Value| {
        for key in [
            "adapter",
            "address",
            "filter_name",
            "filter_sources",
            "filter_labels",
            "filter_id",
            "options",
        ] {
            assert_eq!(r[key], logspout[key], "{key} in {r}");
        }
        assert_eq!(r["filters"]["name"], "web*", "{r}");
        assert_eq!(r["filters"]["id"], "abc123", "{r}");
        assert_eq!(r["filters"]["sources"][0], "stdout", "{r}");
        assert_eq!(r["filters"]["labels"][0], "com.example.foo:bar*", "{r}");
    };
    check(&route);
    // Logspout's own id field, empty or given.
    let mut named = logspout.clone();
    named["id"] = json!("");
    assert_eq!(curl(port, "POST", "/routes", Some(&named)).0, 201);
    named["id"] = json!("papertrail");
    assert_eq!(curl(port, "POST", "/routes", Some(&named)).0, 201);
    // Both spellings of one filter: refused, naming them.
    let mut twice = logspout.clone();
    twice["filters"] = json!({"name": "db*"});
    let (code, body) = curl(port, "POST", "/routes", Some(&twice));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("filter_name"), "{body}");
    // Logspout's filters are checked like ours.
    let mut bad = logspout.clone();
    bad["filter_sources"] = json!(["stdlog"]);
    assert_eq!(curl(port, "POST", "/routes", Some(&bad)).0, 400);

    // GET answers in both forms, also after a restart.
    drop(collector);
    let collector = start();
    let (code, body) = curl(collector.http_port, "GET", &format!("/routes/{id}"), None);
    assert_eq!(code, 200, "{body}");
    check(&json(&body));
    let (_, body) = curl(collector.http_port, "GET", "/routes", None);
    assert_eq!(json(&body).as_array().unwrap().len(), 3);
}

/// CPU time the process has used, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn expensive_renders_stay_off_ingress_and_stop_with_their_route() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let certs = Certs::new();
    let collector = Collector::start(&certs, &[], &[]);
    let port = collector.http_port;
    let pid = collector.proc.pid().unwrap();
    // A receiver counting lines, and those that say the fuel ran out.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = listener.local_addr().unwrap().port();
    let (lines, out_of_fuel) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    {
        let (lines, out_of_fuel) = (lines.clone(), out_of_fuel.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let (lines, out_of_fuel) = (lines.clone(), out_of_fuel.clone());
                std::thread::spawn(move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(conn.unwrap()).lines() {
                        let line = line.unwrap_or_default();
                        lines.fetch_add(1, Ordering::Relaxed);
                        if line.starts_with("template error: engine ran out of fuel") {
                            out_of_fuel.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
    }
    // Cheap on the sample line (so it is accepted), as costly as the fuel
    // allows on the envelopes of source "heavy".
    let template = "{% if source_id == 'heavy' %}{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}{% else %}{{ source_id }}{% endif %}";
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (code, body) = curl(
            port,
            "POST",
            "/routes",
            Some(&json!({
                "adapter": "raw+tcp", "address": format!("127.0.0.1:{receiver}"),
                "options": {"include": "metrics", "template": template},
            })),
        );
        assert_eq!(code, 201, "{body}");
        ids.push(json(&body)["id"].as_str().unwrap().to_owned());
    }
    let mut client = collector.client(&certs).await;
    client
        .send(v2::EnvelopeBatch {
            batch: (0..2000)
                .map(|n| v2::Envelope::counter("heavy", "hits", 1, n))
                .collect(),
        })
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "renders run out of fuel", || {
        out_of_fuel.load(Ordering::Relaxed) >= 4
    })
    .await;
    // While four routes render as hard as they may: /health and ingress
    // answer promptly.
    for round in 0..3 {
        let started = Instant::now();
        assert_healthy(&collector, &certs, "expensive renders").await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "round {round}: {took:?}");
        assert!(
            out_of_fuel.load(Ordering::Relaxed) < 8000,
            "still rendering during round {round}"
        );
    }
    for id in &ids {
        assert_eq!(curl(port, "DELETE", &format!("/routes/{id}"), None).0, 204);
    }
    // Deleted, the routes stop rendering: within a few seconds the
    // collector is idle and the receiver gets nothing more.
    let deleted = Instant::now();
    loop {
        let (ticks, got) = (cpu_ticks(pid), lines.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu_ticks(pid) - ticks <= 5 && lines.load(Ordering::Relaxed) == got {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(5),
            "still busy {:?} after the routes were deleted",
            deleted.elapsed()
        );
    }
    let rendered = out_of_fuel.load(Ordering::Relaxed);
    assert!(rendered < 8000, "{rendered} of 8000 renders ran");
    eprintln!("{rendered} of 8000 expensive renders ran before the routes were deleted");
}
