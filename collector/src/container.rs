//! Containers as the collector sees them, and the envelopes made from their
//! output (the contract's "Envelopes made from container output" table).

use std::collections::BTreeMap;
use std::sync::Arc;

use spillway_routes::ContainerInfo;

use spillway_proto::v2::{Envelope, Log, envelope::Message, log::Type};

use crate::lines::Line;

/// What the collector knows about one container, from `docker inspect`.
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
    /// name.
    pub fn source_id(&self) -> &str {
        self.labels
            .get("spillway.source_id")
            .or_else(|| self.labels.get("com.docker.compose.service"))
            .filter(|s| !s.is_empty())
            .map_or(&self.name, |s| s)
    }

    /// The Compose replica number, else the 12-character short id.
    pub fn instance_id(&self) -> &str {
        self.labels
            .get("com.docker.compose.container-number")
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .unwrap_or_else(|| &self.id[..self.id.len().min(12)])
    }

    /// Opted out with `LOGSPOUT=ignore`, `SPILLWAY=ignore` or the label
    /// `spillway.ignore=true`.
    pub fn is_ignored(&self) -> bool {
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
        let mut tags: std::collections::HashMap<String, String> = self
            .labels
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("spillway.tag.")?.to_owned(), v.clone())))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        tags.insert("container_id".into(), self.id.clone());
        tags.insert("container_name".into(), self.name.clone());
        tags.insert("image".into(), self.image.clone());
        tags.insert("host".into(), host.to_owned());
        tags.insert("source_type".into(), "container".into());
        tags
    }
}

/// Builds envelopes for one container: its tags are computed once.
#[derive(Clone, Debug)]
pub struct EnvelopeTemplate {
    source_id: String,
    instance_id: String,
    tags: std::collections::HashMap<String, String>,
    /// The container as routes see it (filters, syslog fields).
    pub info: Arc<ContainerInfo>,
}

impl EnvelopeTemplate {
    pub fn new(c: &Container, host: &str) -> Self {
        EnvelopeTemplate {
            source_id: c.source_id().to_owned(),
            instance_id: c.instance_id().to_owned(),
            tags: c.tags(host),
            info: Arc::new(ContainerInfo {
                id: c.id.clone(),
                name: c.name.clone(),
                image: c.image.clone(),
                hostname: c.hostname.clone(),
                labels: c.labels.clone(),
            }),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
}
