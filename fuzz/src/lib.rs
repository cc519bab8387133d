//! Helpers shared by the fuzz targets in `fuzz_targets/`: reading the
//! targets' input formats, and the checks of what the parsers make.
//!
//! Inputs are text where they can be, so that the seeds in `corpus/` are
//! written by hand: a route URI on the first line, `key=value&...` pairs,
//! lines of events.

use std::collections::BTreeMap;
use std::sync::Arc;

use spillway_proto::v2::{self, Envelope, envelope::Message, log::Type};
use spillway_routes::{ContainerInfo, Event};

/// Route options naming files (the TLS transport's): dropped before a
/// route is built, so that a fuzz run never opens what the input names.
pub const FILE_OPTIONS: &[&str] = &["ca", "cert", "key"];

/// Drops [`FILE_OPTIONS`] from `options`.
pub fn strip_file_options(options: &mut BTreeMap<String, String>) {
    options.retain(|k, _| !FILE_OPTIONS.contains(&k.as_str()));
}

/// Errors become HTTP 400 bodies and exit-2 messages: one line each.
pub fn assert_one_line(error: &str) {
    assert!(!error.is_empty(), "an empty error");
    assert!(
        !error.contains('\n') && !error.contains('\r'),
        "an error of more than one line: {error:?}"
    );
}

/// `key=value&...` pairs, percent-decoded (as in a URI's query).
pub fn pairs(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Splits `data` at its first `\n`: the first line (as UTF-8) and the rest.
pub fn first_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    Some((std::str::from_utf8(line).ok()?, rest))
}

/// The event the syslog target formats: a log line of a container, or a
/// metric, described by `key=value` pairs. Keys starting with `@` set the
/// envelope (`@source`, `@instance`, `@ts` in ns, `@type`: `out`, `err`,
/// `counter`, `gauge`, `timer`, `event`, `none`; `@name`, `@value`); the
/// others are tags. `payload` is the line's bytes.
pub fn event(fields: &[(String, String)], payload: &[u8]) -> Event {
    let mut e = Envelope::default();
    let mut kind = "out";
    let mut name = String::new();
    let mut value = 0.0f64;
    for (k, v) in fields {
        match k.as_str() {
            "@source" => e.source_id = v.clone(),
            "@instance" => e.instance_id = v.clone(),
            "@ts" => e.timestamp = v.parse().unwrap_or(0),
            "@type" => kind = v.as_str(),
            "@name" => name = v.clone(),
            "@value" => value = v.parse().unwrap_or(0.0),
            _ => {
                e.tags.insert(k.clone(), v.clone());
            }
        }
    }
    let text = String::from_utf8_lossy(payload).into_owned();
    e.message = match kind {
        "err" | "out" => Some(Message::Log(v2::Log {
            payload: payload.to_vec().into(),
            r#type: (if kind == "err" { Type::Err } else { Type::Out }) as i32,
        })),
        "counter" => Some(Message::Counter(v2::Counter {
            name,
            delta: value as u64,
            total: value as u64,
        })),
        "gauge" => Some(Message::Gauge(v2::Gauge {
            metrics: [(name, v2::GaugeValue { unit: text, value })].into(),
        })),
        "timer" => Some(Message::Timer(v2::Timer {
            name,
            start: value as i64,
            stop: e.timestamp,
        })),
        "event" => Some(Message::Event(v2::Event {
            title: name,
            body: text,
        })),
        _ => None,
    };
    Event {
        envelope: e,
        container: Some(Arc::new(ContainerInfo {
            id: "f".repeat(64),
            name: "fuzz".into(),
            image: "fuzz:latest".into(),
            hostname: "fuzz-host".into(),
            labels: [("team".into(), "fuzz".into())].into(),
        })),
    }
}

/// Checks one RFC 5424 message as the syslog adapter writes it:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD[ MSG]`, every header
/// field 1 to its RFC length of printable ASCII, the structured data
/// well-formed with `"`, `\` and `]` escaped in values. Returns MSG.
pub fn check_rfc5424(msg: &[u8]) -> &[u8] {
    let (pri, rest) = pri(msg);
    assert!(pri == 11 || pri == 14, "PRI {pri}");
    let rest = rest.strip_prefix(b"1 ").expect("VERSION 1");
    let (timestamp, rest) = field(rest, 32, "TIMESTAMP");
    assert_eq!(timestamp.len(), 32, "TIMESTAMP {timestamp:?}");
    assert!(timestamp.ends_with(b"+00:00"), "TIMESTAMP {timestamp:?}");
    let (_, rest) = field(rest, 255, "HOSTNAME");
    let (_, rest) = field(rest, 48, "APP-NAME");
    let (_, rest) = field(rest, 128, "PROCID");
    let (_, rest) = field(rest, 32, "MSGID");
    let rest = structured_data(rest);
    match rest {
        [] => rest,
        [b' ', msg @ ..] => {
            assert!(!msg.is_empty(), "a space and no MSG");
            msg
        }
        _ => panic!("no space after the structured data: {rest:?}"),
    }
}

