//! The collector's eBPF program: captures what container processes write to
//! their stdout and stderr (pipes or ptys), by inode.
//!
//! # How it works
//!
//! One program, `spill_sys_exit`, on the `sys_exit` raw tracepoint: it runs
//! when any syscall of the machine returns, with the syscall's saved
//! registers (`struct pt_regs`) and its return value. It reads everything
//! a write needs at that moment, so no state is kept between entry and
//! exit:
//!
//! 1. `ret <= 0` (an error, or nothing written): return.
//! 2. A host process (see "Host writes"): return.
//! 3. The syscall number (`orig_ax`) is not write or writev, or it is a
//!    32-bit compat syscall: return.
//! 4. Walk `current->files->fdt->fd[fd]->f_inode` to the inode written to
//!    and look `{ino, dev}` up in `INODES` (registered by userspace, value =
//!    a nonzero cookie). A miss that is not *unclaimed* (below): return.
//! 5. Copy the `ret` bytes really written (partial writes exist), up to
//!    [`MAX_CAPTURE`], from the user buffer (still there: the thread has
//!    not returned to userspace) into records of at most [`CHUNK`] bytes,
//!    stamped with the writer's cgroup, into ring `ino % nr_rings`.
//!
//! A raw tracepoint rather than the `syscalls:sys_{enter,exit}_write(v)`
//! tracepoints: those run programs through the perf-event path, which on
//! the measured VM cost several times more per call than a raw
//! tracepoint's dispatch, and needed a second program at entry plus a map
//! entry per write in flight. Attaching at exit only halves the calls.
//! (kprobes, fentry/fexit and LSM programs are not available on the target
//! kernels; see docs/design/ebpf-capture.md.)
//!
//! # Host writes
//!
//! Every syscall exit on the machine runs this program, so the common case,
//! a process that is not in a container, must cost next to nothing. The
//! task is read through `bpf_get_current_task_btf()`, a BTF-typed pointer:
//! `task->thread_pid->level` are two plain loads the verifier checks
//! against the kernel's BTF (no `bpf_probe_read_kernel` calls), and a host
//! process (level 0) stops there. Processes of containers started with
//! `--pid host` are level 0 too: while userspace has registered such a
//! container's streams (`SETTINGS.host_streams`), level-0 writes take the
//! inode path like the others. Container processes' other syscalls pay one
//! `bpf_probe_read_kernel` of the syscall number.
//!
//! # The writer's cgroup
//!
//! Each record carries the id of the writer's cgroup (the inode number of
//! its cgroup directory): `task->cgroups->dfl_cgrp->kn->id` on cgroup v2,
//! or `task->cgroups->subsys[id]->cgroup->kn->id` for one v1 controller's
//! hierarchy. It names the container at the moment of the write, so a
//! container that exits before userspace learnt of it is still placed. For
//! writes whose inode is not registered, the program also stores the
//! cgroup directory's name (the container id, or `docker-<id>.scope`) in
//! `CGROUP_NAMES`, and counts what it must drop per cgroup in
//! `CGROUP_DROPS`.
//!
//! # Unclaimed capture
//!
//! A container's process starts writing as soon as it starts, before
//! userspace has learnt about the container and registered its inodes. To not
//! lose those first lines, a write to an unregistered inode is still
//! captured, with cookie 0, when all of these hold:
//!
//! 1. it goes through fd 1 or 2;
//! 2. the writer is in a non-initial pid namespace (`thread_pid->level > 0`),
//!    as every container process is (checked first of all, see "Host
//!    writes");
//! 3. the inode is a FIFO or a character device (pipe or pty; not a regular
//!    file or socket);
//! 4. the inode is not in `IGNORED`, an LRU map where userspace puts the
//!    inodes it saw unclaimed and decided are not a container's stdio.
//!
//! The check cannot start with the fd: a registered inode is captured through
//! any fd (after `dup2`, or `/dev/stdout` reopened), so the walk and the
//! `INODES` lookup come first.
//!
//! # Architectures
//!
//! The syscall numbers and the `pt_regs` members holding the number and
//! the arguments come from userspace (`Config`): `orig_ax`, `di`, `si`,
//! `dx` on x86_64; `syscallno`, `orig_x0` (the first argument's register
//! holds the return value by then), `regs[1]`, `regs[2]` on arm64.
//!
//! # Ring selection and ordering
//!
//! Records go to ring `ino % nr_rings`, not to the current CPU's ring: all
//! bytes written to one pipe or pty land in one ring, so the userspace loop
//! reading it sees each stream in order without re-sorting. A thread's
//! writes are in order; writes of different threads to the same pipe are
//! ordered by when their `sys_exit` ran, which can differ from the order in
//! the pipe only for writes that overlapped in time.
//!
//! # Wakeups
//!
//! Waking the reader for a record is an irq_work self-interrupt, a VM exit
//! on a virtual machine: a few µs. Records are therefore written with
//! `BPF_RB_NO_WAKEUP`, except the one record that makes the unread bytes
//! cross `Config::wakeup_bytes`: one wake-up per that many bytes at most,
//! however far behind the reader is. Userspace also drains every ring on a
//! short timer that adapts to the rate.
//!
//! # Losses
//!
//! Everything the program could not deliver is counted in the per-CPU `DROPS`
//! array and per cgroup in `CGROUP_DROPS`, by [`DropReason`].
//!
//! # Verifier notes
//!
//! - Kernel offsets come from the read-only `CONFIG` global (`.rodata`, set at
//!   load from BTF): the verifier sees them as constants, which
//!   is what lets it check the plain loads through BTF-typed pointers
//!   ([`field`]) against the kernel's struct layouts. A variable offset
//!   (`fd[fd]`) or a pointer the verifier cannot type goes through
//!   `bpf_probe_read_kernel` ([`read_kernel`]).
//! - The copy loop keeps its state in the per-CPU `SCRATCH` map value and
//!   reads and writes it with volatile accesses: values loaded from a map are
//!   unknown scalars, so the verifier's states at iteration boundaries are
//!   equal and get pruned (registers made it explore 300k to >1M insns).
//! - The chunk size is stored and reloaded right before the bound check, so
//!   LLVM cannot move the check away from the helper calls that use it.
#![no_std]
#![no_main]

