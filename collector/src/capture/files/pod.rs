//! What a CRI log file's path tells about its container, and the
//! envelope ids and tags made from it (pure rules, no I/O).
//!
//! The kubelet keeps each container's output in
//! `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log`
//! (namespace and pod names cannot hold `_`, so the split is exact). This
//! round, the path is all the files source knows: the envelope tags are
//! `namespace`, `pod`, `pod_uid`, `container` (the container's name in the
//! pod), `host` and `source_type=container`. No `container_id` (the path
//! does not say it) and no `image`.
//!
//! `source_id` is the pod's workload as far as the pod's name tells it
//! ([`workload_of`]); `instance_id` is the pod name. [`PodContainer`] keeps
//! these rules in one place, so that pod labels from the CRI can later take
//! precedence over the name.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use spillway_routes::ContainerInfo;

/// A container of a pod, as its log path names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodContainer {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The container's name in the pod.
    pub container: String,
}

/// The characters of the random suffixes Kubernetes puts in generated
/// names (`k8s.io/apimachinery/pkg/util/rand`: no vowels, no `0 1 3`).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

impl PodContainer {
    /// The container of a log file `path` relative to the pod logs
    /// directory: `<ns>_<pod>_<uid>/<container>/<n>.log`. `None` for any
    /// other shape.
    pub fn from_log_path(relative: &Path) -> Option<PodContainer> {
        let mut parts = relative.iter().map(|p| p.to_str());
        let (Some(Some(pod_dir)), Some(Some(container)), Some(Some(file)), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let restart = file.strip_suffix(".log")?;
        if restart.is_empty() || !restart.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Self::from_dirs(pod_dir, container)
    }

    /// The container of `<ns>_<pod>_<uid>` and `<container>` directories.
    pub fn from_dirs(pod_dir: &str, container: &str) -> Option<PodContainer> {
        let mut fields = pod_dir.splitn(3, '_');
        let (Some(namespace), Some(pod), Some(pod_uid)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        if [namespace, pod, pod_uid, container]
            .iter()
            .any(|s| s.is_empty())
        {
            return None;
        }
        Some(PodContainer {
            namespace: namespace.into(),
            pod: pod.into(),
            pod_uid: pod_uid.into(),
            container: container.into(),
        })
    }

    /// The envelope `source_id`: the pod's workload ([`workload_of`]).
    pub fn source_id(&self) -> &str {
        workload_of(&self.pod)
    }

    /// The envelope `instance_id`: the pod name.
    pub fn instance_id(&self) -> &str {
        &self.pod
    }

    /// The tags of every envelope of this container on `host`.
    pub fn tags(&self, host: &str) -> HashMap<String, String> {
        [
            ("namespace", self.namespace.as_str()),
            ("pod", &self.pod),
            ("pod_uid", &self.pod_uid),
            ("container", &self.container),
            ("host", host),
            ("source_type", "container"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// The container as routes see it: its name is `<pod>/<container>`
    /// (what `filter.name` matches); the id is unknown (empty).
    pub fn info(&self) -> ContainerInfo {
        ContainerInfo {
            id: String::new(),
            name: format!("{}/{}", self.pod, self.container),
            image: String::new(),
            hostname: self.pod.clone(),
            labels: BTreeMap::new(),
        }
    }

    /// A key of this container that stays the same across its restarts and
    /// log rotations: its lines all go to one shard, in order.
    pub fn key(&self) -> String {
        format!("{}/{}", self.pod_uid, self.container)
    }
}

/// The name of the workload that owns pod `pod`, as far as the name tells
/// it (a heuristic: the pod's labels and owner are not known here):
///
/// - a Deployment's pod `<name>-<template hash>-<5 chars>` gives `<name>`;
/// - a DaemonSet's or Job's pod `<name>-<5 chars>` gives `<name>`, a
///   CronJob's `<name>-<minutes since the epoch>-<5 chars>` gives `<name>`;
/// - a StatefulSet's pod `<name>-<ordinal>` is kept whole, as is any other
///   name.
///
/// "5 chars" and "template hash" (5 to 10 chars) are in Kubernetes' suffix
/// alphabet (no vowels, no `0`, `1`, `3`) and not all digits. A name such
/// as `web-prxy5` whose last part merely looks random is shortened too.
pub fn workload_of(pod: &str) -> &str {
    let Some(rest) = strip_segment(pod, |s| s.len() == 5 && is_random(s)) else {
        return pod;
    };
    strip_segment(rest, |s| (5..=10).contains(&s.len()) && is_random(s))
        .or_else(|| {
            strip_segment(rest, |s| {
                s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .unwrap_or(rest)
}

/// `name` without its last `-segment` if `matches(segment)` and something
/// is left before it.
fn strip_segment(name: &str, matches: impl Fn(&str) -> bool) -> Option<&str> {
    let (head, last) = name.rsplit_once('-')?;
    (!head.is_empty() && matches(last)).then_some(head)
}

fn is_random(s: &str) -> bool {
    s.bytes().all(|b| SUFFIX_ALPHABET.contains(&b)) && !s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_name_namespace_pod_uid_and_container() {
        let c = PodContainer::from_log_path(Path::new(
            "shop_web-7d9f8b6c5d-x2b4k_0b1c2d3e-aaaa-bbbb-cccc-1234567890ab/app/3.log",
        ))
        .unwrap();
        assert_eq!(
            c,
            PodContainer {
                namespace: "shop".into(),
                pod: "web-7d9f8b6c5d-x2b4k".into(),
                pod_uid: "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab".into(),
                container: "app".into(),
            }
        );
        assert_eq!(c.source_id(), "web");
        assert_eq!(c.instance_id(), "web-7d9f8b6c5d-x2b4k");
        let tags = c.tags("node-1");
        assert_eq!(tags.len(), 6);
        assert_eq!(tags["namespace"], "shop");
        assert_eq!(tags["pod"], "web-7d9f8b6c5d-x2b4k");
        assert_eq!(tags["pod_uid"], "0b1c2d3e-aaaa-bbbb-cccc-1234567890ab");
        assert_eq!(tags["container"], "app");
        assert_eq!(tags["host"], "node-1");
        assert_eq!(tags["source_type"], "container");
        assert!(!tags.contains_key("container_id"));
    }

    #[test]
    fn other_paths_are_not_container_logs() {
        for p in [
            "ns_pod_uid/app/0.log.20261201-005302",
            "ns_pod_uid/app/0.log.20261201-005302.gz",
            "ns_pod_uid/app/x.log",
            "ns_pod_uid/app/.log",
            "ns_pod_uid/0.log",
            "ns_pod/app/0.log",
            "ns__uid/app/0.log",
            "ns_pod_uid/app/sub/0.log",
        ] {
            assert_eq!(PodContainer::from_log_path(Path::new(p)), None, "{p}");
        }
        // A uid with `_` in it (static pods use a hash) stays whole.
        let c =
            PodContainer::from_log_path(Path::new("kube-system_etcd-n1_ab_cd/etcd/0.log")).unwrap();
        assert_eq!((c.pod.as_str(), c.pod_uid.as_str()), ("etcd-n1", "ab_cd"));
    }

    #[test]
    fn workloads_from_pod_names() {
        for (pod, workload) in [
            // Deployment (ReplicaSet hash, then the pod's suffix).
            ("web-7d9f8b6c5d-x2b4k", "web"),
            ("api-server-5c6b7d8f9-qwz2x", "api-server"),
            ("coredns-5d78c9869d-7xkbd", "coredns"),
            // DaemonSet, Job.
            ("node-exporter-x7k2p", "node-exporter"),
            ("fluentd-8hq4z", "fluentd"),
            // CronJob: its Job is named for the scheduled minute.
            ("backup-28711234-z5m8q", "backup"),
            // StatefulSet: the ordinal stays.
            ("db-0", "db-0"),
            ("kafka-12", "kafka-12"),
            // Not generated: kept whole.
            ("etcd-node-1", "etcd-node-1"),
            ("my-app-hello", "my-app-hello"),
            ("standalone", "standalone"),
            ("x-24567", "x-24567"),
            ("-x7k2p", "-x7k2p"),
        ] {
            assert_eq!(workload_of(pod), workload, "{pod}");
        }
    }

    #[test]
    fn routes_see_pod_and_container() {
        let c = PodContainer::from_dirs("ns_p-1_u", "c").unwrap();
        let info = c.info();
        assert_eq!(info.name, "p-1/c");
        assert_eq!(info.id, "");
        assert_eq!(c.key(), "u/c");
    }
}
