//! The RLP's v2 Egress gRPC service for consumers.

use std::sync::Arc;

use spillway_plumbing::batch::BatchPolicy;
use spillway_plumbing::egress::{self, BatchStream, EnvelopeStream};
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::v2::egress_server::{Egress, EgressServer};
use spillway_proto::v2::{EgressBatchRequest, EgressRequest};
use tonic::{Request, Response, Status};

use crate::fanin::Fanin;

pub struct EgressService {
    fanin: Arc<Fanin>,
    policy: BatchPolicy,
    metrics: Arc<SelfMetrics>,
}

impl EgressService {
    pub fn server(
        fanin: Arc<Fanin>,
        policy: BatchPolicy,
        metrics: Arc<SelfMetrics>,
    ) -> EgressServer<Self> {
        EgressServer::new(EgressService {
            fanin,
            policy,
            metrics,
        })
    }

    fn open(&self, req: EgressBatchRequest) -> Result<BatchStream, Status> {
        let consumer = self.fanin.subscribe(req)?;
        let diode = consumer.diode.clone();
        Ok(egress::serve_diode(
            diode,
            consumer,
            self.policy,
            self.metrics.clone(),
            |e| e,
        ))
    }
}

#[tonic::async_trait]
impl Egress for EgressService {
    type ReceiverStream = EnvelopeStream;
    type BatchedReceiverStream = BatchStream;

    async fn receiver(
        &self,
        request: Request<EgressRequest>,
    ) -> Result<Response<Self::ReceiverStream>, Status> {
        Ok(Response::new(egress::one_by_one(
            self.open(request.into_inner().into())?,
        )))
    }

    async fn batched_receiver(
        &self,
        request: Request<EgressBatchRequest>,
    ) -> Result<Response<Self::BatchedReceiverStream>, Status> {
        Ok(Response::new(self.open(request.into_inner())?))
    }
}
