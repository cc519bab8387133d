//! Faults: a router killed mid-stream and started again, a consumer that
//! stops reading, and a consumer that asks while a router is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use spillway_e2e::*;
use spillway_proto::v2::EnvelopeBatch;

/// Sends numbered logs at about `per_second` until `stop`; returns the count.
fn spawn_emitter(
    mut ingress: v2::ingress_client::IngressClient<tonic::transport::Channel>,
    per_second: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let batch = (0..per_second / 100)
                .map(|i| numbered_log("app", n + i))
                .collect();
            ingress
                .send(EnvelopeBatch { batch })
                .await
                .expect("the collector keeps serving");
            n += per_second / 100;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_router_comes_back_and_the_stream_resumes() {
    let certs = Certs::new();
    let mut router = Router::start(&certs, &[]);
    let mut rlp = Rlp::start(&certs, &[&router], &[]);
    // A small buffer so that the outage overflows it and drops are counted.
    let mut collector = Collector::start(&certs, &[&router], &["--buffer-per-core", "100"]);

    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(Duration::from_secs(10), "subscribed", || {
        router.subscriptions() >= 1
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let emitter = spawn_emitter(collector.client(&certs).await, 2000, stop.clone());
    let before = collect_until(&mut stream, Duration::from_secs(10), |g| g.len() >= 500).await;
    assert!(before.len() >= 500, "the stream flows before the fault");

    router.proc.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    router.proc.restart();
    let restarted = Instant::now();
    wait_port(router.port);

    // Anything numbered after the restart proves the whole path is back.
    let last_before = before.iter().filter_map(number_of).max().unwrap();
    let mut resumed = None;
    let mut after = Vec::new();
    while restarted.elapsed() < Duration::from_secs(15) {
        let got = collect_until(&mut stream, Duration::from_millis(200), |g| !g.is_empty()).await;
        if got
            .iter()
            .filter_map(number_of)
            .any(|n| n > last_before + 4000)
        {
            resumed = Some(restarted.elapsed());
            after.extend(got);
            break;
        }
    }
    let resumed = resumed.expect("the stream never resumed after the router came back");
    assert!(
        resumed < Duration::from_secs(5),
        "took {resumed:?} to resume"
    );

    stop.store(true, Ordering::Relaxed);
    let sent = emitter.await.unwrap();
    assert!(sent > 0);
    let dropped = metric(
        collector.http_port,
        "spillway_dropped_total{direction=\"ingress\"}",
    )
    .unwrap_or(0);
    assert!(
        dropped > 0,
        "the outage overflowed the collector's buffer; drops must be counted"
    );
    assert!(
        collector.proc.alive() && rlp.proc.alive() && router.proc.alive(),
        "no process exited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_stops_reading_does_not_slow_the_others() {
    let certs = Certs::new();
    let router = Router::start(&certs, &["--subscription-buffer", "3000"]);
    let rlp = Rlp::start(&certs, &[&router], &["--consumer-buffer", "3000"]);
    let collector = Collector::start(&certs, &[&router], &[]);

    // The stalled consumer subscribes and then never reads.
    let _stalled = rlp
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], ""))
        .await
        .unwrap();
    let mut reader = rlp
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(Duration::from_secs(10), "both subscribed", || {
        router.subscriptions() >= 2
    })
    .await;

    // 20,000 envelopes at about 5,000/s: a pace the reader keeps up with,
    // far more than the stalled consumer's buffers hold.
    const N: u64 = 20_000;
    let mut ingress = collector.client(&certs).await;
    let padding = "x".repeat(200);
    let sender = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for start in (0..N).step_by(100) {
            tick.tick().await;
            let batch = (start..start + 100)
                .map(|n| {
                    let mut e = numbered_log("app", n);
                    e.tags.insert("pad".into(), padding.clone());
                    e
                })
                .collect();
            ingress.send(EnvelopeBatch { batch }).await.unwrap();
        }
    });
    let got = collect_until(&mut reader, Duration::from_secs(30), |g| {
        g.len() as u64 >= N
    })
    .await;
    sender.await.unwrap();
    // Batches travel over several links per router and from per-core
    // diodes, so order across batches is not promised (nor is it by
    // Loggregator): check that each envelope arrived exactly once.
    let mut numbers: Vec<u64> = got.iter().filter_map(number_of).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (0..N).collect::<Vec<_>>(),
        "the reading consumer got each envelope exactly once"
    );

    eventually(
        Duration::from_secs(10),
        "the stalled consumer's losses are counted",
        || {
            metric(
                rlp.metrics_port,
                "spillway_dropped_total{direction=\"egress\",reason=\"consumer_slow\"}",
            )
            .unwrap_or(0)
                > 0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_collector_fails_over_to_the_live_router() {
    let certs = Certs::new();
    let mut r1 = Router::start(&certs, &[]);
    let r2 = Router::start(&certs, &[]);
    let rlp = Rlp::start(&certs, &[&r1, &r2], &[]);
    let collector = Collector::start(&certs, &[&r1, &r2], &[]);
    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(request("app", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(
        Duration::from_secs(10),
        "subscribed on both routers",
        || r1.subscriptions() >= 1 && r2.subscriptions() >= 1,
    )
    .await;

    r1.proc.kill();
    // Give the collector a moment to see the broken link.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut ingress = collector.client(&certs).await;
    const N: u64 = 2000;
    for start in (0..N).step_by(100) {
        let batch = (start..start + 100)
            .map(|n| numbered_log("app", n))
            .collect();
        ingress.send(EnvelopeBatch { batch }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = collect_until(&mut stream, Duration::from_secs(15), |g| {
        g.len() as u64 >= N
    })
    .await;
    let mut numbers: Vec<u64> = got.iter().filter_map(number_of).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(
        numbers.len() as u64,
        N,
        "everything sent after the failure went through the live router"
    );
    assert!(metric(r2.metrics_port, "spillway_ingress_total").unwrap() >= N);
}

/// The RLP answers a consumer once its request is subscribed on every live
/// router, so nothing sent after the answer is missed; a router that is
/// down does not keep the answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_is_answered_once_subscribed_on_every_live_router() {
    let certs = Certs::new();
    let live = [Router::start(&certs, &[]), Router::start(&certs, &[])];
    let mut dead = Router::start(&certs, &[]);
    dead.proc.kill();
    let rlp = Rlp::start(&certs, &[&live[0], &dead, &live[1]], &[]);
    for round in 0..5 {
        let consumer = rlp.logs_of(&certs, "app").await;
        for router in &live {
            assert_eq!(
                router.subscriptions(),
                1,
                "round {round}: answered before {} subscribed",
                router.addr()
            );
        }
        drop(consumer);
        eventually(Duration::from_secs(10), "unsubscribed", || {
            live.iter().all(|r| r.subscriptions() == 0)
        })
        .await;
    }
    // The dead router answered at once too (refused), so no answer
    // waited for it until --subscribe-wait ran out.
    let log = rlp.proc.log();
    assert!(!log.contains("was answered before routers"), "{log}");
}
