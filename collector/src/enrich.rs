//! What the collector adds to every envelope an app sends, as Loggregator's
//! agent does: a source id from the `origin` tag when it is empty, a
//! timestamp when it has none, the `host` tag, and running counter totals.
//!
//! Envelopes arrive encoded ([`WireEnvelope`]) and leave encoded. Most need
//! only what can be appended to their bytes (a protobuf scalar's last value
//! and a map key's last entry win): a timestamp, the `host` tag. Those are
//! forwarded as received plus those few bytes, never decoded. Counters
//! (whose totals the collector keeps) and envelopes whose source id or log
//! type must be normalised are decoded, changed and encoded again.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::preencoded::{self, field};
use spillway_proto::v2::{Envelope, envelope::Message};
use spillway_proto::{Kind, now_nanos};

pub struct Enricher {
    host: String,
    /// The `host` tag as the bytes of one `tags` entry (field 9).
    host_tag: Bytes,
    totals: Mutex<HashMap<CounterKey, u64>>,
}

/// A counter's identity: source id, name and tags.
#[derive(Hash, PartialEq, Eq)]
struct CounterKey {
    source_id: String,
    name: String,
    tags: Vec<(String, String)>,
}

impl Enricher {
    pub fn new(host: String) -> Self {
        let mut host_tag = BytesMut::new();
        preencoded::put_string_map_entry(&mut host_tag, field::ENVELOPE_TAGS, "host", &host);
        Enricher {
            host,
            host_tag: host_tag.freeze(),
            totals: Mutex::default(),
        }
    }

    /// [`Enricher::enrich`] on an encoded envelope: its bytes as received,
    /// plus a timestamp and the `host` tag where they are missing.
    pub fn enrich_wire(&self, w: WireEnvelope) -> Bytes {
        if w.kind() == Some(Kind::Counter) || w.may_need_normalizing() {
            let mut e = w.decode();
            self.enrich(&mut e);
            return e.encode_to_vec().into();
        }
        let timestamp = (w.timestamp() == 0).then(now_nanos);
        let host = w.tag("host").is_none();
        if timestamp.is_none() && !host {
            return w.into_bytes();
        }
        let mut bytes = BytesMut::with_capacity(w.bytes().len() + 11 + self.host_tag.len());
        bytes.extend_from_slice(w.bytes());
        if let Some(t) = timestamp {
            preencoded::put_varint_field(&mut bytes, field::ENVELOPE_TIMESTAMP, t as u64);
        }
        if host {
            bytes.extend_from_slice(&self.host_tag);
        }
        bytes.freeze()
    }

    pub fn enrich(&self, e: &mut Envelope) {
        e.normalize_at_ingress();
        if e.timestamp == 0 {
            e.timestamp = now_nanos();
        }
        if !e.tags.contains_key("host") {
            e.tags.insert("host".into(), self.host.clone());
        }
        if let Some(Message::Counter(c)) = &mut e.message {
            let mut tags: Vec<(String, String)> =
                e.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            tags.sort();
            let key = CounterKey {
                source_id: e.source_id.clone(),
                name: c.name.clone(),
                tags,
            };
            let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            if totals.len() >= MAX_COUNTERS && !totals.contains_key(&key) {
                // Like Loggregator's agent: forget all rather than grow
                // without bound on counters with ever-new tags.
                totals.clear();
            }
            if c.total == 0 && c.delta != 0 {
                let total = totals.entry(key).or_default();
                *total = total.wrapping_add(c.delta);
                c.total = *total;
            } else if c.total != 0 {
                // An emitter that keeps its own total: continue from it.
                totals.insert(key, c.total);
            }
        }
    }
}

