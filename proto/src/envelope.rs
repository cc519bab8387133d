use std::time::{SystemTime, UNIX_EPOCH};

use crate::v2::{self, envelope::Message};

/// The five kinds of envelope, as selectors name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Log,
    Counter,
    Gauge,
    Timer,
    Event,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Log,
        Kind::Counter,
        Kind::Gauge,
        Kind::Timer,
        Kind::Event,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Log => "log",
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Timer => "timer",
            Kind::Event => "event",
        }
    }
}

/// Nanoseconds since the Unix epoch, the unit of `Envelope.timestamp`.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl v2::Envelope {
    /// The envelope's kind, or `None` for an envelope without a message.
    pub fn kind(&self) -> Option<Kind> {
        Some(match self.message.as_ref()? {
            Message::Log(_) => Kind::Log,
            Message::Counter(_) => Kind::Counter,
            Message::Gauge(_) => Kind::Gauge,
            Message::Timer(_) => Kind::Timer,
            Message::Event(_) => Kind::Event,
        })
    }

    /// Loggregator's source id fallback: an envelope that arrives with an
    /// empty `source_id` takes `tags["origin"]`, then
    /// `deprecated_tags["origin"]` (its text).
    pub fn fill_source_id_from_origin(&mut self) {
        if !self.source_id.is_empty() {
            return;
        }
        if let Some(origin) = self.tags.get("origin") {
            self.source_id = origin.clone();
        } else if let Some(v2::Value {
            data: Some(v2::value::Data::Text(origin)),
        }) = self.deprecated_tags.get("origin")
        {
            self.source_id = origin.clone();
        }
    }

    /// What every stage that takes envelopes from the network applies:
    /// the source id fallback, and a log type outside the enum (prost keeps
    /// any `i32`) read as `OUT`, so that every later stage can rely on it
    /// (protobuf-JSON has no name for other values).
    pub fn normalize_at_ingress(&mut self) {
        self.fill_source_id_from_origin();
        if let Some(Message::Log(l)) = &mut self.message
            && v2::log::Type::try_from(l.r#type).is_err()
        {
            l.r#type = v2::log::Type::Out as i32;
        }
    }

    /// A log envelope.
    pub fn log(
        timestamp: i64,
        source_id: impl Into<String>,
        instance_id: impl Into<String>,
        payload: impl Into<bytes::Bytes>,
        ty: v2::log::Type,
    ) -> Self {
        v2::Envelope {
            timestamp,
            source_id: source_id.into(),
            instance_id: instance_id.into(),
            message: Some(Message::Log(v2::Log {
                payload: payload.into(),
                r#type: ty as i32,
            })),
            ..Default::default()
        }
    }

    /// A counter envelope.
    pub fn counter(
        source_id: impl Into<String>,
        name: impl Into<String>,
        delta: u64,
        total: u64,
    ) -> Self {
        v2::Envelope {
            timestamp: now_nanos(),
            source_id: source_id.into(),
            message: Some(Message::Counter(v2::Counter {
                name: name.into(),
                delta,
                total,
            })),
            ..Default::default()
        }
    }
}

impl v2::Selector {
    /// The kind this selector picks, or `None` when it names no kind (which
    /// Loggregator rejects).
    pub fn kind(&self) -> Option<Kind> {
        use v2::selector::Message as M;
        Some(match self.message.as_ref()? {
            M::Log(_) => Kind::Log,
            M::Counter(_) => Kind::Counter,
            M::Gauge(_) => Kind::Gauge,
            M::Timer(_) => Kind::Timer,
            M::Event(_) => Kind::Event,
        })
    }

