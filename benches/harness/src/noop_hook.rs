//! The floor of any syscall hook on this kernel: a BPF program that does
//! nothing (`r0 = 0; exit`), attached to the same raw tracepoint as the
//! collector's (`sys_exit`). Its cost is what the kernel charges every
//! syscall for running a program at all (the syscall slow path, the
//! tracepoint and BPF dispatch), which no program, however short, can
//! avoid. The overhead suite measures it next to the collector's.
//!
//! Loaded with two bpf(2) calls rather than through an ELF object: the
//! program is two instructions.

use std::ffi::CStr;
use std::os::fd::{FromRawFd as _, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields set here; the rest
/// of the union is zero (the kernel checks that unused bytes are).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

/// `union bpf_attr` for BPF_RAW_TRACEPOINT_OPEN.
#[repr(C)]
#[derive(Default)]
struct RawTracepointOpen {
    name: u64,
    prog_fd: u32,
    _pad: u32,
}

/// `r0 = 0` (BPF_ALU64 | BPF_MOV | BPF_K), then `exit` (BPF_JMP | BPF_EXIT).
const PROGRAM: [u64; 2] = [0xb7, 0x95];

/// A no-op program attached to raw tracepoint `sys_exit` while this lives.
pub struct NoopHook {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl NoopHook {
    /// Loads and attaches it (needs root, or CAP_BPF and CAP_PERFMON).
    pub fn attach() -> anyhow::Result<NoopHook> {
        let license: &CStr = c"GPL";
        let load = ProgLoad {
            prog_type: BPF_PROG_TYPE_RAW_TRACEPOINT,
            insn_cnt: PROGRAM.len() as u32,
            insns: PROGRAM.as_ptr() as u64,
            license: license.as_ptr() as u64,
            ..ProgLoad::default()
        };
        let prog = bpf(BPF_PROG_LOAD, &load)
            .map_err(|e| anyhow::anyhow!("loading the no-op program: {e}"))?;
        let name: &CStr = c"sys_exit";
        let open = RawTracepointOpen {
            name: name.as_ptr() as u64,
            prog_fd: std::os::fd::AsRawFd::as_raw_fd(&prog) as u32,
            _pad: 0,
        };
        let link = bpf(BPF_RAW_TRACEPOINT_OPEN, &open)
            .map_err(|e| anyhow::anyhow!("attaching the no-op program to sys_exit: {e}"))?;
        Ok(NoopHook {
            _link: link,
            _prog: prog,
        })
    }
}

/// bpf(2) with `attr`; the new file descriptor it returns.
fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid, fully initialised bpf_attr prefix of
    // size_of::<T>() bytes; the pointers in it outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root; as non-root the load must fail with EPERM, not EINVAL
    /// (which would mean a malformed attr or program).
    #[test]
    fn attaches_or_is_refused_for_privileges() {
        match NoopHook::attach() {
            Ok(_hook) => {}
            Err(e) => {
                let msg = format!("{e:#}");
                // SAFETY: no preconditions.
                assert!(
                    unsafe { libc::geteuid() } != 0,
                    "root could not attach: {msg}"
                );
                assert!(msg.contains("not permitted"), "{msg}");
            }
        }
    }
}
