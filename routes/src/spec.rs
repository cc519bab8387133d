//! Routes as users write them: logspout URIs
//! (`ADAPTER[+TRANSPORT]://HOST:PORT[?QUERY]`) or the JSON of the routes
//! API, and their options.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::filter::Filters;

/// A route: where to send which container lines, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSpec {
    pub id: String,
    /// The URI scheme: adapters then transport, `+`-separated
    /// (`syslog+tls`, `multiline+raw+tcp`). No transport means UDP.
    pub adapter: String,
    /// `HOST:PORT` of the receiver.
    pub address: String,
    #[serde(default)]
    pub filters: Filters,
    /// Options of the adapters, the transport and the route (`buffer`,
    /// `include`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// The body of `POST /routes`: a `uri`, or the fields of [`RouteSpec`];
/// logspout's route JSON (`filter_name`, `filter_id`, `filter_sources`,
/// `filter_labels` next to `adapter`, `address` and `options`) too.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// The id; none or `""` (as logspout clients send) makes one.
    pub id: Option<String>,
    pub uri: Option<String>,
    pub adapter: Option<String>,
    pub address: Option<String>,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// logspout: glob on the container name (our `filters.name`).
    pub filter_name: Option<String>,
    /// logspout: prefix of the container id (our `filters.id`).
    pub filter_id: Option<String>,
    /// logspout: `stdout`, `stderr` (our `filters.sources`).
    #[serde(default)]
    pub filter_sources: Vec<String>,
    /// logspout: `key:glob` (our `filters.labels`).
    #[serde(default)]
    pub filter_labels: Vec<String>,
}

impl RouteRequest {
    /// logspout's `filter_*` fields as [`Filters`], if any is given.
    fn logspout_filters(&mut self) -> Option<Filters> {
        let f = Filters {
            name: self.filter_name.take().filter(|n| !n.is_empty()),
            id: self.filter_id.take().filter(|i| !i.is_empty()),
            labels: std::mem::take(&mut self.filter_labels),
            sources: std::mem::take(&mut self.filter_sources),
        };
        (f != Filters::default()).then_some(f)
    }
}

impl RouteRequest {
    /// The route it asks for; `id` is used when the request names none.
    pub fn into_spec(mut self, id: String) -> Result<RouteSpec, String> {
        let logspout = self.logspout_filters();
        if let Some(f) = logspout {
            if self.filters != Filters::default() {
                return Err("filters are given both in \"filters\" and as logspout's filter_name, filter_id, filter_sources, filter_labels: use one".into());
            }
            self.filters = f;
        }
        let id = self.id.filter(|i| !i.is_empty()).unwrap_or(id);
        check_id(&id)?;
        let mut spec = match (self.uri, self.adapter, self.address) {
            (Some(uri), None, None) => RouteSpec::from_uri(id, &uri)?,
            (None, Some(adapter), Some(address)) => RouteSpec {
                id,
                adapter,
                address,
                filters: Filters::default(),
                options: BTreeMap::new(),
            },
            (Some(_), _, _) => {
                return Err("give either \"uri\" or \"adapter\" and \"address\", not both".into());
            }
            _ => return Err("a route needs \"uri\", or \"adapter\" and \"address\"".into()),
        };
        if spec.filters == Filters::default() {
            spec.filters = self.filters;
        } else if self.filters != Filters::default() {
            return Err(
                "filters are given both in the URI and in \"filters\" (or logspout's filter_name, filter_id, filter_sources, filter_labels)"
                    .into(),
            );
        }
        spec.options.extend(self.options);
        spec.address = canonical_address(&spec.address)?;
        check_address(&spec.address)?;
        Ok(spec)
    }
}

