//! Capture of what container processes write to stdout and stderr, with
//! eBPF (the program is in `collector-ebpf/`, the shared types in
//! `collector-common/`).
//!
//! A program on the `sys_exit` raw tracepoint sees every `write(2)` and
//! `writev(2)` return, matches the inode written to (a pipe or pty)
//! against inodes registered here with [`Capture::register`], and copies
//! the written bytes into BPF ring buffers: up to 64 KiB per
//! syscall, in [`Record`]s of up to 16 KiB. Matching is by inode, not by
//! process, so everything a container writes to its stdout/stderr is seen,
//! whichever process or fd (`dup2`, `/dev/stdout`) it goes through.
//!
//! Writes through fd 1 or 2 of processes in a non-initial pid namespace to a
//! pipe or char device that is neither registered nor [`ignore`]d are also
//! captured, with cookie 0 ("unclaimed"): a container's first lines are
//! written before userspace learns of the container, and would otherwise be
//! lost. Userspace then registers the inode or ignores it.
//!
//! [`Capture::spawn_loops`] starts one thread per ring; all data of one inode
//! goes to ring `ino % loops`, so a loop sees each stream in order (one
//! thread's writes exactly; writes of several threads to one pipe in the
//! order their syscalls returned). Different inodes' records may arrive in
//! any relative order, also within one loop.
//!
//! Nothing the kernel fails to deliver goes unnoticed: see [`KernelDrops`].
//!
//! [`ignore`]: Capture::ignore

mod btf;
pub mod cgroup;

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use spillway_collector_common::{CgroupDrops, CgroupName, Config, MAX_RINGS, Settings};

pub use spillway_collector_common::{DropReason, InodeKey};

/// Why the eBPF object is missing, for `check_support` and `load`.
pub const NOT_BUILT: &str =
    "the eBPF program was not built into this binary: run `cargo xtask build-ebpf`, then rebuild";

/// The eBPF object, embedded by `build.rs` from
/// `target/ebpf/spillway-collector.bpf.o` when it exists.
fn object() -> Option<&'static [u8]> {
    #[cfg(spillway_bpf_object)]
    return Some(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/spillway-collector.bpf.o"
    )));
    #[cfg(not(spillway_bpf_object))]
    None
}

/// Whether eBPF capture can run here; the error says why not (for
/// `--source auto`, which logs it and falls back to Docker's logs).
///
/// Checks: the object is embedded; the process may load tracing programs
/// (root, or `CAP_BPF` + `CAP_PERFMON`); the kernel's BTF is readable.
/// (Whether the kernel has the `sys_exit` raw tracepoint shows when
/// [`Capture::load`] attaches to it.)
pub fn check_support() -> Result<(), String> {
    if object().is_none() {
        return Err(NOT_BUILT.into());
    }
    check_privileges()?;
    std::fs::File::open(btf::VMLINUX_BTF).map_err(|e| {
        format!(
            "cannot read the kernel's BTF at {}: {e} (needs a kernel built with CONFIG_DEBUG_INFO_BTF)",
            btf::VMLINUX_BTF
        )
    })?;
    Ok(())
}

/// Effective capabilities from `/proc/self/status`, falling back to euid.
fn check_privileges() -> Result<(), String> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    let ok = match cap_eff {
        Some(caps) => {
            let has = |c: u32| caps & (1 << c) != 0;
            has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
        }
        // SAFETY: geteuid has no preconditions.
        None => (unsafe { libc::geteuid() }) == 0,
    };
    if ok {
        return Ok(());
    }
    let missing: Vec<&str> = match cap_eff {
        Some(caps) => [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
            .into_iter()
            .filter(|(c, _)| caps & (1 << c) == 0)
            .map(|(_, name)| name)
            .collect(),
        None => Vec::new(),
    };
    Err(if missing.is_empty() {
        "eBPF capture needs root (CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON)".into()
    } else {
        format!(
            "eBPF capture needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); this process lacks {}",
            missing.join(" and ")
        )
    })
}

