//! Every kind of envelope an app sends to the collector reaches an RLP
//! consumer through a real router, every field intact.

use std::time::Duration;

use spillway_e2e::*;
use spillway_proto::v2::{Envelope, EnvelopeBatch, envelope::Message};

fn the_five(source: &str) -> Vec<Envelope> {
    let mut gauge = v2::Gauge::default();
    gauge.metrics.insert(
        "cpu".into(),
        v2::GaugeValue {
            unit: "percent".into(),
            value: 42.5,
        },
    );
    gauge.metrics.insert(
        "mem".into(),
        v2::GaugeValue {
            unit: "bytes".into(),
            value: 1e9,
        },
    );
    let messages = vec![
        Message::Log(v2::Log {
            payload: vec![0xff, 0xfe, b'o', b'k', 0x00, 0x80].into(),
            r#type: v2::log::Type::Err as i32,
        }),
        Message::Counter(v2::Counter {
            name: "requests".into(),
            delta: 3,
            total: 0,
        }),
        Message::Gauge(gauge),
        Message::Timer(v2::Timer {
            name: "http".into(),
            start: 1_000_000_000,
            stop: 1_250_000_000,
        }),
        Message::Event(v2::Event {
            title: "deployed".into(),
            body: "version 2 ✓".into(),
        }),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut e = Envelope {
                timestamp: 1_700_000_000_000_000_000 + i as i64,
                source_id: source.into(),
                instance_id: format!("instance-{i}"),
                message: Some(m),
                ..Default::default()
            };
            e.tags.insert("app".into(), "shop".into());
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_kinds_reach_the_consumer_intact() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);

    let mut egress = rlp.client(&certs).await;
    let mut stream = egress
        .batched_receiver(request("shop", &Kind::ALL, ""))
        .await
        .unwrap()
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "the RLP subscribed on the router",
        || router.subscriptions() >= 1,
    )
    .await;

    let sent = the_five("shop");
    let mut ingress = collector.client(&certs).await;
    ingress
        .send(EnvelopeBatch {
            batch: sent.clone(),
        })
        .await
        .unwrap();

    let got = collect_until(&mut stream, Duration::from_secs(10), |g| g.len() >= 5).await;
    assert_eq!(got.len(), 5, "got {got:?}");
    for (want, got) in sent.iter().zip(&got) {
        let mut want = want.clone();
        // The collector adds the host tag and keeps the counter's total.
        want.tags.insert("host".into(), "e2e-host".into());
        if let Some(Message::Counter(c)) = &mut want.message {
            c.total = 3;
        }
        assert_eq!(got, &want);
    }
}

