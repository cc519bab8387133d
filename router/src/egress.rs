//! The v2 Egress gRPC service of the router: each call is a subscription
//! whose envelopes are batched out of its own diode.

use std::sync::Arc;

use spillway_plumbing::batch::BatchPolicy;
use spillway_plumbing::egress::{self, BatchStream, EnvelopeStream};
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::v2::egress_server::{Egress, EgressServer};
use spillway_proto::v2::{EgressBatchRequest, EgressRequest};
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

    fn open(&self, req: &EgressBatchRequest) -> Result<BatchStream, Status> {
        let handle = self
            .pubsub
            .subscribe(req)
            .map_err(Status::invalid_argument)?;
        let diode = handle.subscription().diode.clone();
        Ok(egress::serve_diode(
            diode,
            handle,
            self.policy,
            self.metrics.clone(),
            Arc::unwrap_or_clone,
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
            self.open(&request.into_inner().into())?,
        )))
    }

    async fn batched_receiver(
        &self,
        request: Request<EgressBatchRequest>,
    ) -> Result<Response<Self::BatchedReceiverStream>, Status> {
        Ok(Response::new(self.open(request.get_ref())?))
    }
}
