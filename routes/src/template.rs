//! Templates in route options (`template=` of the raw adapter, `hostname=`
//! and friends of syslog), in Jinja syntax: `{{ container.name }}`,
//! `{{ tags.team | default("none") }}`.
//!
//! The fields are those of the event's JSON form ([`Event::to_json`]):
//! `time`, `timestamp`, `source_id`, `instance_id`, `type`, `stream`,
//! `message` (also `payload`), `tags`, `container` (`id`, `name`, `image`,
//! `hostname`, `labels`), plus `host`.

//!
//! Templates come from whoever may call the routes API, so each render is
//! bounded: at most [`FUEL`] steps of the template engine (minijinja's
//! fuel) and [`MAX_OUTPUT`] bytes. A template that runs out on a sample
//! event is refused when the route is made; one that runs out on a real
//! event renders as the error. Routes with templates render on tokio's
//! blocking pool, never on the threads that serve ingress and `/health`.

use std::io;
use std::sync::Arc;

use minijinja::{Environment, ErrorKind, Value};
use spillway_proto::v2::{Envelope, log::Type};

use crate::event::{ContainerInfo, Event};

/// Steps of the template engine one render may take (a loop of ten
/// thousand items over a few fields still fits).
pub const FUEL: u64 = 100_000;
/// Bytes one render may write: the longest message a route may make
/// (`multiline.max_bytes`).
pub const MAX_OUTPUT: usize = 16 << 20;

/// A compiled template.
pub struct Template {
    env: Environment<'static>,
}

impl Template {
    /// Compiles `source` and renders it once for a sample event; the error
    /// names the option. A template that needs more than [`FUEL`] steps
    /// for the sample is refused.
    pub fn new(option: &str, source: &str) -> Result<Template, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.add_template_owned("t", source.to_owned())
            .map_err(|e| format!("option {option}={source:?} is not a valid template: {e}"))?;
        let template = Template { env };
        // Other errors may depend on the event (a filter on a missing
        // field): they show where the output goes.
        if let Err(e) = template.try_render(&sample())
            && e.kind() == ErrorKind::OutOfFuel
        {
            return Err(format!(
                "option {option}={source:?}: too much work: the template takes more than {FUEL} steps for one event"
            ));
        }
        Ok(template)
    }

    /// Whether `s` holds template syntax (else it is a literal value).
    pub fn is_template(s: &str) -> bool {
        s.contains("{{") || s.contains("{%")
    }

    /// Renders for `event`. A failure (a filter on a wrong type, no fuel
    /// left, output too long) renders as its message, so that the user
    /// sees it where the output goes.
    pub fn render(&self, event: &Event) -> String {
        self.try_render(event)
            .unwrap_or_else(|e| format!("template error: {e}"))
    }

    fn try_render(&self, event: &Event) -> Result<String, minijinja::Error> {
        let mut context = event.to_json();
        if let Some(fields) = context.as_object_mut() {
            fields.insert("host".into(), event.host().into());
            if let Some(m) = fields.get("message").cloned() {
                fields.insert("payload".into(), m);
            }
        }
        let mut out = Bounded(Vec::new());
        let rendered = self
            .env
            .get_template("t")?
            .render_captured_to(Value::from_serialize(&context), &mut out);
        match rendered {
            Ok(_) => Ok(String::from_utf8_lossy(&out.0).into_owned()),
            Err(e) if e.kind() == ErrorKind::WriteFailure => Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!("template output longer than {MAX_OUTPUT} bytes"),
            )),
            Err(e) => Err(e),
        }
    }
}

/// A buffer that refuses to grow past [`MAX_OUTPUT`].
struct Bounded(Vec<u8>);

impl io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.len() + buf.len() > MAX_OUTPUT {
            return Err(io::Error::other(format!(
                "template output longer than {MAX_OUTPUT} bytes"
            )));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The event a new template is tried on: a container line with every
/// field set.
fn sample() -> Event {
    let mut envelope = Envelope::log(0, "sample", "1", &b"a sample line"[..], Type::Out);
    envelope.tags.insert("host".into(), "sample-host".into());
    Event {
        envelope,
        container: Some(Arc::new(ContainerInfo {
            id: "0".repeat(64),
            name: "sample".into(),
            image: "sample:latest".into(),
            hostname: "sample".into(),
            labels: [("sample".into(), "label".into())].into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use spillway_proto::v2::{Envelope, log::Type};

    use super::*;
    use crate::event::ContainerInfo;

    #[test]
    fn renders_fields_tags_and_container() {
        let mut envelope = Envelope::log(0, "shop", "2", &b"hello"[..], Type::Out);
        envelope.tags.insert("team".into(), "pay".into());
        envelope.tags.insert("host".into(), "node-1".into());
        let event = Event {
            envelope,
            container: Some(Arc::new(ContainerInfo {
                name: "shop-2".into(),
                labels: [("tier".into(), "front".into())].into(),
                ..Default::default()
            })),
        };
        let t = Template::new(
            "template",
            "{{host}} {{container.name}}/{{instance_id}} {{stream}} [{{tags.team}}|{{tags.nope|default('-')}}|{{container.labels.tier}}] {{payload}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&event),
            "node-1 shop-2/2 stdout [pay|-|front] hello"
        );
        assert!(
            Template::new("template", "{{ x")
                .err()
                .unwrap()
                .contains("template=\"{{ x\"")
        );
        assert!(Template::is_template("a {{b}}") && !Template::is_template("plain"));
    }

    #[test]
    fn work_and_output_are_bounded() {
        let nested =
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
        let e = Template::new("template", nested).err().unwrap();
        assert!(e.contains("too much work"), "{e}");
        // Cheap on the sample, expensive on this event: bounded at render.
        let data_bound = Template::new(
            "template",
            "{% for i in range(message|length * 10) %}{% for j in range(message|length * 10) %}x{% endfor %}{% endfor %}",
        )
        .unwrap();
        let long = Event {
            envelope: Envelope::log(0, "s", "0", vec![b'a'; 10_000], Type::Out),
            container: None,
        };
        let started = std::time::Instant::now();
        let out = data_bound.render(&long);
        assert!(
            out.starts_with("template error: engine ran out of fuel"),
            "{out}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let huge = Template::new(
            "template",
            "{% set s = 'x' * 10000000 %}{{ s }}{{ s }}{% if message == 'go' %}{{ s }}{{ s }}{% endif %}",
        )
        .unwrap();
        let go = Event {
            envelope: Envelope::log(0, "s", "0", &b"go"[..], Type::Out),
            container: None,
        };
        assert!(
            huge.render(&go).contains("longer than 16777216 bytes"),
            "output bounded"
        );
    }
}
