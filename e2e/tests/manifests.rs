//! The Kubernetes manifests in `deploy/kubernetes`, checked offline:
//!
//! - every document validates with `kubernetes-validate --strict` (unknown
//!   fields are errors) against the OpenAPI schemas of each Kubernetes
//!   version in [`KUBERNETES_VERSIONS`], and has no duplicate keys;
//! - the validator does reject broken manifests (a wrong type, an unknown
//!   field, an unknown kind, a duplicate key), so its pass means something;
//! - `kustomization.yaml` lists every manifest;
//! - the binaries accept the flags, environment variables and config file
//!   the manifests give them (they get as far as reading the TLS files,
//!   which the test does not provide);
//! - the certificate of `cert-manager.yaml` names every host the components
//!   dial and every Service name.
//!
//! `kubernetes-validate` (PyPI, with the Kubernetes schemas bundled) is
//! installed into `target/tools/venv` by `cargo xtask test`
//! (`xtask/src/validators.rs`). Without it, the tests that need it say
//! `skipped: …`, except under the strict flag
//! (`cargo xtask test`), where they fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use spillway_e2e::bin;

/// The Kubernetes versions the manifests must be valid for: the oldest
/// supported (1.30: `appArmorProfile` in the pod security context) and the
/// newest the pinned validator bundles.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// Files of `deploy/kubernetes` the schemas do not cover: the kustomization
/// (checked below) and cert-manager's kinds (CRDs).
const NOT_SCHEMA_VALIDATED: &[&str] = &["kustomization.yaml", "cert-manager.yaml"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e is inside the workspace")
        .to_path_buf()
}

fn manifests_dir() -> PathBuf {
    workspace().join("deploy").join("kubernetes")
}

/// Every `*.yaml` of `deploy/kubernetes`, by name.
fn yaml_files() -> Vec<PathBuf> {
    let dir = manifests_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 file name")
}

/// The manifests the schemas validate.
fn manifest_files() -> Vec<PathBuf> {
    let files: Vec<PathBuf> = yaml_files()
        .into_iter()
        .filter(|p| !NOT_SCHEMA_VALIDATED.contains(&file_name(p)))
        .collect();
    assert!(
        files.len() >= 4,
        "expected the namespace, collector, router and RLP manifests, found {files:?}"
    );
    files
}

/// The installed validator, or `None` after saying why the test is skipped.
/// Under the strict flag a missing validator fails the test instead.
fn validator() -> Option<PathBuf> {
    let exe = workspace()
        .join("target")
        .join("tools")
        .join("venv")
        .join("bin")
        .join("kubernetes-validate");
    if exe.is_file() {
        return Some(exe);
    }
    let why = format!(
        "{} is not installed (`cargo xtask test` installs it)",
        exe.display()
    );
    spillway_e2e::skip("the manifest tests", &why);
    None
}

/// Runs the validator in strict mode on `files`, against every version in
/// [`KUBERNETES_VERSIONS`]. `Ok(report)` when it accepted everything: exit
/// status 0 and nothing but `INFO … passed` lines. A `WARN` fails too: the
/// validator warns, and passes, when it has no schema for a kind or an
/// apiVersion, so a typo in either would otherwise go unchecked.
fn validate(exe: &Path, files: &[PathBuf]) -> Result<String, String> {
    let mut cmd = Command::new(exe);
    cmd.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        cmd.args(["--kubernetes-version", version]);
    }
    let out = cmd
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = |l: &str| l.starts_with("INFO ") && l.contains(" passed for resource ");
    if out.status.success() && report.lines().all(passed) {
        Ok(report)
    } else {
        Err(format!("{} ({}):\n{report}", exe.display(), out.status))
    }
}

/// `major.minor` of a version, as the validator reports it.
fn major_minor(version: &str) -> &str {
    let second_dot = version
        .match_indices('.')
        .nth(1)
        .map_or(version.len(), |(i, _)| i);
    &version[..second_dot]
}

