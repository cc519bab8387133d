//! Which container lines a route or a `/logs` stream takes: logspout's
//! `filter.name` (glob), `filter.id` (prefix), `filter.labels` (`key:glob`,
//! all must match) and `filter.sources` (`stdout`, `stderr`).

use glob::Pattern;
use serde::{Deserialize, Serialize};

use crate::event::{Event, Stream};

/// Filters as written by users (query parameters or JSON), checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// Glob on the container name (`web-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Prefix of the container id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `key:glob` pairs; a container must match every one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// `stdout` and/or `stderr`; empty means both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl Filters {
    /// Takes a `filter.*` query parameter; `Ok(false)` if `key` is not one.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        };
        match key {
            "filter.name" => self.name = Some(value.to_owned()),
            "filter.id" => self.id = Some(value.to_owned()),
            "filter.labels" => self.labels.extend(list(value)),
            "filter.sources" => self.sources.extend(list(value)),
            _ if key.starts_with("filter.") => {
                return Err(format!(
                    "unknown filter {key:?} (known: filter.name, filter.id, filter.labels, filter.sources)"
                ));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the globs, labels and sources, ready for matching.
    pub fn compile(&self) -> Result<Matcher, String> {
        let glob = |what: &str, g: &str| {
            Pattern::new(g).map_err(|e| format!("{what} {g:?} is not a valid glob: {e}"))
        };
        let name = self
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map(|n| glob("filter.name", n))
            .transpose()?;
        let labels = self
            .labels
            .iter()
            .map(|l| {
                let (key, value) = l.split_once(':').ok_or_else(|| {
                    format!("filter.labels entry {l:?} is not key:glob (for example team:pay*)")
                })?;
                Ok((key.to_owned(), glob("filter.labels value", value)?))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let sources = self
            .sources
            .iter()
            .map(|s| {
                Stream::parse(s).ok_or_else(|| {
                    format!("filter.sources entry {s:?} is neither stdout nor stderr")
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Matcher {
            name,
            id: self.id.clone().filter(|i| !i.is_empty()),
            labels,
            sources,
        })
    }

    /// Whether only container lines can match (a name, id or label filter).
    pub fn selects_containers(&self) -> bool {
        self.name.is_some() || self.id.is_some() || !self.labels.is_empty()
    }
}

/// Compiled [`Filters`].
#[derive(Clone, Debug, Default)]
pub struct Matcher {
    name: Option<Pattern>,
    id: Option<String>,
    labels: Vec<(String, Pattern)>,
    sources: Vec<Stream>,
}

impl Matcher {
    /// Whether `event` passes. Events without a container (what apps send
    /// to ingress) pass only when no container filter is set; the sources
    /// filter applies to log lines only.
    pub fn matches(&self, event: &Event) -> bool {
        if let Some(stream) = event.stream()
            && !self.sources.is_empty()
            && !self.sources.contains(&stream)
        {
            return false;
        }
        let Some(c) = &event.container else {
            return self.name.is_none() && self.id.is_none() && self.labels.is_empty();
        };
        self.name.as_ref().is_none_or(|p| p.matches(&c.name))
            && self
                .id
                .as_ref()
                .is_none_or(|id| c.id.starts_with(id.as_str()))
            && self
                .labels
                .iter()
                .all(|(key, pattern)| c.labels.get(key).is_some_and(|v| pattern.matches(v)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spillway_proto::v2::{Envelope, log::Type};

    use super::*;
    use crate::event::ContainerInfo;

    fn line(name: &str, id: &str, labels: &[(&str, &str)], ty: Type) -> Event {
        Event {
            envelope: Envelope::log(1, name, "0", &b"x"[..], ty),
            container: Some(Arc::new(ContainerInfo {
                id: id.into(),
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })),
        }
    }

    fn matcher(query: &[(&str, &str)]) -> Matcher {
        let mut f = Filters::default();
        for (k, v) in query {
            assert!(f.set(k, v).unwrap());
        }
        f.compile().unwrap()
    }

    #[test]
    fn table() {
        let web = line(
            "web-1",
            "abc123",
            &[("team", "payments"), ("tier", "front")],
            Type::Out,
        );
        let db_err = line("db", "def456", &[("team", "data")], Type::Err);
        let app_counter = Event {
            envelope: Envelope::counter("app", "requests", 1, 1),
            container: None,
        };
        type Query = &'static [(&'static str, &'static str)];
        let cases: &[(Query, [bool; 3])] = &[
            (&[], [true, true, true]),
            (&[("filter.name", "web-*")], [true, false, false]),
            (&[("filter.name", "d?")], [false, true, false]),
            (&[("filter.id", "abc")], [true, false, false]),
            (&[("filter.id", "bc")], [false, false, false]),
            (&[("filter.labels", "team:pay*")], [true, false, false]),
            (
                &[("filter.labels", "team:*,tier:front")],
                [true, false, false],
            ),
            (&[("filter.labels", "tier:*")], [true, false, false]),
            (&[("filter.sources", "stderr")], [false, true, true]),
            (&[("filter.sources", "stdout,stderr")], [true, true, true]),
            (
                &[("filter.name", "*"), ("filter.sources", "stdout")],
                [true, false, false],
            ),
        ];
        for (query, expected) in cases {
            let m = matcher(query);
            let got = [m.matches(&web), m.matches(&db_err), m.matches(&app_counter)];
            assert_eq!(&got, expected, "{query:?}");
        }
    }

    #[test]
    fn bad_filters_are_named() {
        let mut f = Filters::default();
        assert!(
            f.set("filter.colour", "x")
                .unwrap_err()
                .contains("filter.colour")
        );
        assert!(!f.set("format", "rfc3164").unwrap());
        f.set("filter.labels", "team").unwrap();
        assert!(f.compile().unwrap_err().contains("key:glob"));
        let mut f = Filters::default();
        f.set("filter.sources", "stdin").unwrap();
        assert!(f.compile().unwrap_err().contains("stdin"));
        let mut f = Filters::default();
        f.set("filter.name", "[a").unwrap();
        assert!(f.compile().unwrap_err().contains("glob"));
    }
}
