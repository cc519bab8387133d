//! The syslog adapter and its framing: a route built from a URI whose
//! last adapter is `syslog`, writing one event.
//!
//! Input: line 1, the route URI (`syslog+tcp://h:514?format=rfc3164`);
//! line 2, the event as `key=value&...` (tags, and `@type`, `@source`,
//! `@instance`, `@ts`, `@name`, `@value`: see `spillway_fuzz::event`);
//! the rest, the line's bytes.
//!
//! Invariants: every message is well-formed RFC 5424 (or RFC 3164 with
//! `format=rfc3164`): header fields printable and within their lengths,
//! structured data escaped; a log line's MSG is its bytes unchanged; an
//! octet-counted frame gives the message back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_fuzz::{
    check_rfc3164, check_rfc5424, event, first_line, pairs, strip_file_options,
    unframe_octet_counting,
};
use spillway_routes::route;
use spillway_routes::spec::RouteSpec;
use spillway_routes::transport::Framing;

fuzz_target!(|data: &[u8]| {
    let Some((uri, rest)) = first_line(data) else {
        return;
    };
    let Some((fields, payload)) = first_line(rest) else {
        return;
    };
    let Ok(mut spec) = RouteSpec::from_uri("fuzz".into(), uri) else {
        return;
    };
    if spec
        .adapter
        .split('+')
        .filter(|a| *a != "tcp" && *a != "tls" && *a != "udp")
        .last()
        != Some("syslog")
        || spec.adapter.starts_with("multiline")
    {
        return;
    }
    strip_file_options(&mut spec.options);
    let Ok(parts) = route::build(&spec) else {
        return;
    };
    let rfc3164 = spec.options.get("format").map(String::as_str) == Some("rfc3164");
    let (mut adapter, framing) = parts.into_adapter();
    let event = event(&pairs(fields), payload);
    let mut out = Vec::new();
    adapter.write(&event, &mut out);
    adapter.flush(None, &mut out);
    for msg in &out {
        let text = if rfc3164 {
            check_rfc3164(msg)
        } else {
            check_rfc5424(msg)
        };
        if event.log().is_some() {
            assert_eq!(text, payload, "the line's bytes changed");
        }
        let mut frame = Vec::new();
        match framing {
            Some(Framing::OctetCounting) => {
                Framing::OctetCounting.frame(msg, &mut frame);
                assert_eq!(unframe_octet_counting(&frame), &msg[..]);
            }
            Some(Framing::Lf) => {
                Framing::Lf.frame(msg, &mut frame);
                assert_eq!(frame.strip_suffix(b"\n"), Some(&msg[..]));
            }
            None => {}
        }
    }
});
