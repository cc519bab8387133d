//! Kernel struct member offsets, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) with `btf-rs`.
//!
//! The program walks `task_struct`, `files_struct`, `fdtable`, `file`,
//! `inode`, `super_block`, `pid`, `css_set`, `cgroup_subsys_state`,
//! `cgroup` and `kernfs_node`; their
//! layout depends on the kernel version and configuration, so the offsets
//! are looked up here at load time and never hard-coded. (aya-obj's own BTF
//! parser keeps struct members private, hence `btf-rs`.)

use std::path::Path;

use btf_rs::{Btf, Type};

/// Where the kernel exposes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A member's place in its struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset from the start of the struct, in bytes.
    pub offset: u32,
    /// Size in bytes, when it has one (integers, pointers, enums, structs).
    pub size: Option<usize>,
}

/// The parsed kernel BTF (parsing takes 100–200 ms).
pub struct KernelBtf(Btf);

impl KernelBtf {
    pub fn load(path: &Path) -> Result<KernelBtf, String> {
        Btf::from_file(path)
            .map(KernelBtf)
            .map_err(|e| format!("cannot parse the kernel's BTF in {}: {e}", path.display()))
    }

    /// `struct strukt`'s member `member`, also when it sits inside an
    /// anonymous struct or union (as with `randomized_struct_fields`).
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, String> {
        let types = self
            .0
            .resolve_types_by_name(strukt)
            .map_err(|e| format!("the kernel's BTF has no struct {strukt}: {e}"))?;
        for ty in types {
            let Type::Struct(s) = ty else { continue };
            if let Some((bits, size)) = self.find(&s, member)? {
                if bits % 8 != 0 {
                    return Err(format!("{strukt}.{member} is a bitfield"));
                }
                return Ok(Member {
                    offset: bits / 8,
                    size,
                });
            }
        }
        Err(format!(
            "the kernel's struct {strukt} has no member {member}"
        ))
    }

    /// Byte offset of `strukt.member`, checking that its size is `size`
    /// (the program reads exactly that many bytes).
    pub fn offset(&self, strukt: &str, member: &str, size: usize) -> Result<u32, String> {
        let m = self.member(strukt, member)?;
        match m.size {
            Some(s) if s == size => Ok(m.offset),
            other => Err(format!(
                "{strukt}.{member} has size {other:?} in this kernel, expected {size}"
            )),
        }
    }

    /// The value of enumerator `name` of `enum enum_name` (for example
    /// `memory_cgrp_id` of `enum cgroup_subsys_id`, which differs between
    /// kernel configurations).
    pub fn enum_value(&self, enum_name: &str, name: &str) -> Result<u32, String> {
        let types = self
            .0
            .resolve_types_by_name(enum_name)
            .map_err(|e| format!("the kernel's BTF has no enum {enum_name}: {e}"))?;
        for ty in types {
            let Type::Enum(e) = ty else { continue };
            for m in &e.members {
                if self.0.resolve_name(m).is_ok_and(|n| n == name) {
                    return Ok(m.val());
                }
            }
        }
        Err(format!("the kernel's enum {enum_name} has no {name}"))
    }

