//! Shard groups across several routers and several RLPs: consumers that
//! share a shard id split the stream without duplicates; a consumer with
//! another shard id gets everything; members with a deterministic name get
//! each gauge by the hash of its metric names, the same on every router.

use std::collections::HashMap;
use std::time::Duration;

use spillway_e2e::*;
use spillway_proto::v2::{self, EnvelopeBatch};

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

    // Each exactly once: sorted, not de-duplicated, so a copy shows.
    let mut all: Vec<u64> = got_t.iter().map(|e| number_of(e).unwrap()).collect();
    all.sort();
    assert!(
        all == (0..N).collect::<Vec<_>>(),
        "the other shard id receives everything exactly once: {} envelopes, {} distinct",
        all.len(),
        all.iter().collect::<std::collections::BTreeSet<_>>().len()
    );

    // Both routers carried part of the load.
    for r in [&r1, &r2] {
        assert!(metric(r.metrics_port, "spillway_ingress_total").unwrap() > N / 10);
    }
}

/// FNV-1a, 64 bits, continued from `h`.
fn fnv1a(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The documented pick for a gauge in a deterministic shard group of
/// `members` members (sorted by deterministic name): FNV-1a 64 over its
/// metric names, sorted, each followed by a NUL byte, modulo the members.
fn gauge_pick(names: &[&str], members: u64) -> usize {
    let mut names = names.to_vec();
    names.sort();
    let h = names.iter().fold(0xcbf2_9ce4_8422_2325, |h, n| {
        fnv1a(b"\0", fnv1a(n.as_bytes(), h))
    });
    (h % members) as usize
}

/// A gauge of `app` with metrics `names`, each with value `rep`.
fn gauge(names: &[String], rep: u32) -> v2::Envelope {
    v2::Envelope {
        timestamp: spillway_proto::now_nanos(),
        source_id: "app".into(),
        message: Some(v2::envelope::Message::Gauge(v2::Gauge {
            metrics: names
                .iter()
                .map(|n| {
                    let value = v2::GaugeValue {
                        unit: "1".into(),
                        value: f64::from(rep),
                    };
                    (n.clone(), value)
                })
                .collect(),
        })),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deterministic_shards_pick_each_gauge_by_its_name_hash_on_every_router() {
    const SETS: usize = 40;
    const REPS: u32 = 5;
    let certs = Certs::new();
    let r1 = Router::start(&certs, &[]);
    let r2 = Router::start(&certs, &[]);
    let rlp1 = Rlp::start(&certs, &[&r1, &r2], &[]);
    let rlp2 = Rlp::start(&certs, &[&r1, &r2], &[]);
    let collector = Collector::start(&certs, &[&r1, &r2], &[]);

    // Members "beta" (on RLP 1) and "alpha" (on RLP 2): sorted, alpha is
    // member 0 whichever RLP or router it comes through.
    let member = |name: &str| {
        let mut req = request("app", &[Kind::Gauge], "d");
        req.deterministic_name = name.into();
        req
    };
    let mut beta = rlp1
        .client(&certs)
        .await
        .batched_receiver(member("beta"))
        .await
        .unwrap()
        .into_inner();
    let mut alpha = rlp2
        .client(&certs)
        .await
        .batched_receiver(member("alpha"))
        .await
        .unwrap()
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "2 subscriptions on each router",
        || r1.subscriptions() == 2 && r2.subscriptions() == 2,
    )
    .await;

    // 40 metric-name sets (one or two names), each sent 5 times.
    let sets: Vec<Vec<String>> = (0..SETS)
        .map(|i| {
            let mut names = vec![format!("g{i:02}")];
            if i % 2 == 1 {
                names.push("load".into());
            }
            names
        })
        .collect();
    let mut ingress = collector.client(&certs).await;
    for rep in 0..REPS {
        let batch = sets.iter().map(|names| gauge(names, rep)).collect();
        ingress.send(EnvelopeBatch { batch }).await.unwrap();
    }
    let total = SETS * REPS as usize;
    let all_in = |a: &[v2::Envelope], b: &[v2::Envelope]| a.len() + b.len() >= total;
    let (mut got_alpha, mut got_beta) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !all_in(&got_alpha, &got_beta) && tokio::time::Instant::now() < deadline {
        let (a, b) = tokio::join!(
            collect_until(&mut alpha, Duration::from_millis(200), |_| false),
            collect_until(&mut beta, Duration::from_millis(200), |_| false),
        );
        got_alpha.extend(a);
        got_beta.extend(b);
    }
    // A copy would come right behind.
    let (a, b) = tokio::join!(
        collect_until(&mut alpha, Duration::from_millis(500), |_| false),
        collect_until(&mut beta, Duration::from_millis(500), |_| false),
    );
    got_alpha.extend(a);
    got_beta.extend(b);

    // Each (name set, repetition) exactly once, at the member the hash names.
    let mut seen: HashMap<(Vec<String>, u32), Vec<usize>> = HashMap::new();
    for (member, got) in [(0, &got_alpha), (1, &got_beta)] {
        for e in got {
            let Some(v2::envelope::Message::Gauge(g)) = &e.message else {
                panic!("not a gauge: {e:?}");
            };
            let mut names: Vec<String> = g.metrics.keys().cloned().collect();
            names.sort();
            let rep = g.metrics.values().next().unwrap().value as u32;
            seen.entry((names, rep)).or_default().push(member);
        }
    }
    for names in &sets {
        let mut sorted = names.clone();
        sorted.sort();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let want = gauge_pick(&refs, 2);
        for rep in 0..REPS {
            assert_eq!(
                seen.get(&(sorted.clone(), rep)),
                Some(&vec![want]),
                "gauge {names:?} #{rep}: the members it reached (0 alpha, 1 beta)"
            );
        }
    }
    assert_eq!(seen.len(), total, "nothing else arrived");
    assert!(
        !got_alpha.is_empty() && !got_beta.is_empty(),
        "the hash splits the sets: {} and {}",
        got_alpha.len(),
        got_beta.len()
    );
    // Both routers picked (each carried part of the gauges).
    for r in [&r1, &r2] {
        assert!(metric(r.metrics_port, "spillway_ingress_total").unwrap() > total as u64 / 10);
    }
}
