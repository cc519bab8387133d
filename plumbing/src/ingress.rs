//! The v2 Ingress gRPC service (Sender, BatchSender, Send), shared by the
//! collector (apps send to it) and the router (collectors send to it).
//!
//! Both hops forward envelopes as the bytes they came as: [`IngressService`]
//! checks and peeks each message ([`spillway_proto::encoded`]), never
//! decoding it into prost structs, and hands each batch to a [`Sink`]; it
//! never waits on what happens next. A malformed message ends that one
//! stream with an error status (InvalidArgument; ResourceExhausted for a
//! batch of too many envelopes; OutOfRange for one over the size limit),
//! counted in `spillway_refused_messages_total{reason}`; other streams are
//! untouched.

use std::sync::Arc;

use spillway_proto::encoded::server::ingress_server::{Ingress, IngressServer};
use spillway_proto::encoded::{WireBatch, WireEnvelope};
use spillway_proto::v2::{BatchSenderResponse, IngressResponse, SendResponse};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::SelfMetrics;

/// Where received envelopes go. Must not block.
pub trait Sink: Send + Sync + 'static {
    fn accept(&self, batch: Vec<WireEnvelope>);
}

impl<F: Fn(Vec<WireEnvelope>) + Send + Sync + 'static> Sink for F {
    fn accept(&self, batch: Vec<WireEnvelope>) {
        self(batch)
    }
}

pub struct IngressService<S> {
    sink: Arc<S>,
    metrics: Arc<SelfMetrics>,
}

impl<S: Sink> IngressService<S> {
    /// The service wrapped for tonic, accepting messages up to
    /// `max_message_bytes`.
    pub fn server(
        sink: Arc<S>,
        metrics: Arc<SelfMetrics>,
        max_message_bytes: usize,
    ) -> IngressServer<Self> {
        IngressServer::new(IngressService { sink, metrics })
            .max_decoding_message_size(max_message_bytes)
    }

    fn take(&self, batch: Vec<WireEnvelope>) {
        if batch.is_empty() {
            return;
        }
        self.metrics.ingress.inc_by(batch.len() as u64);
        self.sink.accept(batch);
    }
}

#[tonic::async_trait]
impl<S: Sink> Ingress for IngressService<S> {
    async fn sender(
        &self,
        request: Request<Streaming<WireEnvelope>>,
    ) -> Result<Response<IngressResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(envelope) = stream.message().await? {
            self.take(vec![envelope]);
        }
        Ok(Response::new(IngressResponse {}))
    }

    async fn batch_sender(
        &self,
        request: Request<Streaming<WireBatch>>,
    ) -> Result<Response<BatchSenderResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.take(batch.0);
        }
        Ok(Response::new(BatchSenderResponse {}))
    }

    async fn send(&self, request: Request<WireBatch>) -> Result<Response<SendResponse>, Status> {
        self.take(request.into_inner().0);
        Ok(Response::new(SendResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use spillway_proto::preencoded;
    use spillway_proto::v2::Envelope;
    use spillway_proto::v2::log::Type;

    use super::*;
    use crate::batch::encode_batches;

    /// Batches written as bytes by `encode_batches` and sent unchanged by
    /// `preencoded::batch_sender` arrive whole, in order, at this service.
    #[tokio::test]
    async fn pre_encoded_batches_reach_the_service() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let got = got.clone();
            Arc::new(move |batch: Vec<WireEnvelope>| {
                got.lock()
                    .unwrap()
                    .push(batch.iter().map(WireEnvelope::decode).collect::<Vec<_>>())
            })
        };
        let metrics = Arc::new(SelfMetrics::new("test"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IngressService::server(sink, metrics, 1 << 20))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let envelopes: Vec<Envelope> = (0..5)
            .map(|i| Envelope::log(i + 1, "app", "0", vec![b'x'; 100 * i as usize], Type::Out))
            .collect();
        let encoded: Vec<Bytes> = envelopes
            .iter()
            .map(|e| Bytes::from(prost::Message::encode_to_vec(e)))
            .collect();
        // Two batches of bytes from pre-encoded envelopes, one from prost's.
        let (mut batches, _) = encode_batches(&encoded[..3], usize::MAX, usize::MAX);
        batches.extend(encode_batches(&envelopes[3..], usize::MAX, usize::MAX).0);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        preencoded::batch_sender(
            channel,
            usize::MAX,
            futures::stream::iter(batches.into_iter().map(|b| b.bytes)),
        )
        .await
        .expect("the stream ends well");
        assert_eq!(
            *got.lock().unwrap(),
            vec![envelopes[..3].to_vec(), envelopes[3..].to_vec()]
        );
        server.abort();
    }
}