/// Loads every document of `file` as JSON with the PyYAML of the
/// validator's environment, refusing duplicate keys: PyYAML (and so the
/// validator) would keep the last one silently, the API server refuses them.
fn load(exe: &Path, file: &Path) -> Result<Vec<Value>, String> {
    const SCRIPT: &str = r#"
import json, sys, yaml

class Loader(yaml.SafeLoader):
    pass

def mapping(loader, node):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            sys.exit("%s:%d: duplicate key %r" % (sys.argv[1], key_node.start_mark.line + 1, key))
        seen.add(key)
    return loader.construct_mapping(node, deep=True)

Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
with open(sys.argv[1]) as f:
    docs = [d for d in yaml.load_all(f, Loader=Loader) if d is not None]
json.dump(docs, sys.stdout, default=str)
"#;
    let python = exe.with_file_name("python");
    let out = Command::new(&python)
        .args(["-c", SCRIPT])
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .map_err(|e| format!("{}: not JSON from the loader: {e}", file.display()))
}

fn load_all(exe: &Path, files: &[PathBuf]) -> Vec<Value> {
    files
        .iter()
        .flat_map(|f| load(exe, f).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

/// A directory of its own for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("spillway-manifests-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a temporary file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ------------------------------------------------------------------ schemas

#[test]
fn manifests_pass_strict_schema_validation() {
    let Some(exe) = validator() else { return };
    let files = manifest_files();
    let report = validate(&exe, &files).unwrap_or_else(|e| panic!("{e}"));
    // Every document of every file, for every version (an empty file, or a
    // document the validator skipped, would be missing here).
    for file in &files {
        let documents = load(&exe, file).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !documents.is_empty(),
            "{} holds no document",
            file.display()
        );
        for version in KUBERNETES_VERSIONS {
            let suffix = format!(" against version {}", major_minor(version));
            let passed = report
                .lines()
                .filter(|l| l.starts_with(&format!("INFO {} ", file.display())))
                .filter(|l| l.ends_with(&suffix))
                .count();
            assert_eq!(
                passed,
                documents.len(),
                "{}: {} documents, {passed} passed against {version}:\n{report}",
                file.display(),
                documents.len()
            );
        }
    }
    eprint!("{report}");
}

#[test]
fn the_validator_rejects_broken_manifests() {
    let Some(exe) = validator() else { return };
    let dir = TempDir::new("broken");
    let good = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: example
spec:
  replicas: 2
  selector:
    matchLabels:
      app: example
  template:
    metadata:
      labels:
        app: example
    spec:
      containers:
        - name: app
          image: example/app:1
          securityContext:
            readOnlyRootFilesystem: true
";
    let broken = |from: &str, to: &str| {
        assert!(good.contains(from), "{from:?} is not in the example");
        good.replacen(from, to, 1)
    };
    // The control: the same Deployment without the defect passes.
    let control = dir.write("good.yaml", good);
    validate(&exe, &[control]).unwrap_or_else(|e| panic!("the control failed: {e}"));

    let cases = [
        (
            "a number as text",
            broken("replicas: 2", "replicas: \"three\""),
            "replicas",
        ),
        (
            "an unknown field (strict mode)",
            broken("readOnlyRootFilesystem", "readOnlyRootFilesytem"),
            "readOnlyRootFilesytem",
        ),
        (
            "an unknown kind",
            broken("kind: Deployment", "kind: Deploymnt"),
            "Deploymnt",
        ),
    ];
    for (what, text, named) in cases {
        let file = dir.write("broken.yaml", &text);
        match validate(&exe, &[file]) {
            Ok(report) => panic!("the validator accepted {what}:\n{text}\n{report}"),
            Err(e) => assert!(
                e.contains(named),
                "{what}: the report does not name {named:?}: {e}"
            ),
        }
    }

    let duplicate = dir.write(
        "duplicate.yaml",
        &broken("  replicas: 2\n", "  replicas: 2\n  replicas: 3\n"),
    );
    let e = load(&exe, &duplicate).expect_err("a duplicate key was accepted");
    assert!(e.contains("duplicate key 'replicas'"), "{e}");
}

#[test]
fn kustomization_lists_every_manifest() {
    let path = manifests_dir().join("kustomization.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut listed = Vec::new();
    let mut in_resources = false;
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        if !line.starts_with(' ') && !line.starts_with('-') {
            in_resources = line.trim_end() == "resources:";
        } else if in_resources && let Some(item) = line.trim().strip_prefix("- ") {
            listed.push(item.trim().to_owned());
        }
    }
    let mut expected: Vec<String> = manifest_files()
        .iter()
        .map(|p| file_name(p).to_owned())
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "resources of {}", path.display());
    assert!(
        !listed.iter().any(|f| f == "cert-manager.yaml"),
        "cert-manager.yaml needs cert-manager's CRDs: keep it out of the default resources"
    );
}

