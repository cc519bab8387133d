//! A real containerd (Debian's, with its CRI plugin) for the Kubernetes
//! tests, and the test acting as the kubelet over the CRI: pod sandboxes
//! in the host's network namespace (no CNI needed), containers from the
//! busybox test image.
//!
//! Each [`Containerd`] is a daemon of its own (own config, root, state and
//! socket under a temporary directory), so it does not touch the
//! containerd that dockerd uses. Nothing can be pulled here: the busybox
//! image and a `pause` image (busybox `sleep`, named in the config's
//! `sandbox_image`) are built with Docker, saved to a tarball and
//! imported with `ctr -n k8s.io images import`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spillway_cri_api::RuntimeServiceClient;
use spillway_cri_api::v1;
use tonic::transport::Channel;

use crate::docker::{IMAGE, docker};

/// The cgroup the test pods' cgroups are made in (as the kubelet's
/// `kubepods`).
const CGROUP_PARENT: &str = "spillway-e2e-pods";

/// The sandbox image: busybox whose command is a long `sleep`.
pub const PAUSE_IMAGE: &str = "spillway-test/pause:latest";

/// Why containerd tests cannot run here, if they cannot (panics under
/// `CI=true`, where `cargo xtask test` installs containerd and Docker).
pub fn unavailable() -> Option<String> {
    if let Some(why) = crate::docker::unavailable(true) {
        return Some(why);
    }
    crate::tool_missing(
        "containerd",
        "--version",
        "containerd tests",
        "cargo xtask test installs it",
    )
}

/// A containerd daemon of the test's own.
pub struct Containerd {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Writes the config, starts containerd, waits for its CRI and
    /// imports the images.
    pub async fn start(dir: PathBuf) -> Containerd {
        std::fs::create_dir_all(dir.join("cni/bin")).unwrap();
        std::fs::create_dir_all(dir.join("cni/conf")).unwrap();
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/{PAUSE_IMAGE}"
  # The kubelet asks for a negative oom_score_adj for sandboxes; without
  # CAP_SYS_RESOURCE (as in some CI sandboxes) runc could not set it.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let mut c = Containerd { dir, child: None };
        c.spawn();
        c.wait_cri().await;
        c.import_images();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        self.child = Some(child);
    }

    /// `unix:///.../containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.dir.join("containerd.sock").display())
    }

    pub fn client(&self) -> RuntimeServiceClient<Channel> {
        spillway_cri_api::connect(&self.endpoint()).unwrap().0
    }

    /// Waits until the CRI answers `Version`.
    async fn wait_cri(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = self
                .client()
                .version(v1::VersionRequest {
                    version: "v1".into(),
                })
                .await;
            if answer.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's CRI does not answer after 60 s: {answer:?}; log: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Saves the busybox and pause images from Docker and imports them.
    fn import_images(&self) {
        let (exists, _, _) = docker(&["image", "inspect", PAUSE_IMAGE]);
        if !exists {
            let (ok, id, err) = docker(&["create", IMAGE, "true"]);
            assert!(ok, "docker create: {err}");
            let id = id.trim();
            let (ok, _, err) = docker(&[
                "commit",
                "--change",
                r#"CMD ["/bin/sleep", "2147483647"]"#,
                id,
                PAUSE_IMAGE,
            ]);
            docker(&["rm", id]);
            assert!(ok, "docker commit: {err}");
        }
        let tar = self.dir.join("images.tar");
        let (ok, _, err) = docker(&["save", "-o", &tar.display().to_string(), IMAGE, PAUSE_IMAGE]);
        assert!(ok, "docker save: {err}");
        let out = Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["-n", "k8s.io", "images", "import", "--all-platforms"])
            .arg(&tar)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Kills containerd (its containers' shims live on) and starts it
    /// again, then waits for its CRI.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_cri().await;
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and removes every pod (the shims end with them).
    pub async fn remove_all_pods(&self) {
        let mut rt = self.client();
        let Ok(pods) = rt
            .list_pod_sandbox(v1::ListPodSandboxRequest { filter: None })
            .await
        else {
            return;
        };
        for p in pods.into_inner().items {
            remove_pod(&mut rt, &p.id).await;
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- containerd log (last lines) -----");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        // Pods first, so no shim outlives the test.
        let endpoint = self.endpoint();
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    let mut rt = spillway_cri_api::connect(&endpoint).unwrap().0;
                    if let Ok(pods) = rt
                        .list_pod_sandbox(v1::ListPodSandboxRequest { filter: None })
                        .await
                    {
                        for p in pods.into_inner().items {
                            remove_pod(&mut rt, &p.id).await;
                        }
                    }
                });
        });
        let _ = cleanup.join();
        self.kill();
        // The overlay mounts of the snapshots, then the directory.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "grep -o ' {0}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l",
                self.dir.display()
            ))
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The pods' (now empty) parent cgroups, in every hierarchy.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for d in /sys/fs/cgroup/{CGROUP_PARENT} /sys/fs/cgroup/*/{CGROUP_PARENT}; do [ -d $d ] && rmdir $d/pod* $d; done"
            ))
            .status();
    }
}