use core::ffi::c_void;
use core::mem::{MaybeUninit, size_of};
use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_ringbuf_output,
        bpf_ringbuf_query,
    },
    macros::{btf_map, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray},
    programs::RawTracePointContext,
};
use spillway_collector_common::{
    CGROUP_NAME_BYTES, CGROUP_V1, CHUNK, CgroupDrops, CgroupName, Config, DropReason, EventHeader,
    HDR_SIZE, InodeKey, MAX_CAPTURE, MAX_IOV, MAX_RINGS, NR_DROPS, RING_TEMPLATE_BYTES, STDERR_FD,
    STDOUT_FD, Settings,
};

/// Offsets and ring count, set by userspace with `override_global("CONFIG")`.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZERO;

/// Registered inodes (a container's stdout/stderr pipe or pty) → cookie (≠ 0).
#[map]
static INODES: HashMap<InodeKey, u32> = HashMap::with_max_entries(16384, 0);

/// Inodes userspace decided are not container stdio: no unclaimed capture.
#[map]
static IGNORED: LruHashMap<InodeKey, u8> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU loss counters, indexed by [`DropReason`].
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_DROPS, 0);

/// Loss counters per cgroup (= per container), per CPU.
#[map]
static CGROUP_DROPS: LruPerCpuHashMap<u64, CgroupDrops> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Cgroup id → its directory's name, for cgroups that wrote unclaimed or
/// lost writes (see "The writer's cgroup"). An LRU: old cgroups make room.
#[map]
static CGROUP_NAMES: LruHashMap<u64, CgroupName> = LruHashMap::with_max_entries(4096, 0);

/// Switches set by userspace at run time (one entry).
#[map]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// Per-CPU staging area for one record plus the copy loop's state.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const RING_SIZE: usize = RING_TEMPLATE_BYTES as usize;

