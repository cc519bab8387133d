//! Selector matching: does an envelope belong to a subscription?
//!
//! Matching reads only an envelope's peeked route key
//! ([`WireEnvelope`]), never its decoded form. A selector picks a source id (empty: any) and an envelope kind, narrowed
//! for counters by name and for gauges by the exact set of metric names.

use std::collections::BTreeSet;

use spillway_proto::Kind;
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::v2::{self, selector};

/// One selector, ready for matching.
#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    /// `None` matches any source.
    pub source_id: Option<String>,
    pub rule: Rule,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    Log,
    /// `None` matches any counter.
    Counter(Option<String>),
    /// `None` matches any gauge; else exactly this set of metric names.
    Gauge(Option<BTreeSet<String>>),
    Timer,
    Event,
}

impl Selector {
    /// `None` for a selector that names no envelope type.
    pub fn compile(s: &v2::Selector) -> Option<Selector> {
        let rule = match s.message.as_ref()? {
            selector::Message::Log(_) => Rule::Log,
            selector::Message::Counter(c) => {
                Rule::Counter((!c.name.is_empty()).then(|| c.name.clone()))
            }
            selector::Message::Gauge(g) => {
                Rule::Gauge((!g.names.is_empty()).then(|| g.names.iter().cloned().collect()))
            }
            selector::Message::Timer(_) => Rule::Timer,
            selector::Message::Event(_) => Rule::Event,
        };
        Some(Selector {
            source_id: (!s.source_id.is_empty()).then(|| s.source_id.clone()),
            rule,
        })
    }

    pub fn matches(&self, e: &WireEnvelope) -> bool {
        if let Some(id) = &self.source_id
            && id != e.source_id()
        {
            return false;
        }
        self.rule.matches(e)
    }
}

impl Rule {
    /// Matches the envelope's message, ignoring its source. Reads only the
    /// envelope's peeked route key.
    pub fn matches(&self, e: &WireEnvelope) -> bool {
        match (self, e.kind()) {
            (Rule::Log, Some(Kind::Log)) => true,
            (Rule::Counter(None), Some(Kind::Counter)) => true,
            (Rule::Counter(Some(name)), Some(Kind::Counter)) => name == e.counter_name(),
            (Rule::Gauge(None), Some(Kind::Gauge)) => true,
            (Rule::Gauge(Some(names)), Some(Kind::Gauge)) => {
                // Both sides are sets (the gauge's names are each once).
                let mut got = e.gauge_names();
                names.len() == got.len() && got.all(|k| names.contains(k))
            }
            (Rule::Timer, Some(Kind::Timer)) => true,
            (Rule::Event, Some(Kind::Event)) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_proto::v2::{Envelope, envelope::Message};

    fn counter(source: &str, name: &str) -> Envelope {
        Envelope::counter(source, name, 1, 0)
    }

    fn gauge(source: &str, names: &[&str]) -> Envelope {
        let mut g = v2::Gauge::default();
        for n in names {
            g.metrics.insert(
                (*n).into(),
                v2::GaugeValue {
                    unit: "u".into(),
                    value: 1.0,
                },
            );
        }
        Envelope {
            source_id: source.into(),
            message: Some(Message::Gauge(g)),
            ..Default::default()
        }
    }

    fn of(source: &str, m: Message) -> Envelope {
        Envelope {
            source_id: source.into(),
            message: Some(m),
            ..Default::default()
        }
    }

    fn sel(source: &str, m: selector::Message) -> Selector {
        Selector::compile(&v2::Selector {
            source_id: source.into(),
            message: Some(m),
        })
        .unwrap()
    }

    #[test]
    fn selector_matching_table() {
        use selector::Message as S;
        let log = || of("a", Message::Log(v2::Log::default()));
        let timer = || of("a", Message::Timer(v2::Timer::default()));
        let event = || of("a", Message::Event(v2::Event::default()));
        let counter_sel = |n: &str| S::Counter(v2::CounterSelector { name: n.into() });
        let gauge_sel = |ns: &[&str]| {
            S::Gauge(v2::GaugeSelector {
                names: ns.iter().map(|s| s.to_string()).collect(),
            })
        };

        // (selector, envelope, expected)
        let table: Vec<(Selector, Envelope, bool)> = vec![
            // source id: exact, or empty for any
            (sel("a", S::Log(v2::LogSelector {})), log(), true),
            (sel("b", S::Log(v2::LogSelector {})), log(), false),
            (sel("", S::Log(v2::LogSelector {})), log(), true),
            (
                sel("", S::Log(v2::LogSelector {})),
                of("", Message::Log(v2::Log::default())),
                true,
            ),
            // type
            (sel("a", S::Log(v2::LogSelector {})), timer(), false),
            (sel("a", S::Timer(v2::TimerSelector {})), timer(), true),
            (sel("a", S::Event(v2::EventSelector {})), event(), true),
            (sel("a", S::Event(v2::EventSelector {})), log(), false),
            (
                sel("a", S::Timer(v2::TimerSelector {})),
                counter("a", "c"),
                false,
            ),
            // counter name: empty is any counter, else exact
            (sel("a", counter_sel("")), counter("a", "requests"), true),
            (
                sel("a", counter_sel("requests")),
                counter("a", "requests"),
                true,
            ),
            (
                sel("a", counter_sel("requests")),
                counter("a", "requests2"),
                false,
            ),
            (
                sel("a", counter_sel("requests")),
                counter("b", "requests"),
                false,
            ),
            (sel("a", counter_sel("")), log(), false),
            // gauge names: empty is any gauge, else exactly that set
            (sel("a", gauge_sel(&[])), gauge("a", &["cpu", "mem"]), true),
            (
                sel("a", gauge_sel(&["cpu", "mem"])),
                gauge("a", &["mem", "cpu"]),
                true,
            ),
            (
                sel("a", gauge_sel(&["cpu"])),
                gauge("a", &["cpu", "mem"]),
                false,
            ),
            (
                sel("a", gauge_sel(&["cpu", "mem", "disk"])),
                gauge("a", &["cpu", "mem"]),
                false,
            ),
            (
                sel("a", gauge_sel(&["cpu", "disk"])),
                gauge("a", &["cpu", "mem"]),
                false,
            ),
            (sel("", gauge_sel(&["cpu"])), gauge("z", &["cpu"]), true),
            (sel("a", gauge_sel(&["cpu"])), counter("a", "cpu"), false),
        ];
        for (i, (s, e, want)) in table.iter().enumerate() {
            let wire = WireEnvelope::from_envelope(e);
            assert_eq!(s.matches(&wire), *want, "row {i}: {s:?} vs {e:?}");
        }
    }

    #[test]
    fn a_selector_without_a_type_does_not_compile() {
        assert!(
            Selector::compile(&v2::Selector {
                source_id: "a".into(),
                message: None
            })
            .is_none()
        );
        for k in Kind::ALL {
            assert!(Selector::compile(&v2::Selector::of(k, "a")).is_some());
        }
    }
}
