//! Shipping: envelopes from the diodes to the routers.
//!
//! A *lane* is a task that cuts one source of envelopes into batches and
//! hands them to *links* (BatchSender streams to routers; several per
//! router, interleaved over the routers, each redialled with backoff).
//! There are two kinds of lanes:
//!
//! - **Ordered lanes**, one per container shard diode ([`crate::output`]
//!   puts all of a stream's lines in one shard). An ordered lane sticks to
//!   one link while that link is up, so the shard's envelopes reach the
//!   router in the order they were parked, and a container's lines stay in
//!   order end to end. Lane `i` starts on link `i`, which spreads the shards
//!   over the routers; when its link fails it moves to the next live one.
//! - **The app lane** drains the per-core diodes of the v2 Ingress API and
//!   deals its batches round-robin over the live links, as Loggregator's
//!   agent does: apps get load balancing, and (like Loggregator) no order
//!   promise across batches.
//!
//! When every router is down, lanes wait, the diodes fill, and they drop
//! their oldest envelopes and count them: producers are never slowed.
//!
//! Lanes write each batch as the bytes of an `EnvelopeBatch`
//! ([`batch::encode_batches`]): all diodes hold envelopes already encoded
//! (container lines as [`crate::output`] wrote them, apps' envelopes as
//! they came plus what [`crate::enrich`] appended), so none is decoded or
//! encoded again here. Links send these bytes unchanged
//! ([`spillway_proto::preencoded::batch_sender`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::batch::{self, BatchPolicy};
use spillway_plumbing::diode::PerCore;
use spillway_plumbing::grpc::HostPort;
use spillway_plumbing::logging::{RateLimited, error_chain};
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::preencoded::{self, EncodedBatch};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::output::Shards;

/// A lane's handle on one link.
struct Link {
    peer: HostPort,
    inbox: mpsc::Sender<EncodedBatch>,
    up: AtomicBool,
}

/// Everything lanes need to pick a link.
struct Links {
    links: Vec<Link>,
    /// Signalled when a link comes up.
    changed: Notify,
}

impl Links {
    /// The link a lane should use: `current` while it is up, else the first
    /// live one from `preferred` on. Waits while none is up.
    async fn pick(&self, current: Option<usize>, preferred: usize) -> usize {
        if let Some(i) = current.filter(|&i| self.links[i].up.load(Ordering::Acquire)) {
            return i;
        }
        loop {
            let changed = self.changed.notified();
            let n = self.links.len();
            if let Some(i) = (0..n)
                .map(|k| (preferred + k) % n)
                .find(|&i| self.links[i].up.load(Ordering::Acquire))
            {
                return i;
            }
            // Also wake now and then: a wake-up between the check and the
            // wait is not lost (`notified` was created first), but be
            // robust to links that flap.
            let _ = tokio::time::timeout(Duration::from_millis(500), changed).await;
        }
    }
}

/// The part of the collector's `/health` that shipping reports: ready once
/// the lanes and links to every router are started.
pub const HEALTH_PART: &str = "shipping";

/// Starts `links_per_router` links to each router, the app lane over
/// `apps` and an ordered lane per diode of `shards`.
///
/// Messages to the routers stay within `max_message_bytes`, the limit the
/// routers are expected to share with this collector (`--max-message-bytes`).
/// An envelope that cannot fit alone (the collector's tags can push one that
/// was accepted near the limit over it) is dropped and counted here, since
/// the router would refuse it and fail the whole stream.
pub fn spawn(
    apps: Arc<PerCore<Bytes>>,
    shards: Shards,
    routers: Vec<(HostPort, Endpoint)>,
    links_per_router: usize,
    policy: BatchPolicy,
    max_message_bytes: usize,
    metrics: Arc<SelfMetrics>,
) {
    let per_router = links_per_router.max(1);
    let mut links = Vec::new();
    let mut inboxes = Vec::new();
    // Interleaved: link 0 to router 0, link 1 to router 1, ...
    for _ in 0..per_router {
        for (peer, endpoint) in &routers {
            let (inbox, rx) = mpsc::channel(1);
            links.push(Link {
                peer: peer.clone(),
                inbox,
                up: AtomicBool::new(false),
            });
            inboxes.push((endpoint.clone(), rx));
        }
    }
    let links = Arc::new(Links {
        links,
        changed: Notify::new(),
    });
    for (i, (endpoint, rx)) in inboxes.into_iter().enumerate() {
        tokio::spawn(run_link(links.clone(), i, endpoint, rx, metrics.clone()));
    }
    let lane = Lane {
        links,
        policy,
        max_message_bytes,
        metrics,
    };
    tokio::spawn(lane.clone().run(apps, None));
    for (shard, diode) in shards.iter().enumerate() {
        tokio::spawn(lane.clone().run(diode.clone(), Some(shard)));
    }
}

