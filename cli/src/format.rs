//! Turning envelopes into lines of text.
//!
//! `spillway tail` prints exactly one line per envelope, in one of two
//! formats:
//!
//! - **readable** (the default), for people:
//!
//!   ```text
//!   2026-11-20T23:12:00.123456789Z source_id/instance_id KIND details [tag=value ...]
//!   ```
//!
//!   | KIND      | details                                   |
//!   |-----------|-------------------------------------------|
//!   | `OUT`/`ERR` | the log payload                         |
//!   | `COUNTER` | `name delta=D total=T`                    |
//!   | `GAUGE`   | `name=value unit, ...`, sorted by name    |
//!   | `TIMER`   | `name duration` (stop - start)            |
//!   | `EVENT`   | `title: body`                             |
//!
//!   Every text field is escaped so that the line stays one line: control
//!   characters other than tab are written as `\n`, `\r` or `\xHH`. Log
//!   payloads are decoded as UTF-8, invalid bytes becoming U+FFFD, and lose
//!   their trailing newline. Tags, sorted by key, close the line in
//!   brackets; an envelope without tags has no brackets.
//!
//! - **json**, for programs: the envelope as protobuf-JSON (proto field
//!   names, 64-bit integers as strings, payloads base64), the format of the
//!   RLP gateway.

use std::fmt::Write as _;
use std::io;

use spillway_proto::v2::{self, envelope::Message};
use time::OffsetDateTime;
use time::format_description::StaticFormatDescription;
use time::macros::format_description;

/// Writes `envelope` as one line (readable, or protobuf-JSON when `json`).
pub fn write_envelope(
    out: &mut impl io::Write,
    envelope: &v2::Envelope,
    json: bool,
) -> io::Result<()> {
    let line = if json {
        to_json(envelope)?
    } else {
        readable(envelope)
    };
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// The envelope as one line of protobuf-JSON (without the newline).
pub fn to_json(envelope: &v2::Envelope) -> io::Result<String> {
    serde_json::to_string(envelope).map_err(io::Error::other)
}

/// The envelope as one readable line (without the newline), see the module
/// docs.
pub fn readable(envelope: &v2::Envelope) -> String {
    let mut line = String::with_capacity(128);
    line.push_str(&rfc3339_nanos(envelope.timestamp));
    line.push(' ');
    push_escaped(&mut line, &envelope.source_id);
    line.push('/');
    push_escaped(&mut line, &envelope.instance_id);
    line.push(' ');

    match &envelope.message {
        Some(Message::Log(log)) => {
            line.push_str(log.r#type().as_str_name());
            line.push(' ');
            let text = String::from_utf8_lossy(&log.payload);
            push_escaped(&mut line, text.trim_end_matches(['\n', '\r']));
        }
        Some(Message::Counter(c)) => {
            line.push_str("COUNTER ");
            push_escaped(&mut line, &c.name);
            let _ = write!(line, " delta={} total={}", c.delta, c.total);
        }
        Some(Message::Gauge(g)) => {
            line.push_str("GAUGE");
            let mut metrics: Vec<_> = g.metrics.iter().collect();
            metrics.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (name, metric)) in metrics.into_iter().enumerate() {
                line.push_str(if i == 0 { " " } else { ", " });
                push_escaped(&mut line, name);
                let _ = write!(line, "={}", metric.value);
                if !metric.unit.is_empty() {
                    line.push(' ');
                    push_escaped(&mut line, &metric.unit);
                }
            }
        }
        Some(Message::Timer(t)) => {
            line.push_str("TIMER ");
            push_escaped(&mut line, &t.name);
            line.push(' ');
            line.push_str(&duration(t.start, t.stop));
        }
        Some(Message::Event(e)) => {
            line.push_str("EVENT ");
            push_escaped(&mut line, &e.title);
            line.push_str(": ");
            push_escaped(&mut line, &e.body);
        }
        None => line.push_str("EMPTY"),
    }

    push_tags(&mut line, envelope);
    line
}

/// Appends ` [k=v ...]` with the envelope's tags sorted by key. Deprecated
/// (typed) tags are shown too, unless a string tag has the same key.
fn push_tags(line: &mut String, envelope: &v2::Envelope) {
    let mut tags: Vec<(&str, String)> = envelope
        .tags
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    for (k, v) in &envelope.deprecated_tags {
        if envelope.tags.contains_key(k) {
            continue;
        }
        let text = match &v.data {
            Some(v2::value::Data::Text(s)) => s.clone(),
            Some(v2::value::Data::Integer(i)) => i.to_string(),
            Some(v2::value::Data::Decimal(d)) => d.to_string(),
            None => String::new(),
        };
        tags.push((k.as_str(), text));
    }
    if tags.is_empty() {
        return;
    }
    tags.sort();
    line.push_str(" [");
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            line.push(' ');
        }
        push_escaped(line, k);
        line.push('=');
        push_escaped(line, v);
    }
    line.push(']');
}

