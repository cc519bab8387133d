//! Fan-in: one consumer's subscription on every router.
//!
//! For each consumer the RLP opens the *same* request on every router. A
//! shard group is therefore formed on each router from the subscriptions of
//! all RLPs, and since each envelope reaches exactly one router, consumers
//! sharing a shard id split the stream, across any number of routers and
//! RLPs, without duplicates.
//!
//! The routers are those [`crate::discovery`] knows now: a consumer is
//! subscribed on a router that appears and unsubscribed from one that goes.
//! A consumer gets its answer once every router known when it asked has
//! answered the request or left the set (or after `--subscribe-wait`), so
//! what a router gets after that reaches the consumer.
//! What arrives from the routers is checked and peeked, never decoded
//! ([`spillway_proto::encoded`]), and goes into the consumer's own diode as
//! the bytes it came as; only an envelope whose tags must move to the form
//! the consumer asked for (`use_preferred_tags`) is decoded and converted
//! ([`with_tags_for`]). A router that
//! stops answering is resubscribed with backoff until it returns or leaves
//! the set.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use spillway_plumbing::backoff::Backoff;
use spillway_plumbing::diode::Diode;
use spillway_plumbing::logging::RateLimited;
use spillway_plumbing::metrics::{Direction, SelfMetrics, reason};
use spillway_proto::encoded::WireEnvelope;
use spillway_proto::encoded::client::egress_client::EgressClient;
use spillway_proto::v2::{EgressBatchRequest, Envelope, Value, value::Data};
use tokio::sync::watch;
use tokio_util::task::AbortOnDropHandle;

use crate::discovery::{Router, RouterSet};

/// Largest batch accepted from a router.
const MAX_FROM_ROUTER_BYTES: usize = 16 * 1024 * 1024;

pub struct Fanin {
    routers: watch::Receiver<RouterSet>,
    metrics: Arc<SelfMetrics>,
    max_streams: usize,
    open: AtomicUsize,
    buffer: usize,
    /// How long a consumer's answer waits for the routers to answer.
    subscribe_wait: Duration,
}

/// Why a consumer could not subscribe.
#[derive(Debug)]
pub enum Refused {
    /// The request is malformed (no selectors, a selector without a type).
    Invalid(String),
    /// The RLP already serves its maximum number of streams.
    TooManyStreams(usize),
}

impl From<Refused> for tonic::Status {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Invalid(msg) => tonic::Status::invalid_argument(msg),
            Refused::TooManyStreams(max) => tonic::Status::resource_exhausted(format!(
                "this RLP already serves its maximum of {max} streams"
            )),
        }
    }
}

/// A consumer's subscription on every router; dropping it unsubscribes.
pub struct Consumer {
    pub diode: Arc<Diode<Bytes>>,
    /// Follows the router set; owns one task per router.
    task: AbortOnDropHandle<()>,
    fanin: Arc<Fanin>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
        // What the consumer did not take is lost with its stream.
        self.fanin.metrics.dropped_because(
            Direction::Egress,
            reason::STREAM_CLOSED,
            self.diode.len() as u64,
        );
        self.fanin.open.fetch_sub(1, Ordering::Relaxed);
        self.fanin.metrics.subscriptions.dec();
    }
}

impl Fanin {
    pub fn new(
        routers: watch::Receiver<RouterSet>,
        max_streams: usize,
        buffer: usize,
        subscribe_wait: Duration,
        metrics: Arc<SelfMetrics>,
    ) -> Arc<Self> {
        Arc::new(Fanin {
            routers,
            metrics,
            max_streams,
            open: AtomicUsize::new(0),
            buffer,
            subscribe_wait,
        })
    }

    /// The routers known now.
    pub fn routers(&self) -> RouterSet {
        self.routers.borrow().clone()
    }

