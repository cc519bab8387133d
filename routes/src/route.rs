//! One running route: its tap on the hub, and a task that adapts the
//! events, dials the receiver and writes to it.
//!
//! The task never gives up: a receiver that is down or refuses is redialled
//! with exponential backoff and jitter, forever, while the route's own
//! diode drops (and counts) its oldest events. Failures are logged at a
//! bounded rate.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use prometheus_client::metrics::counter::Counter;
use spillway_plumbing::backoff::Backoff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::adapter::{self, Adapter};
use crate::hub::Tap;
use crate::spec::{Options, RouteSpec};
use crate::transport::{self, Framing, Link, Transport};

/// Events a route holds before it drops its oldest (option `buffer=`).
pub const DEFAULT_BUFFER: usize = 10_000;
/// The largest `buffer=`: events are shared between routes, but one route
/// may hold this many (up to 16 KiB each) while its receiver is down.
pub const MAX_BUFFER: usize = 100_000;
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that takes longer means a stuck receiver: redial.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two dials: a receiver that comes back is
/// written to again within this long.
const REDIAL_MAX: Duration = Duration::from_secs(5);
/// Bytes of framing buffer a route keeps between rounds.
const BUF_KEEP: usize = 256 << 10;
/// Events adapted and written per round.
const BATCH: usize = 512;
/// Events a route with templates adapts per trip to the blocking pool: a
/// deleted route stops after at most this many renders.
const TEMPLATE_BATCH: usize = 32;
/// A route logs a failing receiver at most this often.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// A route checked and built, not yet running.
pub struct Parts {
    pub matcher: crate::filter::Matcher,
    pub include_metrics: bool,
    pub buffer: usize,
    adapter: Box<dyn Adapter>,
    transport: Arc<dyn Transport>,
    framing: Option<Framing>,
}

/// Checks `spec` and builds its adapters and transport; the error names
/// what is wrong, for a 400 or a start-up error.
pub fn build(spec: &RouteSpec) -> Result<Parts, String> {
    crate::spec::check_address(&spec.address)?;
    let scheme = spec.adapter.as_str();
    let names: Vec<&str> = scheme.split('+').collect();
    let (adapters, transport_name) = match names.split_last() {
        Some((last, rest)) if transport::find(last).is_some() => (rest, *last),
        Some((last, _)) if adapter::find(last).is_none() => {
            return Err(format!(
                "unknown adapter or transport {last:?} in {scheme:?} (adapters: {}; transports: {})",
                adapter::names(),
                transport::names()
            ));
        }
        _ => (&names[..], transport::DEFAULT),
    };
    let kind = transport::find(transport_name).ok_or_else(|| {
        format!(
            "transport {transport_name:?} is not compiled in (transports: {})",
            transport::names()
        )
    })?;
    let mut options = Options::new(&spec.options);
    let buffer = options.take_bounded(
        "buffer",
        "a number of events",
        1..=MAX_BUFFER,
        DEFAULT_BUFFER,
    )?;
    let include_metrics = match options.take("include") {
        None => false,
        Some(v) if v == "metrics" => true,
        Some(v) => {
            return Err(format!(
                "option include={v:?}: only include=metrics is known"
            ));
        }
    };
    let (adapter, default_framing) = adapter::build_chain(adapters, &mut options)?;
    let framing = Framing::option(&mut options)?.unwrap_or(default_framing);
    let transport = (kind.build)(&mut options)?;
    options.finish(scheme)?;
    Ok(Parts {
        matcher: spec.filters.compile()?,
        include_metrics,
        buffer,
        adapter,
        transport,
        framing: kind.stream.then_some(framing),
    })
}

impl Parts {
    /// The route's adapter chain, and its framing when the transport is a
    /// byte stream: what turns events into bytes on the wire, without
    /// the transport (for the fuzz targets and tests).
    pub fn into_adapter(self) -> (Box<dyn Adapter>, Option<Framing>) {
        (self.adapter, self.framing)
    }
}

/// What a route counts about itself (also on `/metrics`).
#[derive(Clone, Default)]
pub struct Counters {
    /// Messages written to the receiver.
    pub sent: Counter,
    /// Events dropped by the route's full diode.
    pub dropped: Counter,
    /// Messages cut to the datagram limit.
    pub truncated: Counter,
    /// Messages a receiver refused (a UDP port with nothing behind it).
    pub refused: Counter,
}

/// The state a route shows in the routes API.
#[derive(Default)]
pub struct Status {
    pub connected: AtomicBool,
}

