//! Tracepoint record layouts, from tracefs `format` files.
//!
//! The program reads the syscall arguments from the tracepoint's record
//! (`struct trace_event_raw_sys_enter`-like, generated per syscall); the
//! field offsets are in `events/syscalls/<event>/format`.

use std::path::{Path, PathBuf};

use spillway_collector_common::Config;

/// Where tracefs usually is, and where debugfs exposes it on older setups.
const ROOTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs directory holding `events/`. When none is mounted and we
/// may mount, mounts tracefs at `/sys/kernel/tracing` (fresh VMs often lack
/// it; aya needs it too, to find tracepoint ids).
pub fn root() -> Result<PathBuf, String> {
    if let Some(found) = find_root() {
        return Ok(found);
    }
    let mount_point = Path::new(ROOTS[0]);
    if mount_point.is_dir() {
        mount_tracefs(mount_point)?;
        if let Some(found) = find_root() {
            return Ok(found);
        }
    }
    Err(format!(
        "tracefs is not mounted (looked at {}); mount it: mount -t tracefs nodev /sys/kernel/tracing",
        ROOTS.join(" and ")
    ))
}

fn find_root() -> Option<PathBuf> {
    ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|r| r.join("events").is_dir())
}

fn mount_tracefs(at: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let target = std::ffi::CString::new(at.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: all pointers are valid NUL-terminated strings; data may be NULL.
    let r = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "tracefs is not mounted and mounting it at {} failed: {e}",
            at.display()
        ));
    }
    tracing::info!("mounted tracefs at {}", at.display());
    Ok(())
}

/// A field of a tracepoint record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    pub offset: u32,
    pub size: u32,
}

/// Finds `field` in the text of a `format` file. Lines look like
/// `\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;`.
pub fn parse_field(format: &str, field: &str) -> Option<Field> {
    for line in format.lines() {
        let Some(rest) = line.trim().strip_prefix("field:") else {
            continue;
        };
        let mut parts = rest.split(';');
        let decl = parts.next().unwrap_or_default();
        // The name is the declaration's last word, after any `*` or array suffix.
        let name = decl
            .split('[')
            .next()
            .unwrap_or_default()
            .rsplit([' ', '*', '\t'])
            .next()
            .unwrap_or_default();
        if name != field {
            continue;
        }
        let mut offset = None;
        let mut size = None;
        for p in parts {
            let p = p.trim();
            if let Some(v) = p.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = p.strip_prefix("size:") {
                size = v.parse().ok();
            }
        }
        return Some(Field {
            offset: offset?,
            size: size?,
        });
    }
    None
}

/// Reads `field` of tracepoint `syscalls/<event>`, checking its size.
fn field(root: &Path, event: &str, field: &str, size: u32) -> Result<u32, String> {
    let path = root.join("events/syscalls").join(event).join("format");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (a kernel without CONFIG_FTRACE_SYSCALLS has no syscall tracepoints)",
            path.display()
        )
    })?;
    let f = parse_field(&text, field)
        .ok_or_else(|| format!("no field {field:?} in {}", path.display()))?;
    if f.size != size {
        return Err(format!(
            "field {field:?} in {} has size {}, expected {size}",
            path.display(),
            f.size
        ));
    }
    Ok(f.offset)
}

/// The tracepoint part of the program's `Config`.
pub fn tracepoint_offsets(root: &Path, cfg: &mut Config) -> Result<(), String> {
    cfg.tp_write_fd = field(root, "sys_enter_write", "fd", 8)?;
    cfg.tp_write_buf = field(root, "sys_enter_write", "buf", 8)?;
    cfg.tp_write_count = field(root, "sys_enter_write", "count", 8)?;
    cfg.tp_writev_fd = field(root, "sys_enter_writev", "fd", 8)?;
    cfg.tp_writev_vec = field(root, "sys_enter_writev", "vec", 8)?;
    cfg.tp_writev_vlen = field(root, "sys_enter_writev", "vlen", 8)?;
    let ret = field(root, "sys_exit_write", "ret", 8)?;
    let ret_v = field(root, "sys_exit_writev", "ret", 8)?;
    if ret != ret_v {
        return Err(format!(
            "sys_exit_write and sys_exit_writev have `ret` at different offsets ({ret}, {ret_v})"
        ));
    }
    cfg.tp_exit_ret = ret;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITE_FORMAT: &str = "name: sys_enter_write
ID: 724
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned int fd;\toffset:16;\tsize:8;\tsigned:0;
\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;
\tfield:size_t count;\toffset:32;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;

print fmt: \"fd: 0x%08lx, buf: 0x%08lx, count: 0x%08lx\", ...
";

    #[test]
    fn parses_format_files() {
        let f = |name| parse_field(WRITE_FORMAT, name);
        assert_eq!(
            f("fd"),
            Some(Field {
                offset: 16,
                size: 8
            })
        );
        assert_eq!(
            f("buf"),
            Some(Field {
                offset: 24,
                size: 8
            })
        );
        assert_eq!(
            f("count"),
            Some(Field {
                offset: 32,
                size: 8
            })
        );
        assert_eq!(
            f("comm"),
            Some(Field {
                offset: 40,
                size: 16
            })
        );
        assert_eq!(f("common_pid"), Some(Field { offset: 4, size: 4 }));
        assert_eq!(f("ret"), None);
        assert_eq!(f("unt"), None);
    }

    /// Runs wherever tracefs is readable (usually root only).
    #[test]
    fn reads_this_kernels_syscall_tracepoints() {
        let Some(root) = find_root() else {
            eprintln!("skipped: tracefs not mounted");
            return;
        };
        let mut cfg = Config::ZERO;
        match tracepoint_offsets(&root, &mut cfg) {
            Ok(()) => assert!(cfg.tp_write_buf > cfg.tp_write_fd && cfg.tp_exit_ret > 0),
            Err(e) if e.contains("Permission denied") => eprintln!("skipped: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
}
