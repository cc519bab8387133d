//! The v2 Ingress gRPC service (Sender, BatchSender, Send), shared by the
//! collector (apps send to it) and the router (collectors send to it).
//!
//! It decodes what arrives and hands each batch to a [`Sink`]; it never
//! waits on what happens next. A malformed message ends that one stream
//! with an error status; other streams are untouched.

use std::sync::Arc;

use spillway_proto::v2::ingress_server::{Ingress, IngressServer};
use spillway_proto::v2::{
    BatchSenderResponse, Envelope, EnvelopeBatch, IngressResponse, SendResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::SelfMetrics;

/// Where received envelopes go. Must not block.
pub trait Sink: Send + Sync + 'static {
    fn accept(&self, batch: Vec<Envelope>);
}

impl<F: Fn(Vec<Envelope>) + Send + Sync + 'static> Sink for F {
    fn accept(&self, batch: Vec<Envelope>) {
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

    fn take(&self, batch: Vec<Envelope>) {
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
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<IngressResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(envelope) = stream.message().await? {
            self.take(vec![envelope]);
        }
        Ok(Response::new(IngressResponse {}))
    }

    async fn batch_sender(
        &self,
        request: Request<Streaming<EnvelopeBatch>>,
    ) -> Result<Response<BatchSenderResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.take(batch.batch);
        }
        Ok(Response::new(BatchSenderResponse {}))
    }

    async fn send(
        &self,
        request: Request<EnvelopeBatch>,
    ) -> Result<Response<SendResponse>, Status> {
        self.take(request.into_inner().batch);
        Ok(Response::new(SendResponse {}))
    }
}
