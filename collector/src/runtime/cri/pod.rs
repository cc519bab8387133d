//! What a Kubernetes pod tells of its containers' envelopes: source id,
//! instance id, tags, opt-out (the contract's table "Envelopes of
//! Kubernetes containers", in docs/contract.md). Pure functions of the
//! pod's name, labels and annotations, as the CRI runtime reports them.

use std::collections::{BTreeMap, HashMap};

/// The prefix of the tags that carry the pod's labels:
/// `pod_label.app.kubernetes.io/name`.
pub const LABEL_TAG_PREFIX: &str = "pod_label.";

/// A pod, as its sandbox is listed by the CRI runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

impl Pod {
    /// The annotation, else the label, `key`, if not empty.
    fn setting(&self, key: &str) -> Option<&str> {
        [self.annotations.get(key), self.labels.get(key)]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|v| !v.is_empty())
    }

    /// The envelopes' `source_id`: the annotation or label
    /// `spillway.source_id`, else the label `app.kubernetes.io/name`, else
    /// the owning workload's name ([`Pod::workload`]), else the pod's name.
    pub fn source_id(&self) -> &str {
        self.setting("spillway.source_id")
            .or_else(|| {
                self.labels
                    .get("app.kubernetes.io/name")
                    .map(String::as_str)
                    .filter(|v| !v.is_empty())
            })
            .or_else(|| self.workload())
            .unwrap_or(&self.name)
    }

    /// The envelopes' `instance_id`: the pod's name.
    pub fn instance_id(&self) -> &str {
        &self.name
    }

    /// Opted out with the annotation or label `spillway.ignore=true`.
    pub fn is_ignored(&self) -> bool {
        self.setting("spillway.ignore")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The name of the workload that owns the pod, as far as its name and
    /// the labels its controller sets tell:
    ///
    /// | owner | labels | pod name | workload |
    /// |---|---|---|---|
    /// | Deployment (through a ReplicaSet) | `pod-template-hash: H` | `<name>-<H>-<5 chars>` | `<name>` |
    /// | StatefulSet | `statefulset.kubernetes.io/pod-name` = the pod's name | `<name>-<ordinal>` | `<name>` |
    /// | Job (and so CronJob) | `batch.kubernetes.io/job-name` or `job-name` | `<job>-<5 chars>` | the job's name |
    /// | DaemonSet | `pod-template-generation` and `controller-revision-hash` | `<name>-<5 chars>` | `<name>` |
    ///
    /// `None` when none of these match (a bare pod, a name too long to
    /// have kept the pattern).
    pub fn workload(&self) -> Option<&str> {
        let name = self.name.as_str();
        let label = |k: &str| {
            self.labels
                .get(k)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        if let Some(hash) = label("pod-template-hash") {
            return without_random_suffix(name)
                .and_then(|rs| rs.strip_suffix(hash))
                .and_then(|d| d.strip_suffix('-'))
                .filter(|d| !d.is_empty());
        }
        if label("statefulset.kubernetes.io/pod-name") == Some(name) {
            let (set, ordinal) = name.rsplit_once('-')?;
            return (!set.is_empty()
                && !ordinal.is_empty()
                && ordinal.bytes().all(|b| b.is_ascii_digit()))
            .then_some(set);
        }
        if let Some(job) = label("batch.kubernetes.io/job-name").or_else(|| label("job-name")) {
            return Some(job);
        }
        if label("pod-template-generation").is_some() && label("controller-revision-hash").is_some()
        {
            return without_random_suffix(name);
        }
        None
    }

    /// The tags of a Kubernetes container's envelopes (besides the
    /// contract's `container_id`, `image`, `host`, `source_type`):
    /// `namespace`, `pod`, `pod_uid`, `container`, and each pod label as
    /// `pod_label.<key>`.
    pub fn tags(&self, container: &str, tags: &mut HashMap<String, String>) {
        for (k, v) in &self.labels {
            tags.insert(format!("{LABEL_TAG_PREFIX}{k}"), v.clone());
        }
        tags.insert("namespace".into(), self.namespace.clone());
        tags.insert("pod".into(), self.name.clone());
        tags.insert("pod_uid".into(), self.uid.clone());
        tags.insert("container".into(), container.to_owned());
    }
}

/// `name` without the `-xxxxx` Kubernetes appends to a generated name (5
/// lowercase letters or digits).
fn without_random_suffix(name: &str) -> Option<&str> {
    let (base, suffix) = name.rsplit_once('-')?;
    (!base.is_empty()
        && suffix.len() == 5
        && suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
    .then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Pod {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        Pod {
            namespace: "shop".into(),
            name: name.into(),
            uid: "0f0e-uid".into(),
            labels: map(labels),
            annotations: map(annotations),
        }
    }

    #[test]
    fn workloads_from_names_and_labels() {
        for (name, labels, want) in [
            // Deployment → ReplicaSet → pod.
            (
                "web-7d4b9c8f6d-x2k9p",
                &[("pod-template-hash", "7d4b9c8f6d")][..],
                Some("web"),
            ),
            (
                "api-v2-5f6b7c-abcde",
                &[("pod-template-hash", "5f6b7c")][..],
                Some("api-v2"),
            ),
            // A truncated name no longer carries the hash.
            (
                "a-very-long-name-x2k9p",
                &[("pod-template-hash", "7d4b9c8f6d")][..],
                None,
            ),
            // StatefulSet.
            (
                "db-0",
                &[("statefulset.kubernetes.io/pod-name", "db-0")][..],
                Some("db"),
            ),
            (
                "kafka-broker-12",
                &[("statefulset.kubernetes.io/pod-name", "kafka-broker-12")][..],
                Some("kafka-broker"),
            ),
            (
                "db-x",
                &[("statefulset.kubernetes.io/pod-name", "db-x")][..],
                None,
            ),
            // Job, and a CronJob's job.
            (
                "migrate-4hx7q",
                &[("batch.kubernetes.io/job-name", "migrate")][..],
                Some("migrate"),
            ),
            (
                "backup-28391520-k2j4m",
                &[("job-name", "backup-28391520")][..],
                Some("backup-28391520"),
            ),
            // DaemonSet.
            (
                "node-exporter-9xk2l",
                &[
                    ("pod-template-generation", "3"),
                    ("controller-revision-hash", "6c8d5f"),
                ][..],
                Some("node-exporter"),
            ),
            (
                "node-exporter-9xk2l",
                &[("pod-template-generation", "3")][..],
                None,
            ),
            // A bare pod.
            ("debug-shell", &[][..], None),
            ("debug-abcde", &[][..], None),
        ] {
            assert_eq!(pod(name, labels, &[]).workload(), want, "{name} {labels:?}");
        }
    }

    #[test]
    fn source_ids_in_order_of_precedence() {
        let rs = ("pod-template-hash", "7d4b9c8f6d");
        let app = ("app.kubernetes.io/name", "storefront");
        let name = "web-7d4b9c8f6d-x2k9p";
        for (labels, annotations, want) in [
            (&[][..], &[][..], name),
            (&[rs][..], &[][..], "web"),
            (&[rs, app][..], &[][..], "storefront"),
            (
                &[rs, app, ("spillway.source_id", "shop")][..],
                &[][..],
                "shop",
            ),
            (
                &[rs, app, ("spillway.source_id", "by-label")][..],
                &[("spillway.source_id", "by-annotation")][..],
                "by-annotation",
            ),
            (
                &[rs, app][..],
                &[("spillway.source_id", "shop")][..],
                "shop",
            ),
            // Empty values count as unset.
            (
                &[rs, ("app.kubernetes.io/name", "")][..],
                &[("spillway.source_id", "")][..],
                "web",
            ),
        ] {
            let p = pod(name, labels, annotations);
            assert_eq!(p.source_id(), want, "{labels:?} {annotations:?}");
            assert_eq!(p.instance_id(), name);
        }
    }

    #[test]
    fn opt_out_by_annotation_or_label() {
        for (labels, annotations, ignored) in [
            (&[][..], &[][..], false),
            (&[("spillway.ignore", "true")][..], &[][..], true),
            (&[][..], &[("spillway.ignore", "TRUE")][..], true),
            (&[("spillway.ignore", "false")][..], &[][..], false),
            (&[][..], &[("spillway.ignore", "yes")][..], false),
            // The annotation wins over the label.
            (
                &[("spillway.ignore", "true")][..],
                &[("spillway.ignore", "false")][..],
                false,
            ),
        ] {
            assert_eq!(
                pod("p", labels, annotations).is_ignored(),
                ignored,
                "{labels:?} {annotations:?}"
            );
        }
    }

    #[test]
    fn tags_name_the_pod_and_carry_its_labels() {
        let p = pod(
            "web-7d4b9c8f6d-x2k9p",
            &[("app.kubernetes.io/name", "storefront"), ("tier", "front")],
            &[("not", "a tag")],
        );
        let mut tags = HashMap::new();
        p.tags("nginx", &mut tags);
        let want: HashMap<String, String> = [
            ("namespace", "shop"),
            ("pod", "web-7d4b9c8f6d-x2k9p"),
            ("pod_uid", "0f0e-uid"),
            ("container", "nginx"),
            ("pod_label.app.kubernetes.io/name", "storefront"),
            ("pod_label.tier", "front"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(tags, want);
    }
}
