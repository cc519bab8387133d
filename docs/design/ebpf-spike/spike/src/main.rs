mod btf;

use std::{
    io::Read,
    os::fd::{AsRawFd, OwnedFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    EbpfLoader,
    maps::{ArrayOfMaps, HashMap, Map, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};
use spike_common::*;

const RING_BYTES: u32 = 1 << 20;
/// The eBPF side wakes us only above a fill threshold, so also poll on a short timer.
const POLL_MS: i32 = 10;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

fn build_config(nr_rings: u32) -> Result<Config> {
    let t = Instant::now();
    let b = btf::KernelBtf::load()?;
    let t_parse = t.elapsed();
    let c = Config {
        task_files: b.member_offset("task_struct", "files")?,
        files_fdt: b.member_offset("files_struct", "fdt")?,
        fdt_max_fds: b.member_offset("fdtable", "max_fds")?,
        fdt_fd: b.member_offset("fdtable", "fd")?,
        file_f_inode: b.member_offset("file", "f_inode")?,
        inode_i_ino: b.member_offset("inode", "i_ino")?,
        inode_i_sb: b.member_offset("inode", "i_sb")?,
        sb_s_dev: b.member_offset("super_block", "s_dev")?,
        tp_write_fd: btf::tp_field_offset("syscalls", "sys_enter_write", "fd")?,
        tp_write_buf: btf::tp_field_offset("syscalls", "sys_enter_write", "buf")?,
        tp_write_count: btf::tp_field_offset("syscalls", "sys_enter_write", "count")?,
        tp_writev_fd: btf::tp_field_offset("syscalls", "sys_enter_writev", "fd")?,
        tp_writev_vec: btf::tp_field_offset("syscalls", "sys_enter_writev", "vec")?,
        tp_writev_vlen: btf::tp_field_offset("syscalls", "sys_enter_writev", "vlen")?,
        tp_exit_ret: {
            let a = btf::tp_field_offset("syscalls", "sys_exit_write", "ret")?;
            let b2 = btf::tp_field_offset("syscalls", "sys_exit_writev", "ret")?;
            anyhow::ensure!(a == b2, "exit ret offsets differ");
            a
        },
        nr_rings,
    };
    eprintln!("BTF parse {:?}, total {:?}; config = {c:?}", t_parse, t.elapsed());
    Ok(c)
}

/// userspace st_dev (new_encode_dev) -> kernel-internal dev_t (MKDEV: major<<20 | minor)
fn kdev(st_dev: u64) -> u32 {
    let major = libc::major(st_dev) as u32;
    let minor = libc::minor(st_dev) as u32;
    (major << 20) | minor
}

fn inode_key_of(path: &str) -> Result<InodeKey> {
    let st = std::fs::metadata(path).with_context(|| format!("stat {path}"))?;
    use std::os::unix::fs::MetadataExt;
    Ok(InodeKey { ino: st.ino(), dev: kdev(st.dev()), _pad: 0 })
}

fn clock_ns(clk: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(clk, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// realtime - boottime, to turn bpf_ktime_get_boot_ns() into wall clock.
fn boot_to_wall_offset() -> i128 {
    // bracket the realtime read to minimise error
    let b1 = clock_ns(libc::CLOCK_BOOTTIME);
    let r = clock_ns(libc::CLOCK_REALTIME);
    let b2 = clock_ns(libc::CLOCK_BOOTTIME);
    r - (b1 + b2) / 2
}

fn fmt_wall(ns: i128) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = (ns % 1_000_000_000) as i64;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::gmtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nanos
    )
}

pub struct Rings {
    pub rings: Vec<RingBuf<MapData>>,
    pub wall_off: i128,
    pub records: u64,
    pub bytes: u64,
    pub quiet: bool,
}

impl Rings {
    pub fn drain(&mut self, i: usize) {
        while let Some(item) = self.rings[i].next() {
            let hdr: EventHeader = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const EventHeader) };
            let data = &item[HDR_SIZE..HDR_SIZE + hdr.len as usize];
            self.records += 1;
            self.bytes += hdr.len as u64;
            if !self.quiet {
                let shown: String = String::from_utf8_lossy(&data[..data.len().min(60)]).escape_debug().collect();
                println!(
                    "[cap cpu{i}] {} tgid={} tid={} stream={} fd={} ino={} off={} len={} total={} data=\"{}{}\"",
                    fmt_wall(hdr.boot_ns as i128 + self.wall_off),
                    hdr.tgid, hdr.tid, hdr.stream, hdr.fd, hdr.ino, hdr.offset, hdr.len, hdr.total,
                    shown, if data.len() > 60 { "..." } else { "" }
                );
            }
        }
    }
    pub fn drain_all(&mut self) {
        for i in 0..self.rings.len() {
            self.drain(i);
        }
    }
}

