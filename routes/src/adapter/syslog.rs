//! The syslog adapter: RFC 5424 by default, RFC 3164 with `format=rfc3164`.
//!
//! RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`.
//! - PRI: user.info (14) for stdout, user.err (11) for stderr and 14 for
//!   metrics.
//! - TIMESTAMP: UTC with microseconds (`2026-11-21T10:04:05.123456+00:00`).
//! - HOSTNAME, APP-NAME, PROCID, MSGID: options `hostname`, `appname`,
//!   `procid`, `msgid` (literals or templates); by default the `host` tag,
//!   the source id, the instance id and `-`. Printable ASCII only (others
//!   become `_`), cut to the RFC's 255/48/128/32 characters.
//! - SD: the envelope's tags as `[tags@47450 key="value" ...]` (Loggregator's
//!   SD-ID; `structured_data=none` leaves them out), after a metric's own
//!   element (`counter@47450`, `gauge@47450`, `timer@47450`, `event@47450`).
//!   Names are cut to 32 printable characters; `"`, `\` and `]` in values
//!   are escaped.
//! - MSG: the line's bytes as written (no BOM is added).
//!
//! RFC 3164: `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PROCID]: MSG`, TAG being
//! APP-NAME cut to 32 characters.

use std::fmt::Write as _;

use bytes::Bytes;
use spillway_proto::v2::envelope::Message;

use super::{Adapter, AdapterKind, Inner};
use crate::event::{Event, Stream};
use crate::spec::Options;
use crate::template::Template;
use crate::transport::Framing;

pub const KIND: AdapterKind = AdapterKind {
    name: "syslog",
    wraps: false,
    framing: Some(Framing::OctetCounting),
    build,
};

/// Loggregator's private enterprise number in SD-IDs.
const ENTERPRISE: &str = "47450";

