//! The hub hands every container line (and, for routes that ask, every
//! metric) to the routes and `/logs` streams that want it.
//!
//! Each of them is a [`Tap`]: filters plus a diode of its own. Publishing
//! never waits: a tap that is not drained loses its own oldest events,
//! counted on its `dropped` counter, and nothing else notices.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::event::Event;
use crate::filter::Matcher;

/// One route's or stream's view of the hub.
pub struct Tap {
    matcher: Matcher,
    metrics: bool,
    diode: Lossy<Arc<Event>>,
    dropped: Counter,
}

/// A diode that takes memory only for what it holds: a lock-free queue of
/// small blocks, allocated as events come and freed as they go, bounded
/// by a count. (A preallocated ring of `buffer=` slots cost every idle
/// route 160 KiB.) Full, a push drops the oldest event.
struct Lossy<T> {
    queue: SegQueue<T>,
    len: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
    ready: Notify,
}

impl<T> Lossy<T> {
    fn new(capacity: usize) -> Self {
        Lossy {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Adds `item`; `true` when the oldest was dropped to make room.
    fn push(&self, item: T) -> bool {
        self.queue.push(item);
        let mut dropped = false;
        if self.len.fetch_add(1, Ordering::AcqRel) >= self.capacity && self.queue.pop().is_some() {
            self.len.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            dropped = true;
        }
        self.ready.notify_one();
        dropped
    }

    fn pop(&self) -> Option<T> {
        let item = self.queue.pop()?;
        self.len.fetch_sub(1, Ordering::AcqRel);
        Some(item)
    }

    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    async fn ready(&self) {
        self.ready.notified().await
    }
}

impl Tap {
    /// A tap taking container lines that pass `matcher` (and metric
    /// envelopes from ingress when `metrics`), holding up to `capacity`
    /// events; what a full diode drops is counted on `dropped`.
    pub fn new(matcher: Matcher, metrics: bool, capacity: usize, dropped: Counter) -> Arc<Tap> {
        Arc::new(Tap {
            matcher,
            metrics,
            diode: Lossy::new(capacity),
            dropped,
        })
    }

    /// Whether this tap takes metric envelopes at all.
    pub fn takes_metrics(&self) -> bool {
        self.metrics
    }

    fn wants(&self, event: &Event) -> bool {
        let kind_ok = if event.log().is_some() {
            event.container.is_some()
        } else {
            self.metrics
        };
        kind_ok && self.matcher.matches(event)
    }

    fn offer(&self, event: &Arc<Event>) {
        if self.wants(event) && self.diode.push(event.clone()) {
            self.dropped.inc();
        }
    }

    /// The next event, if any.
    pub fn pop(&self) -> Option<Arc<Event>> {
        self.diode.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.diode.is_empty()
    }

    /// Waits for a push since the last wait (wake-ups coalesce: check
    /// [`Tap::is_empty`] after).
    pub async fn ready(&self) {
        self.diode.ready().await
    }

    /// Events this tap dropped because it was full.
    pub fn dropped(&self) -> u64 {
        self.diode.dropped()
    }
}

/// All taps; read on every event, written when routes or streams come and
/// go.
#[derive(Default)]
pub struct Hub {
    taps: ArcSwap<Taps>,
    writer: Mutex<()>,
}

/// The taps at one moment, and whether any of them takes metrics.
#[derive(Clone, Default)]
struct Taps {
    all: Vec<Arc<Tap>>,
    metrics: bool,
}

impl Taps {
    fn with(all: Vec<Arc<Tap>>) -> Arc<Taps> {
        let metrics = all.iter().any(|t| t.takes_metrics());
        Arc::new(Taps { all, metrics })
    }
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Whether nobody listens (publishing is then free).
    pub fn is_idle(&self) -> bool {
        self.taps.load().all.is_empty()
    }

    /// Offers the event `make` builds to every tap; `make` runs only when
    /// there is a tap.
    pub fn publish(&self, make: impl FnOnce() -> Event) {
        let taps = self.taps.load();
        if !taps.all.is_empty() {
            Self::offer(&taps, make());
        }
    }

    /// [`Hub::publish`] for an envelope apps sent (a metric): `make` runs
    /// only when a tap takes metrics (`include=metrics`).
    pub fn publish_metric(&self, make: impl FnOnce() -> Event) {
        let taps = self.taps.load();
        if taps.metrics {
            Self::offer(&taps, make());
        }
    }

    fn offer(taps: &Taps, event: Event) {
        let event = Arc::new(event);
        for tap in &taps.all {
            tap.offer(&event);
        }
    }

    pub fn attach(&self, tap: Arc<Tap>) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut taps = self.taps.load().all.clone();
        taps.push(tap);
        self.taps.store(Taps::with(taps));
    }

    pub fn detach(&self, tap: &Arc<Tap>) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut taps = self.taps.load().all.clone();
        taps.retain(|t| !Arc::ptr_eq(t, tap));
        self.taps.store(Taps::with(taps));
    }
}

#[cfg(test)]
mod tests {
    use spillway_proto::v2::{Envelope, log::Type};

    use super::*;
    use crate::event::ContainerInfo;
    use crate::filter::Filters;

    fn line(n: u8) -> Event {
        Event {
            envelope: Envelope::log(0, "s", "0", vec![n], Type::Out),
            container: Some(Arc::new(ContainerInfo::default())),
        }
    }

    #[test]
    fn a_full_tap_drops_its_oldest_and_counts_alone() {
        let hub = Hub::new();
        assert!(hub.is_idle());
        hub.publish(|| unreachable!("no tap, no event"));
        let (slow_drops, fast_drops) = (Counter::default(), Counter::default());
        let slow = Tap::new(Matcher::default(), false, 2, slow_drops.clone());
        let fast = Tap::new(Matcher::default(), false, 10, fast_drops.clone());
        let metrics_only = Tap::new(
            Filters::default().compile().unwrap(),
            true,
            10,
            Counter::default(),
        );
        hub.attach(slow.clone());
        hub.attach(fast.clone());
        hub.publish_metric(|| unreachable!("no tap takes metrics yet"));
        for n in 0..5 {
            hub.publish(|| line(n));
        }
        hub.publish(|| Event {
            envelope: Envelope::counter("app", "c", 1, 1),
            container: None,
        });
        hub.attach(metrics_only.clone());
        hub.publish_metric(|| Event {
            envelope: Envelope::counter("app", "c", 1, 2),
            container: None,
        });
        let payloads = |t: &Tap| {
            std::iter::from_fn(|| t.pop())
                .map(|e| e.payload().first().copied())
                .collect::<Vec<_>>()
        };
        assert_eq!(payloads(&slow), [Some(3), Some(4)]);
        assert_eq!((slow_drops.get(), slow.dropped()), (3, 3));
        assert_eq!(payloads(&fast).len(), 5);
        assert_eq!(fast_drops.get(), 0);
        assert_eq!(
            payloads(&metrics_only),
            [None],
            "metrics only where asked for"
        );
        hub.detach(&slow);
        hub.detach(&fast);
        hub.detach(&metrics_only);
        assert!(hub.is_idle());
    }
}
