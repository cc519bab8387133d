//! The collector's systemd unit grants it a few capabilities
//! (`CapabilityBoundingSet=` and `AmbientCapabilities=` in
//! `deploy/systemd/spillway-collector.service`). These tests prove, against
//! the unit as `cargo xtask install` installs it (the single source of the
//! list), that
//!
//! - the list is enough: the installed collector, run as root with exactly
//!   those capabilities (bounding set reduced with `setpriv`, so that execve
//!   grants no more; checked in `/proc/<pid>/status`), with `--source ebpf`
//!   and the installed config, captures a root container and a non-root
//!   container, and their lines reach a consumer through a router and an
//!   RLP started with the installed configs;
//! - every capability in it is needed: without any one of them, the same run
//!   fails (without `CAP_BPF` the collector refuses to start and says so).

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use spillway_e2e::docker::{self, TestContainer};
use spillway_e2e::*;
use spillway_proto::v2::envelope::Message;
use spillway_proto::v2::ingress_client::IngressClient;

/// Capability numbers (linux/capability.h), by name.
const CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn cap_number(name: &str) -> u32 {
    CAPS.iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .unwrap_or_else(|| panic!("unknown capability {name:?} in the unit")) as u32
}

fn mask(caps: &BTreeSet<String>) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << cap_number(c))
}

/// The capabilities a unit's `[Service]` section gives to `key`
/// (`CapabilityBoundingSet` or `AmbientCapabilities`), as systemd reads
/// them: assignments add up, an empty one resets.
fn unit_capabilities(unit: &str, key: &str) -> BTreeSet<String> {
    let mut section = "";
    let mut caps = BTreeSet::new();
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "continued lines are not understood here: {line}"
        );
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if section != "[Service]" || k.trim() != key {
            continue;
        }
        let v = v.trim();
        assert!(
            !v.starts_with('~'),
            "{key}=~… (a deny list) is not understood here"
        );
        if v.is_empty() {
            caps.clear();
        }
        for cap in v.split_whitespace() {
            cap_number(cap);
            caps.insert(cap.to_ascii_uppercase());
        }
    }
    caps
}

#[test]
fn unit_parsing_follows_systemd() {
    let unit = "[Unit]\nCapabilityBoundingSet=CAP_CHOWN\n[Service]\n# CapabilityBoundingSet=CAP_KILL\n\
                CapabilityBoundingSet=CAP_SYS_ADMIN\nCapabilityBoundingSet=\n\
                CapabilityBoundingSet=CAP_BPF cap_perfmon\nCapabilityBoundingSet=CAP_SYS_PTRACE\n";
    let caps = unit_capabilities(unit, "CapabilityBoundingSet");
    assert_eq!(
        caps.iter().map(String::as_str).collect::<Vec<_>>(),
        ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"]
    );
    assert_eq!(mask(&caps), 1 << 39 | 1 << 38 | 1 << 19);
    assert!(unit_capabilities(unit, "AmbientCapabilities").is_empty());
}

/// Spillway installed into a staging root by `cargo xtask install`;
/// removed when dropped.
struct Installed {
    root: PathBuf,
}