// ------------------------------------------------- what the binaries are given

/// The pod templates of the workloads, with the binary each one runs.
fn workloads(docs: &[Value]) -> Vec<(&Value, String)> {
    docs.iter()
        .filter(|d| matches!(kind(d), "DaemonSet" | "StatefulSet" | "Deployment"))
        .map(|d| {
            let containers = d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .expect("containers");
            assert_eq!(containers.len(), 1, "{}: one container", name(d));
            let image = containers[0]["image"].as_str().expect("image");
            let binary = image
                .strip_prefix("spillway/")
                .and_then(|i| i.split(':').next())
                .map(|component| format!("spillway-{component}"))
                .unwrap_or_else(|| panic!("{}: unexpected image {image}", name(d)));
            (d, binary)
        })
        .collect()
}

#[test]
fn the_binaries_accept_what_the_manifests_give_them() {
    let Some(exe) = validator() else { return };
    let docs = load_all(&exe, &manifest_files());
    let workloads = workloads(&docs);
    let mut binaries: Vec<&str> = workloads.iter().map(|(_, b)| b.as_str()).collect();
    binaries.sort();
    assert_eq!(
        binaries,
        ["spillway-collector", "spillway-rlp", "spillway-router"]
    );
    for (workload, binary) in &workloads {
        let dir = TempDir::new(binary);
        let pod = &workload["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let volume = |name: &str| {
            pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == name))
                .unwrap_or_else(|| panic!("{binary}: no volume {name}"))
                .clone()
        };
        // Where each mount's path is in this test: a ConfigMap's files are
        // written out; Secrets stay missing, so the binary stops at its TLS
        // files, having parsed everything else.
        let mut paths: Vec<(String, PathBuf)> = Vec::new();
        for mount in container["volumeMounts"].as_array().expect("volumeMounts") {
            let at = mount["mountPath"].as_str().expect("mountPath").to_owned();
            let v = volume(mount["name"].as_str().expect("mount name"));
            if let Some(config_map) = v["configMap"]["name"].as_str() {
                let data = &docs
                    .iter()
                    .find(|d| kind(d) == "ConfigMap" && name(d) == config_map)
                    .unwrap_or_else(|| panic!("{binary}: no ConfigMap {config_map}"))["data"];
                let sub = mount["subPath"]
                    .as_str()
                    .expect("ConfigMaps are mounted by subPath");
                let text = data[sub]
                    .as_str()
                    .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {sub}"));
                paths.push((at, dir.write(sub, text)));
            } else if v["secret"].is_object() {
                paths.push((at, dir.0.join("secret-not-provided")));
            }
        }
        let local = |value: &str| {
            paths.iter().fold(value.to_owned(), |v, (at, here)| {
                v.replace(at.as_str(), &here.display().to_string())
            })
        };
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| local(a.as_str().expect("args are strings")))
            .collect();
        let mut cmd = Command::new(bin(binary));
        cmd.env_clear().args(&args);
        for env in container["env"].as_array().into_iter().flatten() {
            let key = env["name"].as_str().expect("env name");
            let value = match env["value"].as_str() {
                Some(v) => local(v),
                None if env["valueFrom"]["fieldRef"].is_object() => "node-1".to_owned(),
                None if env["valueFrom"]["secretKeyRef"].is_object() => "secret".to_owned(),
                None => panic!("{binary}: env {key} has no value the test can give"),
            };
            cmd.env(key, value);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{binary} {args:?} kept running: it should stop at its TLS files");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tls_ca = local("/etc/spillway/tls/ca.crt");
        assert!(
            out.status.code() == Some(2)
                && stderr.contains(&format!("cannot read --tls-ca {tls_ca}")),
            "{binary} {args:?} should have parsed its flags, environment and config file and \
             stopped at the missing {tls_ca} ({}):\n{stderr}",
            out.status
        );
    }
}