/// The collector forwards what an app sent as it came, plus the bytes of
/// its `host` tag: a consumer of the RLP gets the sender's bytes (its tag
/// order, a field this version does not know) followed by that one map
/// entry, never an envelope decoded and encoded again.
#[tokio::test(flavor = "multi_thread")]
async fn app_envelopes_travel_as_sent_plus_the_host_tag() {
    use bytes::{Bytes, BytesMut};
    use prost::Message as _;
    use spillway_proto::encoded::client::egress_client::EgressClient as WireEgressClient;
    use spillway_proto::preencoded::{self, field};

    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);
    let mut stream = WireEgressClient::new(channel(rlp.port, certs.client()).await)
        .batched_receiver(request("as-sent", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "the RLP subscribed on the router",
        || router.subscriptions() >= 1,
    )
    .await;

    let mut sent = numbered_log("as-sent", 1).encode_to_vec();
    for (k, v) in [("zeta", "1"), ("alpha", "2")] {
        preencoded::put_string_map_entry(&mut sent, field::ENVELOPE_TAGS, k, v);
    }
    // Field 15, varint 42: unknown here, dropped by any decode.
    sent.extend([0x78, 0x2a]);
    let mut batch = Vec::new();
    preencoded::put_batch_entry(&mut batch, &sent);
    preencoded::batch_sender(
        channel(collector.port, certs.client()).await,
        usize::MAX,
        futures::stream::iter([Bytes::from(batch)]),
    )
    .await
    .expect("the collector takes the batch");

    let got = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an envelope within 10 s")
        .unwrap()
        .expect("a batch");
    let mut expected = BytesMut::from(&sent[..]);
    preencoded::put_string_map_entry(&mut expected, field::ENVELOPE_TAGS, "host", "e2e-host");
    assert_eq!(got.0.len(), 1);
    assert_eq!(
        &got.0[0].bytes()[..],
        &expected[..],
        "as sent, plus the host tag"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn single_envelope_receiver_legacy_tags_and_origin_fallback() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let collector = Collector::start(&certs, &[&router], &[]);

    let mut egress = rlp.client(&certs).await;
    let req = v2::EgressRequest {
        selectors: vec![v2::Selector::of(Kind::Log, "from-origin")],
        use_preferred_tags: false,
        ..Default::default()
    };
    let mut stream = egress.receiver(req).await.unwrap().into_inner();
    eventually(
        Duration::from_secs(10),
        "the RLP subscribed on the router",
        || router.subscriptions() >= 1,
    )
    .await;

    let mut e = numbered_log("", 1);
    e.tags.insert("origin".into(), "from-origin".into());
    let mut ingress = collector.client(&certs).await;
    // The streaming Sender RPC, one envelope at a time.
    ingress.sender(tokio_stream::iter(vec![e])).await.unwrap();

    let got = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.source_id, "from-origin");
    assert!(
        got.tags.is_empty(),
        "without use_preferred_tags, tags travel as deprecated_tags"
    );
    assert_eq!(
        got.deprecated_tags["origin"],
        v2::Value {
            data: Some(v2::value::Data::Text("from-origin".into()))
        }
    );
    assert_eq!(
        got.deprecated_tags["host"],
        v2::Value {
            data: Some(v2::value::Data::Text("e2e-host".into()))
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_binary_emits_its_own_metrics() {
    let certs = Certs::new();
    let router = Router::start(&certs, &["--metrics-interval", "1s"]);
    let rlp = Rlp::start(&certs, &[&router], &["--metrics-interval", "1s"]);
    let collector = Collector::start(&certs, &[&router], &["--metrics-interval", "1s"]);

    let mut egress = rlp.client(&certs).await;
    let mut stream = egress
        .batched_receiver(request("", &[Kind::Counter, Kind::Gauge], ""))
        .await
        .unwrap()
        .into_inner();
    let mut ingress = collector.client(&certs).await;
    ingress
        .send(EnvelopeBatch {
            batch: vec![numbered_log("app", 1)],
        })
        .await
        .unwrap();

    let wanted = ["spillway-collector", "spillway-router", "spillway-rlp"];
    let got = collect_until(&mut stream, Duration::from_secs(20), |g| {
        wanted.iter().all(|w| {
            g.iter().any(|e| {
                e.source_id == *w
                    && matches!(&e.message, Some(Message::Counter(c)) if c.name == "dropped")
            })
        })
    })
    .await;
    for w in wanted {
        let names: Vec<String> = got
            .iter()
            .filter(|e| e.source_id == w)
            .filter_map(|e| match &e.message {
                Some(Message::Counter(c)) => Some(c.name.clone()),
                _ => None,
            })
            .collect();
        for name in ["ingress", "egress", "dropped"] {
            assert!(
                names.iter().any(|n| n == name),
                "{w} emitted no {name} counter: {names:?}"
            );
        }
    }
    let router_subs = got.iter().any(|e| {
        e.source_id == "spillway-router" && matches!(&e.message, Some(Message::Gauge(g)) if g.metrics.contains_key("subscriptions"))
    });
    assert!(router_subs, "the router emits its subscriptions gauge");

    // The same numbers on /metrics.
    assert!(metric(collector.http_port, "spillway_ingress_total").unwrap() >= 1);
    assert!(metric(router.metrics_port, "spillway_ingress_total").unwrap() >= 1);
    assert!(metric(rlp.metrics_port, "spillway_subscriptions").unwrap() >= 1);
    assert_eq!(
        http_get(collector.http_port, "/health").as_deref(),
        Some("ok\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rlp_refuses_requests_without_selectors_and_beyond_its_stream_limit() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &["--max-streams", "2"]);
    let mut egress = rlp.client(&certs).await;

    let err = egress
        .batched_receiver(v2::EgressBatchRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    let _one = egress
        .batched_receiver(request("", &[Kind::Log], ""))
        .await
        .unwrap();
    let _two = egress
        .batched_receiver(request("", &[Kind::Log], ""))
        .await
        .unwrap();
    let err = egress
        .batched_receiver(request("", &[Kind::Log], ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");

    // A closed stream frees its place.
    drop(_two);
    eventually(
        Duration::from_secs(10),
        "the closed stream is released",
        || metric(rlp.metrics_port, "spillway_subscriptions") == Some(1),
    )
    .await;
    assert!(
        egress
            .batched_receiver(request("", &[Kind::Log], ""))
            .await
            .is_ok()
    );
}