/// Checks one RFC 3164 message (`<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PROCID]: MSG`);
/// returns MSG.
pub fn check_rfc3164(msg: &[u8]) -> &[u8] {
    let (pri, rest) = pri(msg);
    assert!(pri == 11 || pri == 14, "PRI {pri}");
    assert!(
        rest.len() >= 16 && rest[15] == b' ',
        "TIMESTAMP in {rest:?}"
    );
    let rest = &rest[16..];
    let (_, rest) = field(rest, 255, "HOSTNAME");
    let end = rest
        .windows(2)
        .position(|w| w == b": ")
        .expect("TAG ends with \": \"");
    let tag = &rest[..end];
    let name_len = tag.iter().position(|&b| b == b'[').unwrap_or(tag.len());
    assert!(
        (1..=32).contains(&name_len),
        "TAG of {name_len} characters: {tag:?}"
    );
    assert!(
        tag[..name_len]
            .iter()
            .all(|b| b.is_ascii_graphic() && !b"[]:".contains(b)),
        "TAG {tag:?}"
    );
    &rest[end + 2..]
}

fn pri(msg: &[u8]) -> (u32, &[u8]) {
    let rest = msg.strip_prefix(b"<").expect("PRI starts with <");
    let end = rest
        .iter()
        .position(|&b| b == b'>')
        .expect("PRI ends with >");
    let pri = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("PRI is a number");
    (pri, &rest[end + 1..])
}

/// A header field: 1 to `max` printable ASCII characters, then a space.
fn field<'a>(msg: &'a [u8], max: usize, what: &str) -> (&'a [u8], &'a [u8]) {
    let end = msg
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or_else(|| panic!("{what} not followed by a space: {msg:?}"));
    let value = &msg[..end];
    assert!(
        (1..=max).contains(&value.len()),
        "{what} of {} bytes",
        value.len()
    );
    assert!(
        value.iter().all(u8::is_ascii_graphic),
        "{what} {value:?} is not printable ASCII"
    );
    (value, &msg[end + 1..])
}

/// Checks `-` or SD-ELEMENTs at the start of `msg`; returns what follows.
fn structured_data(msg: &[u8]) -> &[u8] {
    if let Some(rest) = msg.strip_prefix(b"-") {
        return rest;
    }
    let mut rest = msg;
    assert!(rest.starts_with(b"["), "no structured data: {msg:?}");
    while let Some(r) = rest.strip_prefix(b"[") {
        let (id, r) = sd_name(r);
        let (name, enterprise) = id
            .iter()
            .position(|&b| b == b'@')
            .map(|at| (&id[..at], &id[at + 1..]))
            .unwrap_or_else(|| panic!("SD-ID {id:?} without @"));
        assert!((1..=32).contains(&name.len()), "SD-ID {id:?}");
        assert_eq!(enterprise, b"47450", "SD-ID {id:?}");
        rest = r;
        loop {
            match rest {
                [b']', r @ ..] => {
                    rest = r;
                    break;
                }
                [b' ', r @ ..] => {
                    let (name, r) = sd_name(r);
                    assert!(name.len() <= 32, "PARAM-NAME {name:?}");
                    let r = r.strip_prefix(b"=\"").expect("PARAM-NAME=\"");
                    rest = sd_value(r);
                }
                _ => panic!("bad SD-ELEMENT at {rest:?}"),
            }
        }
    }
    rest
}

/// An SD-NAME: printable characters but `=`, space, `]`, `"`; 1 to 32
/// of them, or `NAME@47450` for an SD-ID (checked by the caller).
fn sd_name(msg: &[u8]) -> (&[u8], &[u8]) {
    let end = msg
        .iter()
        .position(|b| matches!(b, b'=' | b' ' | b']' | b'"'))
        .expect("an SD-NAME ends");
    let name = &msg[..end];
    assert!((1..=38).contains(&name.len()), "SD-NAME {name:?}");
    assert!(name.iter().all(u8::is_ascii_graphic), "SD-NAME {name:?}");
    (name, &msg[end..])
}

/// A PARAM-VALUE after its opening quote, with `"`, `\` and `]` escaped;
/// returns what follows the closing quote.
fn sd_value(msg: &[u8]) -> &[u8] {
    let mut i = 0;
    loop {
        match msg.get(i) {
            None => panic!("PARAM-VALUE not closed: {msg:?}"),
            Some(b'\\') => {
                assert!(
                    matches!(msg.get(i + 1), Some(b'"' | b'\\' | b']')),
                    "a backslash that escapes nothing at {:?}",
                    &msg[i..]
                );
                i += 2;
            }
            Some(b'"') => return &msg[i + 1..],
            Some(b']') => panic!("an unescaped ] in a PARAM-VALUE: {msg:?}"),
            Some(_) => i += 1,
        }
    }
}

/// Undoes RFC 6587 octet counting (`LEN SP MSG`) of exactly one frame.
pub fn unframe_octet_counting(frame: &[u8]) -> &[u8] {
    let space = frame
        .iter()
        .position(|&b| b == b' ')
        .expect("LEN then a space");
    let len: usize = std::str::from_utf8(&frame[..space])
        .ok()
        .and_then(|l| l.parse().ok())
        .expect("LEN is a number");
    let msg = &frame[space + 1..];
    assert_eq!(len, msg.len(), "LEN and the message disagree");
    msg
}
