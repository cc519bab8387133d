//! Containers as the collector sees them, and the envelopes made from their
//! output (the contract's "Envelopes made from container output" table).

use std::collections::BTreeMap;
use std::sync::Arc;

use spillway_routes::ContainerInfo;

use bytes::Bytes;
use spillway_proto::preencoded::{self as pe, field};
use spillway_proto::v2::{Envelope, Log, envelope::Message, log::Type};

use crate::lines::Line;
use crate::runtime::cri::pod::Pod;

/// What the collector knows about one container, from its runtime
/// (`docker inspect`, or the CRI's container and pod sandbox).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// The full 64-hex-digit id.
    pub id: String,
    /// The name without Docker's leading `/`.
    pub name: String,
    /// The image as the container was created from it (`Config.Image`).
    pub image: String,
    /// The container's own hostname (`Config.Hostname`).
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` entries of the container's environment.
    pub env: Vec<String>,
    /// The init process's pid on the host; 0 when not running.
    pub pid: u32,
    /// When the container (last) started, ns since the epoch; 0 if unknown.
    pub started_at: i64,
    /// Started with a TTY (`docker run -t`): stdout and stderr are one pty,
    /// and everything is `OUT`.
    pub tty: bool,
    /// The pod of a container run through the CRI (Kubernetes); then
    /// `name` is the container's name in the pod, `labels` are the pod's,
    /// and ids, tags and opt-out follow the pod ([`Pod`]).
    pub pod: Option<Arc<Pod>>,
}

/// Which of a container's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn log_type(self) -> Type {
        match self {
            Stream::Stdout => Type::Out,
            Stream::Stderr => Type::Err,
        }
    }

    /// The name used by logspout's `filter.sources` and `/logs`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

impl Container {
    /// The label `spillway.source_id`, else the Compose service, else the
    /// name; for a pod's container, [`Pod::source_id`].
    pub fn source_id(&self) -> &str {
        if let Some(pod) = &self.pod {
            return pod.source_id();
        }
        self.labels
            .get("spillway.source_id")
            .or_else(|| self.labels.get("com.docker.compose.service"))
            .filter(|s| !s.is_empty())
            .map_or(&self.name, |s| s)
    }

    /// The Compose replica number, else the 12-character short id; for a
    /// pod's container, the pod's name.
    pub fn instance_id(&self) -> &str {
        if let Some(pod) = &self.pod {
            return pod.instance_id();
        }
        self.labels
            .get("com.docker.compose.container-number")
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .unwrap_or_else(|| &self.id[..self.id.len().min(12)])
    }

    /// Opted out with `LOGSPOUT=ignore`, `SPILLWAY=ignore` or the label
    /// `spillway.ignore=true` (for a pod's container, [`Pod::is_ignored`]).
    pub fn is_ignored(&self) -> bool {
        if let Some(pod) = &self.pod {
            return pod.is_ignored();
        }
        self.env
            .iter()
            .any(|kv| kv == "LOGSPOUT=ignore" || kv == "SPILLWAY=ignore")
            || self
                .labels
                .get("spillway.ignore")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The tags every envelope from this container carries.
    pub fn tags(&self, host: &str) -> std::collections::HashMap<String, String> {
        let mut tags = std::collections::HashMap::new();
        if let Some(pod) = &self.pod {
            pod.tags(&self.name, &mut tags);
        } else {
            tags.extend(
                self.labels
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((k.strip_prefix("spillway.tag.")?.to_owned(), v.clone()))
                    })
                    .filter(|(k, _)| !k.is_empty()),
            );
            tags.insert("container_name".into(), self.name.clone());
        }
        tags.insert("container_id".into(), self.id.clone());
        tags.insert("image".into(), self.image.clone());
        tags.insert("host".into(), host.to_owned());
        tags.insert("source_type".into(), "container".into());
        tags
    }
}

/// Builds envelopes for one container: its ids and tags are computed, and
/// encoded, once.
///
/// [`EnvelopeTemplate::encode`] writes a line's envelope straight into its
/// protobuf bytes: the parts that are the same for every line of the
/// container (source id, instance id, the tag map entries) are encoded here,
/// once, and each line only adds its timestamp and its `Log` (and, for a
/// piece of a long line, the `partial=true` tag). The bytes decode to what
/// [`EnvelopeTemplate::envelope`] builds.
#[derive(Clone, Debug)]
pub struct EnvelopeTemplate {
    source_id: String,
    instance_id: String,
    tags: std::collections::HashMap<String, String>,
    /// `source_id` (field 2), encoded.
    wire_source_id: Bytes,
    /// `instance_id` (field 8) and the tag entries (field 9, by key),
    /// encoded.
    wire_ids_and_tags: Bytes,
    /// The same with `partial=true` among the tags (replacing a `partial`
    /// tag from a label), for the pieces of a long line.
    wire_ids_and_tags_partial: Bytes,
    /// The container as routes see it (filters, syslog fields).
    pub info: Arc<ContainerInfo>,
}

impl EnvelopeTemplate {
    pub fn new(c: &Container, host: &str) -> Self {
        Self::from_parts(
            c.source_id().to_owned(),
            c.instance_id().to_owned(),
            c.tags(host),
            ContainerInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                hostname: c.hostname.clone(),
                labels: c.labels.clone(),
            },
        )
    }

    /// A template for a source that knows its containers otherwise than
    /// as a [`Container`] (a log file's path): the ids, the tags, and the
    /// container as routes see it.
    pub fn from_parts(
        source_id: String,
        instance_id: String,
        tags: std::collections::HashMap<String, String>,
        info: ContainerInfo,
    ) -> Self {
        let mut wire_source_id = Vec::new();
        if !source_id.is_empty() {
            pe::put_len_delimited(
                &mut wire_source_id,
                field::ENVELOPE_SOURCE_ID,
                source_id.as_bytes(),
            );
        }
        let ids_and_tags = |partial: bool| {
            let mut buf = Vec::new();
            if !instance_id.is_empty() {
                pe::put_len_delimited(
                    &mut buf,
                    field::ENVELOPE_INSTANCE_ID,
                    instance_id.as_bytes(),
                );
            }
            // By key, so that the bytes are the same on every run.
            let mut sorted: BTreeMap<&str, &str> =
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            if partial {
                sorted.insert("partial", "true");
            }
            for (k, v) in sorted {
                pe::put_string_map_entry(&mut buf, field::ENVELOPE_TAGS, k, v);
            }
            Bytes::from(buf)
        };
        EnvelopeTemplate {
            wire_ids_and_tags: ids_and_tags(false),
            wire_ids_and_tags_partial: ids_and_tags(true),
            wire_source_id: Bytes::from(wire_source_id),
            source_id,
            instance_id,
            tags,
            info: Arc::new(info),
        }
    }

    /// The envelope for one line (or one 16 KiB piece of a long line).
    pub fn envelope(&self, stream: Stream, line: Line) -> Envelope {
        let mut tags = self.tags.clone();
        if line.partial {
            tags.insert("partial".into(), "true".into());
        }
        Envelope {
            timestamp: line.timestamp,
            source_id: self.source_id.clone(),
            instance_id: self.instance_id.clone(),
            tags,
            message: Some(Message::Log(Log {
                payload: line.payload,
                r#type: stream.log_type() as i32,
            })),
            ..Default::default()
        }
    }

    /// The protobuf bytes of [`EnvelopeTemplate::envelope`] for `line`, in
    /// one allocation of exactly their size. Fields are written in field
    /// number order (as prost does): timestamp, source id, log, instance
    /// id, tags (sorted by key); defaults are left out, as prost does.
    pub fn encode(&self, stream: Stream, line: &Line) -> Bytes {
        let payload = &line.payload[..];
        let ty = stream.log_type() as i32 as u64;
        let log_len = if payload.is_empty() {
            0
        } else {
            pe::len_delimited_len(field::LOG_PAYLOAD, payload.len())
        } + if ty == 0 {
            0
        } else {
            pe::varint_field_len(field::LOG_TYPE, ty)
        };
        let timestamp = line.timestamp as u64;
        let rest = if line.partial {
            &self.wire_ids_and_tags_partial
        } else {
            &self.wire_ids_and_tags
        };
        let len = if timestamp == 0 {
            0
        } else {
            pe::varint_field_len(field::ENVELOPE_TIMESTAMP, timestamp)
        } + self.wire_source_id.len()
            + pe::len_delimited_len(field::ENVELOPE_LOG, log_len)
            + rest.len();
        let mut buf = Vec::with_capacity(len);
        if timestamp != 0 {
            pe::put_varint_field(&mut buf, field::ENVELOPE_TIMESTAMP, timestamp);
        }
        buf.extend_from_slice(&self.wire_source_id);
        pe::put_len_delimited_header(&mut buf, field::ENVELOPE_LOG, log_len);
        if !payload.is_empty() {
            pe::put_len_delimited(&mut buf, field::LOG_PAYLOAD, payload);
        }
        if ty != 0 {
            pe::put_varint_field(&mut buf, field::LOG_TYPE, ty);
        }
        buf.extend_from_slice(rest);
        debug_assert_eq!(buf.len(), len, "sized exactly");
        // len == capacity: the Vec becomes the Bytes without a copy.
        Bytes::from(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(payload: &'static str, timestamp: i64) -> Line {
        Line {
            payload: Bytes::from_static(payload.as_bytes()),
            timestamp,
            partial: false,
        }
    }

    fn container() -> Container {
        Container {
            id: "a".repeat(64),
            name: "web-1".into(),
            image: "busybox:latest".into(),
            ..Default::default()
        }
    }

    #[test]
    fn source_and_instance_ids_follow_the_contract() {
        let mut c = container();
        assert_eq!(c.source_id(), "web-1");
        assert_eq!(c.instance_id(), "aaaaaaaaaaaa");
        c.labels
            .insert("com.docker.compose.service".into(), "web".into());
        c.labels
            .insert("com.docker.compose.container-number".into(), "3".into());
        assert_eq!(c.source_id(), "web");
        assert_eq!(c.instance_id(), "3");
        c.labels.insert("spillway.source_id".into(), "shop".into());
        assert_eq!(c.source_id(), "shop");
    }

    #[test]
    fn ignore_rules() {
        let mut c = container();
        assert!(!c.is_ignored());
        c.env = vec!["PATH=/bin".into(), "LOGSPOUT=ignore".into()];
        assert!(c.is_ignored());
        c.env = vec!["SPILLWAY=ignore".into()];
        assert!(c.is_ignored());
        c.env.clear();
        c.labels.insert("spillway.ignore".into(), "true".into());
        assert!(c.is_ignored());
        c.labels.insert("spillway.ignore".into(), "false".into());
        assert!(!c.is_ignored());
    }

    #[test]
    fn envelopes_carry_the_contract_tags() {
        let mut c = container();
        c.labels
            .insert("spillway.tag.team".into(), "payments".into());
        c.labels.insert("other".into(), "x".into());
        let t = EnvelopeTemplate::new(&c, "node-7");
        let mut piece = line("hello", 42);
        piece.partial = true;
        let e = t.envelope(Stream::Stderr, piece);
        assert_eq!(e.timestamp, 42);
        assert_eq!(e.source_id, "web-1");
        assert_eq!(e.instance_id, "aaaaaaaaaaaa");
        assert_eq!(e.tags["container_id"], "a".repeat(64));
        assert_eq!(e.tags["container_name"], "web-1");
        assert_eq!(e.tags["image"], "busybox:latest");
        assert_eq!(e.tags["host"], "node-7");
        assert_eq!(e.tags["source_type"], "container");
        assert_eq!(e.tags["team"], "payments");
        assert_eq!(e.tags["partial"], "true");
        assert!(!e.tags.contains_key("other"));
        let Some(Message::Log(log)) = e.message else {
            panic!("a log")
        };
        assert_eq!(log.r#type, Type::Err as i32);
        assert_eq!(&log.payload[..], b"hello");
    }

    #[test]
    fn a_pods_container_follows_the_pod() {
        let pod = Pod {
            namespace: "shop".into(),
            name: "web-7d4b9c8f6d-x2k9p".into(),
            uid: "uid-1".into(),
            labels: [("pod-template-hash".to_owned(), "7d4b9c8f6d".to_owned())].into(),
            annotations: Default::default(),
        };
        let mut c = Container {
            name: "nginx".into(),
            pod: Some(Arc::new(pod.clone())),
            // Docker's rules would say otherwise.
            env: vec!["SPILLWAY=ignore".into()],
            labels: [("spillway.tag.team".to_owned(), "x".to_owned())].into(),
            ..container()
        };
        assert_eq!(
            (c.source_id(), c.instance_id()),
            ("web", "web-7d4b9c8f6d-x2k9p")
        );
        assert!(!c.is_ignored());
        let t = EnvelopeTemplate::new(&c, "node-7");
        let e = t.envelope(Stream::Stdout, line("hi", 1));
        let mut keys: Vec<&str> = e.tags.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "container",
                "container_id",
                "host",
                "image",
                "namespace",
                "pod",
                "pod_label.pod-template-hash",
                "pod_uid",
                "source_type"
            ]
        );
        assert_eq!(e.tags["container"], "nginx");
        assert_eq!(e.tags["source_type"], "container");
        let mut ignored = pod;
        ignored
            .annotations
            .insert("spillway.ignore".into(), "true".into());
        c.pod = Some(Arc::new(ignored));
        assert!(c.is_ignored());
    }

    /// The bytes of `encode` decode to exactly the envelope `envelope`
    /// builds, for every case that changes the bytes.
    fn assert_encodes_like_envelope(t: &EnvelopeTemplate, stream: Stream, l: Line) {
        use prost::Message as _;
        let bytes = t.encode(stream, &l);
        let decoded = Envelope::decode(bytes.clone()).expect("decodes");
        let built = t.envelope(stream, l.clone());
        assert_eq!(decoded, built, "{stream:?} {l:?}");
        assert_eq!(bytes.len(), built.encoded_len(), "same size as prost's");
        assert_eq!(t.encode(stream, &l), bytes, "deterministic");
    }

    fn payload_line(payload: Vec<u8>, timestamp: i64, partial: bool) -> Line {
        Line {
            payload: Bytes::from(payload),
            timestamp,
            partial,
        }
    }

    #[test]
    fn encoded_lines_decode_to_the_envelopes() {
        let mut labelled = container();
        labelled
            .labels
            .insert("spillway.tag.team".into(), "payments".into());
        labelled
            .labels
            .insert("spillway.tag.empty".into(), "".into());
        labelled
            .labels
            .insert("spillway.tag.partial".into(), "no".into());
        labelled.labels.insert("other".into(), "x".into());
        labelled
            .labels
            .insert("com.docker.compose.container-number".into(), "2".into());
        let templates = [
            EnvelopeTemplate::new(&container(), "node-7"),
            EnvelopeTemplate::new(&labelled, "node-7"),
            // Empty ids, name, image and host: the fields prost leaves out.
            EnvelopeTemplate::new(&Container::default(), ""),
        ];
        let payloads = [
            Vec::new(),
            b"hello".to_vec(),
            vec![b'a'; 127],
            vec![b'b'; 128],
            vec![0xff; 16_383],
            vec![b'c'; 16_384],
            vec![b'd'; 70_000],
        ];
        for t in &templates {
            for payload in &payloads {
                for timestamp in [0, 1, 1_700_000_000_123_456_789, -5] {
                    for partial in [false, true] {
                        for stream in [Stream::Stdout, Stream::Stderr] {
                            assert_encodes_like_envelope(
                                t,
                                stream,
                                payload_line(payload.clone(), timestamp, partial),
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_partial_piece_has_one_partial_tag() {
        use prost::Message as _;
        let mut c = container();
        c.labels.insert("spillway.tag.partial".into(), "no".into());
        let t = EnvelopeTemplate::new(&c, "h");
        let piece = payload_line(b"x".to_vec(), 1, true);
        let e = Envelope::decode(t.encode(Stream::Stdout, &piece)).unwrap();
        assert_eq!(e.tags["partial"], "true");
        let bytes = t.encode(Stream::Stdout, &piece);
        let entries = bytes
            .windows(b"partial".len())
            .filter(|w| w == b"partial")
            .count();
        assert_eq!(
            entries, 1,
            "the label's partial tag is replaced, not repeated"
        );
        let whole = Envelope::decode(t.encode(Stream::Stdout, &line("x", 1))).unwrap();
        assert_eq!(whole.tags["partial"], "no");
    }
}
