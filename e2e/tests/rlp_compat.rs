//! The RLP as Loggregator's RLP behaves toward consumers and routers:
//! a request with only the deprecated `legacy_selector` is folded into
//! `selectors` before it is sent on (real Loggregator routers read only
//! `selectors`), and `use_preferred_tags=false` gives every tag as text.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use spillway_e2e::*;
use spillway_proto::v2::egress_server::{Egress, EgressServer};
use spillway_proto::v2::{
    EgressBatchRequest, EgressRequest, Envelope, EnvelopeBatch, Value, value::Data,
};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

const WAIT: Duration = Duration::from_secs(10);

/// A router that behaves as Loggregator's does for this purpose: it serves
/// what `selectors` select and ignores `legacy_selector`. It records every
/// request it gets.
#[derive(Clone, Default)]
struct SelectorsOnlyRouter {
    requests: Arc<Mutex<Vec<EgressBatchRequest>>>,
}

type Batches = Pin<Box<dyn Stream<Item = Result<EnvelopeBatch, Status>> + Send>>;
type Envelopes = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Egress for SelectorsOnlyRouter {
    type ReceiverStream = Envelopes;
    type BatchedReceiverStream = Batches;

    async fn receiver(&self, _: Request<EgressRequest>) -> Result<Response<Envelopes>, Status> {
        Err(Status::unimplemented("BatchedReceiver only"))
    }

    async fn batched_receiver(
        &self,
        request: Request<EgressBatchRequest>,
    ) -> Result<Response<Batches>, Status> {
        let req = request.into_inner();
        self.requests.lock().unwrap().push(req.clone());
        let selected = req
            .selectors
            .iter()
            .any(|s| s.source_id == "legacy-app" && s.kind() == Some(Kind::Log));
        let batches: Vec<Result<EnvelopeBatch, Status>> = if selected {
            vec![Ok(EnvelopeBatch {
                batch: vec![numbered_log("legacy-app", 7)],
            })]
        } else {
            Vec::new()
        };
        // The stream stays open after its batch, as a router's does.
        let stream =
            futures::StreamExt::chain(futures::stream::iter(batches), futures::stream::pending());
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_legacy_selector_alone_is_folded_into_selectors_for_the_routers() {
    let certs = Certs::new();
    let port = free_port();
    let router = SelectorsOnlyRouter::default();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(certs.path("router.pem")).unwrap(),
            std::fs::read(certs.path("router-key.pem")).unwrap(),
        ))
        .client_ca_root(Certificate::from_pem(
            std::fs::read(certs.path("ca.pem")).unwrap(),
        ));
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(EgressServer::new(router.clone()))
        .serve(([127, 0, 0, 1], port).into());
    tokio::spawn(server);
    wait_port(port);
    let router_addr = format!("localhost:{port}");
    let rlp = Rlp::start_wrapped(&[], &certs, &[&router_addr], &[]);

    let legacy = v2::Selector::of(Kind::Log, "legacy-app");
    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(EgressBatchRequest {
            legacy_selector: Some(legacy.clone()),
            use_preferred_tags: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let got = collect_until(&mut stream, WAIT, |g| !g.is_empty()).await;
    assert_eq!(
        got.iter().map(number_of).collect::<Vec<_>>(),
        vec![Some(7)],
        "the consumer gets what its legacy selector asks for"
    );
    let requests = router.requests.lock().unwrap().clone();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.selectors, vec![legacy.clone()], "{r:?}");
        assert_eq!(r.legacy_selector, None, "{r:?}");
    }
}