/// Why [`Capture`] could not load, or a map operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The eBPF object was not embedded at build time (see [`NOT_BUILT`]).
    NotBuilt,
    /// This host cannot run eBPF capture (privileges, BTF).
    Unsupported(String),
    /// Loading, verifying or attaching the program, a map operation, or an
    /// argument failed.
    Failed(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotBuilt => f.write_str(NOT_BUILT),
            Error::Unsupported(why) => write!(f, "eBPF capture is not supported here: {why}"),
            Error::Failed(why) => write!(f, "eBPF capture: {why}"),
        }
    }
}

impl std::error::Error for Error {}

/// Counts of what the kernel side could not deliver, summed over CPUs since
/// the program was loaded, by [`DropReason`]. All count syscalls (not
/// records or bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelDrops([u64; DropReason::ALL.len()]);

impl KernelDrops {
    /// Syscalls lost (wholly or in part) for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason as usize]
    }

    /// Syscalls whose data was lost, wholly or after the first byte, for
    /// any reason but truncation (whose beginning was captured).
    pub fn lost(&self) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|&&r| r != DropReason::Truncated)
            .map(|&r| self.get(r))
            .sum()
    }

    fn from_counts(counts: impl Fn(usize) -> u64) -> KernelDrops {
        KernelDrops(std::array::from_fn(counts))
    }
}

/// How the program and its rings are set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Rings, and loops that drain them (1..=256), normally one per CPU.
    pub loops: usize,
    /// Bytes of each ring: a power of two, at least a page.
    pub ring_bytes: u32,
}

impl Options {
    /// The default ring size: 8 MiB holds ~100 ms of the highest rate
    /// measured on a 2-core VM (~350k lines/s of 100 B, ~170 B per record
    /// with its headers, spread over the rings), see docs/benchmarks.md.
    pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

    /// The reader is woken when this many bytes wait unread: an eighth of
    /// the ring, at most 256 KiB (a few ms of data at full speed).
    fn wakeup_bytes(&self) -> u32 {
        (self.ring_bytes / 8).min(256 << 10)
    }

    fn check(&self) -> Result<(), String> {
        if self.loops == 0 || self.loops > MAX_RINGS as usize {
            return Err(format!("loops must be 1..={MAX_RINGS}, not {}", self.loops));
        }
        let page = page_size();
        if !self.ring_bytes.is_power_of_two() || (self.ring_bytes as usize) < page {
            return Err(format!(
                "the ring size must be a power of two of at least {page} bytes, not {}",
                self.ring_bytes
            ));
        }
        Ok(())
    }
}

fn page_size() -> usize {
    // SAFETY: no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// One piece of captured output: the whole data of a syscall, or a piece of
/// up to 16 KiB of it (`offset` > 0 for later pieces; each `writev` iovec
/// also starts a new piece).
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// When the syscall returned, ns since the Unix epoch.
    pub timestamp: i64,
    /// The writer's cgroup at the time of the write (the inode number of
    /// its cgroup directory, see [`cgroup::Hierarchy`]).
    pub cgroup: u64,
    /// The inode written to.
    pub key: InodeKey,
    /// The cookie it was registered with, or 0 when unclaimed (not
    /// registered; see the module docs).
    pub cookie: u32,
    /// The writing process (thread group id) in the host's pid namespace.
    pub tgid: u32,
    /// The fd written to.
    pub fd: u32,
    /// Position of `data` within what the syscall wrote.
    pub offset: u32,
    /// `data.len()`.
    pub len: u32,
    /// Bytes the syscall wrote; more than `offset + len` when further
    /// records follow, or when it was truncated or a record was lost.
    pub total: u32,
    pub data: &'a [u8],
}