/// Counters whose totals the collector keeps at most.
const MAX_COUNTERS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn total(e: &Envelope) -> u64 {
        match &e.message {
            Some(Message::Counter(c)) => c.total,
            _ => unreachable!(),
        }
    }

    #[test]
    fn keeps_running_totals_per_source_name_and_tags() {
        let en = Enricher::new("h1".into());
        let mut seen = Vec::new();
        for (source, name, tag, delta) in [
            ("a", "c", "x", 2),
            ("a", "c", "x", 3),
            ("b", "c", "x", 1),
            ("a", "c", "y", 4),
            ("a", "c", "x", 5),
        ] {
            let mut e = Envelope::counter(source, name, delta, 0);
            e.tags.insert("t".into(), tag.into());
            en.enrich(&mut e);
            seen.push(total(&e));
        }
        assert_eq!(seen, vec![2, 5, 1, 4, 10]);

        // An emitter that keeps its own total is left alone, and later
        // deltas continue from it.
        let mut e = Envelope::counter("a", "c", 1, 100);
        e.tags.insert("t".into(), "x".into());
        en.enrich(&mut e);
        assert_eq!(total(&e), 100);
        let mut e = Envelope::counter("a", "c", 2, 0);
        e.tags.insert("t".into(), "x".into());
        en.enrich(&mut e);
        assert_eq!(total(&e), 102);
    }

    /// Every combination of kind, source id, tags and timestamp: the
    /// encoded path gives what decoding and [`Enricher::enrich`] give, and
    /// keeps the received bytes as they are (appending to them) wherever
    /// no decoding is needed.
    #[test]
    fn encoded_envelopes_are_enriched_as_decoded_ones_are() {
        use spillway_proto::v2::{self, log::Type};
        let messages = [
            Some(Message::Log(v2::Log {
                payload: "hi".into(),
                r#type: Type::Err as i32,
            })),
            Some(Message::Log(v2::Log {
                payload: "odd type".into(),
                r#type: 7,
            })),
            Some(Message::Counter(v2::Counter {
                name: "c".into(),
                delta: 3,
                total: 0,
            })),
            Some(Message::Gauge(v2::Gauge {
                metrics: [("cpu".into(), v2::GaugeValue::default())].into(),
            })),
            Some(Message::Timer(v2::Timer::default())),
            Some(Message::Event(v2::Event::default())),
            None,
        ];
        let tag_sets: [&[(&str, &str)]; 4] = [
            &[],
            &[("origin", "o")],
            &[("host", "mine")],
            &[("host", "mine"), ("origin", "o"), ("zone", "z")],
        ];
        let (decoded, encoded) = (Enricher::new("h1".into()), Enricher::new("h1".into()));
        let mut kept = 0;
        for message in &messages {
            for source_id in ["app", ""] {
                for tags in tag_sets {
                    for timestamp in [0, 7] {
                        let mut e = Envelope {
                            timestamp,
                            source_id: source_id.into(),
                            message: message.clone(),
                            tags: tags
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                            ..Default::default()
                        };
                        let received = Bytes::from(e.encode_to_vec());
                        let out = encoded.enrich_wire(WireEnvelope::new(received.clone()).unwrap());
                        let mut got = Envelope::decode(out.clone()).unwrap();
                        decoded.enrich(&mut e);
                        assert!(got.timestamp > 0, "{e:?}");
                        if timestamp == 0 {
                            got.timestamp = e.timestamp;
                        }
                        assert_eq!(got, e);
                        let decoded_path = matches!(message, Some(Message::Counter(_)))
                            || matches!(message, Some(Message::Log(l)) if l.r#type == 7)
                            || (source_id.is_empty() && !tags.is_empty());
                        if !decoded_path {
                            assert!(out.starts_with(&received), "kept as received: {e:?}");
                            kept += 1;
                        }
                    }
                }
            }
        }
        // Decoded: 16 counters, 16 logs of an odd type, and 5 × 3 × 2 others
        // with an empty source id and tags (maybe an `origin` to take it from).
        assert_eq!(kept, 7 * 2 * 4 * 2 - 16 - 16 - 5 * 3 * 2);
    }

    #[test]
    fn fills_source_timestamp_and_host_but_keeps_what_the_app_set() {
        let en = Enricher::new("h1".into());
        let mut e = Envelope::default();
        e.tags.insert("origin".into(), "app".into());
        en.enrich(&mut e);
        assert_eq!(e.source_id, "app");
        assert!(e.timestamp > 0);
        assert_eq!(e.tags["host"], "h1");

        let mut e = Envelope {
            timestamp: 7,
            ..Default::default()
        };
        e.tags.insert("host".into(), "mine".into());
        en.enrich(&mut e);
        assert_eq!((e.timestamp, e.tags["host"].as_str()), (7, "mine"));
    }
}