// ------------------------------------------------------------- certificates

/// Whether the certificate name `pattern` (maybe `*.` and a domain) covers
/// `host`.
fn covers(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == domain),
        None => pattern == host,
    }
}

/// `HOST` of every `--router=HOST:PORT` in the workloads' args and of every
/// entry of a `router = [...]` line in their ConfigMaps.
fn dialled_hosts(docs: &[Value]) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for (workload, _) in workloads(docs) {
        let args = workload["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args");
        targets.extend(
            args.iter()
                .filter_map(|a| a.as_str()?.strip_prefix("--router="))
                .flat_map(|list| list.split(','))
                .map(str::to_owned),
        );
    }
    for config_map in docs.iter().filter(|d| kind(d) == "ConfigMap") {
        for text in config_map["data"].as_object().into_iter().flatten() {
            for line in text.1.as_str().unwrap_or_default().lines() {
                let Some(list) = line.trim().strip_prefix("router = [") else {
                    continue;
                };
                targets.extend(list.split('"').skip(1).step_by(2).map(str::to_owned));
            }
        }
    }
    let hosts: Vec<String> = targets
        .iter()
        .map(|t| t.rsplit_once(':').map_or(t.as_str(), |(h, _)| h).to_owned())
        .collect();
    assert!(!hosts.is_empty(), "no --router found in the manifests");
    hosts
}

#[test]
fn the_certificate_names_every_host_that_is_dialled() {
    let Some(exe) = validator() else { return };
    let docs = load_all(&exe, &manifest_files());
    let cert_manager =
        load(&exe, &manifests_dir().join("cert-manager.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let certificate = cert_manager
        .iter()
        .find(|d| kind(d) == "Certificate" && d["spec"]["secretName"] == "spillway-tls")
        .expect("a Certificate for the Secret spillway-tls");
    let names: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .expect("dnsNames")
        .iter()
        .map(|n| n.as_str().expect("a DNS name"))
        .collect();

    let mut hosts = dialled_hosts(&docs);
    for service in docs.iter().filter(|d| kind(d) == "Service") {
        let ns = service["metadata"]["namespace"]
            .as_str()
            .expect("namespace");
        hosts.push(format!("{}.{ns}.svc.cluster.local", name(service)));
    }
    for set in docs.iter().filter(|d| kind(d) == "StatefulSet") {
        let ns = set["metadata"]["namespace"].as_str().expect("namespace");
        let service = set["spec"]["serviceName"].as_str().expect("serviceName");
        for i in 0..set["spec"]["replicas"].as_u64().expect("replicas") {
            hosts.push(format!(
                "{}-{i}.{service}.{ns}.svc.cluster.local",
                name(set)
            ));
        }
    }
    for host in &hosts {
        assert!(
            names.iter().any(|n| covers(n, host)),
            "{host} is not among the certificate's names {names:?}"
        );
    }
    // Every Secret the workloads mount is the one that certificate makes.
    for (workload, _) in workloads(&docs) {
        for volume in workload["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .expect("volumes")
        {
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                assert_eq!(secret, "spillway-tls", "{}", name(workload));
            }
        }
    }
}

#[test]
fn wildcard_names_cover_one_label() {
    assert!(covers("a.b", "a.b"));
    assert!(covers("*.b.c", "a.b.c"));
    assert!(!covers("*.b.c", "b.c"));
    assert!(!covers("*.b.c", "x.a.b.c"));
    assert_eq!(major_minor("1.30.0"), "1.30");
}
