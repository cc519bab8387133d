//! Templates of route options (`template=`, `hostname=`...): compiled by
//! `Template::new` (which tries them on a sample event), rendered for a
//! container line and a metric.
//!
//! Input: the template, then optionally a NUL byte and the line's bytes.
//!
//! Invariants: a template either compiles or is refused with a message
//! naming the option; rendering never panics, stays within the engine's
//! fuel (libFuzzer's `-timeout` catches a render that does not) and
//! within `MAX_OUTPUT` bytes, or renders as the error; it renders the same
//! twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_fuzz::event;
use spillway_routes::template::{MAX_OUTPUT, Template};

fuzz_target!(|data: &[u8]| {
    let (source, line) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let template = match Template::new("template", source) {
        Ok(t) => t,
        Err(e) => {
            assert!(e.contains("option template="), "{e}");
            return;
        }
    };
    let tags = [("host".to_owned(), "node-1".to_owned())];
    let metric = [
        ("@type".to_owned(), "gauge".to_owned()),
        ("@name".to_owned(), "cpu".to_owned()),
        ("@value".to_owned(), "NaN".to_owned()),
    ];
    for e in [event(&tags, line), event(&metric, line)] {
        let out = template.render(&e);
        assert!(
            out.len() <= MAX_OUTPUT || out.starts_with("template error:"),
            "{} bytes rendered",
            out.len()
        );
        assert_eq!(template.render(&e), out, "rendered differently twice");
    }
});
