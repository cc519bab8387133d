//! Diodes: bounded lock-free buffers that never block their producer.
//!
//! Named after Loggregator's diodes: when a diode is full, a push drops the
//! *oldest* item to make room, and the drop is counted. A slow reader thus
//! loses its own oldest data and never slows whoever writes.
//!
//! Two kinds of storage: [`Diode::new`] preallocates its capacity (an
//! `ArrayQueue`: no allocation while running, for the collector's hot
//! path); [`Diode::growing`] allocates as it fills and frees as it drains
//! (a `SegQueue` with a bound), so an idle subscription or consumer stream
//! costs a few hundred bytes instead of `capacity` slots (10,000 envelopes
//! were ~2 MB per RLP consumer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_queue::{ArrayQueue, SegQueue};
use tokio::sync::Notify;

/// A single lossy queue with a wake-up for one async reader.
pub struct Diode<T> {
    storage: Storage<T>,
    dropped: AtomicU64,
    ready: Notify,
}

enum Storage<T> {
    Fixed(ArrayQueue<T>),
    Growing {
        queue: SegQueue<T>,
        /// Items in `queue`, counting pushes in progress: raised before an
        /// item goes in, lowered after one comes out, so it never falls
        /// below the true count.
        len: AtomicUsize,
        capacity: usize,
    },
}

impl<T> Diode<T> {
    /// A diode of `capacity` items (at least 1), allocated up front.
    pub fn new(capacity: usize) -> Self {
        Diode::with(Storage::Fixed(ArrayQueue::new(capacity.max(1))))
    }

    /// A diode of up to `capacity` items (at least 1) that allocates only
    /// for what it holds: for buffers that are many and mostly idle.
    pub fn growing(capacity: usize) -> Self {
        Diode::with(Storage::Growing {
            queue: SegQueue::new(),
            len: AtomicUsize::new(0),
            capacity: capacity.max(1),
        })
    }

    fn with(storage: Storage<T>) -> Self {
        Diode {
            storage,
            dropped: AtomicU64::new(0),
            ready: Notify::new(),
        }
    }

    /// Adds `item`, dropping the oldest item if full. Returns `true` when
    /// something was dropped (it is also counted in [`Diode::dropped`]).
    pub fn push(&self, item: T) -> bool {
        let dropped = self.push_quiet(item);
        self.ready.notify_one();
        dropped
    }

    /// Adds `item` like [`Diode::push`] but does not wake the reader: for
    /// a producer that hands items in rounds and calls
    /// [`Diode::wake_if_ready`] at the end of each, so that the reader
    /// takes a round as one batch instead of being woken per item.
    pub fn push_quiet(&self, item: T) -> bool {
        let dropped = match &self.storage {
            Storage::Fixed(q) => q.force_push(item).is_some(),
            Storage::Growing {
                queue,
                len,
                capacity,
            } => {
                let before = len.fetch_add(1, Ordering::AcqRel);
                queue.push(item);
                before >= *capacity && self.pop().is_some()
            }
        };
        if dropped {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        dropped
    }

    /// Wakes the reader if anything waits in the diode (after
    /// [`Diode::push_quiet`]s).
    pub fn wake_if_ready(&self) {
        if !self.is_empty() {
            self.ready.notify_one();
        }
    }

    pub fn pop(&self) -> Option<T> {
        match &self.storage {
            Storage::Fixed(q) => q.pop(),
            Storage::Growing { queue, len, .. } => {
                let item = queue.pop()?;
                len.fetch_sub(1, Ordering::AcqRel);
                Some(item)
            }
        }
    }

    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Fixed(q) => q.len(),
            Storage::Growing { queue, .. } => queue.len(),
        }
    }

    /// How many more items fit before a push drops the oldest.
    pub fn room(&self) -> usize {
        let capacity = match &self.storage {
            Storage::Fixed(q) => q.capacity(),
            Storage::Growing { capacity, .. } => *capacity,
        };
        capacity.saturating_sub(self.len())
    }

    pub fn is_empty(&self) -> bool {
        match &self.storage {
            Storage::Fixed(q) => q.is_empty(),
            Storage::Growing { queue, .. } => queue.is_empty(),
        }
    }

    /// Items dropped so far because the diode was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until a push happened since the last wait (or now, if one is
    /// pending). Check [`Diode::is_empty`] after waking: wake-ups coalesce.
    pub async fn ready(&self) {
        self.ready.notified().await
    }
}

/// One diode per CPU core, drained by a single reader.
///
/// Producers push into the diode of the core they run on, so producers on
/// different cores never touch the same cache lines; the reader sweeps all
/// of them.
pub struct PerCore<T> {
    diodes: Box<[Diode<T>]>,
    ready: Notify,
    next: AtomicU64,
}

impl<T> PerCore<T> {
    /// `cores` diodes of `capacity_per_core` each.
    pub fn new(cores: usize, capacity_per_core: usize) -> Arc<Self> {
        Arc::new(PerCore {
            diodes: (0..cores.max(1))
                .map(|_| Diode::new(capacity_per_core))
                .collect(),
            ready: Notify::new(),
            next: AtomicU64::new(0),
        })
    }

