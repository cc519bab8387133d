//! The v1 (dropsonde) ingest: Loggregator agents forward the v1 envelopes
//! their apps and jobs still emit to `/plumbing.DopplerIngestor/Pusher`,
//! each message one marshalled `events.Envelope`. The router converts each
//! to v2 as Loggregator's router does ([`conversion`]) and routes it with
//! the v2 ingress.
//!
//! The limits are v2 Ingress's: `--max-message-bytes` (OutOfRange), at
//! most `32 × --max-batch-envelopes` tags (ResourceExhausted), and bytes
//! that are not a dropsonde envelope, or one without one of upstream's
//! `required` fields, end the stream with InvalidArgument; each counted in
//! `spillway_refused_messages_total{reason}`. Envelopes count in
//! `spillway_ingress`; one whose event type has no v2 form (removed from
//! dropsonde, or unknown) is dropped and counted in
//! `spillway_dropped_total{direction="ingress",reason="v1_unconvertible"}`.

pub mod conversion;

use std::sync::Arc;

use prost::Message as _;
use spillway_plumbing::ingress::Sink;
use spillway_plumbing::metrics::{Direction, SelfMetrics};
use spillway_proto::codec::{self, Refusal};
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::events;
use spillway_proto::plumbing::doppler_ingestor_server::{DopplerIngestor, DopplerIngestorServer};
use spillway_proto::plumbing::{EnvelopeData, PushResponse};
use tonic::{Request, Response, Status, Streaming};

/// `dropped{direction="ingress"}` reason: a v1 envelope whose event type
/// has no v2 form.
pub const UNCONVERTIBLE: &str = "v1_unconvertible";

/// The `DopplerIngestor` service, handing converted envelopes to a
/// [`Sink`].
pub struct V1Ingest<S> {
    sink: Arc<S>,
    metrics: Arc<SelfMetrics>,
}

impl<S: Sink> V1Ingest<S> {
    /// The service wrapped for tonic, accepting messages up to
    /// `max_message_bytes`.
    pub fn server(
        sink: Arc<S>,
        metrics: Arc<SelfMetrics>,
        max_message_bytes: usize,
    ) -> DopplerIngestorServer<Self> {
        DopplerIngestorServer::new(V1Ingest { sink, metrics })
            .max_decoding_message_size(max_message_bytes)
    }

    /// Decodes, checks and converts one pushed envelope, and hands it on.
    fn take(&self, data: EnvelopeData) -> Result<(), Status> {
        let envelope = events::Envelope::decode(data.payload).map_err(|e| {
            codec::refused_holding(Refusal::Malformed, Some(1), &format!("v1 envelope: {e}"));
            Status::invalid_argument(format!("malformed dropsonde envelope: {e}"))
        })?;
        if let Some(field) = conversion::missing_required(&envelope) {
            codec::refused_holding(
                Refusal::Malformed,
                Some(1),
                &format!("v1 envelope without {field}"),
            );
            return Err(Status::invalid_argument(format!(
                "dropsonde envelope without its required {field}"
            )));
        }
        self.metrics.ingress.inc();
        match conversion::to_v2(envelope) {
            // Encoded here once, then forwarded like any v2 envelope.
            Ok(v2) => self.sink.accept(vec![WireEnvelope::from_envelope(&v2)]),
            Err(conversion::Unconvertible { event_type }) => {
                tracing::debug!("dropped a v1 envelope of event type {event_type}: no v2 form");
                self.metrics
                    .dropped_because(Direction::Ingress, UNCONVERTIBLE, 1);
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl<S: Sink> DopplerIngestor for V1Ingest<S> {
    async fn pusher(
        &self,
        request: Request<Streaming<EnvelopeData>>,
    ) -> Result<Response<PushResponse>, Status> {
        let mut stream = request.into_inner();
        while let Some(data) = stream.message().await? {
            self.take(data)?;
        }
        Ok(Response::new(PushResponse {}))
    }
}
