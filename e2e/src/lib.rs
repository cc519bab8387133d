//! Test harness for Spillway's end-to-end tests: real `spillway-*`
//! processes on loopback, talking real mutual TLS with certificates made
//! for the test, and real gRPC/HTTP clients.
//!
//! The binaries come from the cargo target directory of the test itself
//! (`cargo build --bins` first; `cargo xtask test` does it).

pub mod containerd;
pub mod docker;
pub mod podman;
pub mod rsyslog;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use spillway_proto::v2::egress_client::EgressClient;
use spillway_proto::v2::ingress_client::IngressClient;
use spillway_proto::v2::{EgressBatchRequest, Envelope};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use spillway_proto::{Kind, v2};

/// Where `cargo build` put the binaries this test (or the benchmark
/// harness, a binary of the same target directory) runs.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> or target/<profile>/<binary>
    let mut dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`, or run `cargo xtask test`)",
        path.display()
    );
    path
}

/// A port that was free a moment ago. Ports are handed out from a
/// per-process counter offset by the process id, and checked by binding.
/// They stay in 20000..32000, below the kernel's ephemeral range (32768..),
/// so that no outgoing connection takes one before its server binds it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000
            + ((std::process::id() as u16)
                .wrapping_mul(97)
                .wrapping_add(n.wrapping_mul(7))
                % 12_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A name every test certificate is valid for, which tests map to
/// addresses of their own (see the discovery test).
pub const ROUTERS_NAME: &str = "routers.spillway.test";

/// Certificates for one test: a CA, a certificate per component, and a
/// certificate from an unrelated CA.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn new() -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "spillway-e2e-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // ROUTERS_NAME: several routers behind one name (RLP discovery);
        // `router`: its name on the image test's Docker network.
        let sans = ["localhost", "127.0.0.1", ROUTERS_NAME, "router"];
        let ca = devcerts::Ca::new("spillway test CA").unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        for name in ["collector", "router", "rlp", "client", "receiver"] {
            let issued = ca.issue(name, &sans).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), &issued.cert_pem).unwrap();
            std::fs::write(dir.join(format!("{name}-key.pem")), &issued.key_pem).unwrap();
        }
        // A certificate for the right name, but signed by another CA.
        let other = devcerts::Ca::new("some other CA").unwrap();
        let issued = other.issue("client", &sans).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.cert_pem()).unwrap();
        std::fs::write(dir.join("other.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("other-key.pem"), &issued.key_pem).unwrap();
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// The `--tls-*` flags for `component`.
    pub fn flags(&self, component: &str) -> Vec<String> {
        vec![
            "--tls-ca".into(),
            self.path("ca.pem"),
            "--tls-cert".into(),
            self.path(&format!("{component}.pem")),
            "--tls-key".into(),
            self.path(&format!("{component}-key.pem")),
        ]
    }

    fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }

    /// A client TLS config: trusting `ca_file`, presenting `identity`
    /// (`Some(("client.pem", "client-key.pem"))`) or no certificate.
    pub fn client_tls(&self, ca_file: &str, identity: Option<(&str, &str)>) -> ClientTlsConfig {
        let mut cfg =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.read(ca_file)));
        if let Some((cert, key)) = identity {
            cfg = cfg.identity(Identity::from_pem(self.read(cert), self.read(key)));
        }
        cfg
    }

    /// `curl` flags of the well-behaved gateway client: trust our CA,
    /// present the client certificate. Use with `https://localhost:PORT`.
    pub fn curl_flags(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.path("ca.pem"),
            "--cert".into(),
            self.path("client.pem"),
            "--key".into(),
            self.path("client-key.pem"),
        ]
    }

    /// The well-behaved client: our CA, our client certificate.
    pub fn client(&self) -> ClientTlsConfig {
        self.client_tls("ca.pem", Some(("client.pem", "client-key.pem")))
    }
}

impl Default for Certs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running Spillway process; killed when dropped. Its stderr goes to a
/// log file that is printed if the test fails while it runs.
pub struct Proc {
    pub name: String,
    /// What runs the binary (`unshare ...`), if not the binary itself.
    pub wrapper: Vec<String>,
    pub args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(binary: &str, args: &[String]) -> Proc {
        Proc::spawn_wrapped(&[], binary, args)
    }

    /// Runs `wrapper... <path of binary> args...`: the binary inside a
    /// namespace, say.
    pub fn spawn_wrapped(wrapper: &[String], binary: &str, args: &[String]) -> Proc {
        Proc::start(wrapper, binary, args, false)
    }

    /// Like [`Proc::spawn`], with stdout piped for the test to read
    /// ([`Proc::take_stdout`]); stderr still goes to the log.
    pub fn spawn_piped(binary: &str, args: &[String]) -> Proc {
        Proc::start(&[], binary, args, true)
    }

