//! Loggregator v1 (dropsonde) ingest: a Loggregator agent's v1 envelopes,
//! pushed over mutual TLS to a real router's `/plumbing.DopplerIngestor/
//! Pusher`, reach an RLP consumer as the v2 envelopes Loggregator's router
//! makes of them (go-loggregator's `conversion.ToV2`, preferred tags), every
//! field; bad v1 input is refused with the v2 Ingress's limits and counted.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use spillway_e2e::*;
use spillway_proto::events::{self, envelope::EventType};
use spillway_proto::plumbing::EnvelopeData;
use spillway_proto::plumbing::doppler_ingestor_client::DopplerIngestorClient;
use spillway_proto::v2::{Envelope, envelope::Message};
use tonic::Code;

const APP: &str = "app-guid";
/// `deployment/job`: the source id of v1 envelopes without an app.
const JOB: &str = "cf/diego-cell";
/// The app UUID of the HttpStartStop below, as `uuidToString` prints it.
const HTTP_APP: &str = "b3015d69-09cd-476d-aace-ad2d824d5ab7";

fn s(v: &str) -> Option<String> {
    Some(v.into())
}

fn tags(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A v1 envelope of `event_type` from a Diego cell, as an agent forwards it.
fn v1(event_type: i32, timestamp: i64) -> events::Envelope {
    events::Envelope {
        origin: s("rep"),
        event_type: Some(event_type),
        timestamp: Some(timestamp),
        deployment: s("cf"),
        job: s("diego-cell"),
        index: s("0c4f"),
        ip: s("10.0.16.5"),
        ..Default::default()
    }
}

/// The tags every converted envelope carries: the v1 envelope's fields.
fn v1_tags(v1_type: &str, more: &[(&str, &str)]) -> HashMap<String, String> {
    let mut t = tags(&[
        ("origin", "rep"),
        ("deployment", "cf"),
        ("job", "diego-cell"),
        ("index", "0c4f"),
        ("ip", "10.0.16.5"),
        ("__v1_type", v1_type),
    ]);
    t.extend(tags(more));
    t
}

fn log_message(timestamp: i64, payload: &[u8]) -> events::Envelope {
    let mut e = v1(EventType::LogMessage as i32, timestamp);
    e.tags = tags(&[("space", "dev")]);
    e.log_message = Some(events::LogMessage {
        message: Some(payload.to_vec().into()),
        message_type: Some(events::log_message::MessageType::Err as i32),
        timestamp: Some(1),
        app_id: s(APP),
        source_type: s("APP/PROC/WEB"),
        source_instance: s("3"),
    });
    e
}

fn converted_log(timestamp: i64, payload: &[u8]) -> Envelope {
    Envelope {
        timestamp,
        source_id: APP.into(),
        instance_id: "3".into(),
        tags: v1_tags(
            "LogMessage",
            &[("space", "dev"), ("source_type", "APP/PROC/WEB")],
        ),
        message: Some(Message::Log(v2::Log {
            payload: payload.to_vec().into(),
            r#type: v2::log::Type::Err as i32,
        })),
        ..Default::default()
    }
}

/// One v1 envelope of each event type, and what the consumer must get for
/// it (`None`: nothing, it has no v2 form).
fn every_event_type() -> Vec<(events::Envelope, Option<Envelope>)> {
    let t = 1_700_000_000_000_000_000;
    let mut out = vec![(
        log_message(t, b"hello \xff v1"),
        Some(converted_log(t, b"hello \xff v1")),
    )];

    let mut e = v1(EventType::CounterEvent as i32, t + 1);
    e.tags = tags(&[("instance_id", "7"), ("zone", "z1")]);
    e.counter_event = Some(events::CounterEvent {
        name: s("requests"),
        delta: Some(5),
        total: Some(105),
    });
    out.push((
        e,
        Some(Envelope {
            timestamp: t + 1,
            source_id: JOB.into(),
            instance_id: "7".into(),
            tags: v1_tags("CounterEvent", &[("zone", "z1")]),
            message: Some(Message::Counter(v2::Counter {
                name: "requests".into(),
                delta: 5,
                total: 105,
            })),
            ..Default::default()
        }),
    ));

    let mut e = v1(EventType::ValueMetric as i32, t + 2);
    e.tags = tags(&[("instance_id", "7")]);
    e.value_metric = Some(events::ValueMetric {
        name: s("latency"),
        value: Some(12.5),
        unit: s("ms"),
    });
    out.push((
        e,
        Some(Envelope {
            timestamp: t + 2,
            source_id: JOB.into(),
            instance_id: "7".into(),
            tags: v1_tags("ValueMetric", &[("instance_id", "7")]),
            message: Some(Message::Gauge(v2::Gauge {
                metrics: HashMap::from([(
                    "latency".into(),
                    v2::GaugeValue {
                        unit: "ms".into(),
                        value: 12.5,
                    },
                )]),
            })),
            ..Default::default()
        }),
    ));

    let mut e = v1(EventType::ContainerMetric as i32, t + 3);
    e.container_metric = Some(events::ContainerMetric {
        application_id: s(APP),
        instance_index: Some(3),
        cpu_percentage: Some(42.5),
        memory_bytes: Some(1_000),
        disk_bytes: Some(2_000),
        memory_bytes_quota: Some(4_000),
        disk_bytes_quota: Some(8_000),
    });
    let gv = |unit: &str, value: f64| v2::GaugeValue {
        unit: unit.into(),
        value,
    };
    out.push((
        e,
        Some(Envelope {
            timestamp: t + 3,
            source_id: APP.into(),
            instance_id: "3".into(),
            tags: v1_tags("ContainerMetric", &[]),
            message: Some(Message::Gauge(v2::Gauge {
                metrics: HashMap::from([
                    ("cpu".into(), gv("percentage", 42.5)),
                    ("memory".into(), gv("bytes", 1_000.0)),
                    ("disk".into(), gv("bytes", 2_000.0)),
                    ("memory_quota".into(), gv("bytes", 4_000.0)),
                    ("disk_quota".into(), gv("bytes", 8_000.0)),
                ]),
            })),
            ..Default::default()
        }),
    ));

    let mut e = v1(EventType::HttpStartStop as i32, t + 4);
    e.http_start_stop = Some(events::HttpStartStop {
        start_timestamp: Some(t - 250_000_000),
        stop_timestamp: Some(t),
        request_id: Some(events::Uuid {
            low: Some(0xbe4484acc4614f95),
            high: Some(0x41fb1731facd1792),
        }),
        peer_type: Some(events::PeerType::Server as i32),
        method: Some(events::Method::Post as i32),
        uri: s("https://shop.example/cart"),
        remote_address: s("10.1.1.0:5678"),
        user_agent: s("curl/8.0"),
        status_code: Some(201),
        content_length: Some(1_000_000),
        application_id: Some(events::Uuid {
            low: Some(0x6d47cd09695d01b3),
            high: Some(0xb75a4d822dadceaa),
        }),
        instance_index: Some(10),
        instance_id: s("instance-guid"),
        forwarded: vec!["6.6.6.6".into(), "8.8.8.8".into()],
    });
    out.push((
        e,
        Some(Envelope {
            timestamp: t + 4,
            source_id: HTTP_APP.into(),
            instance_id: "10".into(),
            tags: v1_tags(
                "HttpStartStop",
                &[
                    ("request_id", "954f61c4-ac84-44be-9217-cdfa3117fb41"),
                    ("peer_type", "Server"),
                    ("method", "POST"),
                    ("uri", "https://shop.example/cart"),
                    ("remote_address", "10.1.1.0:5678"),
                    ("user_agent", "curl/8.0"),
                    ("status_code", "201"),
                    ("content_length", "1000000"),
                    ("routing_instance_id", "instance-guid"),
                    ("forwarded", "6.6.6.6\n8.8.8.8"),
                ],
            ),
            message: Some(Message::Timer(v2::Timer {
                name: "http".into(),
                start: t - 250_000_000,
                stop: t,
            })),
            ..Default::default()
        }),
    ));

    let mut e = v1(EventType::Error as i32, t + 5);
    e.error = Some(events::Error {
        source: s("garden"),
        code: Some(-7),
        message: s("container failed ✗"),
    });
    out.push((
        e,
        Some(Envelope {
            timestamp: t + 5,
            source_id: JOB.into(),
            tags: v1_tags("Error", &[("source", "garden"), ("code", "-7")]),
            message: Some(Message::Log(v2::Log {
                payload: "container failed ✗".into(),
                r#type: v2::log::Type::Out as i32,
            })),
            ..Default::default()
        }),
    ));

    // HttpStart (2), removed from dropsonde: no v2 form.
    out.push((v1(2, t + 6), None));
    out
}

/// What a consumer of everything the v1 envelopes above become selects.
fn selectors() -> Vec<v2::Selector> {
    [
        (Kind::Log, APP),
        (Kind::Gauge, APP),
        (Kind::Counter, JOB),
        (Kind::Gauge, JOB),
        (Kind::Log, JOB),
        (Kind::Timer, HTTP_APP),
    ]
    .into_iter()
    .map(|(kind, source)| v2::Selector::of(kind, source))
    .collect()
}

async fn pusher(
    router: &Router,
    certs: &Certs,
) -> DopplerIngestorClient<tonic::transport::Channel> {
    DopplerIngestorClient::new(channel(router.port, certs.client()).await)
}

/// Pushes `payloads` on one `Pusher` stream; the call's result.
async fn push(
    client: &mut DopplerIngestorClient<tonic::transport::Channel>,
    payloads: Vec<Vec<u8>>,
) -> Result<(), tonic::Status> {
    let messages = payloads
        .into_iter()
        .map(|p| EnvelopeData { payload: p.into() });
    client
        .pusher(futures::stream::iter(messages))
        .await
        .map(|_| ())
}

fn ingress(router: &Router) -> Option<u64> {
    metric(router.metrics_port, "spillway_ingress_total")
}

fn refused(router: &Router, reason: &str) -> Option<u64> {
    metric(
        router.metrics_port,
        &format!("spillway_refused_messages_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_event_type_reaches_a_consumer_as_loggregator_converts_it() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    // No metric envelopes of the RLP's own through the router's ingress.
    let rlp = Rlp::start(&certs, &[&router], &["--metrics-interval", "600m"]);
    let mut consumer = rlp
        .client(&certs)
        .await
        .batched_receiver(v2::EgressBatchRequest {
            use_preferred_tags: true,
            selectors: selectors(),
            ..Default::default()
        })
        .await
        .expect("the RLP takes the subscription")
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "the RLP subscribes on the router",
        || router.subscriptions() >= 1,
    )
    .await;

    let cases = every_event_type();
    // The last one marks the end: everything before it has been routed.
    let end = (
        log_message(1_800_000_000_000_000_000, b"end"),
        converted_log(1_800_000_000_000_000_000, b"end"),
    );
    let mut payloads: Vec<Vec<u8>> = cases.iter().map(|(e, _)| e.encode_to_vec()).collect();
    payloads.push(end.0.encode_to_vec());
    push(&mut pusher(&router, &certs).await, payloads)
        .await
        .expect("the router takes every v1 envelope");

    let got = collect_until(&mut consumer, Duration::from_secs(20), |got| {
        got.last() == Some(&end.1)
    })
    .await;
    let mut want: Vec<Envelope> = cases.into_iter().filter_map(|(_, v2)| v2).collect();
    want.push(end.1);
    assert_eq!(
        got, want,
        "each v1 envelope arrives once, converted, in order"
    );

    assert_eq!(
        ingress(&router),
        Some(8),
        "every v1 envelope counts as ingress"
    );
    assert_eq!(
        metric(
            router.metrics_port,
            "spillway_dropped_total{direction=\"ingress\",reason=\"v1_unconvertible\"}"
        ),
        Some(1),
        "the HttpStart envelope is dropped and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_v1_input_is_refused_with_the_v2_limits_and_counted() {
    let certs = Certs::new();
    // 32 tags a message (32 × 1 envelope), messages up to 64 KiB.
    let router = Router::start(
        &certs,
        &["--max-batch-envelopes", "1", "--max-message-bytes", "65536"],
    );
    let good = || log_message(1, b"good").encode_to_vec();
    let mut client = pusher(&router, &certs).await;

    // Positive controls, each at a limit: 32 tags; a message just under
    // 64 KiB.
    let mut at_limit = log_message(1, b"32 tags");
    at_limit.tags = (0..32).map(|i| (format!("t{i}"), String::new())).collect();
    let big = log_message(1, &vec![b'x'; 65_000]).encode_to_vec();
    assert!(big.len() < 65_536 - 16);
    push(&mut client, vec![good(), at_limit.encode_to_vec(), big])
        .await
        .expect("envelopes within the limits are taken");
    assert_eq!(ingress(&router), Some(3));

    let mut no_origin = log_message(1, b"no origin");
    no_origin.origin = None;
    let mut no_delta = v1(EventType::CounterEvent as i32, 1);
    no_delta.counter_event = Some(events::CounterEvent {
        name: s("c"),
        delta: None,
        total: None,
    });
    let mut over = at_limit.clone();
    over.tags.insert("one more".into(), String::new());
    let refusals: [(&str, Vec<u8>, Code, &str); 5] = [
        (
            "bytes that are not protobuf",
            vec![0x0a, 0xff, 0xff],
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "an envelope without its origin",
            no_origin.encode_to_vec(),
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "a counter without its delta",
            no_delta.encode_to_vec(),
            Code::InvalidArgument,
            "malformed",
        ),
        (
            "33 tags",
            over.encode_to_vec(),
            Code::ResourceExhausted,
            "too_many_tags",
        ),
        (
            "a message over 64 KiB",
            log_message(1, &vec![b'x'; 66_000]).encode_to_vec(),
            Code::OutOfRange,
            "too_large",
        ),
    ];
    for (what, payload, code, reason) in refusals {
        let before = refused(&router, reason).unwrap_or(0);
        let status = push(&mut client, vec![good(), payload])
            .await
            .expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert_eq!(
            refused(&router, reason),
            Some(before + 1),
            "{what} is counted as {reason}"
        );
    }
    // Each refused stream took its good envelope first, nothing after.
    assert_eq!(ingress(&router), Some(3 + 5));

    // The router still takes v1 envelopes on a new stream.
    push(&mut pusher(&router, &certs).await, vec![good()])
        .await
        .expect("a good stream after the bad ones");
    assert_eq!(ingress(&router), Some(3 + 5 + 1));
}