/// The ring buffers; userspace creates `nr_rings` of them and inserts them.
#[btf_map]
static RINGS: ArrayOfMaps<RingBuf<u8, RING_SIZE>, { MAX_RINGS as usize }> = ArrayOfMaps::new();

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// The ring's own header before each record (`BPF_RINGBUF_HDR_SZ`).
const RINGBUF_HDR: u64 = 8;

const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const S_IFCHR: u16 = 0o020000;

/// State of the copy loop; see "Verifier notes" above.
#[repr(C)]
struct LoopState {
    /// User address of the next byte to copy.
    src: u64,
    /// Bytes left in the current buffer or iovec.
    left: u64,
    /// Bytes left to capture from this syscall.
    budget: u64,
    /// Next iovec to load (writev).
    iov_idx: u64,
    /// Nonzero once a record could not be read or delivered.
    failed: u64,
}

#[repr(C)]
struct Scratch {
    st: LoopState,
    /// Where a cgroup's name is read before it goes into `CGROUP_NAMES`.
    name: CgroupName,
    /// An [`EventHeader`] followed by up to [`CHUNK`] data bytes (u64 for
    /// alignment).
    rec: [u64; (HDR_SIZE + CHUNK) / 8],
}

#[repr(C)]
struct IoVec {
    base: u64,
    len: u64,
}

/// One field of `CONFIG`, e.g. `conf!(task_files)`: a load from the
/// read-only map, which the verifier knows as a constant. (Copying the
/// whole struct would go through the stack, where 4-byte fields lose
/// that.)
macro_rules! conf {
    ($field:ident) => {
        // SAFETY: CONFIG is a plain static; the volatile read stops the
        // compiler from folding the zeros it was compiled with.
        unsafe { read_volatile(&raw const CONFIG.$field) }
    };
}

/// Counts a write lost for `reason`, in total and for its cgroup.
#[inline(always)]
fn count_drop(reason: DropReason, cgroup: u64) {
    let idx = reason as u32;
    if let Some(counter) = DROPS.get_ptr_mut(idx) {
        // SAFETY: a per-CPU value; programs don't migrate CPUs while running.
        unsafe { *counter += 1 };
    }
    let per_cgroup = match CGROUP_DROPS.get_ptr_mut(cgroup) {
        Some(p) => p,
        None => {
            let _ = CGROUP_DROPS.insert(cgroup, CgroupDrops::default(), 0);
            match CGROUP_DROPS.get_ptr_mut(cgroup) {
                Some(p) => p,
                None => return,
            }
        }
    };
    if (idx as usize) < NR_DROPS as usize {
        // SAFETY: this CPU's value; the index is checked.
        unsafe { (*per_cgroup).counts[idx as usize] += 1 };
    }
}

