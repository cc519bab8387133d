//! Protobuf-JSON details that serde alone gets wrong.
//!
//! Protobuf-JSON writes the `double` values NaN, +Infinity and -Infinity as
//! the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (Go's `protojson`,
//! Loggregator's gateway and go-loggregator do so); serde_json writes them
//! as `null`, which readers take for 0. Every JSON Spillway produces goes
//! through [`Double`]: the generated impls of `GaugeValue.value` and
//! `Value.decimal` (patched in by `build.rs`), the routes' JSON events and
//! `spillway tail --json`.

use serde::{Serialize, Serializer};

/// An `f64` that serializes as protobuf-JSON does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Double(pub f64);

impl Serialize for Double {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v == f64::INFINITY {
            s.serialize_str("Infinity")
        } else if v == f64::NEG_INFINITY {
            s.serialize_str("-Infinity")
        } else {
            s.serialize_f64(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2;

    #[test]
    fn special_doubles_are_strings_and_read_back() {
        let j = |v: f64| serde_json::to_string(&Double(v)).unwrap();
        assert_eq!(j(f64::NAN), "\"NaN\"");
        assert_eq!(j(f64::INFINITY), "\"Infinity\"");
        assert_eq!(j(f64::NEG_INFINITY), "\"-Infinity\"");
        assert_eq!(j(1.5), "1.5");

        let mut g = v2::Gauge::default();
        for (name, value) in [
            ("nan", f64::NAN),
            ("inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("one", 1.0),
        ] {
            g.metrics.insert(
                name.into(),
                v2::GaugeValue {
                    unit: "u".into(),
                    value,
                },
            );
        }
        let e = v2::Envelope {
            message: Some(v2::envelope::Message::Gauge(g)),
            deprecated_tags: [(
                "d".to_string(),
                v2::Value {
                    data: Some(v2::value::Data::Decimal(f64::NEG_INFINITY)),
                },
            )]
            .into(),
            ..Default::default()
        };
        let text = serde_json::to_string(&e).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let m = &v["gauge"]["metrics"];
        assert_eq!(m["nan"]["value"], "NaN");
        assert_eq!(m["inf"]["value"], "Infinity");
        assert_eq!(m["-inf"]["value"], "-Infinity");
        assert_eq!(m["one"]["value"], 1.0);
        assert_eq!(v["deprecated_tags"]["d"]["decimal"], "-Infinity");

        // And the generated deserializers read them back.
        let back: v2::Envelope = serde_json::from_str(&text).unwrap();
        let Some(v2::envelope::Message::Gauge(g)) = back.message else {
            unreachable!()
        };
        assert!(g.metrics["nan"].value.is_nan());
        assert_eq!(g.metrics["-inf"].value, f64::NEG_INFINITY);
    }
}