    /// A selector of `kind` for `source_id` (empty: any source).
    pub fn of(kind: Kind, source_id: impl Into<String>) -> Self {
        use v2::selector::Message as M;
        let message = match kind {
            Kind::Log => M::Log(v2::LogSelector {}),
            Kind::Counter => M::Counter(v2::CounterSelector::default()),
            Kind::Gauge => M::Gauge(v2::GaugeSelector::default()),
            Kind::Timer => M::Timer(v2::TimerSelector {}),
            Kind::Event => M::Event(v2::EventSelector {}),
        };
        v2::Selector {
            source_id: source_id.into(),
            message: Some(message),
        }
    }
}

impl From<v2::EgressRequest> for v2::EgressBatchRequest {
    fn from(r: v2::EgressRequest) -> Self {
        v2::EgressBatchRequest {
            shard_id: r.shard_id,
            legacy_selector: r.legacy_selector,
            use_preferred_tags: r.use_preferred_tags,
            selectors: r.selectors,
            deterministic_name: r.deterministic_name,
        }
    }
}

impl v2::EgressBatchRequest {
    /// The selectors in force: `selectors`, or `legacy_selector` only when
    /// `selectors` is empty.
    pub fn effective_selectors(&self) -> Vec<v2::Selector> {
        if self.selectors.is_empty() {
            self.legacy_selector.clone().into_iter().collect()
        } else {
            self.selectors.clone()
        }
    }

    /// Checks the request as Loggregator does: at least one selector, and
    /// every selector names an envelope type. The error is for an
    /// `InvalidArgument` status.
    pub fn validate(&self) -> Result<(), String> {
        let selectors = self.effective_selectors();
        if selectors.is_empty() {
            return Err(
                "the request has no selectors; a subscription without selectors receives nothing"
                    .into(),
            );
        }
        if let Some(i) = selectors.iter().position(|s| s.kind().is_none()) {
            return Err(format!(
                "selector {i} names no envelope type (log, counter, gauge, timer or event)"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_id_falls_back_to_origin_tags() {
        let mut e = v2::Envelope::default();
        e.deprecated_tags.insert(
            "origin".into(),
            v2::Value {
                data: Some(v2::value::Data::Text("old".into())),
            },
        );
        e.fill_source_id_from_origin();
        assert_eq!(e.source_id, "old");

        let mut e = v2::Envelope::default();
        e.tags.insert("origin".into(), "new".into());
        e.deprecated_tags.insert(
            "origin".into(),
            v2::Value {
                data: Some(v2::value::Data::Text("old".into())),
            },
        );
        e.fill_source_id_from_origin();
        assert_eq!(e.source_id, "new", "tags win over deprecated_tags");

        let mut e = v2::Envelope {
            source_id: "mine".into(),
            ..Default::default()
        };
        e.tags.insert("origin".into(), "new".into());
        e.fill_source_id_from_origin();
        assert_eq!(e.source_id, "mine", "a set source id is kept");
    }

    #[test]
    fn an_unknown_log_type_reads_as_out() {
        let mut e = v2::Envelope::log(1, "a", "0", "x", v2::log::Type::Err);
        if let Some(Message::Log(l)) = &mut e.message {
            l.r#type = 7;
        }
        assert!(
            serde_json::to_string(&e).is_err(),
            "pbjson cannot name type 7"
        );
        e.normalize_at_ingress();
        assert!(serde_json::to_string(&e).unwrap().contains("\"OUT\""));
    }

    #[test]
    fn protobuf_json_uses_proto_names_strings_and_base64() {
        let e = v2::Envelope::log(
            1_700_000_000_123_456_789,
            "app",
            "0",
            vec![0xff, b'a'],
            v2::log::Type::Err,
        );
        let j: serde_json::Value =
            serde_json::to_value(v2::EnvelopeBatch { batch: vec![e] }).unwrap();
        let e = &j["batch"][0];
        assert_eq!(e["timestamp"], "1700000000123456789");
        assert_eq!(e["source_id"], "app");
        assert_eq!(e["instance_id"], "0");
        assert_eq!(e["log"]["payload"], "/2E=");
        assert_eq!(e["log"]["type"], "ERR");
    }
}
