//! Serving a diode to a v2 Egress consumer: the task that cuts batches
//! out of a subscription's diode and writes them to the consumer's gRPC
//! stream, shared by the router and the RLP.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message as _;
use spillway_proto::v2::{Envelope, EnvelopeBatch};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::batch::{self, BatchPolicy};
use crate::diode::Diode;
use crate::metrics::SelfMetrics;

/// A stream of batches for tonic.
pub type BatchStream = ReceiverStream<Result<EnvelopeBatch, Status>>;
/// A stream of single envelopes for tonic (the `Receiver` RPC).
pub type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

/// Spawns the task that batches `diode` into the returned stream until the
/// consumer goes away; `guard` (the subscription) lives as long as the task.
/// Batches are cut by `policy` and kept under [`batch::MAX_BATCH_BYTES`].
pub fn serve_diode<T, G>(
    diode: Arc<Diode<T>>,
    guard: G,
    policy: BatchPolicy,
    metrics: Arc<SelfMetrics>,
    into_envelope: fn(T) -> Envelope,
) -> BatchStream
where
    T: Send + Sync + 'static,
    G: Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let _guard = guard;
        loop {
            let items = tokio::select! {
                b = batch::next_batch(&*diode, policy) => b,
                _ = tx.closed() => return,
            };
            let envelopes: Vec<Envelope> = items.into_iter().map(into_envelope).collect();
            for chunk in
                batch::chunk_by_bytes(envelopes, batch::MAX_BATCH_BYTES, |e| e.encoded_len() + 4)
            {
                let n = chunk.len() as u64;
                if tx.send(Ok(EnvelopeBatch { batch: chunk })).await.is_err() {
                    return;
                }
                metrics.egress.inc_by(n);
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Unbatches a batch stream for the single-envelope `Receiver` RPC.
pub fn one_by_one(batches: BatchStream) -> EnvelopeStream {
    Box::pin(batches.flat_map(|batch| {
        let items: Vec<Result<Envelope, Status>> = match batch {
            Ok(b) => b.batch.into_iter().map(Ok).collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(items)
    }))
}
