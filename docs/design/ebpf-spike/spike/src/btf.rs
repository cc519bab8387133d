//! Kernel struct member offsets from /sys/kernel/btf/vmlinux via btf-rs 2.0.
use anyhow::{Context, Result, anyhow, bail};
use btf_rs::{Btf, Type};

pub struct KernelBtf(Btf);

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Ok(Self(Btf::from_file("/sys/kernel/btf/vmlinux").context("parse vmlinux BTF")?))
    }

    /// Byte offset of `member` in `struct <strukt>`, descending into anonymous
    /// struct/union members (e.g. randomized_struct_fields, unions in struct inode).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32> {
        let types = self.0.resolve_types_by_name(strukt).with_context(|| format!("no type {strukt}"))?;
        for t in types {
            if let Type::Struct(s) = t {
                if let Some(bits) = self.find(&s, member)? {
                    if bits % 8 != 0 {
                        bail!("{strukt}.{member} is a bitfield");
                    }
                    return Ok(bits / 8);
                }
            }
        }
        Err(anyhow!("{strukt}.{member} not found"))
    }

    fn find(&self, s: &btf_rs::Struct, member: &str) -> Result<Option<u32>> {
        for m in &s.members {
            let name = self.0.resolve_name(m).unwrap_or_default();
            if name == member {
                return Ok(Some(m.bit_offset()));
            }
            if name.is_empty() {
                // anonymous struct/union: recurse (skipping typedef/const/volatile wrappers)
                let mut ty = self.0.resolve_chained_type(m)?;
                loop {
                    match ty {
                        Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::Restrict(_) | Type::TypeTag(_) => {
                            let bt = ty.as_btf_type().unwrap();
                            ty = self.0.resolve_chained_type(bt)?;
                        }
                        _ => break,
                    }
                }
                if let Type::Struct(inner) | Type::Union(inner) = ty {
                    if let Some(off) = self.find(&inner, member)? {
                        return Ok(Some(m.bit_offset() + off));
                    }
                }
            }
        }
        Ok(None)
    }
}

/// Field offset from /sys/kernel/tracing/events/<cat>/<name>/format.
pub fn tp_field_offset(category: &str, name: &str, field: &str) -> Result<u32> {
    let mut last_err = None;
    for root in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let path = format!("{root}/events/{category}/{name}/format");
        match std::fs::read_to_string(&path) {
            Ok(s) => {
                for line in s.lines() {
                    // "\tfield:const char * buf;\toffset:24;\tsize:8;\tsigned:0;"
                    let line = line.trim();
                    let Some(rest) = line.strip_prefix("field:") else { continue };
                    let mut parts = rest.split(';');
                    let decl = parts.next().unwrap_or("");
                    let fname = decl.rsplit(|c: char| c == ' ' || c == '*').next().unwrap_or("");
                    if fname != field {
                        continue;
                    }
                    for p in parts {
                        if let Some(v) = p.trim().strip_prefix("offset:") {
                            return Ok(v.parse()?);
                        }
                    }
                }
                bail!("field {field} not in {path}");
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow!("tracefs format for {category}/{name}: {last_err:?}"))
}
