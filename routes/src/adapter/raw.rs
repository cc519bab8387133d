//! The raw adapter: each line as it was written (bytes untouched), or
//! through a `template=` (see [`crate::template`]), or as one JSON object
//! with `format=json` (the form of [`Event::to_json`]). Newline-framed on
//! TCP and TLS.

use bytes::Bytes;

use super::{Adapter, AdapterKind, Inner};
use crate::event::Event;
use crate::spec::Options;
use crate::template::Template;
use crate::transport::Framing;

pub const KIND: AdapterKind = AdapterKind {
    name: "raw",
    wraps: false,
    framing: Some(Framing::Lf),
    build,
};

fn build(options: &mut Options, _inner: Inner) -> Result<Box<dyn Adapter>, String> {
    let format = options.take_choice("format", &["text", "json"])?;
    let template = options.take("template");
    Ok(Box::new(match (format, template) {
        (Some("json"), Some(_)) => {
            return Err("options format=json and template= exclude each other".into());
        }
        (Some("json"), None) => Raw::Json,
        (_, Some(t)) => Raw::Template(Box::new(Template::new("template", &t)?)),
        (_, None) => Raw::Payload,
    }))
}

pub enum Raw {
    Payload,
    Template(Box<Template>),
    Json,
}

impl Adapter for Raw {
    fn renders_templates(&self) -> bool {
        matches!(self, Raw::Template(_))
    }

    fn write(&mut self, event: &Event, out: &mut Vec<Bytes>) {
        out.push(match self {
            Raw::Payload => match event.log() {
                Some(log) => log.payload.clone(),
                // Metrics have no payload: send their JSON form.
                None => Bytes::from(event.to_json().to_string()),
            },
            Raw::Template(t) => Bytes::from(t.render(event)),
            Raw::Json => Bytes::from(event.to_json().to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spillway_proto::v2::{Envelope, log::Type};

    use super::*;

    fn raw(query: &[(&str, &str)]) -> Result<Box<dyn Adapter>, String> {
        let map: BTreeMap<String, String> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        build(&mut Options::new(&map), None)
    }

    fn write(a: &mut Box<dyn Adapter>, e: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        a.write(e, &mut out);
        out.concat()
    }

    #[test]
    fn payload_template_and_json() {
        let mut envelope = Envelope::log(0, "shop", "1", &b"caf\xc3\xa9 \xff"[..], Type::Err);
        envelope.tags.insert("team".into(), "pay".into());
        let e = Event {
            envelope,
            container: None,
        };
        assert_eq!(write(&mut raw(&[]).unwrap(), &e), b"caf\xc3\xa9 \xff");
        let mut t = raw(&[(
            "template",
            "{{source_id}}/{{instance_id}} {{stream}} {{tags.team}}: {{message}}",
        )])
        .unwrap();
        assert_eq!(
            write(&mut t, &e),
            "shop/1 stderr pay: café \u{fffd}".as_bytes()
        );
        let json: serde_json::Value =
            serde_json::from_slice(&write(&mut raw(&[("format", "json")]).unwrap(), &e)).unwrap();
        assert_eq!(json["message"], "café \u{fffd}");
        assert_eq!(json["source_id"], "shop");
        assert!(raw(&[("format", "json"), ("template", "x")]).is_err());
        assert!(
            raw(&[("format", "xml")])
                .err()
                .unwrap()
                .contains("format=\"xml\"")
        );
    }
}
