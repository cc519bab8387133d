//! What routes and `/logs` streams carry: an envelope and, for a container
//! line, the container it came from (for filters and syslog fields).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use spillway_proto::json::Double;
use spillway_proto::v2::{Envelope, Log, envelope::Message, log::Type};

/// The container a line came from, as routes see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The full 64-hex-digit id.
    pub id: String,
    /// The name without Docker's leading `/`.
    pub name: String,
    pub image: String,
    /// The container's own hostname (`Config.Hostname`).
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
}

/// Which output of a container a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, the names of logspout's `filter.sources`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn parse(name: &str) -> Option<Stream> {
        match name {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One envelope on its way to routes.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub envelope: Envelope,
    /// Set for container lines; `None` for what apps sent to the v2 Ingress
    /// API.
    pub container: Option<Arc<ContainerInfo>>,
}

impl Event {
    pub fn log(&self) -> Option<&Log> {
        match &self.envelope.message {
            Some(Message::Log(log)) => Some(log),
            _ => None,
        }
    }

    /// The stream of a log line (`OUT` is stdout, `ERR` stderr).
    pub fn stream(&self) -> Option<Stream> {
        self.log().map(|log| {
            if log.r#type == Type::Err as i32 {
                Stream::Stderr
            } else {
                Stream::Stdout
            }
        })
    }

    /// A line a container wrote (not something an app sent to ingress).
    pub fn is_container_line(&self) -> bool {
        self.container.is_some() && self.log().is_some()
    }

    /// `log`, `counter`, `gauge`, `timer`, `event`, or `none`.
    pub fn kind(&self) -> &'static str {
        match &self.envelope.message {
            Some(Message::Log(_)) => "log",
            Some(Message::Counter(_)) => "counter",
            Some(Message::Gauge(_)) => "gauge",
            Some(Message::Timer(_)) => "timer",
            Some(Message::Event(_)) => "event",
            None => "none",
        }
    }

    /// The `host` tag (the collector's host), or `""`.
    pub fn host(&self) -> &str {
        self.envelope.tags.get("host").map_or("", String::as_str)
    }

    /// The payload of a log line, or `b""`.
    pub fn payload(&self) -> &[u8] {
        self.log().map_or(&[][..], |log| &log.payload[..])
    }

    /// The event as one JSON object: the form of `format=json` routes and of
    /// `/logs` with `Accept: application/json`. Payloads that are not UTF-8
    /// are converted lossily.
    pub fn to_json(&self) -> Value {
        let e = &self.envelope;
        let mut v = json!({
            "time": rfc3339_micros(e.timestamp),
            "timestamp": e.timestamp,
            "source_id": e.source_id,
            "instance_id": e.instance_id,
            "type": self.kind(),
            "tags": e.tags.iter().collect::<BTreeMap<_, _>>(),
        });
        let fields = v.as_object_mut().expect("an object");
        if let Some(c) = &self.container {
            fields.insert(
                "container".into(),
                json!({
                    "id": c.id,
                    "name": c.name,
                    "image": c.image,
                    "hostname": c.hostname,
                    "labels": c.labels,
                }),
            );
        }
        match &e.message {
            Some(Message::Log(log)) => {
                let stream = self.stream().map(Stream::name);
                fields.insert("stream".into(), json!(stream));
                fields.insert(
                    "message".into(),
                    json!(String::from_utf8_lossy(&log.payload)),
                );
            }
            Some(Message::Counter(c)) => {
                fields.insert(
                    "counter".into(),
                    json!({"name": c.name, "delta": c.delta, "total": c.total}),
                );
            }
            Some(Message::Gauge(g)) => {
                let metrics: BTreeMap<_, _> = g
                    .metrics
                    .iter()
                    .map(|(k, m)| (k, json!({"value": Double(m.value), "unit": m.unit})))
                    .collect();
                fields.insert("gauge".into(), json!(metrics));
            }
            Some(Message::Timer(t)) => {
                fields.insert(
                    "timer".into(),
                    json!({"name": t.name, "start": t.start, "stop": t.stop}),
                );
            }
            Some(Message::Event(ev)) => {
                fields.insert("event".into(), json!({"title": ev.title, "body": ev.body}));
            }
            None => {}
        }
        v
    }
}

/// `2026-11-21T10:04:05.123456+00:00`: RFC 3339 in UTC with microseconds,
/// as RFC 5424 wants its TIMESTAMP.
pub fn rfc3339_micros(nanos: i64) -> String {
    let t = utc(nanos);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// An envelope timestamp (ns since the epoch) as a UTC date and time; out
/// of range means the epoch.
pub fn utc(nanos: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds_and_an_offset() {
        assert_eq!(
            rfc3339_micros(1_763_719_445_123_456_789),
            "2025-11-21T10:04:05.123456+00:00"
        );
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000+00:00");
    }

    #[test]
    fn json_gauges_write_special_values_as_protobuf_json_does() {
        let mut gauge = spillway_proto::v2::Gauge::default();
        for (name, value) in [
            ("nan", f64::NAN),
            ("inf", f64::INFINITY),
            ("ninf", f64::NEG_INFINITY),
            ("x", 2.5),
        ] {
            gauge.metrics.insert(
                name.into(),
                spillway_proto::v2::GaugeValue {
                    unit: "u".into(),
                    value,
                },
            );
        }
        let event = Event {
            envelope: Envelope {
                message: Some(Message::Gauge(gauge)),
                ..Default::default()
            },
            container: None,
        };
        let v = event.to_json();
        assert_eq!(v["gauge"]["nan"]["value"], "NaN");
        assert_eq!(v["gauge"]["inf"]["value"], "Infinity");
        assert_eq!(v["gauge"]["ninf"]["value"], "-Infinity");
        assert_eq!(v["gauge"]["x"]["value"], 2.5);
    }

    #[test]
    fn json_of_a_container_line() {
        let mut envelope = Envelope::log(1_000, "web", "abc", &b"caf\xc3\xa9 \xff"[..], Type::Err);
        envelope.tags.insert("host".into(), "node".into());
        let event = Event {
            envelope,
            container: Some(Arc::new(ContainerInfo {
                id: "f".repeat(64),
                name: "web-1".into(),
                ..Default::default()
            })),
        };
        let v = event.to_json();
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["message"], "café \u{fffd}");
        assert_eq!(v["container"]["name"], "web-1");
        assert_eq!(v["tags"]["host"], "node");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000001+00:00");
        assert_eq!(event.host(), "node");
    }
}