/// Route ids appear in URLs and metric labels: keep them plain.
fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "route id {id:?} must be 1 to 64 characters of letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// `address` as the host and port of a route URI (`ADAPTER://HOST:PORT`)
/// write it, which is how [`RouteSpec::from_uri`] sets it: `h:0514` is
/// `h:514`. Anything else in it (a path, a user, spaces) is refused, so
/// that every route has a URI ([`RouteSpec::uri`]).
pub fn canonical_address(address: &str) -> Result<String, String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("address {address:?} has no port (HOST:PORT)"))?;
    if host.is_empty() {
        return Err(format!("address {address:?} has no host"));
    }
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("address {address:?} has no valid port"));
    }
    let not_host_port = |why: String| format!("address {address:?} is not HOST:PORT: {why}");
    let url =
        url::Url::parse(&format!("route://{address}")).map_err(|e| not_host_port(e.to_string()))?;
    if !url.username().is_empty()
        || url.password().is_some()
        || !url.path().is_empty()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(not_host_port("it holds more than a host and a port".into()));
    }
    match (url.host_str().filter(|h| !h.is_empty()), url.port()) {
        (Some(host), Some(port)) => Ok(format!("{host}:{port}")),
        _ => Err(not_host_port("no host or no port".into())),
    }
}

/// Checks that `address` is a canonical `HOST:PORT` ([`canonical_address`])
/// with a port other than 0: what every route must have before it starts.
pub fn check_address(address: &str) -> Result<(), String> {
    if canonical_address(address)? != address {
        return Err(format!(
            "address {address:?} is not HOST:PORT as a route URI writes it"
        ));
    }
    match address.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
        Some(Ok(p)) if p > 0 => Ok(()),
        _ => Err(format!("address {address:?} has no valid port")),
    }
}

impl RouteSpec {
    /// Parses `ADAPTER[+TRANSPORT]://HOST:PORT[?QUERY]`; `filter.*` query
    /// parameters become filters, the others options.
    pub fn from_uri(id: String, uri: &str) -> Result<RouteSpec, String> {
        let url = url::Url::parse(uri).map_err(|e| format!("route {uri:?} is not a URI: {e}"))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| format!("route {uri:?} has no host (ADAPTER://HOST:PORT)"))?;
        let port = url
            .port()
            .ok_or_else(|| format!("route {uri:?} has no port (ADAPTER://HOST:PORT)"))?;
        if !matches!(url.path(), "" | "/") {
            return Err(format!(
                "route {uri:?} has a path {:?}; routes are ADAPTER://HOST:PORT[?OPTIONS]",
                url.path()
            ));
        }
        let mut spec = RouteSpec {
            id,
            adapter: url.scheme().to_owned(),
            address: format!("{host}:{port}"),
            filters: Filters::default(),
            options: BTreeMap::new(),
        };
        for (key, value) in url.query_pairs() {
            if !spec.filters.set(&key, &value)? {
                spec.options.insert(key.into_owned(), value.into_owned());
            }
        }
        Ok(spec)
    }

    /// The route as a URI again (what `--route` takes).
    pub fn uri(&self) -> String {
        let mut url = url::Url::parse(&format!("{}://{}", self.adapter, self.address))
            .expect("a checked route makes a valid URI");
        {
            let mut query = url.query_pairs_mut();
            let f = &self.filters;
            if let Some(n) = &f.name {
                query.append_pair("filter.name", n);
            }
            if let Some(i) = &f.id {
                query.append_pair("filter.id", i);
            }
            if !f.labels.is_empty() {
                query.append_pair("filter.labels", &f.labels.join(","));
            }
            if !f.sources.is_empty() {
                query.append_pair("filter.sources", &f.sources.join(","));
            }
            for (k, v) in &self.options {
                query.append_pair(k, v);
            }
        }
        let uri = url.to_string();
        uri.strip_suffix('?').unwrap_or(&uri).to_owned()
    }
}

/// The options of one route while its parts take theirs; what is left
/// over is an error naming it.
#[derive(Debug)]
pub struct Options {
    left: BTreeMap<String, String>,
}

impl Options {
    pub fn new(options: &BTreeMap<String, String>) -> Self {
        Options {
            left: options.clone(),
        }
    }

    pub fn take(&mut self, key: &str) -> Option<String> {
        self.left.remove(key)
    }

