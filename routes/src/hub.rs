//! The hub hands every container line (and, for routes that ask, every
//! metric) to the routes and `/logs` streams that want it.
//!
//! Each of them is a [`Tap`]: filters plus a diode of its own. Publishing
//! never waits: a tap that is not drained loses its own oldest events,
//! counted on its `dropped` counter, and nothing else notices.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use spillway_plumbing::diode::Diode;

use crate::event::Event;
use crate::filter::Matcher;

/// One route's or stream's view of the hub.
pub struct Tap {
    matcher: Matcher,
    metrics: bool,
    diode: Diode<Arc<Event>>,
    dropped: Counter,
}

impl Tap {
    /// A tap taking container lines that pass `matcher` (and metric
    /// envelopes from ingress when `metrics`), holding up to `capacity`
    /// events; what a full diode drops is counted on `dropped`.
    pub fn new(matcher: Matcher, metrics: bool, capacity: usize, dropped: Counter) -> Arc<Tap> {
        Arc::new(Tap {
            matcher,
            metrics,
            diode: Diode::new(capacity),
            dropped,
        })
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
    taps: ArcSwap<Vec<Arc<Tap>>>,
    writer: Mutex<()>,
}

impl Hub {
    pub fn new() -> Arc<Hub> {
        Arc::new(Hub::default())
    }

    /// Whether nobody listens (publishing is then free).
    pub fn is_idle(&self) -> bool {
        self.taps.load().is_empty()
    }

    /// Offers the event `make` builds to every tap; `make` runs only when
    /// there is a tap.
    pub fn publish(&self, make: impl FnOnce() -> Event) {
        let taps = self.taps.load();
        if taps.is_empty() {
            return;
        }
        let event = Arc::new(make());
        for tap in taps.iter() {
            tap.offer(&event);
        }
    }

    pub fn attach(&self, tap: Arc<Tap>) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut taps = Vec::clone(&self.taps.load());
        taps.push(tap);
        self.taps.store(Arc::new(taps));
    }

    pub fn detach(&self, tap: &Arc<Tap>) {
        let _w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut taps = Vec::clone(&self.taps.load());
        taps.retain(|t| !Arc::ptr_eq(t, tap));
        self.taps.store(Arc::new(taps));
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
        for n in 0..5 {
            hub.publish(|| line(n));
        }
        hub.publish(|| Event {
            envelope: Envelope::counter("app", "c", 1, 1),
            container: None,
        });
        hub.attach(metrics_only.clone());
        hub.publish(|| Event {
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
