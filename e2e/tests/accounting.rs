//! No loss goes uncounted: through a router restart and a stopped
//! consumer, what a consumer received plus what the stages counted as
//! dropped is exactly what was sent, and nothing arrives twice.
//!
//! Envelopes go straight to the router's v2 Ingress (unary `Send`, which
//! answers once the router has published the batch), so every envelope
//! sent is known to have entered the router.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spillway_e2e::*;
use spillway_proto::v2::{EnvelopeBatch, ingress_client::IngressClient};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);

/// The router and RLP emit their own metrics as envelopes, which no
/// subscription here selects (they would count as `no_subscriber`): not
/// within these tests.
const QUIET: &[&str] = &["--metrics-interval", "600m"];

/// Sends logs numbered `from..to` of source `acct` in batches of 500, each
/// padded to `pad` more bytes (`line N xxx...`).
async fn send_range(ingress: &mut IngressClient<Channel>, from: u64, to: u64, pad: usize) {
    let mut n = from;
    while n < to {
        let end = (n + 500).min(to);
        let batch = (n..end)
            .map(|i| {
                let mut e = numbered_log("acct", i);
                if let Some(v2::envelope::Message::Log(l)) = &mut e.message
                    && pad > 0
                {
                    l.payload = format!("line {i} {}", "x".repeat(pad)).into();
                }
                e
            })
            .collect();
        ingress
            .send(EnvelopeBatch { batch })
            .await
            .expect("the router takes the batch");
        n = end;
    }
}