impl Installed {
    fn new() -> Installed {
        let root = std::env::temp_dir().join(format!(
            "spillway-e2e-caps-root-{}-{}",
            std::process::id(),
            free_port()
        ));
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace)
            .args([
                "xtask",
                "install",
                "--profile",
                "dev",
                "--no-build",
                "--root",
            ])
            .arg(&root)
            .stdin(Stdio::null())
            .output()
            .expect("running cargo xtask install");
        let installed = Installed { root };
        assert!(
            out.status.success(),
            "cargo xtask install failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // The binary under test is the one this test run built.
        let collector = installed.path("usr/local/bin/spillway-collector");
        assert!(
            std::fs::read(&collector).unwrap() == std::fs::read(bin("spillway-collector")).unwrap(),
            "{} is not the collector of this build ({})",
            collector.display(),
            bin("spillway-collector").display()
        );
        installed
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn unit(&self) -> String {
        std::fs::read_to_string(self.path("etc/systemd/system/spillway-collector.service")).unwrap()
    }

    /// The collector's capabilities, from the installed unit.
    fn collector_capabilities(&self) -> BTreeSet<String> {
        let unit = self.unit();
        let bounding = unit_capabilities(&unit, "CapabilityBoundingSet");
        let ambient = unit_capabilities(&unit, "AmbientCapabilities");
        assert!(!bounding.is_empty(), "the unit names no capabilities");
        assert_eq!(
            bounding, ambient,
            "CapabilityBoundingSet= and AmbientCapabilities= differ"
        );
        bounding
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Why these tests cannot run here, if they cannot (under the strict flag they
/// must: this panics instead).
fn unavailable() -> Option<String> {
    if let Some(why) = docker::unavailable(true) {
        return Some(why);
    }
    let why = if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        Some("setpriv (util-linux) is missing".to_owned())
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux): no eBPF capture".to_owned())
    } else if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ebpf/spillway-collector.bpf.o")
        .exists()
    {
        Some("the eBPF program is not built (`cargo xtask build-ebpf`)".to_owned())
    } else {
        None
    };
    if let Some(why) = &why {
        spillway_e2e::skip("the capabilities test", why);
    }
    why
}

/// The installed collector, started by `setpriv` as root with exactly
/// `caps` in its bounding set (so exactly `caps` after exec); killed when
/// dropped, its log printed if the test fails.
struct CappedCollector {
    child: Child,
    log: PathBuf,
    ingress_port: u16,
}

impl CappedCollector {
    fn start(
        installed: &Installed,
        caps: &BTreeSet<String>,
        certs: &Certs,
        router: &Router,
    ) -> CappedCollector {
        let (ingress_port, http_port) = (free_port(), free_port());
        let log = certs.dir.join(format!("collector-{ingress_port}.log"));
        let bounding = std::iter::once("-all".to_owned())
            .chain(
                caps.iter()
                    .map(|c| format!("+{}", c.to_ascii_lowercase().trim_start_matches("cap_"))),
            )
            .collect::<Vec<_>>()
            .join(",");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new("setpriv")
            .arg(format!("--bounding-set={bounding}"))
            .arg("--inh-caps=-all")
            .arg("--")
            .arg(installed.path("usr/local/bin/spillway-collector"))
            .arg("--config")
            .arg(installed.path("etc/spillway/collector.toml"))
            // A missing capability must fail loudly, not fall back to Docker.
            .args(["--source", "ebpf", "--hostname", "e2e-caps"])
            .args(["--router", &router.addr()])
            .args(["--ingress-addr", &format!("127.0.0.1:{ingress_port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .arg("--state-dir")
            .arg(certs.dir.join(format!("state-{ingress_port}")))
            .args(certs.flags("collector"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting setpriv");
        CappedCollector {
            child,
            log,
            ingress_port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until it is ready (`Ok`): listening, the eBPF program
    /// attached and the running containers listed (its ports listen before
    /// the program is loaded, which takes a few seconds in a debug build);
    /// or until it exits (`Err` with its status).
    fn wait_started(&mut self) -> Result<(), ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            if TcpStream::connect(("127.0.0.1", self.ingress_port)).is_ok()
                && self.log().contains("watching containers")
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "the collector is neither ready nor gone after 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A line of its `/proc/<pid>/status`, e.g. `CapEff`, as a number.
    fn status_caps(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {field} in /proc/<pid>/status"));
        u64::from_str_radix(hex.trim(), 16).unwrap()
    }
}

impl Drop for CappedCollector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- spillway-collector log -----\n{}", self.log());
        }
    }
}

/// What became of one container's lines.
#[derive(Debug, PartialEq)]
enum Fate {
    /// Both lines arrived at the consumer.
    Delivered,
    /// The collector said it cannot capture the container.
    NotCaptured,
    /// Neither, within the time allowed.
    Lost,
}

/// A router and an RLP started with the installed configs (the test's own
/// ports and certificates given as flags, which win over the files).
struct Pipeline {
    certs: Certs,
    router: Router,
    rlp: Rlp,
}

impl Pipeline {
    fn start(installed: &Installed) -> Pipeline {
        let certs = Certs::new();
        let router_config = installed.path("etc/spillway/router.toml");
        let router = Router::start(&certs, &["--config", router_config.to_str().unwrap()]);
        let rlp_config = installed.path("etc/spillway/rlp.toml");
        let rlp = Rlp::start(
            &certs,
            &[&router],
            &["--config", rlp_config.to_str().unwrap()],
        );
        Pipeline { certs, router, rlp }
    }

    /// Starts a collector with `caps`, then a root and a non-root container
    /// that each write one line at once and one a second later. Returns
    /// how the collector ended if it did not start, else each container's
    /// fate.
    async fn run(
        &self,
        installed: &Installed,
        caps: &BTreeSet<String>,
    ) -> (CappedCollector, Result<Vec<(String, Fate)>, ExitStatus>) {
        let mut collector = CappedCollector::start(installed, caps, &self.certs, &self.router);
        if let Err(status) = collector.wait_started() {
            return (collector, Err(status));
        }
        // Root (the Docker default) and a plain user: /proc/<pid>/fd of
        // the latter is its user's, not root's.
        let users: [&[&str]; 2] = [&[], &["--user", "1000:1000"]];
        let mut containers = Vec::new();
        for options in users {
            let tag = format!("caps-{}-{}", std::process::id(), free_port());
            let script = format!("echo {tag}-early; sleep 1; echo {tag}-late; sleep 1");
            containers.push((TestContainer::create("caps", options, &script), tag));
        }
        let mut consumer = self.rlp.logs_of(&self.certs, "").await;
        // Positive control: an envelope sent to this collector's v2
        // ingress (no capability involved) reaches the consumer. A
        // container's lines that are lost below are then lost by capture,
        // not by a pipeline that does not work or is not ready.
        let control = format!("caps-control-{}", collector.ingress_port);
        IngressClient::new(channel(collector.ingress_port, self.certs.client()).await)
            .send(v2::EnvelopeBatch {
                batch: vec![numbered_log(&control, 0)],
            })
            .await
            .expect("the capped collector's ingress refused a good Send");
        let arrived = |g: &[v2::Envelope]| g.iter().any(|e| e.source_id == control);
        let seen = collect_until(&mut consumer, Duration::from_secs(15), arrived).await;
        assert!(
            arrived(&seen),
            "positive control: an envelope sent to the collector's ingress did not reach \
             the consumer in 15 s (the pipeline is broken, whatever the capabilities)"
        );
        for (c, _) in &containers {
            c.start();
        }
        let mut got: Vec<String> = Vec::new();
        let fates = |got: &[String], log: &str| -> Vec<(String, Fate)> {
            containers
                .iter()
                .map(|(c, tag)| {
                    let fate = if [format!("{tag}-early"), format!("{tag}-late")]
                        .iter()
                        .all(|line| got.contains(line))
                    {
                        Fate::Delivered
                    } else if log.contains(&format!("cannot capture container {}", c.name)) {
                        Fate::NotCaptured
                    } else {
                        Fate::Lost
                    };
                    (c.name.clone(), fate)
                })
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = fates(&got, &collector.log());
            if now.iter().all(|(_, f)| *f != Fate::Lost) || Instant::now() > deadline {
                eprintln!("lines received: {got:?}");
                return (collector, Ok(now));
            }
            let batch =
                collect_until(&mut consumer, Duration::from_millis(200), |g| !g.is_empty()).await;
            got.extend(batch.iter().filter_map(|e| match &e.message {
                Some(Message::Log(l)) => Some(String::from_utf8_lossy(&l.payload).into_owned()),
                _ => None,
            }));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_units_capabilities_are_enough_for_ebpf_capture() {
    let _serial = docker::serial().await;
    if unavailable().is_some() {
        return;
    }
    let installed = Installed::new();
    let caps = installed.collector_capabilities();
    eprintln!("the unit's capabilities: {caps:?}");
    let p = Pipeline::start(&installed);
    let (collector, result) = p.run(&installed, &caps).await;
    let fates = result.unwrap_or_else(|status| {
        panic!(
            "the collector did not start with {caps:?} ({status}):\n{}",
            collector.log()
        )
    });
    // It really ran with exactly the unit's set, as root.
    let want = mask(&caps);
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            collector.status_caps(field),
            want,
            "{field} of the collector is {:#x}, the unit's set is {want:#x}",
            collector.status_caps(field)
        );
    }
    assert_eq!(collector.status_caps("CapAmb"), 0);
    let exe = std::fs::read_link(format!("/proc/{}/exe", collector.child.id())).unwrap();
    assert_eq!(
        exe,
        installed
            .path("usr/local/bin/spillway-collector")
            .canonicalize()
            .unwrap()
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", collector.child.id())).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
        "runs as root"
    );
    for (name, fate) in &fates {
        assert_eq!(
            *fate,
            Fate::Delivered,
            "container {name}: its lines should arrive"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_capability_of_the_unit_is_needed() {
    let _serial = docker::serial().await;
    if unavailable().is_some() {
        return;
    }
    let installed = Installed::new();
    let caps = installed.collector_capabilities();
    let p = Pipeline::start(&installed);
    for cap in &caps {
        let mut fewer = caps.clone();
        fewer.remove(cap);
        let (collector, result) = p.run(&installed, &fewer).await;
        let log = collector.log();
        let started = result.is_ok();
        match result {
            Err(status) => {
                eprintln!("without {cap}: the collector exits ({status})");
                assert!(!status.success());
                assert_eq!(status.code(), Some(2), "bad setup exits with status 2");
                assert!(
                    log.contains(cap.as_str()) || log.contains("not permitted"),
                    "its error says what it may not do:\n{log}"
                );
            }
            Ok(fates) => {
                eprintln!("without {cap}: the collector runs; containers: {fates:?}");
                assert!(
                    fates.iter().any(|(_, f)| *f != Fate::Delivered),
                    "without {cap} everything still works: is it needed?\n{log}"
                );
            }
        }
        if cap == "CAP_BPF" {
            // The case that must never pass silently (with `--source auto`
            // it would: the Docker API instead).
            assert!(!started, "without CAP_BPF, --source ebpf must not start");
            assert!(
                log.contains("lacks CAP_BPF"),
                "the error names the missing capability:\n{log}"
            );
        }
    }
}
