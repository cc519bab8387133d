//! Embeds the eBPF capture program when it has been built.
//!
//! `cargo xtask build-ebpf` writes it to
//! `<workspace>/target/ebpf/spillway-collector.bpf.o` (always under the
//! workspace, whatever `CARGO_TARGET_DIR` says, so every build and test
//! finds it); `SPILLWAY_BPF_OBJECT=<path>` overrides that. When the file
//! exists it is copied to `OUT_DIR` and the cfg `spillway_bpf_object` is set,
//! so `src/capture/ebpf/kernel` embeds it; otherwise the collector builds without it and
//! eBPF capture reports that it was not built.

use std::path::PathBuf;

const OBJECT: &str = "spillway-collector.bpf.o";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(spillway_bpf_object)");
    println!("cargo::rerun-if-env-changed=SPILLWAY_BPF_OBJECT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let path = match std::env::var_os("SPILLWAY_BPF_OBJECT") {
        Some(p) => {
            println!("cargo::rerun-if-changed={}", PathBuf::from(&p).display());
            PathBuf::from(p)
        }
        None => {
            let dir = manifest_dir.join("../target/ebpf");
            // Watching a directory notices the object appearing later (cargo
            // scans it for changes), so it must exist.
            let _ = std::fs::create_dir_all(&dir);
            println!("cargo::rerun-if-changed={}", dir.display());
            dir.join(OBJECT)
        }
    };
    if path.is_file() {
        let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join(OBJECT);
        std::fs::copy(&path, &out)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", path.display(), out.display()));
        println!("cargo::rustc-cfg=spillway_bpf_object");
    }
}