/// Stops and removes the pod sandbox `id` and its containers.
pub async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    let _ = rt
        .stop_pod_sandbox(v1::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        })
        .await;
    let _ = rt
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        })
        .await;
}

/// A pod as the test asks for it.
pub struct PodSpec<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub labels: &'a [(&'a str, &'a str)],
    pub annotations: &'a [(&'a str, &'a str)],
    /// (container name, shell script) each.
    pub containers: &'a [(&'a str, &'a str)],
}

/// A running pod: its sandbox and containers' ids.
pub struct RunningPod {
    pub sandbox_id: String,
    /// Container name → id.
    pub containers: HashMap<String, String>,
}

fn map(kv: &[(&str, &str)]) -> HashMap<String, String> {
    kv.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What the kubelet does for a pod with `hostNetwork: true`:
/// RunPodSandbox, then CreateContainer and StartContainer for each. The
/// containers' CRI log files go to `<logs>/<ns>_<pod>_<uid>/`, as the
/// kubelet's go to `/var/log/pods/`.
pub async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    logs: &std::path::Path,
    spec: &PodSpec<'_>,
) -> RunningPod {
    let namespaces = || {
        Some(v1::NamespaceOption {
            network: v1::NamespaceMode::Node as i32,
            pid: v1::NamespaceMode::Container as i32,
            ipc: v1::NamespaceMode::Pod as i32,
            ..Default::default()
        })
    };
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: spec.name.into(),
            uid: spec.uid.into(),
            namespace: spec.namespace.into(),
            attempt: 0,
        }),
        // The host's UTS namespace too (hostNetwork): no hostname of its own.
        hostname: String::new(),
        log_directory: logs
            .join(format!("{}_{}_{}", spec.namespace, spec.name, spec.uid))
            .display()
            .to_string(),
        labels: map(spec.labels),
        annotations: map(spec.annotations),
        linux: Some(v1::LinuxPodSandboxConfig {
            // As the kubelet's cgroupfs driver names it.
            cgroup_parent: format!("/{CGROUP_PARENT}/pod{}", spec.uid),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: namespaces(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox_id = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    let mut containers = HashMap::new();
    for (name, script) in spec.containers {
        let created = rt
            .create_container(v1::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(v1::ContainerConfig {
                    metadata: Some(v1::ContainerMetadata {
                        name: (*name).into(),
                        attempt: 0,
                    }),
                    image: Some(v1::ImageSpec {
                        image: format!("docker.io/{IMAGE}"),
                        ..Default::default()
                    }),
                    command: vec!["sh".into(), "-c".into(), (*script).into()],
                    log_path: format!("{name}/0.log"),
                    linux: Some(v1::LinuxContainerConfig {
                        security_context: Some(v1::LinuxContainerSecurityContext {
                            namespace_options: namespaces(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: Some(config.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        rt.start_container(v1::StartContainerRequest {
            container_id: created.clone(),
        })
        .await
        .expect("StartContainer");
        containers.insert((*name).to_owned(), created);
    }
    RunningPod {
        sandbox_id,
        containers,
    }
}
