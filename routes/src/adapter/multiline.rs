//! The multiline adapter wraps another (`multiline+syslog+tcp://...`) and
//! joins lines that belong together (a stack trace) into one message.
//!
//! Options, as logspout's multiline module has them:
//! - `multiline.pattern`: a regular expression (default `^\s`);
//! - `multiline.match`: which lines the pattern marks: `nonfirst` (default:
//!   every line but the first of a message, so a line that does not match
//!   starts a new one), `first`, `last`, `nonlast`;
//! - `multiline.flush_after`: a message is sent when no line came for this
//!   long (default `500ms`);
//! - `multiline.separator`: what joins the lines (default `\n`);
//! - `multiline.max_bytes`: a message is sent once this long (default 1 MiB).
//!
//! Lines are joined per container and stream: stdout and stderr are never
//! merged. Other events (metrics) pass straight through.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use spillway_proto::v2::envelope::Message;

use super::{Adapter, AdapterKind, Inner};
use crate::event::{Event, Stream};
use crate::spec::Options;

/// The largest `multiline.max_bytes`: one message held per container
/// stream may grow this long.
pub const MAX_BYTES: usize = 16 << 20;

pub const KIND: AdapterKind = AdapterKind {
    name: "multiline",
    wraps: true,
    framing: None,
    build,
};

fn build(options: &mut Options, inner: Inner) -> Result<Box<dyn Adapter>, String> {
    let inner = inner.ok_or("multiline wraps another adapter: multiline+ADAPTER")?;
    let pattern = options
        .take("multiline.pattern")
        .unwrap_or_else(|| r"^\s".into());
    let pattern = Regex::new(&pattern).map_err(|e| {
        format!(
            "option multiline.pattern={pattern:?} is not a regular expression: {}",
            regex_error(&e)
        )
    })?;
    let mode =
        match options.take_choice("multiline.match", &["first", "last", "nonfirst", "nonlast"])? {
            Some("first") => Match::First,
            Some("last") => Match::Last,
            Some("nonlast") => Match::NonLast,
            _ => Match::NonFirst,
        };
    Ok(Box::new(Multiline {
        inner,
        pattern,
        mode,
        flush_after: options
            .take_duration("multiline.flush_after")?
            .unwrap_or(Duration::from_millis(500)),
        separator: Bytes::from(
            options
                .take("multiline.separator")
                .unwrap_or_else(|| "\n".into()),
        ),
        max_bytes: options.take_bounded(
            "multiline.max_bytes",
            "a number of bytes",
            1..=MAX_BYTES,
            1 << 20,
        )?,
        pending: HashMap::new(),
    }))
}

/// A regex error as one line (the error of a route is one line: an HTTP
/// 400 body, a `--route` message). The regex crate's syntax errors take
/// several: `regex parse error:`, the pattern, a caret under the fault,
/// `error: WHAT`; the pattern is already in the route's message, so WHAT
/// is kept (with anything else squeezed onto the line).
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    match text.lines().rev().find_map(|l| l.strip_prefix("error: ")) {
        Some(what) => what.trim().to_owned(),
        None => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Which lines `multiline.pattern` marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    First,
    Last,
    NonFirst,
    NonLast,
}

/// Lines held back for one container stream.
struct Pending {
    first: Event,
    payload: BytesMut,
    deadline: Instant,
}

pub struct Multiline {
    inner: Box<dyn Adapter>,
    pattern: Regex,
    mode: Match,
    flush_after: Duration,
    separator: Bytes,
    max_bytes: usize,
    pending: HashMap<(String, Stream), Pending>,
}

impl Multiline {
    fn send(&mut self, key: &(String, Stream), out: &mut Vec<Bytes>) {
        if let Some(p) = self.pending.remove(key) {
            let mut event = p.first;
            event.envelope.tags.remove("partial");
            if let Some(Message::Log(log)) = &mut event.envelope.message {
                log.payload = p.payload.freeze();
            }
            self.inner.write(&event, out);
        }
    }
}

impl Adapter for Multiline {
    fn renders_templates(&self) -> bool {
        self.inner.renders_templates()
    }

    fn write(&mut self, event: &Event, out: &mut Vec<Bytes>) {
        let (Some(c), Some(stream), Some(log)) = (&event.container, event.stream(), event.log())
        else {
            return self.inner.write(event, out);
        };
        let key = (c.id.clone(), stream);
        let marked = self.pattern.is_match(&log.payload);
        let starts = match self.mode {
            Match::First => marked,
            Match::NonFirst => !marked,
            Match::Last | Match::NonLast => false,
        };
        if starts {
            self.send(&key, out);
        }
        let now = Instant::now();
        let deadline = now + self.flush_after;
        match self.pending.get_mut(&key) {
            Some(p) => {
                p.payload.extend_from_slice(&self.separator);
                p.payload.extend_from_slice(&log.payload);
                p.deadline = deadline;
            }
            None => {
                self.pending.insert(
                    key.clone(),
                    Pending {
                        first: event.clone(),
                        payload: BytesMut::from(&log.payload[..]),
                        deadline,
                    },
                );
            }
        }
        let ends = match self.mode {
            Match::Last => marked,
            Match::NonLast => !marked,
            Match::First | Match::NonFirst => false,
        };
        if ends || self.pending[&key].payload.len() >= self.max_bytes {
            self.send(&key, out);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.deadline).min()
    }