#[derive(Clone)]
struct Lane {
    links: Arc<Links>,
    policy: BatchPolicy,
    max_message_bytes: usize,
    metrics: Arc<SelfMetrics>,
}

impl Lane {
    /// Batches `source` forever. With `sticky = Some(i)` it keeps to one link
    /// (starting at link `i`); with `None` it deals batches round-robin.
    async fn run<T: batch::EncodeEntry>(
        self,
        source: impl batch::Source<T>,
        sticky: Option<usize>,
    ) {
        let max_bytes = self.max_message_bytes.min(batch::MAX_BATCH_BYTES);
        let mut current = None;
        let mut next = sticky.unwrap_or(0);
        let mut batcher = batch::Batcher::new(self.policy);
        loop {
            let items = batcher.next(&source).await;
            if self.links.links.is_empty() {
                // No router configured: what was taken is lost, and counted.
                self.metrics.dropped(Direction::Egress, items.len() as u64);
                continue;
            }
            let (batches, too_large) =
                batch::encode_batches(&items, self.max_message_bytes, max_bytes);
            drop(items);
            self.metrics.dropped(Direction::Egress, too_large);
            for b in batches {
                let i = self.links.pick(current, next).await;
                if sticky.is_some() {
                    current = Some(i);
                } else {
                    next = i + 1;
                }
                let n = b.envelopes as u64;
                if self.links.links[i].inbox.send(b).await.is_err() {
                    self.metrics.dropped(Direction::Egress, n);
                }
            }
        }
    }
}

/// One connection to a router, redialled forever. It writes the batches
/// lanes put in its inbox to its BatchSender stream.
async fn run_link(
    links: Arc<Links>,
    me: usize,
    endpoint: Endpoint,
    mut inbox: mpsc::Receiver<EncodedBatch>,
    metrics: Arc<SelfMetrics>,
) {
    let link = &links.links[me];
    let peer = &link.peer;
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
        let (stream_tx, stream_rx) = mpsc::channel::<bytes::Bytes>(1);
        let call = preencoded::batch_sender(channel, usize::MAX, ReceiverStream::new(stream_rx));
        tokio::pin!(call);
        // Batches handed over while the link was down are stale now:
        // sending them would put them behind newer ones on another link.
        while let Ok(b) = inbox.try_recv() {
            metrics.dropped(Direction::Egress, b.envelopes as u64);
        }
        link.up.store(true, Ordering::Release);
        links.changed.notify_waiters();
        let mut healthy = false;
        let ended = loop {
            let permit = tokio::select! {
                p = stream_tx.reserve() => match p { Ok(p) => p, Err(_) => break None },
                r = &mut call => break Some(r),
            };
            let next = tokio::select! {
                b = inbox.recv() => match b {
                    Some(b) => b,
                    None => return,
                },
                r = &mut call => break Some(r),
            };
            let n = next.envelopes as u64;
            permit.send(next.bytes);
            metrics.egress.inc_by(n);
            metrics.egress_batches.inc();
            if !healthy {
                healthy = true;
                backoff.reset();
            }
        };
        link.up.store(false, Ordering::Release);
        // A batch a lane handed over just before the failure would wait
        // here until the router is back, then arrive out of order: it is
        // dropped and counted instead, like those lost in flight.
        while let Ok(b) = inbox.try_recv() {
            metrics.dropped(Direction::Egress, b.envelopes as u64);
        }
        match ended {
            Some(Err(status)) => {
                complaints.warn(|| format!("stream to router {peer} failed: {}", status.message()))
            }
            Some(Ok(_)) | None => complaints.warn(|| format!("stream to router {peer} ended")),
        }
        backoff.wait().await;
    }
}