    /// One diode per core of this machine.
    pub fn for_this_machine(capacity_per_core: usize) -> Arc<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, capacity_per_core)
    }

    pub fn cores(&self) -> usize {
        self.diodes.len()
    }

    /// Pushes into the diode of core `core` (taken modulo the core count).
    /// Returns `true` when the oldest item there was dropped.
    pub fn push_to(&self, core: usize, item: T) -> bool {
        let dropped = self.diodes[core % self.diodes.len()].push_quiet(item);
        // Only the sweeping reader waits: one wake-up, on the whole.
        self.ready.notify_one();
        dropped
    }

    /// Pushes into the diode of the core this thread runs on.
    pub fn push(&self, item: T) -> bool {
        self.push_to(current_cpu(), item)
    }

    /// Pops up to `max` items into `out`, sweeping the cores round-robin so
    /// that no core's diode starves the others. Returns how many it took.
    pub fn drain_into(&self, out: &mut Vec<T>, max: usize) -> usize {
        let n = self.diodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) as usize;
        let mut taken = 0;
        let mut progress = true;
        while taken < max && progress {
            progress = false;
            for i in 0..n {
                if taken >= max {
                    break;
                }
                if let Some(item) = self.diodes[(start + i) % n].pop() {
                    out.push(item);
                    taken += 1;
                    progress = true;
                }
            }
        }
        taken
    }

    pub fn is_empty(&self) -> bool {
        self.diodes.iter().all(Diode::is_empty)
    }

    pub fn len(&self) -> usize {
        self.diodes.iter().map(Diode::len).sum()
    }

    /// Items dropped so far over all cores.
    pub fn dropped(&self) -> u64 {
        self.diodes
            .iter()
            .map(|d| d.dropped.load(Ordering::Relaxed))
            .sum()
    }

    pub async fn ready(&self) {
        self.ready.notified().await
    }
}

/// The CPU this thread runs on (0 where the OS cannot say).
pub fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions; it returns -1 on error.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 { 0 } else { cpu as usize }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn quiet_pushes_wake_the_reader_only_when_told() {
        let d = Arc::new(Diode::new(4));
        let reader = {
            let d = d.clone();
            tokio::spawn(async move {
                d.ready().await;
                let mut got = Vec::new();
                while let Some(i) = d.pop() {
                    got.push(i);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        for i in 0..5 {
            d.push_quiet(i);
        }
        assert_eq!(d.dropped(), 1, "quiet pushes drop the oldest too");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!reader.is_finished(), "woken by a quiet push");
        d.wake_if_ready();
        assert_eq!(reader.await.unwrap(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn full_diode_drops_oldest_and_counts() {
        for d in [Diode::new(3), Diode::growing(3)] {
            for i in 0..5 {
                d.push(i);
            }
            assert_eq!(d.dropped(), 2);
            assert_eq!(
                (d.pop(), d.pop(), d.pop(), d.pop()),
                (Some(2), Some(3), Some(4), None)
            );
        }
    }

    #[test]
    fn per_core_drains_every_core_fairly() {
        let d = PerCore::new(3, 10);
        for core in 0..3 {
            for i in 0..4 {
                d.push_to(core, core * 100 + i);
            }
        }
        let mut out = Vec::new();
        assert_eq!(d.drain_into(&mut out, 6), 6);
        // Two from each core, in order within a core.
        for core in 0..3 {
            let mine: Vec<_> = out.iter().filter(|v| **v / 100 == core).collect();
            assert_eq!(mine, vec![&(core * 100), &(core * 100 + 1)]);
        }
        assert_eq!(d.len(), 6);
        assert_eq!(d.dropped(), 0);
        for i in 0..20 {
            d.push_to(0, i);
        }
        assert_eq!(d.dropped(), 12, "core 0 held 2, got 20 more, keeps 10");
    }

    #[test]
    fn an_idle_diode_allocates_nothing_and_memory_follows_content() {
        // Capacity is a bound, not an allocation: a huge one is fine.
        let d: Diode<[u8; 256]> = Diode::growing(usize::MAX);
        assert!(d.is_empty());
        for _ in 0..1000 {
            d.push([0; 256]);
        }
        assert_eq!((d.len(), d.dropped()), (1000, 0));
        while d.pop().is_some() {}
        assert!(d.is_empty());
    }

    #[test]
    fn concurrent_producers_never_exceed_capacity_for_long() {
        let d = Arc::new(Diode::growing(100));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        d.push(i);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(d.len(), 100);
        assert_eq!(d.dropped(), 40_000 - 100);
    }

    #[tokio::test]
    async fn reader_wakes_on_push_from_another_thread() {
        let d = Arc::new(Diode::new(4));
        let w = d.clone();
        let reader = tokio::spawn(async move {
            loop {
                if let Some(v) = w.pop() {
                    return v;
                }
                w.ready().await;
            }
        });
        tokio::task::yield_now().await;
        std::thread::spawn(move || d.push(7)).join().unwrap();
        assert_eq!(reader.await.unwrap(), 7);
    }
}
