//! Types shared between the eBPF program and userspace. All `#[repr(C)]`, no pointers.
#![no_std]

/// Kernel struct member offsets (bytes) taken from /sys/kernel/btf/vmlinux, and tracepoint
/// record field offsets taken from tracefs `format` files. Passed via `EbpfLoader::set_global`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    /// sys_enter_write: fd, buf, count
    pub tp_write_fd: u32,
    pub tp_write_buf: u32,
    pub tp_write_count: u32,
    /// sys_enter_writev: fd, vec, vlen
    pub tp_writev_fd: u32,
    pub tp_writev_vec: u32,
    pub tp_writev_vlen: u32,
    /// sys_exit_write / sys_exit_writev: ret
    pub tp_exit_ret: u32,
    pub nr_rings: u32,
}

/// Key of the registered-inode hash map. `dev` is the kernel-internal dev_t (MKDEV: major<<20|minor).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InodeKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// Stashed at sys_enter_write(v), consumed at sys_exit_write(v).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Pending {
    pub buf: u64,   // write: buffer ptr; writev: iovec array ptr
    pub count: u64, // write: count; writev: vlen
    pub ino: u64,
    pub dev: u32,
    pub fd: u32,
    pub stream: u32, // cookie registered by userspace (e.g. container+stream id)
    pub is_vec: u32,
}

/// Record header in the ring buffer, followed by `len` data bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventHeader {
    pub boot_ns: u64,
    pub ino: u64,
    pub stream: u32,
    pub tgid: u32,
    pub tid: u32,
    pub fd: u32,
    /// Offset of this chunk within the whole write (0 for first chunk).
    pub offset: u32,
    /// Bytes of data following this header.
    pub len: u32,
    /// Total bytes written by the syscall (return value), possibly > captured.
    pub total: u32,
    pub _pad: u32,
}

pub const HDR_SIZE: usize = core::mem::size_of::<EventHeader>();
/// Max bytes captured per syscall.
pub const MAX_CAPTURE: usize = 64 * 1024;
/// Max data bytes per ring record (largest size class).
pub const CHUNK: usize = 16 * 1024;
/// Max iovecs looked at for writev.
pub const MAX_IOV: usize = 8;

/// Indexes into the per-CPU DROPS array.
pub const DROP_RING_FULL: u32 = 0;
pub const DROP_READ_FAULT: u32 = 1;
pub const DROP_NO_RING: u32 = 2;
pub const DROP_PENDING_FULL: u32 = 3;
pub const DROP_TRUNCATED: u32 = 4;
pub const NR_DROPS: u32 = 8;

#[cfg(feature = "user")]
mod user {
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::Pending {}
    unsafe impl aya::Pod for super::EventHeader {}
}