/// The current task as a BTF-typed pointer (loads through it are checked
/// by the verifier against the kernel's BTF, and cost a plain load).
#[inline(always)]
fn current_task() -> *const u8 {
    // SAFETY: no preconditions.
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// The `T` at offset `off` of the BTF-typed kernel object at `base` (a
/// pointer from [`current_task`] or from an earlier `field`): a plain load,
/// which the verifier turns into a fault-safe one (a NULL `base` reads 0).
/// `off` must be a constant from `CONFIG`.
#[inline(always)]
fn field<T: Copy>(base: *const u8, off: u32) -> T {
    // SAFETY: see above; the verifier rejects the program otherwise.
    unsafe { core::ptr::read(base.wrapping_add(off as usize).cast::<T>()) }
}

/// Whether the current task is a host process (initial pid namespace)
/// whose writes cannot be a registered container's: see "Host writes".
#[inline(always)]
fn is_host_write(task: *const u8) -> bool {
    let pid: *const u8 = field(task, conf!(task_thread_pid));
    let level: u32 = field(pid, conf!(pid_level));
    // SAFETY: a valid map value pointer, read right away.
    level == 0
        && SETTINGS
            .get_ptr(0)
            .is_none_or(|s| unsafe { (*s).host_streams } == 0)
}

/// The writer's cgroup id and its `kernfs_node`; see "The writer's cgroup".
#[inline(always)]
fn cgroup_of(task: *const u8) -> (u64, *const u8) {
    let cset: *const u8 = field(task, conf!(task_cgroups));
    let mut cgroup: *const u8 = field(cset, conf!(css_set_cgroup));
    if conf!(cgroup_mode) == CGROUP_V1 {
        cgroup = field(cgroup, conf!(css_cgroup));
    }
    let kn: *const u8 = field(cgroup, conf!(cgroup_kn));
    (field(kn, conf!(kn_id)), kn)
}

/// Stores the name of cgroup `id` in `CGROUP_NAMES` unless it is there.
#[inline(always)]
fn remember_cgroup_name(id: u64, kn: *const u8) {
    if CGROUP_NAMES.get_ptr(id).is_some() {
        return;
    }
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let name: u64 = field(kn, conf!(kn_name));
    // SAFETY: `s` is this CPU's SCRATCH value; the helper checks the
    // kernel address and writes at most CGROUP_NAME_BYTES bytes.
    unsafe {
        let dst = &raw mut (*s).name;
        (*dst).name[0] = 0;
        bpf_probe_read_kernel_str(
            (*dst).name.as_mut_ptr().cast(),
            CGROUP_NAME_BYTES as u32,
            name as *const c_void,
        );
        let _ = CGROUP_NAMES.insert(id, *dst, 0);
    }
}

/// Reads a `T` at kernel address `base + off`.
#[inline(always)]
fn read_kernel<T>(base: u64, off: u32) -> Option<T> {
    let mut v = MaybeUninit::<T>::uninit();
    // SAFETY: bpf_probe_read_kernel checks the address and fills `v` or fails.
    let r = unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            size_of::<T>() as u32,
            (base + off as u64) as *const c_void,
        )
    };
    // SAFETY: r == 0 means all size_of::<T>() bytes were written.
    (r == 0).then(|| unsafe { v.assume_init() })
}

/// `task->files->fdt->fd[fd]->f_inode`: the inode's address and its key.
#[inline(always)]
fn inode_of_fd(task: *const u8, fd: u64) -> Option<(u64, InodeKey)> {
    let files: *const u8 = field(task, conf!(task_files));
    let fdt: *const u8 = field(files, conf!(files_fdt));
    let max_fds: u32 = field(fdt, conf!(fdt_max_fds));
    if fd >= max_fds as u64 {
        return None;
    }
    // `struct file **`: a pointer to pointers, which the verifier does not
    // type; the rest of the walk reads through bpf_probe_read_kernel.
    let fd_array: u64 = field(fdt, conf!(fdt_fd));
    let file: u64 = read_kernel(fd_array + fd * 8, 0)?;
    if file == 0 {
        return None;
    }
    let inode: u64 = read_kernel(file, conf!(file_f_inode))?;
    let ino: u64 = read_kernel(inode, conf!(inode_i_ino))?;
    let sb: u64 = read_kernel(inode, conf!(inode_i_sb))?;
    let dev: u32 = read_kernel(sb, conf!(sb_s_dev))?;
    Some((inode, InodeKey::new(ino, dev)))
}

/// Whether a write to an unregistered inode is captured with cookie 0; see
/// "Unclaimed capture" above.
#[inline(always)]
fn is_unclaimed(task: *const u8, fd: u64, inode: u64, key: &InodeKey) -> bool {
    if fd != STDOUT_FD as u64 && fd != STDERR_FD as u64 {
        return false;
    }
    let pid: *const u8 = field(task, conf!(task_thread_pid));
    let level: u32 = field(pid, conf!(pid_level));
    if level == 0 {
        return false;
    }
    let Some(mode) = read_kernel::<u16>(inode, conf!(inode_i_mode)) else {
        return false;
    };
    let kind = mode & S_IFMT;
    if kind != S_IFIFO && kind != S_IFCHR {
        return false;
    }
    IGNORED.get_ptr(key).is_none()
}

/// Volatile read of a loop state field (see "Verifier notes").
macro_rules! vr {
    ($e:expr) => {
        unsafe { read_volatile(&raw const $e) }
    };
}

