//! The v2 Egress gRPC service of the router: each call is a subscription
//! whose envelopes are batched out of its own diode.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message as _;
use spillway_plumbing::batch::{self, BatchPolicy};
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::v2::egress_server::{Egress, EgressServer};
use spillway_proto::v2::{EgressBatchRequest, EgressRequest, Envelope, EnvelopeBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::pubsub::PubSub;

pub struct EgressService {
    pubsub: Arc<PubSub>,
    policy: BatchPolicy,
    metrics: Arc<SelfMetrics>,
}

impl EgressService {
    pub fn server(
        pubsub: Arc<PubSub>,
        policy: BatchPolicy,
        metrics: Arc<SelfMetrics>,
    ) -> EgressServer<Self> {
        EgressServer::new(EgressService {
            pubsub,
            policy,
            metrics,
        })
    }

    /// Subscribes and spawns the task that batches the subscription's
    /// envelopes into the returned channel, until the consumer goes away.
    fn open(
        &self,
        req: &EgressBatchRequest,
    ) -> Result<mpsc::Receiver<Result<EnvelopeBatch, Status>>, Status> {
        let handle = self
            .pubsub
            .subscribe(req)
            .map_err(Status::invalid_argument)?;
        let (tx, rx) = mpsc::channel(2);
        let policy = self.policy;
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let diode = &handle.subscription().diode;
            loop {
                let envelopes = tokio::select! {
                    b = batch::next_batch(diode, policy) => b,
                    _ = tx.closed() => break,
                };
                let envelopes: Vec<Envelope> =
                    envelopes.into_iter().map(Arc::unwrap_or_clone).collect();
                for chunk in batch::chunk_by_bytes(envelopes, batch::MAX_BATCH_BYTES, |e| {
                    e.encoded_len() + 4
                }) {
                    let n = chunk.len() as u64;
                    if tx.send(Ok(EnvelopeBatch { batch: chunk })).await.is_err() {
                        return;
                    }
                    metrics.egress.inc_by(n);
                }
            }
            drop(handle);
        });
        Ok(rx)
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Egress for EgressService {
    type ReceiverStream = EnvelopeStream;
    type BatchedReceiverStream = ReceiverStream<Result<EnvelopeBatch, Status>>;

    async fn receiver(
        &self,
        request: Request<EgressRequest>,
    ) -> Result<Response<Self::ReceiverStream>, Status> {
        let rx = self.open(&request.into_inner().into())?;
        let envelopes = ReceiverStream::new(rx).flat_map(|batch| {
            let items: Vec<Result<Envelope, Status>> = match batch {
                Ok(b) => b.batch.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
        Ok(Response::new(Box::pin(envelopes)))
    }

    async fn batched_receiver(
        &self,
        request: Request<EgressBatchRequest>,
    ) -> Result<Response<Self::BatchedReceiverStream>, Status> {
        let rx = self.open(request.get_ref())?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