/// Receives the records of one loop, on that loop's thread.
///
/// Runs inside the loop's `tokio-uring` runtime, so it may
/// `tokio_uring::spawn` tasks; `record` and `tick` must not block (the ring
/// fills up meanwhile).
pub trait Handler: 'static {
    /// One record, drained at `now`; `r.data` points into the ring and is
    /// only valid during the call.
    fn record(&mut self, r: &Record<'_>, now: Instant);
    /// Called after each drain round, and at least every 16 ms; `true`
    /// while work waits (a backlog), to be called again soon.
    fn tick(&mut self, now: Instant) -> bool;
    /// Whether to hand it another record now. While `false` (its output is
    /// full) the records wait in the ring, which is the buffer: when the
    /// ring is full the kernel drops new writes and counts them
    /// (`ring_full`), and the app is never blocked.
    fn ready_for_more(&self) -> bool {
        true
    }
}

/// `stat(path)` (following symlinks) as an [`InodeKey`], with the device in
/// the kernel's encoding. For a container's stdout, use
/// `/proc/<pid>/fd/1`.
pub fn inode_of(path: &Path) -> std::io::Result<InodeKey> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok(InodeKey::from_stat(m.ino(), m.dev()))
}

/// The loaded and attached capture programs and their maps.
///
/// Dropping the `Capture` stops the loops (within 16 ms, after a last
/// drain); the programs are detached when the last loop has ended (or at
/// once, if none were started). Share it with `Arc<Capture>` if needed.
pub struct Capture {
    shared: Arc<super::rings::LoopShared<Kernel>>,
    loops: usize,
}

// Shared across threads by the collector (e.g. in an `Arc`).
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Capture>();
};

/// What must stay alive while the loops run.
struct Kernel {
    /// Programs (and their links) and the maps we do not use directly.
    _bpf: Ebpf,
    maps: Mutex<Maps>,
    rings: Mutex<Option<Vec<RingBuf<MapData>>>>,
}

struct Maps {
    inodes: HashMap<MapData, InodeKey, u32>,
    ignored: HashMap<MapData, InodeKey, u8>,
    drops: PerCpuArray<MapData, u64>,
    cgroup_drops: PerCpuHashMap<MapData, u64, CgroupDrops>,
    cgroup_names: HashMap<MapData, u64, CgroupName>,
    settings: Array<MapData, Settings>,
}

/// The program and the raw tracepoint it runs at.
const PROGRAM: (&str, &str) = ("spill_sys_exit", "sys_exit");

impl Capture {
    /// Loads, verifies and attaches the programs, with `opts.loops` rings
    /// (and later loops) of `opts.ring_bytes` each.
    pub fn load(opts: Options) -> Result<Capture, Error> {
        let object = object().ok_or(Error::NotBuilt)?;
        check_support().map_err(Error::Unsupported)?;
        opts.check().map_err(Error::Failed)?;
        let loops = opts.loops;
        let started = Instant::now();
        let cfg = config(&opts).map_err(Error::Unsupported)?;
        raise_memlock_limit();
        let mut bpf = EbpfLoader::new()
            .override_global("CONFIG", &cfg, true)
            .map_max_entries("RINGS", loops as u32)
            .load(object)
            .map_err(|e| failed("loading the eBPF object", &e))?;
        let rings =
            super::rings::create(&mut bpf, loops as u32, opts.ring_bytes).map_err(Error::Failed)?;
        let (name, tracepoint) = PROGRAM;
        let prog: &mut RawTracePoint = bpf
            .program_mut(name)
            .ok_or_else(|| Error::Failed(format!("the eBPF object has no program {name}")))?
            .try_into()
            .map_err(|e| failed(name, &e))?;
        prog.load()
            .map_err(|e| failed(&format!("verifying {name}"), &e))?;
        prog.attach(tracepoint).map_err(|e| {
            failed(
                &format!("attaching {name} to raw tracepoint {tracepoint}"),
                &e,
            )
        })?;
        let verified = prog
            .info()
            .ok()
            .and_then(|i| i.verified_instruction_count())
            .unwrap_or(0);
        let maps = Maps {
            inodes: take_map(&mut bpf, "INODES")?,
            ignored: take_map(&mut bpf, "IGNORED")?,
            drops: take_map(&mut bpf, "DROPS")?,
            cgroup_drops: take_map(&mut bpf, "CGROUP_DROPS")?,
            cgroup_names: take_map(&mut bpf, "CGROUP_NAMES")?,
            settings: take_map(&mut bpf, "SETTINGS")?,
        };
        tracing::info!(
            "eBPF capture loaded in {:?}: {loops} rings of {} KiB; {verified} instructions verified",
            started.elapsed(),
            opts.ring_bytes >> 10,
        );
        release_freed_heap();
        Ok(Capture {
            shared: Arc::new(super::rings::LoopShared {
                stop: Default::default(),
                keep: Kernel {
                    _bpf: bpf,
                    maps: Mutex::new(maps),
                    rings: Mutex::new(Some(rings)),
                },
            }),
            loops,
        })
    }

