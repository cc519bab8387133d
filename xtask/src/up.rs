//! `cargo xtask up`: builds everything and runs the whole pipeline on this
//! host — router, RLP and collector with the development certificates, the
//! collector capturing containers (eBPF when root, else the Docker API) —
//! starts a demo container, then tails everything they carry until Ctrl-C.
//!
//! Ctrl-C (SIGINT, sent to the whole foreground process group) or SIGTERM
//! does not end this process at once: it stops what it started (the
//! processes, the demo container) and then returns, at any point of the
//! start-up or while tailing.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::util::{run, workspace_root};
use crate::{certs, host};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stop after this many seconds instead of at Ctrl-C (for scripts).
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Use the binaries already in target/release.
    #[arg(long)]
    pub no_build: bool,
    /// Use the binaries in this directory (target/debug, say) instead of
    /// building release ones (implies --no-build).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Do not install Debian packages first (they are there already).
    #[arg(long)]
    pub no_install: bool,
}

const ROUTER: &str = "localhost:8082";
const RLP: &str = "localhost:8083";
const COLLECTOR: &str = "localhost:3458";

/// The running processes; killed on drop.
struct Pipeline(Vec<(String, Child)>);

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("stopped {name}");
        }
    }
}

/// A container that says something now and then, removed on exit.
struct Demo(&'static str);

impl Drop for Demo {
    fn drop(&mut self) {
        remove_container(self.0);
    }
}

fn remove_container(name: &str) {
    let _ = Command::new("docker")
        .args(["rm", "-f", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Set by SIGINT or SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only set [`STOP`].
fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(sig, on_stop_signal as *const () as libc::sighandler_t) };
    }
}

/// An error once Ctrl-C was pressed, so that start-up ends (and what was
/// started is stopped by the guards' drops).
fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

pub fn run_up(args: &Args) -> anyhow::Result<()> {
    catch_stop_signals();
    match up(args) {
        Err(_) if STOP.load(Ordering::SeqCst) => {
            eprintln!("interrupted: everything `up` started is stopped");
            Ok(())
        }
        other => other,
    }
}

fn up(args: &Args) -> anyhow::Result<()> {
    let root = workspace_root();
    // Containers to capture: Docker (installed and started when root).
    let installed = if args.no_install {
        Ok(())
    } else {
        host::install_packages()
    };
    let no_build = args.no_build || args.bin_dir.is_some();
    let docker = installed
        .and_then(|()| host::ensure_dockerd())
        .and_then(|()| host::ensure_busybox_image());
    if let Err(e) = &docker {
        eprintln!("no containers to show: {e:#}");
    }
    if !no_build && host::is_root() {
        crate::build_ebpf::build(&crate::build_ebpf::Args::default())?;
    }
    if !no_build {
        run(
            Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args(["build", "--release", "--bins"]),
        )?;
    }
    let certs_dir = certs::default_dir();
    devcerts::write_dir(&certs_dir, certs::COMPONENTS, certs::SANS)?;
    let logs = root.join(".dev/logs");
    std::fs::create_dir_all(&logs)?;
    let bin = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| root.join("target/release"));
    let tls = |who: &str| -> Vec<String> {
        vec![
            "--tls-ca".into(),
            certs_dir.join("ca.pem").display().to_string(),
            "--tls-cert".into(),
            certs_dir.join(format!("{who}.pem")).display().to_string(),
            "--tls-key".into(),
            certs_dir
                .join(format!("{who}-key.pem"))
                .display()
                .to_string(),
        ]
    };

    let mut pipeline = Pipeline(Vec::new());
    let start =
        |pipeline: &mut Pipeline, name: &str, args: Vec<String>, port: u16| -> anyhow::Result<()> {
            check_stop()?;
            let log = logs.join(format!("{name}.log"));
            let child = spawn(&bin.join(name), &args, &log)?;
            pipeline.0.push((name.to_owned(), child));
            wait_for(port, name, &log)?;
            eprintln!("started {name} (log: {})", log.display());
            Ok(())
        };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let mut router = s(&[
        "--addr",
        "127.0.0.1:8082",
        "--metrics-addr",
        "127.0.0.1:14825",
    ]);
    router.extend(tls("router"));
    start(&mut pipeline, "spillway-router", router, 8082)?;

    let mut rlp = s(&[
        "--router",
        ROUTER,
        "--addr",
        "127.0.0.1:8083",
        "--gateway-addr",
        "127.0.0.1:8088",
        "--metrics-addr",
        "127.0.0.1:14826",
    ]);
    rlp.extend(tls("rlp"));
    start(&mut pipeline, "spillway-rlp", rlp, 8083)?;

    let state_dir = workspace_root().join(".dev/state");
    let mut collector = s(&["--router", ROUTER, "--state-dir"]);
    collector.push(state_dir.display().to_string());
    collector.extend(tls("collector"));
    start(&mut pipeline, "spillway-collector", collector, 3458)?;

    check_stop()?;
    let _demo = match docker {
        Ok(()) => start_demo_container()?,
        Err(_) => None,
    };
    check_stop()?;

    let cli = bin.join("spillway");
    let mut tail_args = s(&["tail", "--rlp", RLP]);
    tail_args.extend(tls("cli"));
    let mut tail = Command::new(&cli)
        .args(&tail_args)
        .spawn()
        .context("starting spillway tail")?;

    eprintln!(
        "\nSpillway is running on this host:\n  \
         v2 ingress (apps)   {COLLECTOR}   collector HTTP http://127.0.0.1:8080/metrics\n  \
         router              {ROUTER}   metrics http://127.0.0.1:14825/metrics\n  \
         RLP egress          {RLP}   gateway https://localhost:8088/v2/read?log (client certificate: see below)\n  \
         container lines     curl -N http://127.0.0.1:8080/logs   routes API http://127.0.0.1:8080/routes\n  \
         certificates        {}\n\
         The gateway with curl:\n  \
         curl -N --cacert {ca} --cert {cert} --key {key} 'https://localhost:8088/v2/read?log'\n\
         Below: everything the RLP carries (`spillway tail`): the container spillway-demo,\n\
         every container you `docker run`, and what apps send. Send some logs from another shell:\n  \
         {} emit --collector {COLLECTOR} --source-id demo --rate 10 --count 50 {}\n",
        certs_dir.display(),
        cli.display(),
        tls("cli").join(" "),
        ca = certs_dir.join("ca.pem").display(),
        cert = certs_dir.join("cli.pem").display(),
        key = certs_dir.join("cli-key.pem").display(),
    );
    // A first greeting through the whole pipeline.
    std::thread::sleep(Duration::from_millis(500));
    let mut emit = s(&[
        "emit",
        "--collector",
        COLLECTOR,
        "--source-id",
        "xtask-up",
        "--rate",
        "5",
        "--count",
        "5",
    ]);
    emit.extend(tls("cli"));
    let _ = Command::new(&cli)
        .args(&emit)
        .stdout(Stdio::null())
        .status();

    // Until --seconds, Ctrl-C, or tail ending by itself; then the pipeline
    // is stopped by `Pipeline`'s drop and the container by `Demo`'s.
    let until = args
        .seconds
        .map(|secs| Instant::now() + Duration::from_secs(secs));
    while tail.try_wait()?.is_none() {
        if STOP.load(Ordering::SeqCst) || until.is_some_and(|t| Instant::now() >= t) {
            let _ = tail.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tail.wait();
    check_stop()?;
    for (name, child) in &mut pipeline.0 {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited early ({status}); see .dev/logs/{name}.log");
        }
    }
    Ok(())
}

/// Starts `spillway-demo`, a container that greets every two seconds.
fn start_demo_container() -> anyhow::Result<Option<Demo>> {
    let demo = Demo("spillway-demo");
    remove_container(demo.0); // a leftover from an earlier run
    run(Command::new("docker").args([
        "run",
        "-d",
        "--name",
        demo.0,
        "--network",
        "none",
        host::BUSYBOX_IMAGE,
        "sh",
        "-c",
        "i=0; while true; do i=$((i+1)); echo \"hello from container $HOSTNAME, line $i\"; \
         echo \"and on stderr, line $i\" >&2; sleep 2; done",
    ]))?;
    Ok(Some(demo))
}

fn spawn(bin: &Path, args: &[String], log: &PathBuf) -> anyhow::Result<Child> {
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo xtask up` without --no-build",
            bin.display()
        );
    }
    let out = File::create(log)?;
    Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

fn wait_for(port: u16, name: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        check_stop()?;
        if Instant::now() > deadline {
            bail!(
                "{name} does not listen on port {port}; its log says:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