/// Plain poll(2) over all ring fds.
fn poll_loop(rings: &mut Rings, until: impl Fn() -> bool) {
    loop {
        let mut fds: Vec<libc::pollfd> = rings
            .rings
            .iter()
            .map(|r| libc::pollfd { fd: r.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, POLL_MS) };
        if n > 0 {
            for (i, f) in fds.iter().enumerate() {
                if f.revents & libc::POLLIN != 0 {
                    rings.drain(i);
                }
            }
        }
        if until() {
            rings.drain_all();
            return;
        }
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let obj = args.get(1).cloned().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../spike-ebpf/target/bpfel-unknown-none/release/spike").into()
    });
    let mode = args.get(2).cloned().unwrap_or_else(|| "demo".into());

    if mode == "bench-base" {
        bench_nomatch();
        return Ok(());
    }
    let ncpu = aya::util::nr_cpus().map_err(|(p, e)| anyhow::anyhow!("{p}: {e}"))? as u32;
    let cfg = build_config(ncpu)?;

    let t = Instant::now();
    let mut bpf = EbpfLoader::new()
        .override_global("CONFIG", &cfg, true)
        .map_max_entries("RINGS", ncpu)
        .load_file(&obj)
        .context("load ebpf object")?;
    eprintln!("object loaded (maps created) in {:?}", t.elapsed());

    // One ring buffer per possible CPU, inserted into the ARRAY_OF_MAPS.
    let mut rings = Vec::new();
    {
        let mut outer: ArrayOfMaps<&mut MapData, MapData> =
            ArrayOfMaps::try_from(bpf.map_mut("RINGS").context("RINGS")?)?;
        for cpu in 0..ncpu {
            let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF, 0, 0, RING_BYTES, 0);
            let md = MapData::create(def, &format!("spill_rb{cpu}"), None)?;
            outer.set(cpu, &md, 0)?;
            rings.push(RingBuf::try_from(Map::from_map_data(md)?)?);
        }
    }

    for (prog, tp) in [
        ("spill_enter_write", "sys_enter_write"),
        ("spill_enter_writev", "sys_enter_writev"),
        ("spill_exit_write", "sys_exit_write"),
        ("spill_exit_writev", "sys_exit_writev"),
    ] {
        if let Ok(only) = std::env::var("SPIKE_ONLY") {
            if !only.split(',').any(|o| o == prog) {
                continue;
            }
        }
        let t = Instant::now();
        let p: &mut TracePoint = bpf.program_mut(prog).context(prog)?.try_into()?;
        p.load().with_context(|| format!("verifier: {prog}"))?;
        p.attach("syscalls", tp)?;
        let info = p.info()?;
        eprintln!(
            "{prog}: loaded+attached in {:?}; xlated {:?} B, verified insns {:?}",
            t.elapsed(), info.size_translated(), info.verified_instruction_count()
        );
    }

    let mut rings = Rings { rings, wall_off: boot_to_wall_offset(), records: 0, bytes: 0, quiet: mode.starts_with("bench") };

    let _stats = if mode.starts_with("bench") { Some(aya::sys::enable_stats(aya::sys::Stats::RunTime)?) } else { None };
    match mode.as_str() {
        "demo" | "demo-uring" => demo(&mut bpf, &mut rings, mode == "demo-uring")?,
        "bench-nomatch" => bench_nomatch(),
        "bench-match" => bench_match(&mut bpf, &mut rings)?,
        m => anyhow::bail!("unknown mode {m}"),
    }

    if _stats.is_some() {
        for (name, prog) in bpf.programs() {
            if let Ok(info) = prog.info() {
                let (t, c) = (info.run_time(), info.run_count());
                if c > 0 {
                    eprintln!("  {name}: run_count={c} avg={:.0} ns/run (bpf_stats)", t.as_nanos() as f64 / c as f64);
                }
            }
        }
    }
    let drops: PerCpuArray<_, u64> = PerCpuArray::try_from(bpf.map("DROPS").context("DROPS")?)?;
    let mut sums = [0u64; NR_DROPS as usize];
    for i in 0..NR_DROPS {
        sums[i as usize] = drops.get(&i, 0)?.iter().sum();
    }
    eprintln!(
        "records={} bytes={} drops: ring_full={} read_fault={} no_ring={} pending_full={} truncated={}",
        rings.records, rings.bytes, sums[0], sums[1], sums[2], sums[3], sums[4]
    );
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = std::io::pipe()?;
    Ok((r.into(), w.into()))
}