fn build(options: &mut Options, _inner: Inner) -> Result<Box<dyn Adapter>, String> {
    let format = match options.take_choice("format", &["rfc5424", "rfc3164"])? {
        Some("rfc3164") => Format::Rfc3164,
        _ => Format::Rfc5424,
    };
    let tags = options.take_choice("structured_data", &["tags", "none"])? != Some("none");
    Ok(Box::new(Syslog {
        format,
        tags,
        hostname: Field::option(options, "hostname")?,
        appname: Field::option(options, "appname")?,
        procid: Field::option(options, "procid")?,
        msgid: Field::option(options, "msgid")?,
    }))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

/// A header field from an option: unset, a literal, or a template.
enum Field {
    Default,
    Literal(String),
    Template(Template),
}

impl Field {
    fn option(options: &mut Options, key: &str) -> Result<Field, String> {
        Ok(match options.take(key) {
            None => Field::Default,
            Some(v) if Template::is_template(&v) => Field::Template(Template::new(key, &v)?),
            Some(v) => Field::Literal(v),
        })
    }

    fn value(&self, event: &Event, default: impl FnOnce() -> String) -> String {
        match self {
            Field::Default => default(),
            Field::Literal(s) => s.clone(),
            Field::Template(t) => t.render(event),
        }
    }
}

pub struct Syslog {
    format: Format,
    tags: bool,
    hostname: Field,
    appname: Field,
    procid: Field,
    msgid: Field,
}

impl Adapter for Syslog {
    fn renders_templates(&self) -> bool {
        [&self.hostname, &self.appname, &self.procid, &self.msgid]
            .iter()
            .any(|f| matches!(f, Field::Template(_)))
    }

    fn write(&mut self, event: &Event, out: &mut Vec<Bytes>) {
        let e = &event.envelope;
        let hostname = self.hostname.value(event, || {
            let host = event.host();
            match &event.container {
                Some(c) if host.is_empty() => c.hostname.clone(),
                _ => host.to_owned(),
            }
        });
        let header = Header {
            hostname: &hostname,
            appname: &self.appname.value(event, || e.source_id.clone()),
            procid: &self.procid.value(event, || e.instance_id.clone()),
            msgid: &self.msgid.value(event, String::new),
            timestamp: e.timestamp,
        };
        let mut tags: Vec<(&str, &str)> = if self.tags {
            e.tags
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        tags.sort_unstable();
        let tags_element = (!tags.is_empty()).then(|| Element::new("tags", tags));

        match &e.message {
            Some(Message::Log(log)) => {
                let pri = match event.stream() {
                    Some(Stream::Stderr) => 11,
                    _ => 14,
                };
                // RFC 3164 has no structured data: a line is its bytes
                // alone, even when it is empty.
                let elements: Vec<&Element> = match self.format {
                    Format::Rfc5424 => tags_element.iter().collect(),
                    Format::Rfc3164 => Vec::new(),
                };
                out.push(self.message(pri, &header, &elements, &log.payload));
            }
            Some(Message::Counter(c)) => {
                let element = Element::new(
                    "counter",
                    vec![
                        ("name", c.name.as_str()),
                        ("total", &c.total.to_string()),
                        ("delta", &c.delta.to_string()),
                    ],
                );
                out.push(self.metric(&header, element, tags_element.as_ref()));
            }
            Some(Message::Gauge(g)) => {
                let mut names: Vec<_> = g.metrics.keys().collect();
                names.sort_unstable();
                for name in names {
                    let m = &g.metrics[name];
                    let element = Element::new(
                        "gauge",
                        vec![
                            ("name", name.as_str()),
                            ("value", &m.value.to_string()),
                            ("unit", m.unit.as_str()),
                        ],
                    );
                    out.push(self.metric(&header, element, tags_element.as_ref()));
                }
            }
            Some(Message::Timer(t)) => {
                let element = Element::new(
                    "timer",
                    vec![
                        ("name", t.name.as_str()),
                        ("start", &t.start.to_string()),
                        ("stop", &t.stop.to_string()),
                    ],
                );
                out.push(self.metric(&header, element, tags_element.as_ref()));
            }
            Some(Message::Event(ev)) => {
                let element = Element::new(
                    "event",
                    vec![("title", ev.title.as_str()), ("body", ev.body.as_str())],
                );
                out.push(self.metric(&header, element, tags_element.as_ref()));
            }
            None => {}
        }
    }
}

/// The header fields of one message, before sanitising.
pub struct Header<'a> {
    pub hostname: &'a str,
    pub appname: &'a str,
    pub procid: &'a str,
    pub msgid: &'a str,
    pub timestamp: i64,
}

/// One SD-ELEMENT, already rendered (`[id@47450 name="value" ...]`).
pub struct Element(String);

impl Element {
    pub fn new<V: AsRef<str>>(id: &str, params: Vec<(&str, V)>) -> Element {
        let mut s = String::with_capacity(64);
        s.push('[');
        push_name(&mut s, id);
        s.push('@');
        s.push_str(ENTERPRISE);
        for (name, value) in params {
            s.push(' ');
            push_name(&mut s, name);
            s.push_str("=\"");
            for c in value.as_ref().chars() {
                if matches!(c, '"' | '\\' | ']') {
                    s.push('\\');
                }
                s.push(c);
            }
            s.push('"');
        }
        s.push(']');
        Element(s)
    }
}

/// SD-NAME: 1 to 32 printable ASCII characters but `=`, space, `]`, `"`.
fn push_name(s: &mut String, name: &str) {
    let mut n = 0;
    for c in name.chars().take(32) {
        s.push(if c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"') {
            c
        } else {
            '_'
        });
        n += 1;
    }
    if n == 0 {
        s.push('_');
    }
}

/// A header field: printable ASCII, at most `max` characters, `-` if empty.
fn push_field(out: &mut Vec<u8>, value: &str, max: usize) {
    if value.is_empty() {
        out.push(b'-');
        return;
    }
    for c in value.chars().take(max) {
        out.push(if c.is_ascii_graphic() { c as u8 } else { b'_' });
    }
}

impl Syslog {
    fn metric(&self, header: &Header, element: Element, tags: Option<&Element>) -> Bytes {
        let mut elements = vec![&element];
        elements.extend(tags);
        self.message(14, header, &elements, b"")
    }