/// `spillway_dropped_total` summed over every label set of a `/metrics`
/// page that has `label` (e.g. `reason="no_subscriber"`), or all of them.
fn dropped(port: u16, label: Option<&str>) -> u64 {
    let page = http_get(port, "/metrics").unwrap_or_default();
    page.lines()
        .filter(|l| l.starts_with("spillway_dropped_total"))
        .filter(|l| label.is_none_or(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

fn signal(proc: &Proc, sig: i32) {
    let pid = proc.pid().expect("running") as i32;
    // SAFETY: kill(2) on a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// The numbers received, and how often each came.
#[derive(Default)]
struct Received(HashMap<u64, u32>);

impl Received {
    fn add(&mut self, n: u64) {
        *self.0.entry(n).or_default() += 1;
    }
    fn distinct(&self) -> u64 {
        self.0.len() as u64
    }
    fn duplicates(&self) -> u64 {
        self.0.values().map(|c| u64::from(c - 1)).sum()
    }
}

/// The router is killed and started again while the RLP cannot resubscribe
/// yet (it is stopped): what arrives at the new router with no subscriber
/// is counted there (`reason="no_subscriber"`), not lost silently.
#[tokio::test(flavor = "multi_thread")]
async fn a_router_restart_before_the_rlp_resubscribes_is_counted() {
    let certs = Certs::new();
    let mut router = Router::start(&certs, QUIET);
    let rlp = Rlp::start(&certs, &[&router], QUIET);
    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(request("acct", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(WAIT, "subscribed", || router.subscriptions() == 1).await;

    let mut received = Received::default();
    let mut ingress = IngressClient::new(channel(router.port, certs.client()).await);
    send_range(&mut ingress, 0, 1000, 0).await;
    for e in collect_until(&mut stream, WAIT, |g| g.len() >= 1000).await {
        received.add(number_of(&e).unwrap());
    }
    assert_eq!(received.distinct(), 1000, "all delivered before the fault");

    // The RLP stopped: it cannot resubscribe on the new router yet.
    signal(&rlp.proc, libc::SIGSTOP);
    router.proc.restart();
    wait_port(router.port);
    wait_port(router.metrics_port);
    let mut ingress = IngressClient::new(channel(router.port, certs.client()).await);
    send_range(&mut ingress, 1000, 2000, 0).await;
    assert_eq!(router.subscriptions(), 0);
    assert_eq!(
        dropped(router.metrics_port, Some("reason=\"no_subscriber\"")),
        1000,
        "every envelope without a subscriber is counted as such"
    );
    signal(&rlp.proc, libc::SIGCONT);
    eventually(WAIT, "resubscribed", || router.subscriptions() == 1).await;

    send_range(&mut ingress, 2000, 3000, 0).await;
    for e in collect_until(&mut stream, WAIT, |g| g.len() >= 1000).await {
        received.add(number_of(&e).unwrap());
    }
    let counted = dropped(router.metrics_port, None) + dropped(rlp.metrics_port, None);
    assert_eq!(received.duplicates(), 0);
    assert_eq!(
        received.distinct() + counted,
        3000,
        "delivered {} + counted {counted}",
        received.distinct()
    );
    assert_eq!(received.distinct(), 2000);
}

/// The RLP is killed and started again: what reaches the router while no
/// RLP is subscribed is counted there, and the consumer that comes back
/// gets everything after it subscribed again.
#[tokio::test(flavor = "multi_thread")]
async fn an_rlp_restart_is_counted_at_the_router() {
    let certs = Certs::new();
    let router = Router::start(&certs, QUIET);
    let mut rlp = Rlp::start(&certs, &[&router], QUIET);
    let mut ingress = IngressClient::new(channel(router.port, certs.client()).await);
    let mut received = Received::default();
    {
        let mut stream = rlp
            .client(&certs)
            .await
            .batched_receiver(request("acct", &[Kind::Log], ""))
            .await
            .unwrap()
            .into_inner();
        eventually(WAIT, "subscribed", || router.subscriptions() == 1).await;
        send_range(&mut ingress, 0, 1000, 0).await;
        for e in collect_until(&mut stream, WAIT, |g| g.len() >= 1000).await {
            received.add(number_of(&e).unwrap());
        }
        assert_eq!(received.distinct(), 1000, "all delivered before the fault");
    }

    rlp.proc.kill();
    eventually(WAIT, "the router saw the RLP go", || {
        router.subscriptions() == 0
    })
    .await;
    send_range(&mut ingress, 1000, 2000, 0).await;
    assert_eq!(
        dropped(router.metrics_port, Some("reason=\"no_subscriber\"")),
        1000
    );

    rlp.proc.restart();
    wait_port(rlp.port);
    let mut stream = rlp
        .client(&certs)
        .await
        .batched_receiver(request("acct", &[Kind::Log], ""))
        .await
        .unwrap()
        .into_inner();
    eventually(WAIT, "subscribed again", || router.subscriptions() == 1).await;
    send_range(&mut ingress, 2000, 3000, 0).await;
    for e in collect_until(&mut stream, WAIT, |g| g.len() >= 1000).await {
        received.add(number_of(&e).unwrap());
    }
    let counted = dropped(router.metrics_port, None) + dropped(rlp.metrics_port, None);
    assert_eq!(received.duplicates(), 0);
    assert_eq!((received.distinct(), counted), (2000, 1000));
}

/// A consumer stopped for 20 s (SIGSTOP) keeps its stream: the RLP drops its
/// oldest envelopes and counts them (`reason="consumer_slow"`), and once it
/// runs again the consumer gets the rest. Delivered + counted = sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_consumer_keeps_its_stream_and_every_loss_is_counted() {
    let certs = Certs::new();
    let router = Router::start(&certs, QUIET);
    let rlp = Rlp::start(&certs, &[&router], QUIET);
    let mut args: Vec<String> = [
        "tail".to_string(),
        "--rlp".into(),
        format!("localhost:{}", rlp.port),
        "--source-id".into(),
        "acct".into(),
        "--log".into(),
    ]
    .into();
    args.extend(certs.flags("client"));
    let mut tail = Proc::spawn_piped("spillway", &args);
    let received = Arc::new(Mutex::new(Received::default()));
    {
        let received = received.clone();
        let stdout = tail.take_stdout();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line
                    .split_once(" OUT line ")
                    .and_then(|(_, n)| n.split(' ').next()?.parse().ok())
                {
                    received.lock().unwrap().add(n);
                }
            }
        });
    }
    eventually(WAIT, "subscribed", || router.subscriptions() == 1).await;
    let mut ingress = IngressClient::new(channel(router.port, certs.client()).await);
    send_range(&mut ingress, 0, 100, 0).await;
    eventually(WAIT, "the stream flows", || {
        received.lock().unwrap().distinct() == 100
    })
    .await;

    signal(&tail, libc::SIGSTOP);
    // 30 MB: more than the consumer's buffer (10,000 envelopes) and every
    // HTTP/2 window and socket buffer between the RLP and the consumer.
    let sent = 30_100;
    send_range(&mut ingress, 100, sent, 1000).await;
    tokio::time::sleep(Duration::from_secs(20)).await; // the stop being tested, not a wait
    signal(&tail, libc::SIGCONT);

    let total = || {
        received.lock().unwrap().distinct()
            + dropped(router.metrics_port, None)
            + dropped(rlp.metrics_port, None)
    };
    eventually(WAIT, "everything delivered or counted", || total() >= sent).await;
    assert_eq!(received.lock().unwrap().duplicates(), 0);
    assert_eq!(total(), sent);
    assert!(
        dropped(rlp.metrics_port, Some("reason=\"consumer_slow\"")) > 0,
        "the stop overflowed the consumer's buffer"
    );
    assert!(tail.alive(), "tail kept its stream");
    assert!(
        !tail.log().contains("reconnecting"),
        "tail kept its stream: {}",
        tail.log()
    );
}