    /// Bit offset and size of `member` in `s`, recursing into anonymous members.
    fn find(
        &self,
        s: &btf_rs::Struct,
        member: &str,
    ) -> Result<Option<(u32, Option<usize>)>, String> {
        for m in &s.members {
            let name = self.0.resolve_name(m).unwrap_or_default();
            if name == member {
                let ty = self.strip(self.0.resolve_chained_type(m).map_err(|e| e.to_string())?)?;
                return Ok(Some((m.bit_offset(), size_of_type(&ty))));
            }
            if name.is_empty() {
                let ty = self.strip(self.0.resolve_chained_type(m).map_err(|e| e.to_string())?)?;
                if let Type::Struct(inner) | Type::Union(inner) = ty
                    && let Some((bits, size)) = self.find(&inner, member)?
                {
                    return Ok(Some((m.bit_offset() + bits, size)));
                }
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type, String> {
        while let Type::Typedef(_)
        | Type::Const(_)
        | Type::Volatile(_)
        | Type::Restrict(_)
        | Type::TypeTag(_) = ty
        {
            let inner = ty.as_btf_type().expect("qualifiers are BTF types");
            ty = self
                .0
                .resolve_chained_type(inner)
                .map_err(|e| e.to_string())?;
        }
        Ok(ty)
    }
}

fn size_of_type(ty: &Type) -> Option<usize> {
    match ty {
        Type::Int(i) => Some(i.size()),
        Type::Ptr(_) => Some(8),
        Type::Enum(e) => Some(e.size()),
        Type::Enum64(e) => Some(e.size()),
        Type::Struct(s) | Type::Union(s) => Some(s.size()),
        _ => None,
    }
}

/// The kernel part of the program's `Config`: every struct member the
/// program reads, with the size it reads.
pub fn kernel_offsets(
    btf: &KernelBtf,
    cfg: &mut spillway_collector_common::Config,
) -> Result<(), String> {
    const PTR: usize = 8;
    cfg.task_files = btf.offset("task_struct", "files", PTR)?;
    cfg.task_thread_pid = btf.offset("task_struct", "thread_pid", PTR)?;
    cfg.pid_level = btf.offset("pid", "level", 4)?;
    cfg.files_fdt = btf.offset("files_struct", "fdt", PTR)?;
    cfg.fdt_max_fds = btf.offset("fdtable", "max_fds", 4)?;
    cfg.fdt_fd = btf.offset("fdtable", "fd", PTR)?;
    cfg.file_f_inode = btf.offset("file", "f_inode", PTR)?;
    cfg.inode_i_mode = btf.offset("inode", "i_mode", 2)?;
    cfg.inode_i_ino = btf.offset("inode", "i_ino", 8)?;
    cfg.inode_i_sb = btf.offset("inode", "i_sb", PTR)?;
    cfg.sb_s_dev = btf.offset("super_block", "s_dev", 4)?;
    syscall_offsets(btf, cfg)
}

/// Where the program finds, at `sys_exit`, which syscall returns and its
/// arguments on this architecture: the numbers of write and writev, the
/// `struct pt_regs` members holding them, and the compat check.
fn syscall_offsets(
    btf: &KernelBtf,
    cfg: &mut spillway_collector_common::Config,
) -> Result<(), String> {
    cfg.nr_write = libc::SYS_write as u32;
    cfg.nr_writev = libc::SYS_writev as u32;
    #[cfg(target_arch = "x86_64")]
    {
        cfg.regs_nr = btf.offset("pt_regs", "orig_ax", 8)?;
        cfg.regs_arg0 = btf.offset("pt_regs", "di", 8)?;
        cfg.regs_arg1 = btf.offset("pt_regs", "si", 8)?;
        cfg.regs_arg2 = btf.offset("pt_regs", "dx", 8)?;
        // `task_struct.thread_info.status` holds TS_COMPAT during a 32-bit
        // syscall (arch/x86/include/asm/thread_info.h).
        const TS_COMPAT: u32 = 0x0002;
        cfg.task_compat = btf.member("task_struct", "thread_info")?.offset
            + btf.offset("thread_info", "status", 4)?;
        cfg.compat_mask = TS_COMPAT;
        Ok(())
    }
    #[cfg(target_arch = "aarch64")]
    {
        // `s32 syscallno`; the first argument's register, `regs[0]`, holds
        // the return value at exit, its entry value is kept in `orig_x0`.
        cfg.regs_nr = btf.offset("pt_regs", "syscallno", 4)?;
        cfg.regs_arg0 = btf.offset("pt_regs", "orig_x0", 8)?;
        // `u64 regs[31]`, inside an anonymous union with `user_pt_regs`.
        let regs = btf.member("pt_regs", "regs")?.offset;
        (cfg.regs_arg1, cfg.regs_arg2) = (regs + 8, regs + 16);
        // Compat (AArch32) tasks' syscalls are not told apart (mask 0).
        Ok(())
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    Err(format!(
        "eBPF capture knows where syscall arguments are on x86_64 and aarch64, not on {}",
        std::env::consts::ARCH
    ))
}

/// The cgroup part of the program's `Config`: how to go from a task to the
/// cgroup that names its container, in `hierarchy`.
pub fn cgroup_offsets(
    btf: &KernelBtf,
    hierarchy: &super::cgroup::Hierarchy,
    cfg: &mut spillway_collector_common::Config,
) -> Result<(), String> {
    use super::cgroup::Hierarchy;
    use spillway_collector_common::{CGROUP_V1, CGROUP_V2};
    const PTR: usize = 8;
    cfg.task_cgroups = btf.offset("task_struct", "cgroups", PTR)?;
    match hierarchy {
        Hierarchy::Unified => {
            cfg.cgroup_mode = CGROUP_V2;
            cfg.css_set_cgroup = btf.offset("css_set", "dfl_cgrp", PTR)?;
        }
        Hierarchy::Controller(name) => {
            cfg.cgroup_mode = CGROUP_V1;
            let id = btf.enum_value("cgroup_subsys_id", &format!("{name}_cgrp_id"))?;
            let count = btf.enum_value("cgroup_subsys_id", "CGROUP_SUBSYS_COUNT")?;
            if id >= count {
                return Err(format!("{name}_cgrp_id is {id}, not below {count}"));
            }
            // `struct cgroup_subsys_state *subsys[CGROUP_SUBSYS_COUNT]`.
            cfg.css_set_cgroup = btf.member("css_set", "subsys")?.offset + id * PTR as u32;
            cfg.css_cgroup = btf.offset("cgroup_subsys_state", "cgroup", PTR)?;
        }
    }
    cfg.cgroup_kn = btf.offset("cgroup", "kn", PTR)?;
    cfg.kn_id = btf.offset("kernfs_node", "id", 8)?;
    cfg.kn_name = btf.offset("kernfs_node", "name", PTR)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs wherever the kernel exposes BTF (any user can read it).
    #[test]
    fn finds_the_members_the_program_reads() {
        if !Path::new(VMLINUX_BTF).exists() {
            spillway_testenv::skip("the BTF offsets test", &format!("no {VMLINUX_BTF}"));
            return;
        }
        let btf = KernelBtf::load(Path::new(VMLINUX_BTF)).unwrap();
        let mut cfg = spillway_collector_common::Config::ZERO;
        kernel_offsets(&btf, &mut cfg).unwrap();
        // fdtable starts with max_fds; everything else is somewhere inside.
        assert_eq!(cfg.fdt_max_fds, 0);
        assert!(cfg.task_files > 0 && cfg.inode_i_ino > 0 && cfg.sb_s_dev > 0);
        let err = btf.member("inode", "no_such_member").unwrap_err();
        assert!(err.contains("no member no_such_member"), "{err}");
        assert!(
            btf.offset("inode", "i_ino", 2)
                .unwrap_err()
                .contains("expected 2")
        );
    }
}
