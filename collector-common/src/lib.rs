//! Types shared by `spillway-collector` (userspace) and its eBPF program
//! (`collector-ebpf`), which captures what container processes write to
//! their stdout and stderr.
//!
//! Everything here is `#[repr(C)]`, holds no pointers and has no implicit
//! padding, so both sides agree on the byte layout. With the `user` feature
//! the types also implement [`aya::Pod`] so userspace can use them as map
//! keys, map values and program globals.
#![no_std]

/// What the program needs to know about the running kernel, filled in by
/// userspace at load time and stored in the program's read-only `CONFIG`
/// global (so the verifier treats every field as a constant).
///
/// Kernel struct member offsets (bytes) come from the kernel's BTF
/// (`/sys/kernel/btf/vmlinux`). Nothing is hard-coded, because
/// struct layouts differ between kernel builds. An offset of 0 is a real
/// value (`fdtable.max_fds` is at 0), not "unset".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `task_struct.files` (`struct files_struct *`).
    pub task_files: u32,
    /// `task_struct.thread_pid` (`struct pid *`).
    pub task_thread_pid: u32,
    /// `pid.level` (`unsigned int`): depth of the pid namespace the task
    /// lives in, 0 for the initial (host) namespace.
    pub pid_level: u32,
    /// `files_struct.fdt` (`struct fdtable *`).
    pub files_fdt: u32,
    /// `fdtable.max_fds` (`unsigned int`).
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdt_fd: u32,
    /// `file.f_inode` (`struct inode *`).
    pub file_f_inode: u32,
    /// `inode.i_mode` (`umode_t`, 16 bits).
    pub inode_i_mode: u32,
    /// `inode.i_ino` (`unsigned long`).
    pub inode_i_ino: u32,
    /// `inode.i_sb` (`struct super_block *`).
    pub inode_i_sb: u32,
    /// `super_block.s_dev` (`dev_t`, 32 bits, kernel encoding).
    pub sb_s_dev: u32,
    /// Number of ring buffers in `RINGS` (= userspace read loops). A record
    /// goes to ring `key.ino % nr_rings`.
    pub nr_rings: u32,
    /// Wake a ring's reader when a record makes the unread bytes cross this
    /// many (see the program's "Wakeups").
    pub wakeup_bytes: u32,
    /// How the writer's cgroup is found: [`CGROUP_V1`] or [`CGROUP_V2`].
    pub cgroup_mode: u32,
    /// `task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// Where `css_set` holds the cgroup that names a container: with
    /// [`CGROUP_V2`] the offset of `css_set.dfl_cgrp` (`struct cgroup *`);
    /// with [`CGROUP_V1`] the offset of `css_set.subsys[id]` (`struct
    /// cgroup_subsys_state *`) for one mounted v1 controller.
    pub css_set_cgroup: u32,
    /// `cgroup_subsys_state.cgroup` (`struct cgroup *`), [`CGROUP_V1`] only.
    pub css_cgroup: u32,
    /// `cgroup.kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (`u64`): the cgroup directory's inode number.
    pub kn_id: u32,
    /// `kernfs_node.name` (`const char *`): the cgroup directory's name,
    /// which names the container (`<id>`, `docker-<id>.scope`, ...).
    pub kn_name: u32,
    /// Syscall numbers of `write(2)` and `writev(2)` on this architecture.
    pub nr_write: u32,
    pub nr_writev: u32,
    /// Where `struct pt_regs` keeps the number of the syscall returning
    /// (`orig_ax` on x86_64, `syscallno` on arm64; read as 32 bits).
    pub regs_nr: u32,
    /// Where `struct pt_regs` keeps a syscall's first three arguments at
    /// its exit (`di`, `si`, `dx` on x86_64; `orig_x0`, `regs[1]`,
    /// `regs[2]` on arm64, where `regs[0]` holds the return value by then).
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    pub regs_arg2: u32,
    /// Offset of `task_struct.thread_info.status` and the bit there that
    /// marks a 32-bit compat syscall (x86_64's `TS_COMPAT`); mask 0 where
    /// there is no such check. Compat syscalls have other numbers and
    /// registers, so the program skips them, as the kernel's syscall tracepoints do.
    pub task_compat: u32,
    pub compat_mask: u32,
}

