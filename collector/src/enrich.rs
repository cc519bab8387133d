//! What the collector adds to every envelope an app sends, as Loggregator's
//! agent does: a source id from the `origin` tag when it is empty, a
//! timestamp when it has none, the `host` tag, and running counter totals.

use std::collections::HashMap;
use std::sync::Mutex;

use spillway_proto::now_nanos;
use spillway_proto::v2::{Envelope, envelope::Message};

pub struct Enricher {
    host: String,
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
        Enricher {
            host,
            totals: Mutex::default(),
        }
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