    /// Validates `req` and subscribes it on every router, returning once
    /// each router known now has answered it, accepted or refused (a
    /// router subscribes a request before it answers), or has left the
    /// set, and at the latest after `subscribe_wait`. A deprecated
    /// `legacy_selector` is folded into `selectors` first (used only when
    /// `selectors` is empty, as Loggregator's RLP does), since
    /// Loggregator's routers read `selectors` alone.
    pub async fn subscribe(
        self: &Arc<Self>,
        mut req: EgressBatchRequest,
    ) -> Result<Consumer, Refused> {
        req.selectors = req.effective_selectors();
        req.legacy_selector = None;
        req.validate().map_err(Refused::Invalid)?;
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max_streams {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::TooManyStreams(self.max_streams));
        }
        self.metrics.subscriptions.inc();
        let diode = Arc::new(Diode::growing(self.buffer));
        // The set waited for is the one the task starts from, so a router
        // that leaves later is noted as gone.
        let mut watching = self.routers.clone();
        let first = watching.borrow_and_update().clone();
        let routers: Vec<SocketAddr> = first.keys().copied().collect();
        let (answered, mut answers) = watch::channel(HashSet::new());
        let consumer = Consumer {
            diode: diode.clone(),
            task: AbortOnDropHandle::new(tokio::spawn(follow_all(
                watching,
                first,
                req,
                diode,
                answered,
                self.metrics.clone(),
            ))),
            fanin: self.clone(),
        };
        let everywhere = |done: &HashSet<SocketAddr>| routers.iter().all(|r| done.contains(r));
        // Not Ok(Ok): the wait timed out (or the task ended, which it does
        // not; no answer would come then either).
        let answered_in_time = matches!(
            tokio::time::timeout(self.subscribe_wait, answers.wait_for(everywhere)).await,
            Ok(Ok(_))
        );
        if !answered_in_time && !self.subscribe_wait.is_zero() {
            let done = answers.borrow();
            let waiting: Vec<_> = routers.iter().filter(|r| !done.contains(r)).collect();
            tracing::info!(
                "a consumer was answered before routers {waiting:?} took its subscription \
                 (--subscribe-wait {:?}): it may miss what they get meanwhile",
                self.subscribe_wait
            );
        }
        Ok(consumer)
    }
}

/// The routers that answered a consumer's request, or left the set before
/// they did: none of them is waited for any more.
type Answered = watch::Sender<HashSet<SocketAddr>>;

/// Keeps `req` subscribed on every router of the set (`set` first, then
/// as `routers` changes), and notes in `answered` each router that answers
/// it or leaves.
async fn follow_all(
    mut routers: watch::Receiver<RouterSet>,
    mut set: RouterSet,
    req: EgressBatchRequest,
    diode: Arc<Diode<Bytes>>,
    answered: Answered,
    metrics: Arc<SelfMetrics>,
) {
    let answered = Arc::new(answered);
    let mut following: HashMap<SocketAddr, AbortOnDropHandle<()>> = HashMap::new();
    loop {
        // Dropping a router's task ends its stream: the router sees the
        // subscription close.
        following.retain(|addr, _| {
            let stays = set.contains_key(addr);
            if !stays {
                answered.send_modify(|done| {
                    done.insert(*addr);
                });
            }
            stays
        });
        for (addr, router) in set.iter() {
            following.entry(*addr).or_insert_with(|| {
                AbortOnDropHandle::new(tokio::spawn(follow(
                    router.clone(),
                    req.clone(),
                    diode.clone(),
                    answered.clone(),
                    metrics.clone(),
                )))
            });
        }
        if routers.changed().await.is_err() {
            // Discovery ended (the RLP is stopping): keep what we have.
            std::future::pending::<()>().await;
        }
        set = routers.borrow_and_update().clone();
    }
}

/// Keeps `req` subscribed on one router, until the task is aborted; notes
/// the router in `answered` when it first answers.
async fn follow(
    router: Arc<Router>,
    req: EgressBatchRequest,
    diode: Arc<Diode<Bytes>>,
    answered: Arc<Answered>,
    metrics: Arc<SelfMetrics>,
) {
    let mut first_answer = true;
    let mut backoff = Backoff::for_peers();
    let mut complaints = RateLimited::new(Duration::from_secs(10));
    let preferred = req.use_preferred_tags;
    loop {
        let mut client = EgressClient::new(router.channel.clone())
            .max_decoding_message_size(MAX_FROM_ROUTER_BYTES);
        let answer = client.batched_receiver(req.clone()).await;
        if std::mem::take(&mut first_answer) {
            answered.send_modify(|done| {
                done.insert(router.addr);
            });
        }
        match answer {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) => {
                            backoff.reset();
                            metrics.ingress.inc_by(batch.0.len() as u64);
                            let mut dropped = 0;
                            for e in batch.0 {
                                dropped += u64::from(diode.push(with_tags_for(e, preferred)));
                            }
                            metrics.dropped_because(
                                Direction::Egress,
                                reason::CONSUMER_SLOW,
                                dropped,
                            );
                        }
                        Ok(None) => {
                            complaints.warn(|| {
                                format!("router {router} ended the subscription; resubscribing")
                            });
                            break;
                        }
                        Err(status) => {
                            complaints.warn(|| {
                                format!(
                                    "subscription on router {router} failed: {}",
                                    status.message()
                                )
                            });
                            break;
                        }
                    }
                }
            }
            Err(status) => complaints
                .warn(|| format!("cannot subscribe on router {router}: {}", status.message())),
        }
        backoff.wait().await;
    }
}

