//! A gRPC message refused whole loses its envelopes with it: where their
//! number is known, they are counted in
//! `spillway_refused_envelopes_total{reason}` next to the message in
//! `spillway_refused_messages_total{reason}`.

use spillway_e2e::*;
use spillway_proto::plumbing::EnvelopeData;
use spillway_proto::plumbing::doppler_ingestor_client::DopplerIngestorClient;
use spillway_proto::v2::ingress_client::IngressClient;
use spillway_proto::v2::{Envelope, EnvelopeBatch};
use tonic::Code;

fn counted(router: &Router, family: &str, reason: &str) -> u64 {
    metric(
        router.metrics_port,
        &format!("spillway_refused_{family}_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or_else(|| panic!("no spillway_refused_{family}_total{{reason=\"{reason}\"}}"))
}

fn batch(n: usize, tags_each: usize) -> EnvelopeBatch {
    let mut e = numbered_log("refused", 1);
    e.tags = (0..tags_each)
        .map(|i| (format!("t{i}"), String::new()))
        .collect();
    EnvelopeBatch { batch: vec![e; n] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelopes_of_refused_messages_are_counted_where_known() {
    let certs = Certs::new();
    // At most 2 envelopes a batch, 64 tags a message, 64 KiB a message.
    let router = Router::start(
        &certs,
        &["--max-batch-envelopes", "2", "--max-message-bytes", "65536"],
    );
    let mut ingress = IngressClient::new(channel(router.port, certs.client()).await);
    let reasons = [
        "too_many_envelopes",
        "too_many_tags",
        "malformed",
        "too_large",
    ];

    // Positive control: a batch at both limits is taken, nothing counted.
    ingress
        .send(batch(2, 32))
        .await
        .expect("a batch at the limits is taken");
    for reason in reasons {
        assert_eq!(counted(&router, "messages", reason), 0, "{reason}");
        assert_eq!(counted(&router, "envelopes", reason), 0, "{reason}");
    }

    let status = ingress.send(batch(5, 0)).await.expect_err("5 envelopes");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(counted(&router, "messages", "too_many_envelopes"), 1);
    assert_eq!(counted(&router, "envelopes", "too_many_envelopes"), 5);

    let status = ingress.send(batch(2, 33)).await.expect_err("66 tags");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // One envelope with too many tags, on a Sender stream.
    let mut one: Envelope = batch(1, 65).batch.remove(0);
    one.source_id = "one".into();
    let status = ingress
        .sender(futures::stream::iter([one]))
        .await
        .expect_err("65 tags");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(counted(&router, "messages", "too_many_tags"), 2);
    assert_eq!(counted(&router, "envelopes", "too_many_tags"), 3);

    // A v1 payload that is not a dropsonde envelope is one envelope.
    let mut v1 = DopplerIngestorClient::new(channel(router.port, certs.client()).await);
    let status = v1
        .pusher(futures::stream::iter([EnvelopeData {
            payload: vec![0x0a, 0xff, 0xff].into(),
        }]))
        .await
        .expect_err("not dropsonde");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(counted(&router, "messages", "malformed"), 1);
    assert_eq!(counted(&router, "envelopes", "malformed"), 1);

    // A message over the size limit is refused before its envelopes are
    // counted: the message only.
    let status = ingress
        .send(EnvelopeBatch {
            batch: vec![numbered_log(&"x".repeat(70_000), 1)],
        })
        .await
        .expect_err("70 KB");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(counted(&router, "messages", "too_large"), 1);
    assert_eq!(counted(&router, "envelopes", "too_large"), 0);
}
