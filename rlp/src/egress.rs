//! The RLP's side of v2 Egress for consumers: each call is fanned in from
//! every router into the consumer's diode, then batched out of it.

use std::sync::Arc;

use spillway_plumbing::batch::BatchPolicy;
use spillway_plumbing::egress::{self, BatchStream, EgressService, Subscribe};
use spillway_plumbing::metrics::SelfMetrics;
use spillway_proto::encoded::server::egress_server::EgressServer;
use spillway_proto::v2::EgressBatchRequest;
use tonic::Status;

use crate::fanin::Fanin;

pub struct RlpEgress {
    fanin: Arc<Fanin>,
    policy: BatchPolicy,
    metrics: Arc<SelfMetrics>,
}

impl RlpEgress {
    pub fn server(
        fanin: Arc<Fanin>,
        policy: BatchPolicy,
        metrics: Arc<SelfMetrics>,
    ) -> EgressServer<EgressService<Self>> {
        EgressService::server(RlpEgress {
            fanin,
            policy,
            metrics,
        })
    }
}

impl Subscribe for RlpEgress {
    async fn subscribe(&self, request: EgressBatchRequest) -> Result<BatchStream, Status> {
        let consumer = self.fanin.subscribe(request).await?;
        let diode = consumer.diode.clone();
        Ok(egress::serve_diode(
            diode,
            consumer,
            self.policy,
            self.metrics.clone(),
        ))
    }
}
