//! Which cgroup names a writer's container, and the container id in a
//! cgroup's name.
//!
//! The program stamps every record with the id of the writer's cgroup (the
//! inode number of its cgroup directory) in one hierarchy: the unified one
//! on cgroup v2 hosts (most Kubernetes nodes), or one v1 controller's on
//! cgroup v1 hosts (Docker's cgroupfs driver there makes `/docker/<id>` in
//! every controller's hierarchy).

use std::path::Path;

/// The hierarchy whose cgroups the program reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: `css_set.dfl_cgrp`.
    Unified,
    /// cgroup v1: this controller's hierarchy (`memory`, `pids`, ...).
    Controller(String),
}

/// v1 controllers tried in order; any one will do, since container
/// runtimes make a container's cgroup in each.
const V1_CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "devices"];

const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The hierarchy of the host whose cgroup filesystems are mounted under
/// `root` (normally `/sys/fs/cgroup`): unified if `root` itself is cgroup2,
/// else the first v1 controller mounted below it (a "hybrid" host, with
/// v1 controllers and an empty unified hierarchy, counts as v1: that is
/// where its containers' cgroups are).
pub fn detect(root: &Path) -> Result<Hierarchy, String> {
    match fs_magic(root) {
        Some(CGROUP2_SUPER_MAGIC) => return Ok(Hierarchy::Unified),
        Some(_) => {}
        None => return Err(format!("{} is not mounted", root.display())),
    }
    V1_CONTROLLERS
        .iter()
        .find(|c| fs_magic(&root.join(c)) == Some(CGROUP_SUPER_MAGIC))
        .map(|c| Hierarchy::Controller((*c).to_owned()))
        .ok_or_else(|| {
            format!(
                "no cgroup hierarchy under {}: neither cgroup2 nor a v1 controller ({}) is mounted",
                root.display(),
                V1_CONTROLLERS.join(", ")
            )
        })
}

fn fs_magic(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a NUL-terminated path and a statfs buffer to fill.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st) == 0).then_some(st.f_type as i64)
    }
}

/// The container id a cgroup directory's name carries: `<64 hex>`
/// (Docker's cgroupfs driver, containerd and CRI-O with cgroupfs),
/// `libpod-<64 hex>` (podman's cgroupfs driver, under `/libpod_parent`) or
/// `<prefix>-<64 hex>.scope` (the systemd driver: `docker-`,
/// `cri-containerd-`, `crio-`, `libpod-`).
pub fn container_id(name: &str) -> Option<&str> {
    let id = match name.strip_suffix(".scope") {
        Some(scope) => scope.rsplit_once('-')?.1,
        None => name.strip_prefix("libpod-").unwrap_or(name),
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The container id in a `/proc/<pid>/cgroup` file's paths, if any.
pub fn container_in_proc_cgroup(file: &str) -> Option<&str> {
    file.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .flat_map(|path| path.split('/'))
        .find_map(container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_from_cgroup_names() {
        let id = "0123456789abcdef".repeat(4);
        assert_eq!(container_id(&id), Some(id.as_str()));
        for prefix in ["docker", "cri-containerd", "crio", "libpod"] {
            let name = format!("{prefix}-{id}.scope");
            assert_eq!(container_id(&name), Some(id.as_str()), "{name}");
        }
        assert_eq!(container_id(&format!("libpod-{id}")), Some(id.as_str()));
        assert_eq!(container_id(&format!("other-{id}")), None);
        assert_eq!(container_id("session-1.scope"), None);
        assert_eq!(container_id("docker"), None);
        assert_eq!(container_id(&id[..63]), None);
        assert_eq!(container_id(&format!("{}g", &id[..63])), None);
    }

    #[test]
    fn container_ids_from_proc_cgroup_files() {
        let id = "0123456789abcdef".repeat(4);
        let v1 = format!("12:pids:/docker/{id}\n11:memory:/docker/{id}\n0::/\n");
        assert_eq!(container_in_proc_cgroup(&v1), Some(id.as_str()));
        let systemd = format!("0::/system.slice/docker-{id}.scope\n");
        assert_eq!(container_in_proc_cgroup(&systemd), Some(id.as_str()));
        let podman = format!("4:memory:/libpod_parent/libpod-{id}\n");
        assert_eq!(container_in_proc_cgroup(&podman), Some(id.as_str()));
        let kube = format!("0::/kubepods/besteffort/pod1234/{id}\n");
        assert_eq!(container_in_proc_cgroup(&kube), Some(id.as_str()));
        assert_eq!(
            container_in_proc_cgroup("0::/user.slice/session-1.scope\n"),
            None
        );
    }

    #[test]
    fn detects_this_hosts_hierarchy() {
        let root = Path::new("/sys/fs/cgroup");
        if !root.exists() {
            return;
        }
        match detect(root).unwrap() {
            Hierarchy::Unified => assert_eq!(fs_magic(root), Some(CGROUP2_SUPER_MAGIC)),
            Hierarchy::Controller(c) => {
                assert_eq!(fs_magic(&root.join(&c)), Some(CGROUP_SUPER_MAGIC))
            }
        }
        assert!(detect(Path::new("/no/such/dir")).is_err());
    }
}
