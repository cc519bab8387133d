//! The multiline adapter: lines of several container streams joined into
//! messages, as a `multiline+raw` route built from a URI does it.
//!
//! Input: line 1, a route URI whose `multiline.*` options are used (the
//! adapter is always `multiline+raw+tcp`); then one event per line: its
//! first byte picks the container (of three), its second `e` for stderr
//! (else stdout), the rest is the line's text. A line `~` lets every held
//! message's time run out (`flush` at a time far ahead).
//!
//! Invariants: per container stream, the messages joined with the
//! separator are the lines joined with it (nothing lost, duplicated,
//! reordered or mixed between streams); no more messages than lines; a
//! message grows past `multiline.max_bytes` only by its last line; after
//! the final flush nothing is held.
#![no_main]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use spillway_fuzz::first_line;
use spillway_proto::v2::{Envelope, log::Type};
use spillway_routes::spec::RouteSpec;
use spillway_routes::{ContainerInfo, Event, route};

/// Each message as `CONTAINER \x1f STREAM \x1f TEXT`, to know whose it is.
const TAGGED: &str = "{{container.id}}\x1f{{stream}}\x1f{{message}}";

fuzz_target!(|data: &[u8]| {
    let Some((uri, rest)) = first_line(data) else {
        return;
    };
    let Ok(given) = RouteSpec::from_uri("fuzz".into(), uri) else {
        return;
    };
    let mut options: BTreeMap<String, String> = given
        .options
        .into_iter()
        .filter(|(k, _)| k.starts_with("multiline."))
        .collect();
    options.insert("template".into(), TAGGED.into());
    let spec = RouteSpec {
        adapter: "multiline+raw+tcp".into(),
        options,
        ..given
    };
    let Ok(parts) = route::build(&spec) else {
        return;
    };
    let separator = spec
        .options
        .get("multiline.separator")
        .cloned()
        .unwrap_or_else(|| "\n".into());
    let max_bytes: usize = spec
        .options
        .get("multiline.max_bytes")
        .map_or(1 << 20, |m| m.parse().expect("built, so a number"));
    let (mut adapter, _) = parts.into_adapter();

    let containers: Vec<Arc<ContainerInfo>> = (0..3)
        .map(|i| {
            Arc::new(ContainerInfo {
                id: format!("c{i}"),
                ..Default::default()
            })
        })
        .collect();
    let mut lines: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut longest = 0;
    let mut count = 0;
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(rest);
    for line in text.split('\n') {
        if line == "~" {
            adapter.flush(
                Some(Instant::now() + Duration::from_secs(1 << 20)),
                &mut out,
            );
            continue;
        }
        let mut chars = line.chars();
        let (Some(c), Some(s)) = (chars.next(), chars.next()) else {
            continue;
        };
        let container = &containers[c as usize % containers.len()];
        let ty = if s == 'e' { Type::Err } else { Type::Out };
        let payload = chars.as_str();
        adapter.write(
            &Event {
                envelope: Envelope::log(0, "app", "0", payload.as_bytes().to_vec(), ty),
                container: Some(container.clone()),
            },
            &mut out,
        );
        let stream = if s == 'e' { "stderr" } else { "stdout" };
        lines
            .entry((container.id.clone(), stream.into()))
            .or_default()
            .push(payload.to_owned());
        longest = longest.max(payload.len());
        count += 1;
    }
    adapter.flush(None, &mut out);
    assert_eq!(adapter.deadline(), None, "held after the final flush");
    assert!(
        out.len() <= count,
        "{} messages from {count} lines",
        out.len()
    );

    let mut messages: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for m in &out {
        let m = std::str::from_utf8(m).expect("UTF-8 in, UTF-8 out");
        let mut parts = m.splitn(3, '\x1f');
        let (Some(id), Some(stream), Some(text)) = (parts.next(), parts.next(), parts.next())
        else {
            panic!("not a tagged message: {m:?}");
        };
        assert!(
            text.len() < max_bytes + separator.len() + longest,
            "a message of {} bytes (max_bytes {max_bytes})",
            text.len()
        );
        messages
            .entry((id.into(), stream.into()))
            .or_default()
            .push(text.into());
    }
    let joined = |m: &BTreeMap<(String, String), Vec<String>>| -> BTreeMap<_, String> {
        m.iter()
            .map(|(k, v)| (k.clone(), v.join(separator.as_str())))
            .collect()
    };
    assert_eq!(joined(&messages), joined(&lines));
});