/// The bytes a consumer gets: as they came from the router, unless its
/// tags must move to the side the consumer asked for; only then is the
/// envelope decoded, converted ([`convert_tags`]) and encoded again.
pub fn with_tags_for(e: WireEnvelope, use_preferred_tags: bool) -> Bytes {
    let converts = if use_preferred_tags {
        e.has_deprecated_tags()
    } else {
        e.has_tags()
    };
    if !converts {
        return e.into_bytes();
    }
    let mut envelope = e.decode();
    convert_tags(&mut envelope, use_preferred_tags);
    Bytes::from(prost::Message::encode_to_vec(&envelope))
}

/// Tags as Loggregator's RLP converges them. With `use_preferred_tags`,
/// every tag travels in `tags`: deprecated tags are written over them as
/// text (a value-less one is left out). Without it, every tag travels in
/// `deprecated_tags`: tags are written over them as `Value.text`, so a tag
/// that was both keeps the text of `tags`.
pub fn convert_tags(e: &mut Envelope, use_preferred_tags: bool) {
    if use_preferred_tags {
        for (k, v) in e.deprecated_tags.drain() {
            let text = match v.data {
                Some(Data::Text(t)) => t,
                Some(Data::Integer(i)) => i.to_string(),
                Some(Data::Decimal(d)) => d.to_string(),
                None => continue,
            };
            e.tags.insert(k, text);
        }
    } else {
        for (k, v) in e.tags.drain() {
            e.deprecated_tags.insert(
                k,
                Value {
                    data: Some(Data::Text(v)),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_envelopes_whose_tags_move_are_converted() {
        let mut tagged = Envelope::log(1, "a", "0", "x", spillway_proto::v2::log::Type::Out);
        tagged.tags.insert("k".into(), "v".into());
        let mut old = tagged.clone();
        old.tags.clear();
        old.deprecated_tags.insert(
            "n".into(),
            Value {
                data: Some(Data::Integer(5)),
            },
        );
        for (e, preferred, converts) in [
            (&tagged, true, false),
            (&tagged, false, true),
            (&old, true, true),
            (&old, false, false),
        ] {
            let wire = WireEnvelope::from_envelope(e);
            let sent = wire.bytes().clone();
            let got = with_tags_for(wire, preferred);
            let mut expected = e.clone();
            convert_tags(&mut expected, preferred);
            assert_eq!(
                <Envelope as prost::Message>::decode(got.clone()).unwrap(),
                expected
            );
            assert_eq!(
                got.as_ptr() != sent.as_ptr(),
                converts,
                "{e:?} preferred={preferred}"
            );
        }
    }

    #[test]
    fn tags_move_to_where_the_consumer_wants_them() {
        let mut e = Envelope::default();
        e.tags.insert("a".into(), "1".into());
        e.deprecated_tags.insert(
            "n".into(),
            Value {
                data: Some(Data::Integer(5)),
            },
        );
        convert_tags(&mut e, true);
        assert_eq!(e.tags.len(), 2);
        assert_eq!(e.tags["n"], "5");
        assert!(e.deprecated_tags.is_empty());

        convert_tags(&mut e, false);
        assert!(e.tags.is_empty());

        // A tag that is both: the side being converted into wins.
        let typed = Value {
            data: Some(Data::Integer(42)),
        };
        let mut both = Envelope::default();
        both.tags.insert("b".into(), "42".into());
        both.deprecated_tags.insert("b".into(), typed.clone());
        convert_tags(&mut both, false);
        assert_eq!(
            both.deprecated_tags["b"],
            Value {
                data: Some(Data::Text("42".into()))
            }
        );
        let mut both = Envelope::default();
        both.tags.insert("b".into(), "tag".into());
        both.deprecated_tags.insert("b".into(), typed);
        convert_tags(&mut both, true);
        assert_eq!(both.tags["b"], "42");
        assert_eq!(
            e.deprecated_tags["a"],
            Value {
                data: Some(Data::Text("1".into()))
            }
        );
        assert_eq!(
            e.deprecated_tags["n"],
            Value {
                data: Some(Data::Text("5".into()))
            }
        );
    }
}
