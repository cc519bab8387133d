//! The router's side of v2 Egress: each consumer call is a subscription in
//! the pub/sub, batched out of its own diode: the envelopes' bytes as the
//! collectors sent them, written unchanged.

use std::sync::Arc;

use spillway_plumbing::batch::BatchPolicy;
use spillway_plumbing::egress::{self, BatchStream, EgressService, Subscribe};
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::encoded::server::egress_server::EgressServer;
use spillway_proto::v2::EgressBatchRequest;
use tonic::Status;

use crate::pubsub::PubSub;

pub struct RouterEgress {
    pubsub: Arc<PubSub>,
    policy: BatchPolicy,
    metrics: Arc<SelfMetrics>,
}

impl RouterEgress {
    pub fn server(
        pubsub: Arc<PubSub>,
        policy: BatchPolicy,
        metrics: Arc<SelfMetrics>,
    ) -> EgressServer<EgressService<Self>> {
        EgressService::server(RouterEgress {
            pubsub,
            policy,
            metrics,
        })
    }
}

impl Subscribe for RouterEgress {
    /// Subscribes at once: the subscription is in the router's set before
    /// the consumer gets its answer.
    async fn subscribe(&self, request: EgressBatchRequest) -> Result<BatchStream, Status> {
        let handle = self
            .pubsub
            .subscribe(&request)
            .map_err(Status::invalid_argument)?;
        let diode = handle.subscription().diode.clone();
        Ok(egress::serve_diode(
            diode,
            handle,
            self.policy,
            self.metrics.clone(),
        ))
    }
}
