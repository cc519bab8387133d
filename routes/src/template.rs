//! Templates in route options (`template=` of the raw adapter, `hostname=`
//! and friends of syslog), in Jinja syntax: `{{ container.name }}`,
//! `{{ tags.team | default("none") }}`.
//!
//! The fields are those of the event's JSON form ([`Event::to_json`]):
//! `time`, `timestamp`, `source_id`, `instance_id`, `type`, `stream`,
//! `message` (also `payload`), `tags`, `container` (`id`, `name`, `image`,
//! `hostname`, `labels`), plus `host`.

use minijinja::{Environment, Value};

use crate::event::Event;

/// A compiled template.
pub struct Template {
    env: Environment<'static>,
}

impl Template {
    /// Compiles `source`; the error names the option.
    pub fn new(option: &str, source: &str) -> Result<Template, String> {
        let mut env = Environment::new();
        env.add_template_owned("t", source.to_owned())
            .map_err(|e| format!("option {option}={source:?} is not a valid template: {e}"))?;
        Ok(Template { env })
    }

    /// Whether `s` holds template syntax (else it is a literal value).
    pub fn is_template(s: &str) -> bool {
        s.contains("{{") || s.contains("{%")
    }

    /// Renders for `event`. A failure (a filter on a wrong type) renders
    /// as its message, so that the user sees it where the output goes.
    pub fn render(&self, event: &Event) -> String {
        let mut context = event.to_json();
        if let Some(fields) = context.as_object_mut() {
            fields.insert("host".into(), event.host().into());
            if let Some(m) = fields.get("message").cloned() {
                fields.insert("payload".into(), m);
            }
        }
        self.env
            .get_template("t")
            .and_then(|t| t.render(Value::from_serialize(&context)))
            .unwrap_or_else(|e| format!("template error: {e}"))
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
}