fn demo(bpf: &mut aya::Ebpf, rings: &mut Rings, uring: bool) -> Result<()> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let script = r#"sleep 1; echo hello; echo world >&2; ln -sf /dev/stdout /tmp/spike-x; echo via-symlink > /tmp/spike-x;
echo NOT-CAPTURED-regular-file > /tmp/spike-regular.txt;
python3 -c 'import os; os.writev(1, [b"wr", b"itev-", b"works\n"]); os.write(2, b"Y" * 70000)'"#;
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w))
        .spawn()?;
    let pid = child.id();
    // Register like the collector would: stat /proc/<pid>/fd/{1,2} of the container's init.
    {
        let mut inodes: HashMap<_, InodeKey, u32> = HashMap::try_from(bpf.map_mut("INODES").context("INODES")?)?;
        for (fd, stream) in [(1, 1u32), (2, 2u32)] {
            let key = inode_key_of(&format!("/proc/{pid}/fd/{fd}"))?;
            eprintln!("registered /proc/{pid}/fd/{fd}: {key:?} (stream {stream})");
            inodes.insert(key, stream, 0)?;
        }
    }
    // Drain the pipes like a container runtime would (otherwise writers block).
    let mut readers = Vec::new();
    for (name, r) in [("stdout", out_r), ("stderr", err_r)] {
        readers.push(std::thread::spawn(move || {
            let mut f = std::fs::File::from(r);
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).ok();
            eprintln!("[pipe {name}] {} bytes received by the pipe reader", buf.len());
        }));
    }
    let done = std::sync::atomic::AtomicBool::new(false);
    let status = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let st = child.wait();
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            st
        });
        if uring {
            uring_loop(rings, || done.load(std::sync::atomic::Ordering::SeqCst)).unwrap();
        } else {
            poll_loop(rings, || done.load(std::sync::atomic::Ordering::SeqCst));
        }
        h.join().unwrap()
    })?;
    for r in readers {
        r.join().unwrap();
    }
    eprintln!("child exited: {status}; regular file contains: {:?}", std::fs::read_to_string("/tmp/spike-regular.txt")?);
    Ok(())
}

/// tokio-uring 0.5 has no poll op, but its public UnsubmittedOneshot lets us submit a raw
/// IORING_OP_POLL_ADD SQE (io-uring 0.6 types, the version tokio-uring links).
struct PollIn;
impl tokio_uring::OneshotOutputTransform for PollIn {
    type Output = std::io::Result<u32>;
    type StoredData = ();
    fn transform_oneshot_output(self, _: (), cqe: io_uring::cqueue::Entry) -> Self::Output {
        if cqe.result() < 0 {
            Err(std::io::Error::from_raw_os_error(-cqe.result()))
        } else {
            Ok(cqe.result() as u32)
        }
    }
}

