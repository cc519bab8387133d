//! The v2 Egress gRPC service, shared by the router and the RLP: each call
//! is a subscription ([`Subscribe`]) whose diode of encoded envelopes is
//! served to the consumer by a task that cuts batches out of it
//! ([`serve_diode`]). Envelopes travel as the bytes they arrived as: a
//! batch is written by framing each envelope's bytes unchanged
//! ([`EnvelopeList`]), never decoded or encoded again.

use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use spillway_proto::encoded::EnvelopeList;
use spillway_proto::encoded::server::egress_server::{Egress, EgressServer};
use spillway_proto::preencoded::batch_entry_len;
use spillway_proto::v2::{EgressBatchRequest, EgressRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::batch::{self, BatchPolicy};
use crate::diode::Diode;
use crate::metrics::{Direction, SelfMetrics, reason};

/// A stream of batches for tonic.
pub type BatchStream = ReceiverStream<Result<EnvelopeList, Status>>;
/// A stream of single envelopes for tonic (the `Receiver` RPC).
pub type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;

/// Spawns the task that batches `diode` into the returned stream until the
/// consumer goes away; `guard` (the subscription) lives as long as the task
/// and counts what is left in the diode when it is dropped.
/// Batches are cut by `policy` and, by the envelopes' byte lengths, kept
/// under [`batch::MAX_BATCH_BYTES`] (an envelope larger than that travels
/// alone).
pub fn serve_diode<G>(
    diode: Arc<Diode<Bytes>>,
    guard: G,
    policy: BatchPolicy,
    metrics: Arc<SelfMetrics>,
) -> BatchStream
where
    G: Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let _guard = guard;
        let mut batcher = batch::Batcher::new(policy);
        loop {
            let envelopes = tokio::select! {
                b = batcher.next(&*diode) => b,
                _ = tx.closed() => return,
            };
            let mut left = envelopes.len() as u64;
            for chunk in batch::chunk_by_bytes(envelopes, batch::MAX_BATCH_BYTES, |e| {
                batch_entry_len(e.len())
            }) {
                let n = chunk.len() as u64;
                if tx.send(Ok(EnvelopeList(chunk))).await.is_err() {
                    // The consumer went away: what this batch still held is
                    // lost with the stream (what stays in the diode is
                    // counted by the guard, the subscription).
                    metrics.dropped_because(Direction::Egress, reason::STREAM_CLOSED, left);
                    return;
                }
                left -= n;
                metrics.egress.inc_by(n);
                metrics.egress_batches.inc();
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Unbatches a batch stream for the single-envelope `Receiver` RPC.
pub fn one_by_one(batches: BatchStream) -> EnvelopeStream {
    Box::pin(batches.flat_map(|batch| {
        let items: Vec<Result<Bytes, Status>> = match batch {
            Ok(b) => b.0.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    }))
}

/// What a binary does with a consumer's request: subscribe it and return
/// the stream of its batches (usually made with [`serve_diode`]). The
/// consumer gets its answer when the returned future is done, so a
/// subscription that takes a while to open (the RLP's, on every router)
/// is waited for here.
pub trait Subscribe: Send + Sync + 'static {
    fn subscribe(
        &self,
        request: EgressBatchRequest,
    ) -> impl Future<Output = Result<BatchStream, Status>> + Send;
}

/// The Egress service over any [`Subscribe`]; `Receiver` is `BatchedReceiver`
/// one envelope at a time.
pub struct EgressService<S>(S);

impl<S: Subscribe> EgressService<S> {
    pub fn server(subscribe: S) -> EgressServer<Self> {
        EgressServer::new(EgressService(subscribe))
    }
}

#[tonic::async_trait]
impl<S: Subscribe> Egress for EgressService<S> {
    type ReceiverStream = EnvelopeStream;
    type BatchedReceiverStream = BatchStream;

    async fn receiver(
        &self,
        request: Request<EgressRequest>,
    ) -> Result<Response<EnvelopeStream>, Status> {
        Ok(Response::new(one_by_one(
            self.0.subscribe(request.into_inner().into()).await?,
        )))
    }

    async fn batched_receiver(
        &self,
        request: Request<EgressBatchRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        Ok(Response::new(self.0.subscribe(request.into_inner()).await?))
    }
}