/// [`Config::cgroup_mode`]: the writer's cgroup is `css_set.dfl_cgrp`
/// (the unified hierarchy).
pub const CGROUP_V2: u32 = 2;
/// [`Config::cgroup_mode`]: the writer's cgroup is the one of a v1
/// controller's hierarchy (`css_set.subsys[id]->cgroup`).
pub const CGROUP_V1: u32 = 1;

impl Config {
    /// All zeros: the value compiled into the program, overridden at load.
    pub const ZERO: Config = Config {
        task_files: 0,
        task_thread_pid: 0,
        pid_level: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_f_inode: 0,
        inode_i_mode: 0,
        inode_i_ino: 0,
        inode_i_sb: 0,
        sb_s_dev: 0,
        nr_rings: 0,
        wakeup_bytes: 0,
        cgroup_mode: 0,
        task_cgroups: 0,
        css_set_cgroup: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
        kn_name: 0,
        nr_write: 0,
        nr_writev: 0,
        regs_nr: 0,
        regs_arg0: 0,
        regs_arg1: 0,
        regs_arg2: 0,
        task_compat: 0,
        compat_mask: 0,
    };
}

/// Identifies an open pipe, pty or other file: inode number plus the
/// device of its filesystem.
///
/// `dev` uses the kernel-internal encoding `major << 20 | minor` (what
/// `super_block.s_dev` holds), which is **not** the `st_dev` that `stat(2)`
/// returns (`new_encode_dev`); see [`InodeKey::from_stat`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

impl InodeKey {
    /// The key for an inode number and a kernel-encoded device.
    pub const fn new(ino: u64, dev: u32) -> Self {
        InodeKey { ino, dev, _pad: 0 }
    }

    /// The key for `stat(2)`'s `st_ino` and `st_dev`, converting the device
    /// from the userspace encoding (glibc `major()`/`minor()` layout) to
    /// the kernel's `major << 20 | minor`.
    pub const fn from_stat(st_ino: u64, st_dev: u64) -> Self {
        // glibc's major() and minor().
        let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & 0xffff_f000);
        let minor = (st_dev & 0xff) | ((st_dev >> 12) & 0xffff_ff00);
        InodeKey::new(st_ino, ((major << 20) | (minor & 0xf_ffff)) as u32)
    }
}

/// Header of each ring buffer record; `len` data bytes follow it.
///
/// One syscall becomes one or more records: a `write` is cut into
/// [`CHUNK`]-byte pieces, and every non-empty `iovec` of a `writev` starts a
/// new record. `offset` is the position of the record's first byte within
/// the syscall's data, so the records of one write are `offset` 0, then
/// increasing, always a prefix of the data (capture stops at the first
/// failure).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// `bpf_ktime_get_boot_ns()` (CLOCK_BOOTTIME) at the write's `sys_exit`.
    pub boot_ns: u64,
    /// The writer's cgroup (its directory's inode number, see
    /// [`Config::cgroup_mode`]): names the container even after the
    /// writer has exited.
    pub cgroup: u64,
    /// The inode written to.
    pub key: InodeKey,
    /// The registered cookie, or 0 for an unclaimed write.
    pub cookie: u32,
    /// The writer's process id (thread group id) on the host.
    pub tgid: u32,
    /// The file descriptor written to.
    pub fd: u32,
    /// Position of this record's data within the syscall's data.
    pub offset: u32,
    /// Data bytes following this header.
    pub len: u32,
    /// Bytes the syscall wrote (its return value); can exceed what was
    /// captured (see [`MAX_CAPTURE`]).
    pub total: u32,
}

/// Size of [`EventHeader`] in bytes.
pub const HDR_SIZE: usize = core::mem::size_of::<EventHeader>();
/// Most bytes captured from one syscall; the rest is counted as
/// [`DropReason::Truncated`].
pub const MAX_CAPTURE: usize = 64 * 1024;
/// Most data bytes in one ring buffer record.
pub const CHUNK: usize = 16 * 1024;
/// Most `iovec`s of one `writev` looked at; bytes in later ones are counted
/// as [`DropReason::Truncated`].
pub const MAX_IOV: usize = 8;
/// Size of the ring buffer template in the program's `RINGS` map of maps.
/// The kernel does not compare a ring's size with the template's, so
/// userspace creates its rings with the size it is told (`--ring-bytes`);
/// the template only has to be a valid ring (one page at least).
pub const RING_TEMPLATE_BYTES: u32 = 64 * 1024;
/// Upper bound for `Config::nr_rings` (entries of the `RINGS` map of maps).
pub const MAX_RINGS: u32 = 256;
/// Writes to an unregistered inode are only captured (unclaimed) through
/// file descriptors [`STDOUT_FD`] and [`STDERR_FD`].
pub const STDOUT_FD: u32 = 1;
/// See [`STDOUT_FD`].
pub const STDERR_FD: u32 = 2;