    /// Takes `key` and parses it; the error names the option and the value.
    pub fn take_parsed<T: FromStr>(&mut self, key: &str, what: &str) -> Result<Option<T>, String> {
        self.take(key)
            .map(|v| {
                v.parse()
                    .map_err(|_| format!("option {key}={v:?} is not {what}"))
            })
            .transpose()
    }

    /// Takes a number that must lie in `range` (limits that protect the
    /// collector's memory); `default` when the option is not given. The
    /// error names the option, the value and the range.
    pub fn take_bounded(
        &mut self,
        key: &str,
        what: &str,
        range: std::ops::RangeInclusive<usize>,
        default: usize,
    ) -> Result<usize, String> {
        let Some(v) = self.take(key) else {
            return Ok(default);
        };
        let out_of_range = || {
            format!(
                "option {key}={v:?} must be {what} from {} to {}",
                range.start(),
                range.end()
            )
        };
        // Digits too many for a usize are out of range, not "not a number".
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            return v
                .parse::<usize>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(out_of_range);
        }
        Err(out_of_range())
    }

    /// Takes a duration such as `500ms` or `2s`.
    pub fn take_duration(&mut self, key: &str) -> Result<Option<Duration>, String> {
        self.take(key)
            .map(|v| {
                spillway_plumbing::parse_duration(&v)
                    .map_err(|e| format!("option {key}={v:?}: {e}"))
            })
            .transpose()
    }

    /// Takes `key`, which must be one of `choices`.
    pub fn take_choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, String> {
        self.take(key)
            .map(|v| {
                choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
                    format!("option {key}={v:?} must be one of {}", choices.join(", "))
                })
            })
            .transpose()
    }

    /// Fails if an option was taken by no part of the route.
    pub fn finish(self, scheme: &str) -> Result<(), String> {
        match self.left.keys().next() {
            None => Ok(()),
            Some(key) => Err(format!("unknown option {key:?} for a {scheme} route")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        let s = RouteSpec::from_uri(
            "r1".into(),
            "syslog+tls://logs.example:6514?filter.name=web-*&filter.sources=stderr&format=rfc3164&ca=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(s.adapter, "syslog+tls");
        assert_eq!(s.address, "logs.example:6514");
        assert_eq!(s.filters.name.as_deref(), Some("web-*"));
        assert_eq!(s.filters.sources, ["stderr"]);
        assert_eq!(s.options["format"], "rfc3164");
        assert_eq!(s.options["ca"], "/etc/ca.pem");
        let again = RouteSpec::from_uri("r1".into(), &s.uri()).unwrap();
        assert_eq!(again, s);
        let plain = RouteSpec::from_uri("r2".into(), "syslog://127.0.0.1:514").unwrap();
        assert_eq!(plain.uri(), "syslog://127.0.0.1:514");
        assert_eq!(plain.address, "127.0.0.1:514");
    }

    #[test]
    fn bad_uris_are_named() {
        for (uri, needle) in [
            ("not a uri", "not a URI"),
            ("syslog://127.0.0.1", "no port"),
            ("syslog://:514", "not a URI"),
            ("syslog://host:514/path", "path"),
            ("syslog://host:514?filter.nme=x", "filter.nme"),
        ] {
            let e = RouteSpec::from_uri("x".into(), uri).unwrap_err();
            assert!(e.contains(needle), "{uri}: {e}");
        }
    }

    #[test]
    fn requests() {
        let r: RouteRequest =
            serde_json::from_str(r#"{"uri":"raw+tcp://127.0.0.1:5000?filter.id=abc"}"#).unwrap();
        let s = r.into_spec("gen".into()).unwrap();
        assert_eq!(
            (s.id.as_str(), s.filters.id.as_deref()),
            ("gen", Some("abc"))
        );
        let r: RouteRequest = serde_json::from_str(
            r#"{"id":"papertrail","adapter":"syslog+tls","address":"h:6514","filters":{"name":"web"},"options":{"format":"rfc3164"}}"#,
        )
        .unwrap();
        let s = r.into_spec("gen".into()).unwrap();
        assert_eq!(s.id, "papertrail");
        assert_eq!(s.filters.name.as_deref(), Some("web"));
        assert_eq!(s.options["format"], "rfc3164");
        for (body, needle) in [
            (r#"{"adapter":"syslog"}"#, "needs"),
            (
                r#"{"uri":"syslog://h:1","adapter":"raw","address":"h:1"}"#,
                "not both",
            ),
            (r#"{"id":"a b","uri":"syslog://h:1"}"#, "route id"),
            (r#"{"adapter":"syslog","address":"h"}"#, "no port"),
        ] {
            let r: RouteRequest = serde_json::from_str(body).unwrap();
            let e = r.into_spec("gen".into()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
        assert!(serde_json::from_str::<RouteRequest>(r#"{"adress":"h:1"}"#).is_err());
    }

    /// Found while writing the `route_json` fuzz target: an address that no URI
    /// can hold was accepted, and printing the route's URI (the routes
    /// API's answer and listing) panicked.
    #[test]
    fn addresses_are_those_a_uri_can_hold() {
        for (address, canonical) in [
            ("h:514", "h:514"),
            ("h:0514", "h:514"),
            ("[::1]:514", "[::1]:514"),
            ("Logs.Example:6514", "Logs.Example:6514"),
        ] {
            let r: RouteRequest = serde_json::from_value(
                serde_json::json!({"adapter": "syslog", "address": address}),
            )
            .unwrap();
            let s = r.into_spec("gen".into()).unwrap();
            assert_eq!(s.address, canonical);
            assert_eq!(s.uri(), format!("syslog://{canonical}"));
            check_address(&s.address).unwrap();
        }
        for address in [
            "a b:514", "h:+514", "u@h:514", "h/x:514", "h:514?x", "h#:1", "h:", ":1",
        ] {
            let r: RouteRequest = serde_json::from_value(
                serde_json::json!({"adapter": "syslog", "address": address}),
            )
            .unwrap();
            let e = r.into_spec("gen".into()).unwrap_err();
            assert!(e.contains("address"), "{address}: {e}");
            assert!(check_address(address).is_err(), "{address}");
        }
        // What an older version may have saved is refused when built.
        assert!(check_address("h:0514").is_err());
    }

    #[test]
    fn logspout_requests() {
        let r: RouteRequest = serde_json::from_str(
            r#"{"id":"","adapter":"syslog","address":"h:514","filter_name":"web*","filter_id":"ab","filter_sources":["stdout"],"filter_labels":["a:b"],"options":{"format":"rfc3164"}}"#,
        )
        .unwrap();
        let s = r.into_spec("gen".into()).unwrap();
        assert_eq!(s.id, "gen");
        assert_eq!(
            s.filters,
            Filters {
                name: Some("web*".into()),
                id: Some("ab".into()),
                sources: vec!["stdout".into()],
                labels: vec!["a:b".into()],
            }
        );
        for body in [
            r#"{"adapter":"syslog","address":"h:514","filter_name":"a","filters":{"name":"b"}}"#,
            r#"{"uri":"syslog://h:514?filter.name=a","filter_id":"b"}"#,
        ] {
            let r: RouteRequest = serde_json::from_str(body).unwrap();
            let e = r.into_spec("gen".into()).unwrap_err();
            assert!(e.contains("filter_name"), "{body}: {e}");
        }
    }

    #[test]
    fn options_left_over_are_named() {
        let mut o =
            Options::new(&[("format".into(), "x".into()), ("fromat".into(), "y".into())].into());
        assert_eq!(o.take("format").as_deref(), Some("x"));
        assert!(o.finish("syslog+tcp").unwrap_err().contains("\"fromat\""));
        let mut o = Options::new(&[("buffer".into(), "ten".into())].into());
        assert!(
            o.take_parsed::<usize>("buffer", "a number")
                .unwrap_err()
                .contains("buffer=\"ten\"")
        );
        let mut o = Options::new(&[("match".into(), "middle".into())].into());
        assert!(
            o.take_choice("match", &["first", "last"])
                .unwrap_err()
                .contains("one of first, last")
        );
    }
}