    /// One message in the route's format.
    pub fn message(&self, pri: u8, h: &Header, elements: &[&Element], msg: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(128 + msg.len());
        match self.format {
            Format::Rfc5424 => {
                let _ = write!(Fmt(&mut out), "<{pri}>1 ");
                out.extend_from_slice(crate::event::rfc3339_micros(h.timestamp).as_bytes());
                out.push(b' ');
                push_field(&mut out, h.hostname, 255);
                out.push(b' ');
                push_field(&mut out, h.appname, 48);
                out.push(b' ');
                push_field(&mut out, h.procid, 128);
                out.push(b' ');
                push_field(&mut out, h.msgid, 32);
                out.push(b' ');
                if elements.is_empty() {
                    out.push(b'-');
                }
                for e in elements {
                    out.extend_from_slice(e.0.as_bytes());
                }
                if !msg.is_empty() {
                    out.push(b' ');
                    out.extend_from_slice(msg);
                }
            }
            Format::Rfc3164 => {
                let _ = write!(Fmt(&mut out), "<{pri}>{} ", rfc3164_time(h.timestamp));
                push_field(&mut out, h.hostname, 255);
                out.push(b' ');
                let tag: String = h
                    .appname
                    .chars()
                    .map(|c| {
                        if c.is_ascii_graphic() && !matches!(c, '[' | ']' | ':') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(32)
                    .collect();
                out.extend_from_slice(if tag.is_empty() { "-" } else { &tag }.as_bytes());
                if !h.procid.is_empty() {
                    out.push(b'[');
                    push_field(&mut out, h.procid, 128);
                    out.push(b']');
                }
                out.extend_from_slice(b": ");
                if msg.is_empty() {
                    // No SD in RFC 3164: a metric's fields go in the text.
                    for e in elements {
                        out.extend_from_slice(e.0.as_bytes());
                    }
                } else {
                    out.extend_from_slice(msg);
                }
            }
        }
        Bytes::from(out)
    }
}

/// `Nov  1 09:05:03`: RFC 3164's TIMESTAMP (UTC, day padded with a space).
fn rfc3164_time(nanos: i64) -> String {
    let t = crate::event::utc(nanos);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `write!` into a byte vector.
struct Fmt<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Fmt<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use spillway_proto::v2::{self, Envelope, log::Type};

    use super::*;
    use crate::event::ContainerInfo;

    /// 2026-11-21T10:04:05.123456789Z
    const T: i64 = 1_795_255_445_123_456_789;

    fn syslog(query: &[(&str, &str)]) -> Box<dyn Adapter> {
        let map: BTreeMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut options = Options::new(&map);
        let a = build(&mut options, None).unwrap();
        options.finish("syslog").unwrap();
        a
    }

    fn line(payload: &[u8], ty: Type, tags: &[(&str, &str)]) -> Event {
        let mut envelope = Envelope::log(T, "shop", "3", payload.to_vec(), ty);
        envelope.tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Event {
            envelope,
            container: Some(Arc::new(ContainerInfo {
                hostname: "0123456789ab".into(),
                ..Default::default()
            })),
        }
    }

    fn one(a: &mut Box<dyn Adapter>, e: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        a.write(e, &mut out);
        assert_eq!(out.len(), 1);
        out[0].to_vec()
    }

    #[test]
    fn rfc5424_exact_bytes() {
        let mut a = syslog(&[]);
        let e = line(
            b"hello world",
            Type::Out,
            &[("host", "node-1"), ("app", "a\"b\\c]d")],
        );
        assert_eq!(
            String::from_utf8(one(&mut a, &e)).unwrap(),
            "<14>1 2026-11-21T10:04:05.123456+00:00 node-1 shop 3 - \
             [tags@47450 app=\"a\\\"b\\\\c\\]d\" host=\"node-1\"] hello world"
        );
        // stderr is user.err; no tags means a NILVALUE SD; non-ASCII and
        // non-UTF-8 payload bytes pass untouched.
        let e = line("grüße \u{1F600}\n\u{ff}".as_bytes(), Type::Err, &[]);
        let mut expected =
            b"<11>1 2026-11-21T10:04:05.123456+00:00 0123456789ab shop 3 - - ".to_vec();
        expected.extend_from_slice("grüße \u{1F600}\n\u{ff}".as_bytes());
        assert_eq!(one(&mut a, &e), expected);
    }

    #[test]
    fn rfc5424_fields_from_options_and_limits() {
        let mut a = syslog(&[
            ("hostname", "{{ container.hostname }}"),
            (
                "appname",
                "an app name that is much longer than forty-eight characters",
            ),
            ("procid", "web/{{ instance_id }}"),
            ("msgid", "LOG"),
            ("structured_data", "none"),
        ]);
        let mut tags = vec![("host", "node-1")];
        let long_key = "k".repeat(40);
        tags.push((&long_key, "v"));
        let e = line(b"x", Type::Out, &tags);
        assert_eq!(
            String::from_utf8(one(&mut a, &e)).unwrap(),
            "<14>1 2026-11-21T10:04:05.123456+00:00 0123456789ab \
             an_app_name_that_is_much_longer_than_forty-eight web/3 LOG - x"
        );
        let mut a = syslog(&[]);
        let e = line(b"x", Type::Out, &[(&long_key, "v"), ("sp ace=", "v")]);
        let s = String::from_utf8(one(&mut a, &e)).unwrap();
        assert!(
            s.contains(&format!(
                "[tags@47450 {}=\"v\" sp_ace_=\"v\"]",
                "k".repeat(32)
            )),
            "{s}"
        );
    }

    #[test]
    fn rfc3164_exact_bytes() {
        let mut a = syslog(&[("format", "rfc3164")]);
        let e = line(b"hello", Type::Err, &[("host", "node-1")]);
        assert_eq!(
            String::from_utf8(one(&mut a, &e)).unwrap(),
            "<11>Nov 21 10:04:05 node-1 shop[3]: hello"
        );
        let mut e = line("é".as_bytes(), Type::Out, &[("host", "node-1")]);
        e.envelope.timestamp = 1_793_691_845_000_000_000; // 2026-11-03T07:44:05Z
        e.envelope.source_id = "a:b[c] d".into();
        assert_eq!(
            one(&mut a, &e),
            "<14>Nov  3 07:44:05 node-1 a_b_c__d[3]: é".as_bytes()
        );
    }

    /// Found while writing the `syslog` fuzz target: an empty line of a container
    /// with tags went out in RFC 3164 as its tags' structured data.
    #[test]
    fn an_empty_rfc3164_line_is_empty() {
        let mut a = syslog(&[("format", "rfc3164")]);
        let e = line(b"", Type::Out, &[("host", "node-1"), ("team", "pay")]);
        assert_eq!(
            String::from_utf8(one(&mut a, &e)).unwrap(),
            "<14>Nov 21 10:04:05 node-1 shop[3]: "
        );
        // Positive control: RFC 5424 keeps the tags of the same line.
        let mut a = syslog(&[]);
        assert_eq!(
            String::from_utf8(one(&mut a, &e)).unwrap(),
            "<14>1 2026-11-21T10:04:05.123456+00:00 node-1 shop 3 - \
             [tags@47450 host=\"node-1\" team=\"pay\"]"
        );
    }

    #[test]
    fn metrics_as_structured_data() {
        let mut a = syslog(&[]);
        let mut counter = Envelope::counter("app", "requests", 2, 10);
        counter.timestamp = T;
        counter.instance_id = "0".into();
        counter.tags.insert("host".into(), "node-1".into());
        let e = Event {
            envelope: counter,
            container: None,
        };
        assert_eq!(
            String::from_utf8(one(&mut a, &e)).unwrap(),
            "<14>1 2026-11-21T10:04:05.123456+00:00 node-1 app 0 - \
             [counter@47450 name=\"requests\" total=\"10\" delta=\"2\"][tags@47450 host=\"node-1\"]"
        );
        let mut gauge = v2::Gauge::default();
        for (name, value) in [("mem", 2.5), ("cpu", 0.5)] {
            gauge.metrics.insert(
                name.into(),
                v2::GaugeValue {
                    unit: "x".into(),
                    value,
                },
            );
        }
        let e = Event {
            envelope: Envelope {
                timestamp: T,
                source_id: "app".into(),
                message: Some(Message::Gauge(gauge)),
                ..Default::default()
            },
            container: None,
        };
        let mut out = Vec::new();
        a.write(&e, &mut out);
        let texts: Vec<_> = out
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect();
        assert_eq!(
            texts,
            [
                "<14>1 2026-11-21T10:04:05.123456+00:00 - app - - [gauge@47450 name=\"cpu\" value=\"0.5\" unit=\"x\"]",
                "<14>1 2026-11-21T10:04:05.123456+00:00 - app - - [gauge@47450 name=\"mem\" value=\"2.5\" unit=\"x\"]",
            ]
        );
    }
}