/// Runs `parts` for route `id` until the task is aborted.
pub async fn run(
    id: String,
    address: String,
    mut parts: Parts,
    tap: Arc<Tap>,
    counters: Counters,
    status: Arc<Status>,
) {
    let off_runtime = parts.adapter.renders_templates();
    let mut failures = Failures::new(&id, &address);
    let mut backoff = Backoff::new(Duration::from_millis(100), REDIAL_MAX);
    let mut link: Option<Link> = None;
    let mut msgs: Vec<Bytes> = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if msgs.is_empty() {
            if tap.is_empty() {
                match parts.adapter.deadline() {
                    Some(at) => {
                        tokio::select! {
                            _ = tap.ready() => {}
                            _ = tokio::time::sleep_until(at.into()) => {}
                        }
                    }
                    None => tap.ready().await,
                }
            }
            if off_runtime {
                // Templates: on the blocking pool, a few events at a time.
                // A route deleted meanwhile stops after these.
                let (adapter, tap) = (
                    std::mem::replace(&mut parts.adapter, Box::new(Idle)),
                    tap.clone(),
                );
                let mut out = std::mem::take(&mut msgs);
                let adapted = tokio::task::spawn_blocking(move || {
                    let mut adapter = adapter;
                    adapt(&mut *adapter, &tap, &mut out, TEMPLATE_BATCH);
                    (adapter, out)
                })
                .await;
                match adapted {
                    Ok((adapter, out)) => (parts.adapter, msgs) = (adapter, out),
                    Err(e) => {
                        tracing::error!("route {id}: adapting events failed, route stopped: {e}");
                        return;
                    }
                }
            } else {
                adapt(&mut *parts.adapter, &tap, &mut msgs, BATCH);
            }
            if msgs.is_empty() {
                continue;
            }
        }
        if let Some(Link::Stream(conn)) = &mut link
            && peer_closed(conn)
        {
            link = None;
        }
        let Some(current) = &mut link else {
            status.connected.store(false, Ordering::Relaxed);
            match tokio::time::timeout(DIAL_TIMEOUT, parts.transport.dial(&address)).await {
                Ok(Ok(l)) => {
                    link = Some(l);
                    status.connected.store(true, Ordering::Relaxed);
                    failures.recovered();
                }
                Ok(Err(e)) => {
                    failures.failed("dial", &e);
                    backoff.wait().await;
                }
                Err(_) => {
                    failures.failed("dial", &io::Error::other("timed out"));
                    backoff.wait().await;
                }
            }
            continue;
        };
        match current {
            Link::Datagram { socket, max_bytes } => {
                for m in msgs.drain(..) {
                    let wire = if m.len() > *max_bytes {
                        counters.truncated.inc();
                        &m[..*max_bytes]
                    } else {
                        &m[..]
                    };
                    match socket.send(wire).await {
                        Ok(_) => {
                            counters.sent.inc();
                        }
                        Err(e) => {
                            // ICMP port unreachable from an earlier datagram:
                            // nothing listens. Count it; keep going.
                            counters.refused.inc();
                            failures.failed("send", &e);
                        }
                    }
                }
                backoff.reset();
            }
            Link::Stream(conn) => {
                buf.clear();
                let framing = parts.framing.unwrap_or(Framing::Lf);
                for m in &msgs {
                    framing.frame(m, &mut buf);
                }
                let write = async {
                    conn.write_all(&buf).await?;
                    conn.flush().await
                };
                match tokio::time::timeout(WRITE_TIMEOUT, write).await {
                    Ok(Ok(())) => {
                        counters.sent.inc_by(msgs.len() as u64);
                        msgs.clear();
                        backoff.reset();
                        // A burst of long messages leaves no large buffer
                        // behind on an idle route.
                        if buf.capacity() > BUF_KEEP {
                            buf = Vec::new();
                        }
                    }
                    // Keep the messages: they go out on the next link.
                    Ok(Err(e)) => {
                        failures.failed("write", &e);
                        link = None;
                    }
                    Err(_) => {
                        failures.failed("write", &io::Error::other("timed out"));
                        link = None;
                    }
                }
            }
        }
    }
}

/// Adapts up to `max` events from `tap` into `msgs`, and what the adapter
/// holds back that is due.
fn adapt(adapter: &mut dyn Adapter, tap: &Tap, msgs: &mut Vec<Bytes>, max: usize) {
    for _ in 0..max {
        let Some(event) = tap.pop() else { break };
        adapter.write(&event, msgs);
    }
    adapter.flush(Some(Instant::now()), msgs);
}

/// Stands in for a route's adapter while it works on the blocking pool.
struct Idle;

impl Adapter for Idle {
    fn write(&mut self, _event: &crate::event::Event, _out: &mut Vec<Bytes>) {}
}

/// Whether a stream's receiver has closed it. Syslog receivers never send
/// anything, so a readable socket means end of file or an error. Checked
/// before each write, so that a stopped receiver is redialled instead of
/// fed into a dead socket.
fn peer_closed(conn: &mut std::pin::Pin<Box<dyn transport::Conn>>) -> bool {
    let mut byte = [0u8; 64];
    match conn.read(&mut byte).now_or_never() {
        None => false,
        Some(Ok(0)) | Some(Err(_)) => true,
        Some(Ok(_)) => false,
    }
}

/// Logs a failing receiver at most every [`LOG_EVERY`].
struct Failures {
    what: String,
    count: u64,
    last_logged: Option<Instant>,
}

impl Failures {
    fn new(id: &str, address: &str) -> Self {
        Failures {
            what: format!("route {id} ({address})"),
            count: 0,
            last_logged: None,
        }
    }

    fn failed(&mut self, action: &str, e: &io::Error) {
        self.count += 1;
        if self.last_logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                "{}: {action} failed: {e} ({} failure(s) so far; retrying with backoff)",
                self.what,
                self.count
            );
            self.last_logged = Some(Instant::now());
        }
    }

    fn recovered(&mut self) {
        if self.count > 0 {
            tracing::info!(
                "{}: connected again after {} failure(s)",
                self.what,
                self.count
            );
        } else {
            tracing::debug!("{}: connected", self.what);
        }
        self.count = 0;
        self.last_logged = None;
    }
}