/// With `use_preferred_tags=false` every tag travels in `deprecated_tags` as
/// text, also one that came both as a tag and as a typed deprecated tag
/// (Loggregator's RLP: the tag's text wins).
#[tokio::test(flavor = "multi_thread")]
async fn without_preferred_tags_every_tag_is_text() {
    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let mut req = request("tagged", &[Kind::Log], "");
    req.use_preferred_tags = false;
    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(req)
        .await
        .unwrap()
        .into_inner();
    eventually(WAIT, "subscribed", || router.subscriptions() >= 1).await;

    let mut e = numbered_log("tagged", 1);
    e.tags.insert("both".into(), "42".into());
    e.tags.insert("tag_only".into(), "t".into());
    let typed = |d: Data| Value { data: Some(d) };
    e.deprecated_tags
        .insert("both".into(), typed(Data::Integer(42)));
    e.deprecated_tags
        .insert("old_only".into(), typed(Data::Decimal(1.5)));
    let mut ingress =
        v2::ingress_client::IngressClient::new(channel(router.port, certs.client()).await);
    ingress
        .send(EnvelopeBatch { batch: vec![e] })
        .await
        .unwrap();

    let got = collect_until(&mut stream, WAIT, |g| !g.is_empty()).await;
    assert_eq!(got.len(), 1);
    let e = &got[0];
    assert!(e.tags.is_empty(), "{e:?}");
    let text = |s: &str| typed(Data::Text(s.into()));
    assert_eq!(e.deprecated_tags["both"], text("42"), "{e:?}");
    assert_eq!(e.deprecated_tags["tag_only"], text("t"), "{e:?}");
    assert_eq!(
        e.deprecated_tags["old_only"],
        typed(Data::Decimal(1.5)),
        "a deprecated tag that is not also a tag keeps its value: {e:?}"
    );
}

/// Envelopes travel encoded: what a sender wrote reaches a consumer of the
/// RLP byte for byte, through the router and the RLP (the tags in the
/// order the sender wrote them, a field this version does not know kept),
/// never decoded and encoded again on the way. A consumer without
/// preferred tags gets a converted copy of the same envelope.
#[tokio::test(flavor = "multi_thread")]
async fn envelopes_reach_consumers_byte_for_byte() {
    use bytes::Bytes;
    use prost::Message as _;
    use spillway_proto::encoded::client::egress_client::EgressClient as WireEgressClient;
    use spillway_proto::preencoded::{self, field};

    let certs = Certs::new();
    let router = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&router], &[]);
    let subscribe = |preferred: bool| {
        let mut req = request("raw", &[Kind::Log], "");
        req.use_preferred_tags = preferred;
        let rlp_port = rlp.port;
        let client = certs.client();
        async move {
            WireEgressClient::new(channel(rlp_port, client).await)
                .batched_receiver(req)
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut preferred = subscribe(true).await;
    let mut deprecated = subscribe(false).await;
    eventually(WAIT, "subscribed", || router.subscriptions() >= 2).await;

    // A log envelope as some other encoder may write it: tags in no
    // particular order, and a field 15 this version does not know.
    let base = numbered_log("raw", 1);
    let mut sent = base.encode_to_vec();
    for (k, v) in [("zeta", "1"), ("alpha", "2"), ("mid", "3")] {
        preencoded::put_string_map_entry(&mut sent, field::ENVELOPE_TAGS, k, v);
    }
    sent.extend([0x78, 0x2a]);
    let mut batch = Vec::new();
    preencoded::put_batch_entry(&mut batch, &sent);
    let mut expected = base;
    for (k, v) in [("zeta", "1"), ("alpha", "2"), ("mid", "3")] {
        expected.tags.insert(k.into(), v.into());
    }
    assert_eq!(Envelope::decode(&sent[..]).unwrap(), expected);

    preencoded::batch_sender(
        channel(router.port, certs.client()).await,
        usize::MAX,
        futures::stream::iter([Bytes::from(batch)]),
    )
    .await
    .expect("the router takes the batch");

    async fn first(stream: &mut tonic::Streaming<spillway_proto::encoded::WireBatch>) -> Bytes {
        let batch = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("an envelope within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(batch.0.len(), 1);
        batch.0[0].bytes().clone()
    }
    assert_eq!(&first(&mut preferred).await[..], &sent[..], "byte for byte");
    let converted = Envelope::decode(first(&mut deprecated).await).unwrap();
    assert!(converted.tags.is_empty(), "{converted:?}");
    assert_eq!(
        converted.deprecated_tags["zeta"],
        Value {
            data: Some(Data::Text("1".into()))
        }
    );
}
