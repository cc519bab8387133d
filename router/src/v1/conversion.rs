//! Loggregator's conversion of v1 (dropsonde) envelopes to v2.
//!
//! This mirrors `ToV2(e, usePreferredTags=true)` of go-loggregator's
//! `conversion/tov2.go`, which Loggregator's router calls on every envelope
//! its `DopplerIngestor.Pusher` receives (`router/internal/server/v1/
//! ingestor_server.go`). Each function names the Go function it mirrors.
//! One difference: an event type that Go converts to an envelope without a
//! message (Heartbeat, HttpStart, HttpStop, removed from dropsonde, or an
//! unknown number) is [`Unconvertible`] here, so that the router counts
//! it as dropped instead of passing on an envelope no selector can match.

use std::collections::HashMap;

use spillway_proto::events::{self, envelope::EventType};
use spillway_proto::v2::{self, envelope::Message};

/// A v1 envelope whose event type has no v2 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unconvertible {
    /// The envelope's `eventType` number.
    pub event_type: i32,
}

/// The v2 form of `e`, as Loggregator's router makes it (`ToV2` with
/// preferred tags).
pub fn to_v2(e: events::Envelope) -> Result<v2::Envelope, Unconvertible> {
    let raw_type = e.event_type.unwrap_or_default();
    let event_type = EventType::try_from(raw_type).map_err(|_| Unconvertible {
        event_type: raw_type,
    })?;
    // ToV2: initTags, then the envelope's own fields as tags.
    let mut tags = e.tags.clone();
    tags.insert("origin".into(), e.origin().into());
    tags.insert("deployment".into(), e.deployment().into());
    tags.insert("job".into(), e.job().into());
    tags.insert("index".into(), e.index().into());
    tags.insert("ip".into(), e.ip().into());
    tags.insert("__v1_type".into(), event_type.as_str_name().into());
    // ToV2: the `source_id` tag if there is one (even empty), else
    // "deployment/job"; the tag itself is removed.
    let source_id = match e.tags.get("source_id") {
        Some(id) => id.clone(),
        None => format!("{}/{}", e.deployment(), e.job()),
    };
    tags.remove("source_id");
    let mut v2e = v2::Envelope {
        timestamp: e.timestamp(),
        source_id,
        tags,
        ..Default::default()
    };
    match event_type {
        EventType::LogMessage => convert_log_message(&mut v2e, &e),
        EventType::HttpStartStop => convert_http_start_stop(&mut v2e, &e),
        EventType::ValueMetric => convert_value_metric(&mut v2e, &e),
        EventType::CounterEvent => convert_counter_event(&mut v2e, &e),
        EventType::Error => convert_error(&mut v2e, &e),
        EventType::ContainerMetric => convert_container_metric(&mut v2e, &e),
    }
    Ok(v2e)
}