    /// The piped stdout of [`Proc::spawn_piped`].
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("a piped stdout, taken once")
    }

    fn start(wrapper: &[String], binary: &str, args: &[String], piped: bool) -> Proc {
        let log = std::env::temp_dir().join(format!(
            "spillway-e2e-{}-{binary}-{}.log",
            std::process::id(),
            free_port()
        ));
        let file = std::fs::File::create(&log).unwrap();
        let command = wrapper
            .iter()
            .map(Into::into)
            .chain([bin(binary)])
            .chain(args.iter().map(Into::into))
            .collect::<Vec<PathBuf>>();
        let child = Command::new(&command[0])
            .args(&command[1..])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(if piped {
                Stdio::piped()
            } else {
                file.try_clone().unwrap().into()
            })
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        Proc {
            name: binary.into(),
            wrapper: wrapper.to_vec(),
            args: args.to_vec(),
            child: Some(child),
            log,
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the same command again (after [`Proc::kill`]).
    pub fn restart(&mut self) {
        self.kill();
        let again = Proc::spawn_wrapped(&self.wrapper, &self.name, &self.args);
        let old_log = std::mem::replace(&mut self.log, again.log.clone());
        let _ = std::fs::remove_file(old_log);
        let mut again = again;
        self.child = again.child.take();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A test that cannot run here says so and returns, when run by hand;
/// under the strict flag (`cargo xtask test` sets it) it fails instead.
/// The one skip helper of every test crate: see [`spillway_testenv`].
pub use spillway_testenv::{skip, strict};

/// `None` when `program` runs here (`program version_arg` exits 0); else
/// the tests of `what` skip (see [`skip`]: a failure under the strict
/// flag), and why: `program` is not installed (`install` says how).
pub fn tool_missing(program: &str, version_arg: &str, what: &str, install: &str) -> Option<String> {
    let found = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return None;
    }
    let why = format!("{program} is not installed ({install})");
    skip(what, &why);
    Some(why)
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Router {
    pub proc: Proc,
    pub port: u16,
    pub metrics_port: u16,
}

pub struct Rlp {
    pub proc: Proc,
    pub port: u16,
    pub gateway_port: u16,
    pub metrics_port: u16,
}

pub struct Collector {
    pub proc: Proc,
    pub port: u16,
    pub http_port: u16,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

impl Router {
    pub fn start(certs: &Certs, extra: &[&str]) -> Router {
        let (port, metrics_port) = (free_port(), free_port());
        let mut args = s(&[
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ]);
        args.extend(certs.flags("router"));
        args.extend(s(extra));
        let proc = Proc::spawn("spillway-router", &args);
        wait_port(port);
        wait_port(metrics_port);
        Router {
            proc,
            port,
            metrics_port,
        }
    }

    pub fn addr(&self) -> String {
        format!("localhost:{}", self.port)
    }

    /// The `subscriptions` gauge from `/metrics`.
    pub fn subscriptions(&self) -> u64 {
        metric(self.metrics_port, "spillway_subscriptions").unwrap_or(0)
    }
}

impl Rlp {
    pub fn start(certs: &Certs, routers: &[&Router], extra: &[&str]) -> Rlp {
        let routers: Vec<String> = routers.iter().map(|r| r.addr()).collect();
        let routers: Vec<&str> = routers.iter().map(String::as_str).collect();
        Rlp::start_wrapped(&[], certs, &routers, extra)
    }

    /// An RLP reading from `routers` (`HOST:PORT`), run by `wrapper` (see
    /// [`Proc::spawn_wrapped`]).
    pub fn start_wrapped(
        wrapper: &[String],
        certs: &Certs,
        routers: &[&str],
        extra: &[&str],
    ) -> Rlp {
        let (port, gateway_port, metrics_port) = (free_port(), free_port(), free_port());
        let mut args = s(&[
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--gateway-addr",
            &format!("127.0.0.1:{gateway_port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics_port}"),
        ]);
        for r in routers {
            args.extend(["--router".to_string(), r.to_string()]);
        }
        args.extend(certs.flags("rlp"));
        args.extend(s(extra));
        let proc = Proc::spawn_wrapped(wrapper, "spillway-rlp", &args);
        wait_port(port);
        wait_port(gateway_port);
        Rlp {
            proc,
            port,
            gateway_port,
            metrics_port,
        }
    }

    pub async fn client(&self, certs: &Certs) -> EgressClient<Channel> {
        EgressClient::new(channel(self.port, certs.client()).await)
            .max_decoding_message_size(64 << 20)
    }

    /// A consumer of the logs of `source_id` (any source when empty),
    /// subscribed on every router once this returns.
    pub async fn logs_of(
        &self,
        certs: &Certs,
        source_id: &str,
    ) -> tonic::Streaming<v2::EnvelopeBatch> {
        let stream = self
            .client(certs)
            .await
            .batched_receiver(request(source_id, &[Kind::Log], ""))
            .await
            .unwrap()
            .into_inner();
        // The RLP answers once every router has subscribed the request.
        stream
    }
}

impl Collector {
    /// A collector shipping to `routers`, once its `/health` says it is
    /// ready (capture and shipping started).
    pub fn start(certs: &Certs, routers: &[&Router], extra: &[&str]) -> Collector {
        let collector = Collector::spawn(certs, routers, extra);
        collector.wait_ready();
        collector
    }

    /// Waits until `/health` answers 200 (loading the eBPF program takes a
    /// minute on a host busy compiling).
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let health = http_status(self.http_port, "/health");
            if matches!(&health, Some((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the collector is not ready after 120 s: /health answers {health:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A collector whose ports are open, ready or not.
    pub fn spawn(certs: &Certs, routers: &[&Router], extra: &[&str]) -> Collector {
        let (port, http_port) = (free_port(), free_port());
        let mut args = s(&[
            "--ingress-addr",
            &format!("127.0.0.1:{port}"),
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--hostname",
            "e2e-host",
        ]);
        for r in routers {
            args.extend(["--router".to_string(), r.addr()]);
        }
        args.extend(certs.flags("collector"));
        if !extra.contains(&"--state-dir") {
            let state = certs.dir.join(format!("state-{http_port}"));
            args.extend(["--state-dir".to_string(), state.display().to_string()]);
        }
        if !extra.contains(&"--source") {
            // Container capture only in the tests about it.
            args.extend(s(&["--source", "none"]));
        }
        args.extend(s(extra));
        let proc = Proc::spawn("spillway-collector", &args);
        wait_port(port);
        wait_port(http_port);
        Collector {
            proc,
            port,
            http_port,
        }
    }

    pub async fn client(&self, certs: &Certs) -> IngressClient<Channel> {
        IngressClient::new(channel(self.port, certs.client()).await)
    }
}

/// A connected TLS channel to `localhost:port`.
pub async fn channel(port: u16, tls: ClientTlsConfig) -> Channel {
    try_channel(port, tls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to port {port}: {e:?}"))
}

pub async fn try_channel(
    port: u16,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        // As grpc-go's clients (Loggregator's consumers) do.
        .http2_adaptive_window(true)
        .connect()
        .await
}

/// A request selecting `kinds` from `source_id` (empty: any).
pub fn request(source_id: &str, kinds: &[Kind], shard_id: &str) -> EgressBatchRequest {
    EgressBatchRequest {
        shard_id: shard_id.into(),
        use_preferred_tags: true,
        selectors: kinds
            .iter()
            .map(|k| v2::Selector::of(*k, source_id))
            .collect(),
        ..Default::default()
    }
}

/// Reads envelopes from a batched stream until `done` says so or `within`
/// has passed (then returns what it has).
pub async fn collect_until(
    stream: &mut tonic::Streaming<v2::EnvelopeBatch>,
    within: Duration,
    mut done: impl FnMut(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while !done(&got) {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(batch))) => got.extend(batch.batch),
            Ok(Ok(None)) => break,
            Ok(Err(status)) => panic!("stream failed: {status:?}"),
            Err(_) => break,
        }
    }
    got
}

/// Polls `cond` every 50 ms for up to `within`.
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A plain-HTTP client for the HTTP ports of the processes under test:
/// 4xx and 5xx are answers, not errors; no redirect is followed, no proxy
/// used; a whole request has 10 s. Its own connections: none are pooled
/// across calls, so none outlives the process it was made to.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// GETs `path` on `127.0.0.1:port` and returns the body.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    http_status(port, path).map(|(_, body)| body)
}

/// GETs `path` on `127.0.0.1:port`; returns the status code and the body
/// (`None` without an answer within 10 s).
pub fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    let mut response = http_agent()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?;
    let body = response.body_mut().read_to_string().ok()?;
    Some((response.status().as_u16(), body))
}

/// `method http://127.0.0.1:port/path` with an optional JSON body and
/// bearer token, for the collector's HTTP API; returns the status code (0
/// if none came within 10 s) and the body.
pub fn http_call(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
    token: Option<&str>,
) -> (u16, String) {
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let answer = match body {
        Some(b) => http_agent().run(
            request
                .header("Content-Type", "application/json")
                .body(b.to_string())
                .expect("a valid request"),
        ),
        None => http_agent().run(request.body(()).expect("a valid request")),
    };
    let Ok(mut response) = answer else {
        return (0, String::new());
    };
    let body = response.body_mut().read_to_vec().unwrap_or_default();
    (
        response.status().as_u16(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// A sample from a Prometheus `/metrics` page, e.g.
/// `spillway_dropped_total{direction="egress"}`.
pub fn metric(port: u16, sample: &str) -> Option<u64> {
    let page = http_get(port, "/metrics")?;
    page.lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
}

/// Lines of a child's stdout, for streaming clients such as `curl -N`.
pub fn lines_of(child: &mut Child) -> impl Iterator<Item = String> {
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .lines()
        .map_while(Result::ok)
}

/// A log envelope numbered `n`.
pub fn numbered_log(source_id: &str, n: u64) -> Envelope {
    Envelope::log(
        spillway_proto::now_nanos(),
        source_id,
        "0",
        format!("line {n}").into_bytes(),
        v2::log::Type::Out,
    )
}

/// The number in a [`numbered_log`] payload.
pub fn number_of(e: &Envelope) -> Option<u64> {
    match &e.message {
        Some(v2::envelope::Message::Log(l)) => std::str::from_utf8(&l.payload)
            .ok()?
            .strip_prefix("line ")?
            .parse()
            .ok(),
        _ => None,
    }
}