    fn flush(&mut self, now: Option<Instant>, out: &mut Vec<Bytes>) {
        let due: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| now.is_none_or(|now| p.deadline <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.send(&key, out);
        }
        self.inner.flush(now, out);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use spillway_proto::v2::{Envelope, log::Type};

    use super::*;
    use crate::adapter::build_chain;
    use crate::event::ContainerInfo;

    fn chain(query: &[(&str, &str)]) -> Box<dyn Adapter> {
        let map: BTreeMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut options = Options::new(&map);
        let (a, _) = build_chain(&["multiline", "raw"], &mut options).unwrap();
        options.finish("multiline+raw").unwrap();
        a
    }

    fn line(container: &str, text: &str, ty: Type) -> Event {
        Event {
            envelope: Envelope::log(0, container, "0", text.as_bytes().to_vec(), ty),
            container: Some(Arc::new(ContainerInfo {
                id: container.into(),
                ..Default::default()
            })),
        }
    }

    fn texts(out: &[Bytes]) -> Vec<&str> {
        out.iter()
            .map(|b| std::str::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn a_stack_trace_becomes_one_message_per_stream() {
        let mut a = chain(&[]);
        let mut out = Vec::new();
        a.write(
            &line(
                "c1",
                "Exception in thread \"main\" java.lang.Error",
                Type::Err,
            ),
            &mut out,
        );
        a.write(&line("c1", "out 1", Type::Out), &mut out);
        for i in 0..3 {
            a.write(
                &line("c1", &format!("\tat Foo.bar(Foo.java:{i})"), Type::Err),
                &mut out,
            );
        }
        a.write(&line("c2", "\tat other.container", Type::Err), &mut out);
        assert!(out.is_empty(), "held back: {:?}", texts(&out));
        assert!(a.deadline().is_some());
        a.write(&line("c1", "next error", Type::Err), &mut out);
        assert_eq!(
            texts(&out),
            [
                "Exception in thread \"main\" java.lang.Error\n\tat Foo.bar(Foo.java:0)\n\tat Foo.bar(Foo.java:1)\n\tat Foo.bar(Foo.java:2)"
            ]
        );
        out.clear();
        a.flush(Some(Instant::now()), &mut out);
        assert!(out.is_empty(), "nothing due yet");
        a.flush(Some(Instant::now() + Duration::from_secs(1)), &mut out);
        out.sort();
        assert_eq!(texts(&out), ["\tat other.container", "next error", "out 1"]);
        assert_eq!(a.deadline(), None);
    }

    #[test]
    fn match_modes() {
        let run = |mode: &str, lines: &[&str]| {
            let mut a = chain(&[
                ("multiline.match", mode),
                ("multiline.pattern", "^[+]"),
                ("multiline.separator", "|"),
            ]);
            let mut out = Vec::new();
            for l in lines {
                a.write(&line("c", l, Type::Out), &mut out);
            }
            a.flush(None, &mut out);
            texts(&out)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(run("first", &["+a", "b", "+c", "d"]), ["+a|b", "+c|d"]);
        assert_eq!(run("nonfirst", &["a", "+b", "c", "+d"]), ["a|+b", "c|+d"]);
        assert_eq!(
            run("last", &["a", "+b", "c", "+d", "e"]),
            ["a|+b", "c|+d", "e"]
        );
        assert_eq!(run("nonlast", &["+a", "b", "+c", "d"]), ["+a|b", "+c|d"]);
    }

    #[test]
    fn options_are_checked() {
        let mut options = Options::new(&[("multiline.pattern".into(), "(".into())].into());
        let e = build_chain(&["multiline", "raw"], &mut options)
            .err()
            .unwrap();
        assert!(e.contains("multiline.pattern"), "{e}");
        let mut options = Options::new(&BTreeMap::new());
        let e = build_chain(&["multiline"], &mut options).err().unwrap();
        assert!(e.contains("wraps another adapter"), "{e}");
    }

    #[test]
    fn a_bad_pattern_is_refused_in_one_line() {
        // Found by the route_uri fuzz target: the regex crate's syntax
        // error spans four lines (pattern, caret, reason).
        for pattern in ["%5)\\s", "(", "a{99999999}", "\\p{Nope}"] {
            let mut options = Options::new(&[("multiline.pattern".into(), pattern.into())].into());
            let e = build_chain(&["multiline", "raw"], &mut options)
                .err()
                .unwrap();
            assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
            assert!(e.contains("multiline.pattern"), "{e}");
        }
        let mut options = Options::new(&[("multiline.pattern".into(), ")".into())].into());
        let e = build_chain(&["multiline", "raw"], &mut options)
            .err()
            .unwrap();
        assert!(
            e.ends_with("is not a regular expression: unopened group"),
            "{e}"
        );
    }
}