/// Volatile write of a loop state field (see "Verifier notes").
macro_rules! vw {
    ($e:expr, $v:expr) => {
        unsafe { write_volatile(&raw mut $e, $v) }
    };
}

/// Copies the syscall's data into records, at most `STEPS` loop iterations
/// (each loads an iovec or emits one record). `iov_base`/`iov_cnt` describe
/// the iovec array for writev; for write, `st.left` is preset instead.
#[inline(always)]
fn copy_out<const STEPS: usize>(
    ring: &RingBuf<u8, RING_SIZE>,
    s: *mut Scratch,
    iov_base: u64,
    iov_cnt: u64,
    wakeup_bytes: u64,
    cgroup: u64,
) {
    // SAFETY: `s` is this CPU's SCRATCH value, valid for the whole program.
    let st = unsafe { &mut (*s).st };
    let rec = unsafe { (*s).rec.as_mut_ptr() }.cast::<u8>();
    let hdr = rec.cast::<EventHeader>();
    let ring = (ring as *const RingBuf<u8, RING_SIZE>)
        .cast_mut()
        .cast::<c_void>();
    for _ in 0..STEPS {
        let budget = vr!(st.budget);
        if budget == 0 {
            break;
        }
        let left = vr!(st.left);
        if left == 0 {
            // writev: move to the next iovec.
            let idx = vr!(st.iov_idx);
            if idx >= iov_cnt || idx >= MAX_IOV as u64 {
                break;
            }
            let mut iov = IoVec { base: 0, len: 0 };
            // SAFETY: bpf_probe_read_user checks the address.
            let r = unsafe {
                bpf_probe_read_user(
                    (&raw mut iov).cast(),
                    size_of::<IoVec>() as u32,
                    (iov_base + idx * size_of::<IoVec>() as u64) as *const c_void,
                )
            };
            if r < 0 {
                count_drop(DropReason::ReadFault, cgroup);
                vw!(st.failed, 1);
                break;
            }
            vw!(st.iov_idx, idx + 1);
            vw!(st.src, iov.base);
            vw!(st.left, iov.len);
            continue;
        }
        let mut n = if left < budget { left } else { budget };
        if n > CHUNK as u64 {
            n = CHUNK as u64;
        }
        // Store and reload so the bound check below stays next to its use.
        vw!(st.left, n);
        let n = vr!(st.left);
        if n > CHUNK as u64 {
            break;
        }
        let src = vr!(st.src);
        // SAFETY: rec has room for HDR_SIZE + CHUNK bytes and n <= CHUNK;
        // the helpers check the user address and the ring.
        unsafe { (*hdr).len = n as u32 };
        let r = unsafe {
            bpf_probe_read_user(rec.add(HDR_SIZE).cast(), n as u32, src as *const c_void)
        };
        if r < 0 {
            count_drop(DropReason::ReadFault, cgroup);
            vw!(st.failed, 1);
            break;
        }
        // Wake the reader only if this record crosses the threshold (see
        // "Wakeups"); the ring rounds records up to 8 bytes.
        let size = HDR_SIZE as u64 + n;
        let unread = unsafe { bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) };
        let after = unread + RINGBUF_HDR + ((size + 7) & !7);
        let flags = if unread < wakeup_bytes && after >= wakeup_bytes {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
        if unsafe { bpf_ringbuf_output(ring, rec.cast(), size, flags) } < 0 {
            count_drop(DropReason::RingFull, cgroup);
            vw!(st.failed, 1);
            break;
        }
        unsafe { (*hdr).offset += n as u32 };
        vw!(st.src, src + n);
        vw!(st.left, left - n);
        vw!(st.budget, budget - n);
    }
}

/// Every syscall exit of the machine: `arg(0)` is the `struct pt_regs *`
/// of the syscall, `arg(1)` its return value. See "How it works".
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn spill_sys_exit(ctx: RawTracePointContext) -> i32 {
    let _ = on_exit(&ctx);
    0
}

