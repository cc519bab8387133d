//! The collector's eBPF program: captures what container processes write to
//! their stdout and stderr (pipes or ptys), by inode.
//!
//! # How it works
//!
//! Four tracepoint programs:
//!
//! - `sys_enter_write(v)`: walk `current->files->fdt->fd[fd]->f_inode` to the
//!   inode written to and look `{ino, dev}` up in `INODES` (registered by
//!   userspace, value = a nonzero cookie). On a hit, or when the write
//!   qualifies as *unclaimed* (below), remember the buffer in `PENDING`,
//!   keyed by thread.
//! - `sys_exit_write(v)`: take the `PENDING` entry, read the return value
//!   (bytes really written: partial writes exist, errors write nothing), copy
//!   up to [`MAX_CAPTURE`] bytes from the user buffer into records of at most
//!   [`CHUNK`] bytes, and put them in ring `ino % nr_rings`.
//!
//! # Unclaimed capture
//!
//! A container's process starts writing as soon as it starts, before
//! userspace has learnt about the container and registered its inodes. To not
//! lose those first lines, a write to an unregistered inode is still
//! captured, with cookie 0, when all of these hold (cheapest check first;
//! host processes stop at the pid namespace level, two reads after the
//! `INODES` miss):
//!
//! 1. it goes through fd 1 or 2;
//! 2. the writer is in a non-initial pid namespace (`thread_pid->level > 0`),
//!    as every container process is;
//! 3. the inode is a FIFO or a character device (pipe or pty; not a regular
//!    file or socket);
//! 4. the inode is not in `IGNORED`, an LRU map where userspace puts the
//!    inodes it saw unclaimed and decided are not a container's stdio.
//!
//! The check cannot start with the fd: a registered inode is captured through
//! any fd (after `dup2`, or `/dev/stdout` reopened), so the walk and the
//! `INODES` lookup come first.
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
//! Waking the reader for every record costs ~4 µs per write (irq_work plus a
//! context switch). Records are therefore written with `BPF_RB_NO_WAKEUP`,
//! unless more than 1/8 of the ring is filled, and userspace drains every
//! ring on a 10 ms timer anyway. Latency at low rates is thus up to 10 ms.
//!
//! # Losses
//!
//! Everything the program could not deliver is counted in the per-CPU `DROPS`
//! array; see the `DROP_*` constants in `spillway-collector-common`.
//!
//! # Verifier notes
//!
//! - Kernel offsets come from the read-only `CONFIG` global (`.rodata`, set at
//!   load from BTF and tracefs): the verifier sees them as constants.
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
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_boot_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_ringbuf_output, bpf_ringbuf_query,
    },
    macros::{btf_map, map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use spillway_collector_common::{
    CHUNK, Config, DROP_NO_RING, DROP_PENDING_FULL, DROP_READ_FAULT, DROP_RING_FULL,
    DROP_TRUNCATED, EventHeader, HDR_SIZE, InodeKey, MAX_CAPTURE, MAX_IOV, MAX_RINGS, NR_DROPS,
    Pending, RING_BYTES, STDERR_FD, STDOUT_FD,
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

/// Thread (`pid_tgid`) → write in flight. LRU, because an entry whose
/// `sys_exit` never comes (e.g. programs attached mid-syscall) would
/// otherwise stay forever.
#[map]
static PENDING: LruHashMap<u64, Pending> = LruHashMap::with_max_entries(16384, 0);

/// Per-CPU loss counters, indexed by the `DROP_*` constants.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_DROPS, 0);

/// Per-CPU staging area for one record plus the copy loop's state.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

const RING_SIZE: usize = RING_BYTES as usize;

/// The ring buffers; userspace creates `nr_rings` of them and inserts them.
#[btf_map]
static RINGS: ArrayOfMaps<RingBuf<u8, RING_SIZE>, { MAX_RINGS as usize }> = ArrayOfMaps::new();

const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;
/// Wake the reader once this many bytes are waiting (see "Wakeups" above).
const WAKEUP_THRESHOLD: u64 = (RING_SIZE / 8) as u64;

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
    /// An [`EventHeader`] followed by up to [`CHUNK`] data bytes (u64 for
    /// alignment).
    rec: [u64; (HDR_SIZE + CHUNK) / 8],
}

#[repr(C)]
struct IoVec {
    base: u64,
    len: u64,
}

#[inline(always)]
fn config() -> Config {
    // SAFETY: CONFIG is a plain static; the volatile read stops the compiler
    // from folding the zeros it was compiled with.
    unsafe { read_volatile(&raw const CONFIG) }
}

#[inline(always)]
fn count_drop(idx: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(idx) {
        // SAFETY: a per-CPU value; programs don't migrate CPUs while running.
        unsafe { *counter += 1 };
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

/// Reads a `T` at offset `off` of the tracepoint record.
#[inline(always)]
fn read_arg<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    // SAFETY: read_at uses bpf_probe_read_kernel, which checks the address.
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// `task->files->fdt->fd[fd]->f_inode`: the inode's address and its key.
#[inline(always)]
fn inode_of_fd(c: &Config, task: u64, fd: u64) -> Option<(u64, InodeKey)> {
    let files: u64 = read_kernel(task, c.task_files)?;
    if files == 0 {
        return None;
    }
    let fdt: u64 = read_kernel(files, c.files_fdt)?;
    let max_fds: u32 = read_kernel(fdt, c.fdt_max_fds)?;
    if fd >= max_fds as u64 {
        return None;
    }
    let fd_array: u64 = read_kernel(fdt, c.fdt_fd)?;
    let file: u64 = read_kernel(fd_array + fd * 8, 0)?;
    if file == 0 {
        return None;
    }
    let inode: u64 = read_kernel(file, c.file_f_inode)?;
    let ino: u64 = read_kernel(inode, c.inode_i_ino)?;
    let sb: u64 = read_kernel(inode, c.inode_i_sb)?;
    let dev: u32 = read_kernel(sb, c.sb_s_dev)?;
    Some((inode, InodeKey::new(ino, dev)))
}

/// Whether a write to an unregistered inode is captured with cookie 0; see
/// "Unclaimed capture" above.
#[inline(always)]
fn is_unclaimed(c: &Config, task: u64, fd: u64, inode: u64, key: &InodeKey) -> bool {
    if fd != STDOUT_FD as u64 && fd != STDERR_FD as u64 {
        return false;
    }
    let Some(pid) = read_kernel::<u64>(task, c.task_thread_pid) else {
        return false;
    };
    match read_kernel::<u32>(pid, c.pid_level) {
        Some(level) if level > 0 => {}
        _ => return false,
    }
    let Some(mode) = read_kernel::<u16>(inode, c.inode_i_mode) else {
        return false;
    };
    let kind = mode & S_IFMT;
    if kind != S_IFIFO && kind != S_IFCHR {
        return false;
    }
    IGNORED.get_ptr(key).is_none()
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, is_vec: bool) -> Option<()> {
    let c = config();
    let (fd_off, buf_off, count_off) = if is_vec {
        (c.tp_writev_fd, c.tp_writev_vec, c.tp_writev_vlen)
    } else {
        (c.tp_write_fd, c.tp_write_buf, c.tp_write_count)
    };
    // Declared `unsigned int` in an 8-byte slot.
    let fd = read_arg::<u64>(ctx, fd_off)? & 0xffff_ffff;
    // SAFETY: no preconditions.
    let task = unsafe { bpf_get_current_task() };
    let (inode, key) = inode_of_fd(&c, task, fd)?;
    let cookie = match INODES.get_ptr(key) {
        // SAFETY: a valid map value pointer, read right away.
        Some(cookie) => unsafe { *cookie },
        None if is_unclaimed(&c, task, fd, inode, &key) => 0,
        None => return None,
    };
    let pending = Pending {
        buf: read_arg(ctx, buf_off)?,
        count: read_arg(ctx, count_off)?,
        key,
        fd: fd as u32,
        cookie,
        is_vec: is_vec as u32,
        _pad: 0,
    };
    // SAFETY: no preconditions.
    let id = unsafe { bpf_get_current_pid_tgid() };
    if PENDING.insert(id, pending, 0).is_err() {
        count_drop(DROP_PENDING_FULL);
    }
    Some(())
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
                count_drop(DROP_READ_FAULT);
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
            count_drop(DROP_READ_FAULT);
            vw!(st.failed, 1);
            break;
        }
        let flags = if unsafe { bpf_ringbuf_query(ring, BPF_RB_AVAIL_DATA) } > WAKEUP_THRESHOLD {
            BPF_RB_FORCE_WAKEUP
        } else {
            BPF_RB_NO_WAKEUP
        };
        if unsafe { bpf_ringbuf_output(ring, rec.cast(), HDR_SIZE as u64 + n, flags) } < 0 {
            count_drop(DROP_RING_FULL);
            vw!(st.failed, 1);
            break;
        }
        unsafe { (*hdr).offset += n as u32 };
        vw!(st.src, src + n);
        vw!(st.left, left - n);
        vw!(st.budget, budget - n);
    }
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext, is_vec: bool) -> Option<()> {
    // SAFETY: no preconditions.
    let id = unsafe { bpf_get_current_pid_tgid() };
    // Fast exit: no write in flight on a watched inode for this thread.
    // SAFETY: a valid map value pointer, copied right away.
    let p = unsafe { *PENDING.get_ptr(id)? };
    let _ = PENDING.remove(id);
    if p.is_vec != is_vec as u32 {
        return None; // stale entry of another syscall
    }
    let c = config();
    let ret: i64 = read_arg(ctx, c.tp_exit_ret)?;
    if ret <= 0 {
        return None; // error or nothing written: no data
    }
    let ring = if c.nr_rings == 0 {
        None
    } else {
        RINGS.get((p.key.ino % c.nr_rings as u64) as u32)
    };
    let Some(ring) = ring else {
        count_drop(DROP_NO_RING);
        return None;
    };
    let s = SCRATCH.get_ptr_mut(0)?;
    let budget = if ret as u64 > MAX_CAPTURE as u64 {
        MAX_CAPTURE as u64
    } else {
        ret as u64
    };
    // SAFETY: `s` is this CPU's SCRATCH value; the header is 8-byte aligned.
    unsafe {
        core::ptr::write(
            (*s).rec.as_mut_ptr().cast::<EventHeader>(),
            EventHeader {
                boot_ns: bpf_ktime_get_boot_ns(),
                key: p.key,
                cookie: p.cookie,
                tgid: (id >> 32) as u32,
                fd: p.fd,
                offset: 0,
                len: 0,
                total: ret as u32,
            },
        );
        (*s).st = LoopState {
            src: p.buf,
            left: if is_vec { 0 } else { budget },
            budget,
            iov_idx: 0,
            failed: 0,
        };
    }
    if is_vec {
        // ≤ MAX_IOV iovec loads, and ≤ MAX_IOV + MAX_CAPTURE/CHUNK records.
        copy_out::<{ 2 * MAX_IOV + MAX_CAPTURE / CHUNK }>(ring, s, p.buf, p.count);
    } else {
        copy_out::<{ MAX_CAPTURE / CHUNK }>(ring, s, 0, 0);
    }
    let (left, failed) = (vr!((*s).st.budget), vr!((*s).st.failed));
    if ret as u64 > MAX_CAPTURE as u64 || (left > 0 && failed == 0) {
        count_drop(DROP_TRUNCATED);
    }
    Some(())
}

#[tracepoint(category = "syscalls", name = "sys_enter_write")]
pub fn spill_enter_write(ctx: TracePointContext) -> u32 {
    let _ = on_enter(&ctx, false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_enter_writev")]
pub fn spill_enter_writev(ctx: TracePointContext) -> u32 {
    let _ = on_enter(&ctx, true);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_write")]
pub fn spill_exit_write(ctx: TracePointContext) -> u32 {
    let _ = on_exit(&ctx, false);
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_writev")]
pub fn spill_exit_writev(ctx: TracePointContext) -> u32 {
    let _ = on_exit(&ctx, true);
    0
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
