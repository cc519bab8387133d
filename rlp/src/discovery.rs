//! Router discovery: which routers the RLP reads from, kept up to date.
//!
//! Every `--router HOST:PORT` is a name that may stand for several routers
//! (in Kubernetes, the headless Service of the router StatefulSet has one A
//! record per ready router). The name is resolved again every
//! `--router-resolve-interval`, and each address it resolves to is a router
//! of its own. The current set is published on a [`watch`] channel;
//! [`crate::fanin`] subscribes every consumer on each router of the set and
//! follows its changes.
//!
//! A failed lookup keeps the addresses the name had before: a DNS outage
//! must not unsubscribe every consumer from routers that still run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use spillway_plumbing::grpc::{self, HostPort};
use spillway_plumbing::logging::RateLimited;
use spillway_plumbing::tls::Tls;
use tokio::sync::watch;
use tonic::transport::Channel;

/// One router: an address of a `--router` name.
#[derive(Debug)]
pub struct Router {
    /// The name it was found under; its certificate must be valid for it.
    pub name: HostPort,
    pub addr: SocketAddr,
    /// Dials lazily and redials by itself.
    pub channel: Channel,
}

impl std::fmt::Display for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.name.host == self.addr.ip().to_string() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} ({})", self.name, self.addr)
        }
    }
}

/// The routers known now, by address.
pub type RouterSet = Arc<BTreeMap<SocketAddr, Arc<Router>>>;

/// Resolves `names` once (so that the RLP starts with its routers), then
/// every `interval` in a background task. `known` counts the routers.
pub async fn start(
    names: Vec<HostPort>,
    tls: Tls,
    interval: Duration,
    known: Gauge,
) -> watch::Receiver<RouterSet> {
    let mut resolver = Resolver {
        names,
        tls,
        last: HashMap::new(),
        current: RouterSet::default(),
        complaints: RateLimited::new(Duration::from_secs(60)),
    };
    let first = resolver.resolve().await;
    known.set(first.len() as i64);
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let next = resolver.resolve().await;
            let changed = {
                let now = tx.borrow();
                now.keys().ne(next.keys())
            };
            if changed {
                log_change(&tx.borrow(), &next);
                known.set(next.len() as i64);
                if tx.send(next).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

struct Resolver {
    names: Vec<HostPort>,
    tls: Tls,
    /// Each name's addresses at its last successful lookup.
    last: HashMap<HostPort, BTreeSet<SocketAddr>>,
    /// The routers of the last round, whose channels are reused.
    current: RouterSet,
    complaints: RateLimited,
}

impl Resolver {
    /// The routers all names stand for now. Channels of routers already
    /// known are kept (with their connections).
    async fn resolve(&mut self) -> RouterSet {
        let mut set = BTreeMap::new();
        for name in &self.names {
            match lookup(name).await {
                Ok(addrs) => {
                    self.last.insert(name.clone(), addrs);
                }
                Err(e) => self.complaints.warn(|| {
                    format!("cannot resolve router {name} ({e}); keeping its last addresses")
                }),
            }
            for addr in self.last.get(name).into_iter().flatten() {
                set.entry(*addr).or_insert((name, *addr));
            }
        }
        let mut routers = BTreeMap::new();
        for (addr, (name, _)) in set {
            if let Some(known) = self.current.get(&addr).filter(|r| &r.name == name) {
                routers.insert(addr, known.clone());
                continue;
            }
            match grpc::channel_at(name, addr, &self.tls) {
                Ok(channel) => {
                    routers.insert(
                        addr,
                        Arc::new(Router {
                            name: name.clone(),
                            addr,
                            channel,
                        }),
                    );
                }
                Err(e) => self.complaints.warn(|| e),
            }
        }
        self.current = routers.into();
        self.current.clone()
    }
}

async fn lookup(name: &HostPort) -> std::io::Result<BTreeSet<SocketAddr>> {
    let addrs: BTreeSet<_> = tokio::net::lookup_host((name.host.as_str(), name.port))
        .await?
        .collect();
    if addrs.is_empty() {
        return Err(std::io::Error::other("no addresses"));
    }
    Ok(addrs)
}

fn log_change(before: &RouterSet, after: &RouterSet) {
    for r in after.values().filter(|r| !before.contains_key(&r.addr)) {
        tracing::info!("router {r} appeared; subscribing every consumer on it");
    }
    for r in before.values().filter(|r| !after.contains_key(&r.addr)) {
        tracing::info!("router {r} is gone from DNS; unsubscribing from it");
    }
}
