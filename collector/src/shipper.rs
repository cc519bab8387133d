//! Shipping: envelopes from the per-core diodes to the routers.
//!
//! One batcher drains the diodes into batches and offers them on a small
//! shared queue. Every router gets a pool of links; a link that is connected
//! pulls the next batch and writes it to its BatchSender stream. Load
//! balances itself (a busy link pulls less) and fails over (a dead link
//! pulls nothing while it redials with backoff). When every router is
//! down, the queue fills, the batcher stops draining, and the diodes drop
//! their oldest envelopes and count them: producers are never slowed.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::batch::{self, BatchPolicy};
use spillway_plumbing::diode::PerCore;
use spillway_plumbing::grpc::HostPort;
use spillway_plumbing::logging::{RateLimited, error_chain};
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::v2::{Envelope, EnvelopeBatch, ingress_client::IngressClient};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

type Queue = Arc<Mutex<mpsc::Receiver<EnvelopeBatch>>>;

/// Starts the batcher and `links_per_router` links to each router.
///
/// Messages to the routers stay within `max_message_bytes`, the limit the
/// routers are expected to share with this collector (`--max-message-bytes`).
/// An envelope that cannot fit alone (the collector's tags can push one that
/// was accepted near the limit over it) is dropped and counted here, since
/// the router would refuse it and fail the whole stream.
pub fn spawn(
    diodes: Arc<PerCore<Envelope>>,
    routers: Vec<(HostPort, Endpoint)>,
    links_per_router: usize,
    policy: BatchPolicy,
    max_message_bytes: usize,
    metrics: Arc<SelfMetrics>,
) {
    let links = routers.len() * links_per_router.max(1);
    let (tx, rx) = mpsc::channel::<EnvelopeBatch>(links.max(1));
    let queue: Queue = Arc::new(Mutex::new(rx));
    let max_bytes = max_message_bytes.min(batch::MAX_BATCH_BYTES);
    let batcher_metrics = metrics.clone();
    tokio::spawn(async move {
        loop {
            let mut envelopes = batch::next_batch(&*diodes, policy).await;
            let before = envelopes.len();
            envelopes.retain(|e| batch_entry_len(e) <= max_message_bytes);
            batcher_metrics.dropped(Direction::Egress, (before - envelopes.len()) as u64);
            for chunk in batch::chunk_by_bytes(envelopes, max_bytes, batch_entry_len) {
                if tx.send(EnvelopeBatch { batch: chunk }).await.is_err() {
                    return;
                }
            }
        }
    });
    for (peer, endpoint) in routers {
        for _ in 0..links_per_router.max(1) {
            tokio::spawn(link(
                peer.clone(),
                endpoint.clone(),
                queue.clone(),
                metrics.clone(),
            ));
        }
    }
}

/// Bytes `e` takes inside an `EnvelopeBatch`: the envelope, its field tag
/// and its length prefix.
fn batch_entry_len(e: &Envelope) -> usize {
    let len = e.encoded_len();
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// One connection to a router, redialled forever.
async fn link(peer: HostPort, endpoint: Endpoint, queue: Queue, metrics: Arc<SelfMetrics>) {
    let mut backoff = Backoff::for_peers();
    let mut complaints = RateLimited::new(Duration::from_secs(10));
    loop {
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                complaints
                    .warn(|| format!("router {peer} unreachable, retrying: {}", error_chain(&e)));
                backoff.wait().await;
                continue;
            }
        };
        tracing::info!("connected to router {peer}");
        let (stream_tx, stream_rx) = mpsc::channel::<EnvelopeBatch>(1);
        let mut client = IngressClient::new(channel).max_encoding_message_size(usize::MAX);
        let call = client.batch_sender(ReceiverStream::new(stream_rx));
        tokio::pin!(call);
        let mut healthy = false;
        let ended = loop {
            let permit = tokio::select! {
                p = stream_tx.reserve() => match p { Ok(p) => p, Err(_) => break None },
                r = &mut call => break Some(r),
            };
            // `recv` is cancel-safe: a batch is either taken and sent
            // below, or left in the queue for another link.
            let next = tokio::select! {
                b = async { queue.lock().await.recv().await } => match b {
                    Some(b) => b,
                    None => return,
                },
                r = &mut call => break Some(r),
            };
            let n = next.batch.len() as u64;
            permit.send(next);
            metrics.egress.inc_by(n);
            if !healthy {
                healthy = true;
                backoff.reset();
            }
        };
        match ended {
            Some(Err(status)) => {
                complaints.warn(|| format!("stream to router {peer} failed: {}", status.message()))
            }
            Some(Ok(_)) | None => complaints.warn(|| format!("stream to router {peer} ended")),
        }
        backoff.wait().await;
    }
}