/// The first of upstream's `required` fields that `e` lacks, as gogo
/// protobuf's generated `Unmarshal` checks them (Loggregator's router skips
/// such an envelope as "bad"): the envelope's own, and those of each event
/// message and UUID that is present.
pub fn missing_required(e: &events::Envelope) -> Option<&'static str> {
    fn first(checks: &[(bool, &'static str)]) -> Option<&'static str> {
        checks.iter().find(|(present, _)| !present).map(|(_, f)| *f)
    }
    fn uuid(u: &Option<events::Uuid>, name: &'static str) -> Option<&'static str> {
        u.as_ref()
            .and_then(|u| first(&[(u.low.is_some(), name), (u.high.is_some(), name)]))
    }
    first(&[
        (e.origin.is_some(), "Envelope.origin"),
        (e.event_type.is_some(), "Envelope.eventType"),
    ])
    .or_else(|| {
        let m = e.log_message.as_ref()?;
        first(&[
            (m.message.is_some(), "LogMessage.message"),
            (m.message_type.is_some(), "LogMessage.message_type"),
            (m.timestamp.is_some(), "LogMessage.timestamp"),
        ])
    })
    .or_else(|| {
        let m = e.http_start_stop.as_ref()?;
        first(&[
            (m.start_timestamp.is_some(), "HttpStartStop.startTimestamp"),
            (m.stop_timestamp.is_some(), "HttpStartStop.stopTimestamp"),
            (m.request_id.is_some(), "HttpStartStop.requestId"),
            (m.peer_type.is_some(), "HttpStartStop.peerType"),
            (m.method.is_some(), "HttpStartStop.method"),
            (m.uri.is_some(), "HttpStartStop.uri"),
            (m.remote_address.is_some(), "HttpStartStop.remoteAddress"),
            (m.user_agent.is_some(), "HttpStartStop.userAgent"),
            (m.status_code.is_some(), "HttpStartStop.statusCode"),
            (m.content_length.is_some(), "HttpStartStop.contentLength"),
        ])
        .or_else(|| uuid(&m.request_id, "UUID.low/high"))
        .or_else(|| uuid(&m.application_id, "UUID.low/high"))
    })
    .or_else(|| {
        let m = e.value_metric.as_ref()?;
        first(&[
            (m.name.is_some(), "ValueMetric.name"),
            (m.value.is_some(), "ValueMetric.value"),
            (m.unit.is_some(), "ValueMetric.unit"),
        ])
    })
    .or_else(|| {
        let m = e.counter_event.as_ref()?;
        first(&[
            (m.name.is_some(), "CounterEvent.name"),
            (m.delta.is_some(), "CounterEvent.delta"),
        ])
    })
    .or_else(|| {
        let m = e.error.as_ref()?;
        first(&[
            (m.source.is_some(), "Error.source"),
            (m.code.is_some(), "Error.code"),
            (m.message.is_some(), "Error.message"),
        ])
    })
    .or_else(|| {
        let m = e.container_metric.as_ref()?;
        first(&[
            (m.application_id.is_some(), "ContainerMetric.applicationId"),
            (m.instance_index.is_some(), "ContainerMetric.instanceIndex"),
            (m.cpu_percentage.is_some(), "ContainerMetric.cpuPercentage"),
            (m.memory_bytes.is_some(), "ContainerMetric.memoryBytes"),
            (m.disk_bytes.is_some(), "ContainerMetric.diskBytes"),
        ])
    })
}

/// `convertLogMessage`. Go's getters read an absent event as all defaults;
/// so does `unwrap_or_default` here.
fn convert_log_message(v2e: &mut v2::Envelope, e: &events::Envelope) {
    let t = e.log_message.clone().unwrap_or_default();
    v2e.tags
        .insert("source_type".into(), t.source_type().into());
    v2e.instance_id = t.source_instance().into();
    v2e.source_id = convert_app_id(t.app_id(), &v2e.source_id);
    v2e.message = Some(Message::Log(v2::Log {
        payload: t.message.clone().unwrap_or_default(),
        r#type: convert_log_message_type(t.message_type) as i32,
    }));
}

/// `convertLogMessageType`: by name, OUT to OUT and ERR to ERR; a number
/// without a name finds no v2 value and reads as OUT (Go's zero value).
fn convert_log_message_type(t: Option<i32>) -> v2::log::Type {
    match t.map(events::log_message::MessageType::try_from) {
        Some(Ok(events::log_message::MessageType::Err)) => v2::log::Type::Err,
        _ => v2::log::Type::Out,
    }
}

/// `convertHTTPStartStop`.
fn convert_http_start_stop(v2e: &mut v2::Envelope, e: &events::Envelope) {
    let t = e.http_start_stop.clone().unwrap_or_default();
    v2e.source_id = convert_app_uuid(t.application_id.as_ref(), &v2e.source_id);
    v2e.instance_id = t.instance_index().to_string();
    v2e.message = Some(Message::Timer(v2::Timer {
        name: "http".into(),
        start: t.start_timestamp(),
        stop: t.stop_timestamp(),
    }));
    let default = events::Uuid::default();
    let tags: [(&str, String); 10] = [
        (
            "request_id",
            uuid_to_string(t.request_id.as_ref().unwrap_or(&default)),
        ),
        (
            "peer_type",
            enum_name(t.peer_type, events::PeerType::Client, |n| {
                events::PeerType::try_from(n).ok().map(|p| p.as_str_name())
            }),
        ),
        (
            "method",
            enum_name(t.method, events::Method::Get, |n| {
                events::Method::try_from(n).ok().map(|m| m.as_str_name())
            }),
        ),
        ("uri", t.uri().into()),
        ("remote_address", t.remote_address().into()),
        ("user_agent", t.user_agent().into()),
        ("status_code", t.status_code().to_string()),
        ("content_length", t.content_length().to_string()),
        ("routing_instance_id", t.instance_id().into()),
        ("forwarded", t.forwarded.join("\n")),
    ];
    for (k, v) in tags {
        v2e.tags.insert(k.into(), v);
    }
}

/// Go's `String()` of a proto2 enum field read through its getter: the
/// first value when absent, the name when known, else the number.
fn enum_name<E: Copy + Into<i32>>(
    raw: Option<i32>,
    default: E,
    name: impl Fn(i32) -> Option<&'static str>,
) -> String {
    let n = raw.unwrap_or_else(|| default.into());
    name(n).map_or_else(|| n.to_string(), str::to_owned)
}

/// `convertValueMetric`.
fn convert_value_metric(v2e: &mut v2::Envelope, e: &events::Envelope) {
    let t = e.value_metric.clone().unwrap_or_default();
    v2e.instance_id = e.tags.get("instance_id").cloned().unwrap_or_default();
    v2e.message = Some(Message::Gauge(v2::Gauge {
        metrics: HashMap::from([(
            t.name().to_owned(),
            v2::GaugeValue {
                unit: t.unit().into(),
                value: t.value(),
            },
        )]),
    }));
}

/// `convertCounterEvent`: the `instance_id` tag becomes the instance id.
fn convert_counter_event(v2e: &mut v2::Envelope, e: &events::Envelope) {
    let t = e.counter_event.clone().unwrap_or_default();
    v2e.instance_id = e.tags.get("instance_id").cloned().unwrap_or_default();
    v2e.tags.remove("instance_id");
    v2e.message = Some(Message::Counter(v2::Counter {
        name: t.name().into(),
        delta: t.delta(),
        total: t.total(),
    }));
}

/// `convertError`: a log (OUT) of the message, tagged `source` and `code`.
fn convert_error(v2e: &mut v2::Envelope, e: &events::Envelope) {
    let t = e.error.clone().unwrap_or_default();
    v2e.tags.insert("source".into(), t.source().into());
    v2e.tags.insert("code".into(), t.code().to_string());
    v2e.message = Some(Message::Log(v2::Log {
        payload: t.message().to_owned().into_bytes().into(),
        r#type: v2::log::Type::Out as i32,
    }));
}

/// `convertContainerMetric`.
fn convert_container_metric(v2e: &mut v2::Envelope, e: &events::Envelope) {
    let t = e.container_metric.clone().unwrap_or_default();
    v2e.source_id = convert_app_id(t.application_id(), &v2e.source_id);
    v2e.instance_id = t.instance_index().to_string();
    let metric = |unit: &str, value: f64| v2::GaugeValue {
        unit: unit.into(),
        value,
    };
    v2e.message = Some(Message::Gauge(v2::Gauge {
        metrics: HashMap::from([
            ("cpu".into(), metric("percentage", t.cpu_percentage())),
            ("memory".into(), metric("bytes", t.memory_bytes() as f64)),
            ("disk".into(), metric("bytes", t.disk_bytes() as f64)),
            (
                "memory_quota".into(),
                metric("bytes", t.memory_bytes_quota() as f64),
            ),
            (
                "disk_quota".into(),
                metric("bytes", t.disk_bytes_quota() as f64),
            ),
        ]),
    }));
}

/// `convertAppID`: the app id, unless empty.
fn convert_app_id(app_id: &str, source_id: &str) -> String {
    if app_id.is_empty() {
        source_id.into()
    } else {
        app_id.into()
    }
}

/// `convertAppUUID`: the app's UUID, unless absent or all zero.
fn convert_app_uuid(app_id: Option<&events::Uuid>, source_id: &str) -> String {
    match app_id {
        Some(u) if u.low() != 0 || u.high() != 0 => uuid_to_string(u),
        _ => source_id.into(),
    }
}

/// `uuidToString`: `low` and `high` as little-endian bytes, printed
/// 4-2-2-2-6 in lowercase hex.
pub fn uuid_to_string(u: &events::Uuid) -> String {
    let (low, high) = (u.low().to_le_bytes(), u.high().to_le_bytes());
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        hex(&low[..4]),
        hex(&low[4..6]),
        hex(&low[6..]),
        hex(&high[..2]),
        hex(&high[2..])
    )
}

/// Case by case against go-loggregator's `conversion/*_test.go` (v10),
/// with preferred tags, as the router converts.
#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.into())
    }

    /// The envelope fields of the Go tests: origin, deployment, job, index,
    /// ip, and the tags they become.
    fn v1(event_type: EventType) -> events::Envelope {
        events::Envelope {
            origin: s("some-origin"),
            event_type: Some(event_type as i32),
            deployment: s("some-deployment"),
            job: s("some-job"),
            index: s("some-index"),
            ip: s("some-ip"),
            ..Default::default()
        }
    }

    fn base_tags(v1_type: &str) -> HashMap<String, String> {
        tags(&[
            ("__v1_type", v1_type),
            ("origin", "some-origin"),
            ("deployment", "some-deployment"),
            ("job", "some-job"),
            ("index", "some-index"),
            ("ip", "some-ip"),
        ])
    }

    fn with(mut t: HashMap<String, String>, more: &[(&str, &str)]) -> HashMap<String, String> {
        t.extend(tags(more));
        t
    }

    /// log_message_test.go: "converts messages to v2 envelopes"; the
    /// LogMessage's own timestamp is not the envelope's.
    #[test]
    fn log_message() {
        let mut e = v1(EventType::LogMessage);
        e.log_message = Some(events::LogMessage {
            message: Some("Hello World".into()),
            message_type: Some(events::log_message::MessageType::Out as i32),
            timestamp: Some(99),
            app_id: s("uuid"),
            source_type: s("test-source-type"),
            source_instance: s("test-source-instance"),
        });
        let want = v2::Envelope {
            source_id: "uuid".into(),
            instance_id: "test-source-instance".into(),
            tags: with(
                base_tags("LogMessage"),
                &[("source_type", "test-source-type")],
            ),
            message: Some(Message::Log(v2::Log {
                payload: "Hello World".into(),
                r#type: v2::log::Type::Out as i32,
            })),
            ..Default::default()
        };
        assert_eq!(to_v2(e.clone()), Ok(want));

        e.log_message.as_mut().unwrap().message_type =
            Some(events::log_message::MessageType::Err as i32);
        let Some(Message::Log(log)) = to_v2(e.clone()).unwrap().message else {
            panic!("not a log")
        };
        assert_eq!(log.r#type, v2::log::Type::Err as i32);
        // A number without a name reads as OUT, as Go's name lookup does.
        e.log_message.as_mut().unwrap().message_type = Some(7);
        let Some(Message::Log(log)) = to_v2(e).unwrap().message else {
            panic!("not a log")
        };
        assert_eq!(log.r#type, v2::log::Type::Out as i32);
    }

    /// log_message_test.go: "sets the source ID to deployment/job when App
    /// ID is missing".
    #[test]
    fn log_message_without_app_id_is_deployment_slash_job() {
        let e = events::Envelope {
            deployment: s("some-deployment"),
            job: s("some-job"),
            event_type: Some(EventType::LogMessage as i32),
            log_message: Some(events::LogMessage::default()),
            ..Default::default()
        };
        assert_eq!(to_v2(e).unwrap().source_id, "some-deployment/some-job");
    }

    /// http_test.go: "using preferred tags / returns a v2 envelope" (the
    /// instance index is the instance id, tools/tov2.go).
    #[test]
    fn http_start_stop() {
        let mut e = v1(EventType::HttpStartStop);
        e.timestamp = Some(98);
        e.http_start_stop = Some(events::HttpStartStop {
            start_timestamp: Some(99),
            stop_timestamp: Some(100),
            request_id: Some(events::Uuid {
                low: Some(0xbe4484acc4614f95),
                high: Some(0x41fb1731facd1792),
            }),
            peer_type: Some(events::PeerType::Client as i32),
            method: Some(events::Method::Get as i32),
            uri: s("/hello-world"),
            remote_address: s("10.1.1.0"),
            user_agent: s("Mozilla/5.0"),
            status_code: Some(200),
            content_length: Some(1000000),
            application_id: Some(events::Uuid {
                low: Some(0x6d47cd09695d01b3),
                high: Some(0xb75a4d822dadceaa),
            }),
            instance_index: Some(10),
            instance_id: s("application-id"),
            forwarded: vec!["6.6.6.6".into(), "8.8.8.8".into()],
        });
        let want = v2::Envelope {
            timestamp: 98,
            source_id: "b3015d69-09cd-476d-aace-ad2d824d5ab7".into(),
            instance_id: "10".into(),
            tags: with(
                base_tags("HttpStartStop"),
                &[
                    ("request_id", "954f61c4-ac84-44be-9217-cdfa3117fb41"),
                    ("peer_type", "Client"),
                    ("method", "GET"),
                    ("uri", "/hello-world"),
                    ("remote_address", "10.1.1.0"),
                    ("user_agent", "Mozilla/5.0"),
                    ("status_code", "200"),
                    ("content_length", "1000000"),
                    ("routing_instance_id", "application-id"),
                    ("forwarded", "6.6.6.6\n8.8.8.8"),
                ],
            ),
            message: Some(Message::Timer(v2::Timer {
                name: "http".into(),
                start: 99,
                stop: 100,
            })),
            ..Default::default()
        };
        assert_eq!(to_v2(e.clone()), Ok(want));

        // http_test.go: "sets the source ID to deployment/job when App ID
        // is missing"; an all-zero UUID is missing too (convertAppUUID).
        let hss = e.http_start_stop.as_mut().unwrap();
        hss.application_id = Some(events::Uuid {
            low: Some(0),
            high: Some(0),
        });
        // An enum number without a name prints as the number (Go's
        // String()).
        hss.method = Some(99);
        hss.peer_type = Some(events::PeerType::Server as i32);
        let got = to_v2(e.clone()).unwrap();
        assert_eq!(got.source_id, "some-deployment/some-job");
        assert_eq!(got.tags["method"], "99");
        assert_eq!(got.tags["peer_type"], "Server");
        e.http_start_stop.as_mut().unwrap().application_id = None;
        assert_eq!(to_v2(e).unwrap().source_id, "some-deployment/some-job");
    }

    /// uuid.proto's own example.
    #[test]
    fn uuids_print_as_upstream_documents() {
        let u = events::Uuid {
            low: Some(0x7243cc580bc17af4),
            high: Some(0x79d4c3b2020e67a5),
        };
        assert_eq!(uuid_to_string(&u), "f47ac10b-58cc-4372-a567-0e02b2c3d479");
        assert_eq!(
            uuid_to_string(&events::Uuid::default()),
            "00000000-0000-0000-0000-000000000000"
        );
    }

    /// value_metric_test.go and instance_id_test.go: the `instance_id` tag
    /// is the instance id and stays a tag.
    #[test]
    fn value_metric() {
        let mut e = v1(EventType::ValueMetric);
        e.tags = tags(&[("instance_id", "test-source-instance"), ("a", "b")]);
        e.value_metric = Some(events::ValueMetric {
            name: s("name"),
            value: Some(123.4),
            unit: s("unit"),
        });
        let want = v2::Envelope {
            source_id: "some-deployment/some-job".into(),
            instance_id: "test-source-instance".into(),
            tags: with(
                base_tags("ValueMetric"),
                &[("instance_id", "test-source-instance"), ("a", "b")],
            ),
            message: Some(Message::Gauge(v2::Gauge {
                metrics: HashMap::from([(
                    "name".into(),
                    v2::GaugeValue {
                        unit: "unit".into(),
                        value: 123.4,
                    },
                )]),
            })),
            ..Default::default()
        };
        assert_eq!(to_v2(e), Ok(want));
    }

    /// counter_event_test.go and instance_id_test.go: delta and total as
    /// sent; the `instance_id` tag becomes the instance id and is removed;
    /// the `source_id` tag becomes the source id and is removed.
    #[test]
    fn counter_event() {
        let mut e = v1(EventType::CounterEvent);
        e.tags = tags(&[
            ("instance_id", "test-source-instance"),
            ("source_id", "my-source"),
        ]);
        e.counter_event = Some(events::CounterEvent {
            name: s("name"),
            delta: Some(1),
            total: Some(10),
        });
        let want = v2::Envelope {
            source_id: "my-source".into(),
            instance_id: "test-source-instance".into(),
            tags: base_tags("CounterEvent"),
            message: Some(Message::Counter(v2::Counter {
                name: "name".into(),
                delta: 1,
                total: 10,
            })),
            ..Default::default()
        };
        assert_eq!(to_v2(e), Ok(want));
    }

    /// error_test.go: a log of the message, tagged with source and code.
    #[test]
    fn error() {
        let mut e = v1(EventType::Error);
        e.error = Some(events::Error {
            source: s("test-source"),
            code: Some(12345),
            message: s("some error message"),
        });
        let want = v2::Envelope {
            source_id: "some-deployment/some-job".into(),
            tags: with(
                base_tags("Error"),
                &[("source", "test-source"), ("code", "12345")],
            ),
            message: Some(Message::Log(v2::Log {
                payload: "some error message".into(),
                r#type: v2::log::Type::Out as i32,
            })),
            ..Default::default()
        };
        assert_eq!(to_v2(e), Ok(want));
    }

    /// container_metric_test.go: five gauge values; the app id is the
    /// source id, the instance index the instance id.
    #[test]
    fn container_metric() {
        let mut e = v1(EventType::ContainerMetric);
        e.container_metric = Some(events::ContainerMetric {
            application_id: s("some-application-id"),
            instance_index: Some(123),
            cpu_percentage: Some(11.0),
            memory_bytes: Some(13),
            disk_bytes: Some(15),
            memory_bytes_quota: Some(17),
            disk_bytes_quota: Some(19),
        });
        let gv = |unit: &str, value: f64| v2::GaugeValue {
            unit: unit.into(),
            value,
        };
        let want = v2::Envelope {
            source_id: "some-application-id".into(),
            instance_id: "123".into(),
            tags: base_tags("ContainerMetric"),
            message: Some(Message::Gauge(v2::Gauge {
                metrics: HashMap::from([
                    ("cpu".into(), gv("percentage", 11.0)),
                    ("memory".into(), gv("bytes", 13.0)),
                    ("disk".into(), gv("bytes", 15.0)),
                    ("memory_quota".into(), gv("bytes", 17.0)),
                    ("disk_quota".into(), gv("bytes", 19.0)),
                ]),
            })),
            ..Default::default()
        };
        assert_eq!(to_v2(e.clone()), Ok(want));
        e.container_metric.as_mut().unwrap().application_id = s("");
        assert_eq!(to_v2(e).unwrap().source_id, "some-deployment/some-job");
    }

    /// Removed and unknown event types have no v2 form.
    #[test]
    fn removed_and_unknown_event_types_are_unconvertible() {
        for n in [1, 2, 3, 10, -1] {
            let mut e = v1(EventType::LogMessage);
            e.event_type = Some(n);
            assert_eq!(to_v2(e), Err(Unconvertible { event_type: n }));
        }
        let mut e = v1(EventType::LogMessage);
        e.event_type = None;
        assert_eq!(to_v2(e), Err(Unconvertible { event_type: 0 }));
    }

    #[test]
    fn required_fields_are_checked_as_gogo_does() {
        let mut e = v1(EventType::CounterEvent);
        e.counter_event = Some(events::CounterEvent {
            name: s("n"),
            delta: Some(0),
            total: None,
        });
        assert_eq!(missing_required(&e), None);
        e.counter_event.as_mut().unwrap().delta = None;
        assert_eq!(missing_required(&e), Some("CounterEvent.delta"));
        e.origin = None;
        assert_eq!(missing_required(&e), Some("Envelope.origin"));

        let mut e = v1(EventType::HttpStartStop);
        e.http_start_stop = Some(events::HttpStartStop {
            start_timestamp: Some(0),
            stop_timestamp: Some(0),
            request_id: Some(events::Uuid {
                low: Some(0),
                high: None,
            }),
            peer_type: Some(1),
            method: Some(1),
            uri: s(""),
            remote_address: s(""),
            user_agent: s(""),
            status_code: Some(0),
            content_length: Some(0),
            ..Default::default()
        });
        assert_eq!(missing_required(&e), Some("UUID.low/high"));
    }
}