async fn uring_poll_in(fd: std::os::fd::RawFd) -> std::io::Result<u32> {
    let sqe = io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32).build();
    tokio_uring::UnsubmittedOneshot::new((), PollIn, sqe).submit().await
}

fn uring_loop(rings: &mut Rings, until: impl Fn() -> bool) -> Result<()> {
    use std::{cell::RefCell, rc::Rc};
    let taken = Rings { rings: std::mem::take(&mut rings.rings), wall_off: rings.wall_off, records: 0, bytes: 0, quiet: rings.quiet };
    let shared = Rc::new(RefCell::new(taken));
    let wakeups = Rc::new(std::cell::Cell::new(0u64));
    tokio_uring::start(async {
        for i in 0..shared.borrow().rings.len() {
            let sh = shared.clone();
            let wk = wakeups.clone();
            let fd = sh.borrow().rings[i].as_raw_fd();
            tokio_uring::spawn(async move {
                loop {
                    match uring_poll_in(fd).await {
                        Ok(_) => {
                            wk.set(wk.get() + 1);
                            sh.borrow_mut().drain(i);
                        }
                        Err(e) => {
                            eprintln!("uring poll ring {i}: {e}");
                            return;
                        }
                    }
                }
            });
        }
        // eBPF wakes us only above a fill threshold: drain on a timer too.
        while !until() {
            tokio::time::sleep(Duration::from_millis(POLL_MS as u64)).await;
            shared.borrow_mut().drain_all();
        }
        shared.borrow_mut().drain_all();
    });
    let sh = shared.borrow();
    eprintln!("io_uring POLL_ADD wakeups: {}", wakeups.get());
    rings.records += sh.records;
    rings.bytes += sh.bytes;
    Ok(())
}

fn bench_nomatch() {
    // 1M write(2) syscalls to /dev/null that don't match: measures the per-write filter cost.
    let f = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
    let buf = [b'x'; 64];
    let n = 1_000_000;
    let t = Instant::now();
    for _ in 0..n {
        unsafe { libc::write(f.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    }
    let el = t.elapsed();
    eprintln!("bench-nomatch: {n} writes in {el:?} = {:.0} ns/write", el.as_nanos() as f64 / n as f64);
}

fn bench_match(bpf: &mut aya::Ebpf, rings: &mut Rings) -> Result<()> {
    let (r, w) = pipe()?;
    use std::os::unix::fs::MetadataExt;
    let st = std::fs::File::from(w.try_clone()?).metadata()?;
    let key = InodeKey { ino: st.ino(), dev: kdev(st.dev()), _pad: 0 };
    let mut inodes: HashMap<_, InodeKey, u32> = HashMap::try_from(bpf.map_mut("INODES").context("INODES")?)?;
    inodes.insert(key, 9, 0)?;
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(r);
        let mut buf = vec![0u8; 1 << 16];
        let mut tot = 0u64;
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 { break; }
            tot += n as u64;
        }
        tot
    });
    let n = 200_000u64;
    let line = [b'l'; 100];
    let done = std::sync::atomic::AtomicBool::new(false);
    let el = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let t = Instant::now();
            for _ in 0..n {
                unsafe { libc::write(w.as_raw_fd(), line.as_ptr().cast(), line.len()) };
            }
            let el = t.elapsed();
            drop(w);
            std::thread::sleep(Duration::from_millis(200));
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            el
        });
        poll_loop(rings, || done.load(std::sync::atomic::Ordering::SeqCst));
        h.join().unwrap()
    });
    let tot = reader.join().unwrap();
    eprintln!(
        "bench-match: {n} x 100B writes in {el:?} = {:.0} ns/write; pipe reader got {tot} B; captured {} records {} B",
        el.as_nanos() as f64 / n as f64, rings.records, rings.bytes
    );
    Ok(())
}