/// Why the program could not deliver (all of) a write: the index of its
/// counter in the per-CPU `DROPS` array and in [`CgroupDrops`]. Each
/// counts syscalls, not bytes or lines.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A record did not fit in its ring buffer (the reader is too slow).
    /// The rest of that syscall's data is skipped too.
    RingFull = 0,
    /// User memory could not be read at `sys_exit` (page not resident, or a
    /// bad `iovec` array). The rest of that syscall's data is skipped.
    ReadFault = 1,
    /// A syscall wrote more than [`MAX_CAPTURE`] bytes, or a `writev` had
    /// data beyond [`MAX_IOV`] iovecs: the beginning was captured, the rest
    /// not.
    Truncated = 2,
    /// No ring buffer at index `ino % nr_rings` (a userspace setup bug): the
    /// whole write is lost.
    NoRing = 3,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 4] = [
        DropReason::RingFull,
        DropReason::ReadFault,
        DropReason::Truncated,
        DropReason::NoRing,
    ];

    /// The name used in metrics labels (`reason="ring_full"`).
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::RingFull => "ring_full",
            DropReason::ReadFault => "read_fault",
            DropReason::Truncated => "truncated",
            DropReason::NoRing => "no_ring",
        }
    }
}

/// Entries in `DROPS` and in [`CgroupDrops`] (room to grow).
pub const NR_DROPS: u32 = 8;

/// What the program could not deliver from one cgroup (= one container),
/// per CPU, in the `CGROUP_DROPS` map keyed by [`EventHeader::cgroup`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupDrops {
    /// Indexed by [`DropReason`].
    pub counts: [u64; NR_DROPS as usize],
}

/// Bytes kept of a cgroup directory's name (a container's is at most
/// `cri-containerd-<64 hex>.scope`, 85 bytes).
pub const CGROUP_NAME_BYTES: usize = 128;

/// A cgroup directory's name, NUL-terminated, as the program saw it when a
/// write came from a cgroup that userspace had not registered yet: the
/// value of the `CGROUP_NAMES` map keyed by [`EventHeader::cgroup`].
/// It names the container even after the container is gone.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupName {
    pub name: [u8; CGROUP_NAME_BYTES],
}

impl CgroupName {
    /// The name up to its NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        &self.name[..end]
    }
}

/// Switches userspace flips while the program runs: the only value of the
/// `SETTINGS` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Nonzero while a registered stream belongs to a process in the
    /// initial pid namespace (`docker run --pid host`). Otherwise writes of
    /// host processes are rejected before anything else is looked at.
    pub host_streams: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all are #[repr(C)], contain only integers, and have no
    // padding (checked by the size assertions below), so every bit pattern
    // is valid and no uninitialised bytes are exposed.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::CgroupDrops {}
    unsafe impl aya::Pod for super::CgroupName {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::EventHeader {}
}

// No implicit padding anywhere (the Pod impls rely on it).
const _: () = assert!(core::mem::size_of::<Config>() == 28 * 4);
const _: () = assert!(core::mem::size_of::<InodeKey>() == 16);
const _: () = assert!(HDR_SIZE == 56);
const _: () = assert!(core::mem::size_of::<CgroupDrops>() == 64);
const _: () = assert!(core::mem::size_of::<Settings>() == 8);
const _: () = assert!(CHUNK <= MAX_CAPTURE && MAX_CAPTURE.is_multiple_of(CHUNK));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_stat_converts_to_the_kernel_dev_encoding() {
        // pipefs 0:15 is the same in both encodings.
        assert_eq!(InodeKey::from_stat(7, 15).dev, 15);
        // 8:1 (sda1): st_dev 0x801 -> (8 << 20) | 1.
        assert_eq!(InodeKey::from_stat(7, 0x801).dev, (8 << 20) | 1);
        // 136:300 (a pty with minor >= 256): glibc makedev(136, 300).
        let st_dev = (136u64 << 8) | (300 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(
            InodeKey::from_stat(9, st_dev),
            InodeKey::new(9, (136 << 20) | 300)
        );
    }
}
