//! Shard groups across several routers and several RLPs: consumers that
//! share a shard id split the stream without duplicates; a consumer with
//! another shard id gets everything.

use std::collections::HashMap;
use std::time::Duration;

use spillway_e2e::*;
use spillway_proto::v2::EnvelopeBatch;

const N: u64 = 4000;

#[tokio::test(flavor = "multi_thread")]
async fn two_routers_two_rlps_split_a_shard_group_exactly_once() {
    let certs = Certs::new();
    let r1 = Router::start(&certs, &[]);
    let r2 = Router::start(&certs, &[]);
    let rlp1 = Rlp::start(&certs, &[&r1, &r2], &[]);
    let rlp2 = Rlp::start(&certs, &[&r1, &r2], &[]);
    let collector = Collector::start(&certs, &[&r1, &r2], &[]);

    // Two members of shard "s", one on each RLP; one consumer in shard "t".
    let mut a = rlp1
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], "s"))
        .await
        .unwrap()
        .into_inner();
    let mut b = rlp2
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], "s"))
        .await
        .unwrap()
        .into_inner();
    let mut t = rlp1
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], "t"))
        .await
        .unwrap()
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "3 subscriptions on each router",
        || r1.subscriptions() == 3 && r2.subscriptions() == 3,
    )
    .await;

    let mut ingress = collector.client(&certs).await;
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        let batch = chunk.iter().map(|n| numbered_log("app", *n)).collect();
        ingress.send(EnvelopeBatch { batch }).await.unwrap();
    }

    let (got_a, got_b, got_t) = tokio::join!(
        collect_until(&mut a, Duration::from_secs(10), |_| false),
        collect_until(&mut b, Duration::from_secs(10), |_| false),
        collect_until(&mut t, Duration::from_secs(20), |g| g.len() as u64 >= N),
    );

    let mut seen: HashMap<u64, u32> = HashMap::new();
    for e in got_a.iter().chain(&got_b) {
        *seen.entry(number_of(e).unwrap()).or_default() += 1;
    }
    assert_eq!(
        seen.len() as u64,
        N,
        "every envelope reached the shard group"
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "no envelope reached both members"
    );
    let share = got_a.len() as f64 / N as f64;
    assert!(
        (0.35..=0.65).contains(&share),
        "unfair split: {} vs {}",
        got_a.len(),
        got_b.len()
    );

    let mut all: Vec<u64> = got_t.iter().map(|e| number_of(e).unwrap()).collect();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len() as u64,
        N,
        "the other shard id receives everything"
    );

    // Both routers carried part of the load.
    for r in [&r1, &r2] {
        assert!(metric(r.metrics_port, "spillway_ingress_total").unwrap() > N / 10);
    }
}