    /// Number of rings, and of loops [`spawn_loops`](Self::spawn_loops) starts.
    pub fn loops(&self) -> usize {
        self.loops
    }

    /// Captures writes to `key` from now on, tagged with `cookie` (≠ 0).
    /// Registering again replaces the cookie.
    pub fn register(&self, key: InodeKey, cookie: u32) -> Result<(), Error> {
        if cookie == 0 {
            return Err(Error::Failed(
                "cookie 0 means unclaimed; register with a nonzero cookie".into(),
            ));
        }
        let mut maps = self.maps();
        // An inode registered now is container stdio after all.
        let _ = maps.ignored.remove(&key);
        maps.inodes
            .insert(key, cookie, 0)
            .map_err(|e| failed(&format!("registering {key:?}"), &e))
    }

    /// Stops capturing writes to `key` (no error if it was not registered).
    /// Unclaimed capture may then pick it up again; see [`ignore`](Self::ignore).
    pub fn unregister(&self, key: InodeKey) {
        let _ = self.maps().inodes.remove(&key);
    }

    /// Stops unclaimed capture of `key` (it is not container stdio). The set
    /// is an LRU: the least recently seen of the 16384 entries are evicted.
    pub fn ignore(&self, key: InodeKey) {
        if let Err(e) = self.maps().ignored.insert(key, 1, 0) {
            tracing::warn!("eBPF capture: cannot ignore {key:?}: {e}");
        }
    }

    /// What the kernel side could not deliver so far.
    pub fn kernel_drops(&self) -> KernelDrops {
        let maps = self.maps();
        KernelDrops::from_counts(|idx| match maps.drops.get(&(idx as u32), 0) {
            Ok(per_cpu) => per_cpu.iter().sum(),
            Err(e) => {
                tracing::warn!("eBPF capture: cannot read drop counter {idx}: {e}");
                0
            }
        })
    }

    /// What the kernel side could not deliver so far, per cgroup id (see
    /// [`Record::cgroup`]); only cgroups that lost something appear.
    pub fn kernel_drops_by_cgroup(&self) -> Vec<(u64, KernelDrops)> {
        let maps = self.maps();
        maps.cgroup_drops
            .iter()
            .filter_map(Result::ok)
            .map(|(cgroup, per_cpu)| {
                let sum = |idx: usize| per_cpu.iter().map(|d| d.counts[idx]).sum();
                (cgroup, KernelDrops::from_counts(sum))
            })
            .collect()
    }

    /// The name of cgroup `id`'s directory, if the program noted it (for
    /// cgroups that wrote unclaimed or lost writes).
    pub fn cgroup_name(&self, id: u64) -> Option<String> {
        let name = self.maps().cgroup_names.get(&id, 0).ok()?;
        Some(String::from_utf8_lossy(name.as_bytes()).into_owned())
    }