/// Appends `text` with control characters other than tab escaped, so that
/// it cannot break the one-line-per-envelope promise or drive the terminal.
fn push_escaped(line: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\t' => line.push('\t'),
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            // Control characters (Cc) are U+0000..=U+001F and U+007F..=U+009F.
            c if c.is_control() => {
                let _ = write!(line, "\\x{:02x}", c as u32);
            }
            c => line.push(c),
        }
    }
}

/// A timer's duration, `stop - start`, e.g. `12.5ms` (negative when the
/// emitter got them the wrong way round).
fn duration(start: i64, stop: i64) -> String {
    let nanos = i128::from(stop) - i128::from(start);
    // |stop - start| < 2^64, so this cannot fail.
    let magnitude = u64::try_from(nanos.unsigned_abs()).unwrap_or(u64::MAX);
    let sign = if nanos < 0 { "-" } else { "" };
    format!("{sign}{:?}", std::time::Duration::from_nanos(magnitude))
}

/// RFC 3339 in UTC with all nine fractional digits.
const RFC3339_NANOS: StaticFormatDescription =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Formats nanoseconds since the Unix epoch as RFC 3339 in UTC with all nine
/// fractional digits, e.g. `2026-11-20T23:12:00.123456789Z`.
///
/// Every `i64` is a date between 1677 and 2262, within the years the `time`
/// crate formats (-9999 to 9999): this cannot fail.
pub fn rfc3339_nanos(nanos: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
        .ok()
        .and_then(|t| t.format(RFC3339_NANOS).ok())
        .expect("i64 nanoseconds are a date between 1677 and 2262")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_795_216_320_123_456_789; // 2026-11-20T23:12:00.123456789Z

    fn envelope(message: Message) -> v2::Envelope {
        v2::Envelope {
            timestamp: TS,
            source_id: "app".into(),
            instance_id: "1".into(),
            message: Some(message),
            ..Default::default()
        }
    }

    #[test]
    fn rfc3339_with_nanoseconds() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nanos(TS), "2026-11-20T23:12:00.123456789Z");
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339_nanos(i64::MAX), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(rfc3339_nanos(i64::MIN), "1677-09-21T00:12:43.145224192Z");
    }

    #[test]
    fn rfc3339_known_dates() {
        const DAY: i64 = 86_400 * 1_000_000_000;
        assert_eq!(
            rfc3339_nanos(11_017 * DAY),
            "2000-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(11_016 * DAY),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(19_782 * DAY),
            "2024-02-29T00:00:00.000000000Z"
        );
        // Before 1970: the fraction still counts forward within the second.
        assert_eq!(
            rfc3339_nanos(-25_508 * DAY),
            "1900-03-01T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(-25_508 * DAY - 1),
            "1900-02-28T23:59:59.999999999Z",
            "1900 is no leap year"
        );
        assert_eq!(
            rfc3339_nanos(-1_500_000_000),
            "1969-12-31T23:59:58.500000000Z"
        );
    }

    #[test]
    fn log_lines() {
        let mut e = v2::Envelope::log(TS, "app", "1", "hello world\n", v2::log::Type::Out);
        assert_eq!(
            readable(&e),
            "2026-11-20T23:12:00.123456789Z app/1 OUT hello world"
        );
        e.message = Some(Message::Log(v2::Log {
            payload: "a\tb\r\nc\x1b[31m\u{85}\r\n".into(),
            r#type: v2::log::Type::Err as i32,
        }));
        e.tags.insert("zone".into(), "z1".into());
        e.tags.insert("host".into(), "h\nx".into());
        assert_eq!(
            readable(&e),
            "2026-11-20T23:12:00.123456789Z app/1 ERR a\tb\\r\\nc\\x1b[31m\\x85 [host=h\\nx zone=z1]"
        );
    }

    #[test]
    fn non_utf8_payload_is_decoded_lossily() {
        let e = v2::Envelope::log(
            TS,
            "app",
            "1",
            vec![b'o', b'k', 0xff, 0xfe, b' ', 0xc3],
            v2::log::Type::Out,
        );
        assert_eq!(
            readable(&e),
            "2026-11-20T23:12:00.123456789Z app/1 OUT ok\u{fffd}\u{fffd} \u{fffd}"
        );
    }

    #[test]
    fn metric_and_event_lines() {
        let counter = envelope(Message::Counter(v2::Counter {
            name: "requests".into(),
            delta: 2,
            total: 42,
        }));
        assert_eq!(
            readable(&counter),
            "2026-11-20T23:12:00.123456789Z app/1 COUNTER requests delta=2 total=42"
        );

        let mut gauge = v2::Gauge::default();
        for (name, value, unit) in [("mem", 1024.0, "bytes"), ("cpu", 12.5, "%"), ("n", 3.0, "")] {
            gauge.metrics.insert(
                name.into(),
                v2::GaugeValue {
                    unit: unit.into(),
                    value,
                },
            );
        }
        assert_eq!(
            readable(&envelope(Message::Gauge(gauge))),
            "2026-11-20T23:12:00.123456789Z app/1 GAUGE cpu=12.5 %, mem=1024 bytes, n=3"
        );

        let timer = envelope(Message::Timer(v2::Timer {
            name: "http".into(),
            start: 1_000,
            stop: 12_501_000,
        }));
        assert_eq!(
            readable(&timer),
            "2026-11-20T23:12:00.123456789Z app/1 TIMER http 12.5ms"
        );
        assert_eq!(duration(10, 5), "-5ns");
        assert_eq!(
            duration(i64::MIN, i64::MAX),
            format!("{:?}", std::time::Duration::from_nanos(u64::MAX))
        );

        let event = envelope(Message::Event(v2::Event {
            title: "deployed".into(),
            body: "v2\nok".into(),
        }));
        assert_eq!(
            readable(&event),
            "2026-11-20T23:12:00.123456789Z app/1 EVENT deployed: v2\\nok"
        );

        let mut empty = envelope(Message::Counter(v2::Counter::default()));
        empty.message = None;
        empty.deprecated_tags.insert(
            "origin".into(),
            v2::Value {
                data: Some(v2::value::Data::Integer(7)),
            },
        );
        assert_eq!(
            readable(&empty),
            "2026-11-20T23:12:00.123456789Z app/1 EMPTY [origin=7]"
        );
    }

    #[test]
    fn json_is_one_line_of_protobuf_json() {
        let mut e = v2::Envelope::log(TS, "app", "1", "line\n", v2::log::Type::Err);
        e.tags.insert("k".into(), "v".into());
        let mut out = Vec::new();
        write_envelope(&mut out, &e, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(text.ends_with('\n'));
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(j["timestamp"], TS.to_string());
        assert_eq!(j["source_id"], "app");
        assert_eq!(j["instance_id"], "1");
        assert_eq!(j["log"]["payload"], "bGluZQo=");
        assert_eq!(j["log"]["type"], "ERR");
        assert_eq!(j["tags"]["k"], "v");
    }
}