#[inline(always)]
fn on_exit(ctx: &RawTracePointContext) -> Option<()> {
    // Errors and empty writes carry no data; failing syscalls stop here.
    let ret: i64 = ctx.arg(1);
    if ret <= 0 {
        return None;
    }
    let task = current_task();
    if is_host_write(task) {
        return None;
    }
    let regs: u64 = ctx.arg(0);
    let nr = read_kernel::<u32>(regs, conf!(regs_nr))?;
    let is_vec = if nr == conf!(nr_write) {
        false
    } else if nr == conf!(nr_writev) {
        true
    } else {
        return None;
    };
    if is_compat_syscall(task) {
        return None;
    }
    // `unsigned int fd` in a 64-bit register.
    let fd = read_kernel::<u64>(regs, conf!(regs_arg0))? & 0xffff_ffff;
    let (inode, key) = inode_of_fd(task, fd)?;
    let cookie = match INODES.get_ptr(key) {
        // SAFETY: a valid map value pointer, read right away.
        Some(cookie) => unsafe { *cookie },
        None if is_unclaimed(task, fd, inode, &key) => 0,
        None => return None,
    };
    // write: the buffer; writev: the iovec array and its length.
    let buf = read_kernel::<u64>(regs, conf!(regs_arg1))?;
    let count = if is_vec {
        read_kernel::<u64>(regs, conf!(regs_arg2))?
    } else {
        0
    };
    let nr_rings = conf!(nr_rings) as u64;
    let ring = if nr_rings == 0 {
        None
    } else {
        RINGS.get((key.ino % nr_rings) as u32)
    };
    let (cgroup, kn) = cgroup_of(task);
    if cookie == 0 {
        // Unclaimed: userspace places it by its cgroup's name.
        remember_cgroup_name(cgroup, kn);
    }
    let Some(ring) = ring else {
        count_drop(DropReason::NoRing, cgroup);
        remember_cgroup_name(cgroup, kn);
        return None;
    };
    let s = SCRATCH.get_ptr_mut(0)?;
    let budget = if ret as u64 > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        ret as u64
    };
    // SAFETY: no preconditions.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    // SAFETY: `s` is this CPU's SCRATCH value; the header is 8-byte aligned.
    unsafe {
        core::ptr::write(
            (*s).rec.as_mut_ptr().cast::<EventHeader>(),
            EventHeader {
                boot_ns: bpf_ktime_get_boot_ns(),
                cgroup,
                key,
                cookie,
                tgid,
                fd: fd as u32,
                offset: 0,
                len: 0,
                total: ret as u32,
            },
        );
        (*s).st = LoopState {
            src: buf,
            left: if is_vec { 0 } else { budget },
            budget,
            iov_idx: 0,
            failed: 0,
        };
    }
    if is_vec {
        // ≤ MAX_IOV iovec loads, and ≤ MAX_IOV + MAX_CAPTURE/CHUNK records.
        copy_out::<{ 2 * MAX_IOV + MAX_CAPTURE / CHUNK }>(
            ring,
            s,
            buf,
            count,
            conf!(wakeup_bytes) as u64,
            cgroup,
        );
    } else {
        copy_out::<{ MAX_CAPTURE / CHUNK }>(ring, s, 0, 0, conf!(wakeup_bytes) as u64, cgroup);
    }
    let (left, failed) = (vr!((*s).st.budget), vr!((*s).st.failed));
    if ret as u64 > MAX_CAPTURE as u64 || (left > 0 && failed == 0) {
        count_drop(DropReason::Truncated, cgroup);
        remember_cgroup_name(cgroup, kn);
    } else if failed != 0 {
        // Counted by copy_out; the name lets userspace say whose it was.
        remember_cgroup_name(cgroup, kn);
    }
    Some(())
}

/// Whether the current syscall is a 32-bit compat one (other numbers and
/// registers); see `Config::compat_mask`.
#[inline(always)]
fn is_compat_syscall(task: *const u8) -> bool {
    let mask = conf!(compat_mask);
    mask != 0 && field::<u32>(task, conf!(task_compat)) & mask != 0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// `bpf_probe_read_*` and `bpf_get_current_task` are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