    /// Tells the program whether registered streams belong to processes in
    /// the host's pid namespace (`--pid host` containers): only then does
    /// it look at host processes' writes.
    pub fn set_host_streams(&self, any: bool) -> Result<(), Error> {
        let settings = Settings {
            host_streams: any as u32,
            _pad: 0,
        };
        self.maps()
            .settings
            .set(0, settings, 0)
            .map_err(|e| failed("updating SETTINGS", &e))
    }

    /// Starts one OS thread per ring, each running a `tokio-uring`
    /// runtime. Loop i drains ring i and hands each record to its own
    /// handler, made on the loop's thread (inside the runtime) by `make(i)`.
    /// The loops end after the `Capture` is dropped. Can be called once.
    pub fn spawn_loops<H: Handler, F: Fn(usize) -> H + Send + Sync + 'static>(
        &self,
        make: F,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let rings = self
            .shared
            .keep
            .rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| std::io::Error::other("the eBPF ring loops were already started"))?;
        super::rings::spawn(rings, self.shared.clone(), make)
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.shared
            .keep
            .maps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// The program's `Config`: offsets from BTF, the cgroup
/// hierarchy, and the rings.
fn config(opts: &Options) -> Result<Config, String> {
    let mut cfg = Config {
        nr_rings: opts.loops as u32,
        wakeup_bytes: opts.wakeup_bytes(),
        ..Config::ZERO
    };
    let kernel = btf::KernelBtf::load(Path::new(btf::VMLINUX_BTF))?;
    btf::kernel_offsets(&kernel, &mut cfg)?;
    let hierarchy = cgroup::detect(Path::new("/sys/fs/cgroup"))?;
    btf::cgroup_offsets(&kernel, &hierarchy, &mut cfg)?;
    tracing::debug!("eBPF capture: writers' cgroups from {hierarchy:?}");
    tracing::debug!("eBPF capture config: {cfg:?}");
    Ok(cfg)
}

/// Parsing the kernel's BTF (a few MiB, parsed into ~25 MiB of types)
/// leaves that much freed heap that glibc keeps; hand it back to the
/// kernel, or it stays in the collector's RSS for good.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Kernels before 5.11 charge BPF memory to `RLIMIT_MEMLOCK`; later ones
/// ignore it. Best effort.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

fn take_map<T>(bpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = bpf
        .take_map(name)
        .ok_or_else(|| Error::Failed(format!("the eBPF object has no map {name}")))?;
    T::try_from(map).map_err(|e| failed(&format!("map {name}"), &e))
}

/// An [`Error::Failed`] for `what`, keeping only the end of long messages
/// (verifier logs).
fn failed(what: &str, e: &dyn std::error::Error) -> Error {
    const KEEP: usize = 40;
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg = format!("{msg}: {s_msg}");
        }
        source = s.source();
    }
    let lines: Vec<&str> = msg.lines().collect();
    if lines.len() > KEEP {
        msg = format!(
            "{}\n[... {} lines ...]\n{}",
            lines[0],
            lines.len() - KEEP,
            lines[lines.len() - KEEP + 1..].join("\n")
        );
    }
    Error::Failed(format!("{what}: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_clear() {
        assert!(
            Error::NotBuilt
                .to_string()
                .contains("cargo xtask build-ebpf")
        );
        if object().is_none() {
            assert_eq!(check_support().unwrap_err(), NOT_BUILT);
            let opts = Options {
                loops: 1,
                ring_bytes: Options::DEFAULT_RING_BYTES,
            };
            assert_eq!(Capture::load(opts).err(), Some(Error::NotBuilt));
        }
    }

    #[test]
    fn inode_of_uses_the_kernel_dev_encoding() {
        let (r, _w) = std::io::pipe().unwrap();
        use std::os::fd::AsRawFd as _;
        let key = inode_of(Path::new(&format!("/proc/self/fd/{}", r.as_raw_fd()))).unwrap();
        let again = inode_of(Path::new(&format!("/dev/fd/{}", r.as_raw_fd()))).unwrap();
        assert_eq!(key, again);
        assert!(key.ino > 0);
    }
}
