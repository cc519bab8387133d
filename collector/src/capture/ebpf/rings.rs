//! The ring buffers and the loops that drain them.
//!
//! Userspace creates `n` BPF ring buffers and puts them in the program's
//! `RINGS` array of maps; the program writes each record to ring
//! `ino % n`. Each ring has its own OS thread running a `tokio-uring`
//! runtime: it waits for the ring to become readable with an io_uring
//! `POLL_ADD` or for its tick, drains the ring into the loop's
//! [`Handler`], then calls [`Handler::tick`].
//!
//! The program wakes a reader only when a ring's unread bytes cross a
//! threshold, so the tick bounds the latency below it. The tick adapts to
//! the rate: [`MIN_TICK`] while records keep coming or the handler has
//! work waiting (see [`Handler::tick`]), doubling up to
//! [`MAX_TICK`] while the ring stays empty, so an idle host costs a few
//! wake-ups per second per ring and a busy one a millisecond of latency.
//!
//! A loop drains its ring only as fast as its handler takes records
//! ([`Handler::ready_for_more`]): while the shard diode towards the routers
//! is full, the records wait in the ring (the ring is the buffer, allocated
//! once), and when the ring fills the kernel drops new writes and counts
//! them, never blocking the app.
//!
//! The threads are not pinned: on a host whose cores are busy with the
//! very apps being captured, a pinned reader waits for its core while the
//! other is free, and its ring fills up.

use std::os::fd::{AsRawFd as _, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{ArrayOfMaps, Map, MapData, RingBuf};
use spillway_collector_common::{EventHeader, HDR_SIZE};

use super::kernel::{Handler, Record};

/// The shortest wait between drains, while records keep coming or wait.
pub const MIN_TICK: Duration = Duration::from_millis(1);
/// The longest wait between drains, on an idle ring.
pub const MAX_TICK: Duration = Duration::from_millis(16);
/// How often a loop recomputes the boot → wall clock offset (follows NTP steps).
const CLOCK_REFRESH: Duration = Duration::from_secs(1);
/// Most records handled in one drain round before `tick` runs again.
const MAX_ROUND: usize = 4096;

const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// Creates `n` ring buffers of `bytes` each and inserts them into `RINGS`
/// at 0..n.
pub fn create(bpf: &mut Ebpf, n: u32, bytes: u32) -> Result<Vec<RingBuf<MapData>>, String> {
    let outer = bpf
        .map_mut("RINGS")
        .ok_or("the eBPF object has no RINGS map")?;
    let mut outer: ArrayOfMaps<&mut MapData, MapData> =
        ArrayOfMaps::try_from(outer).map_err(|e| format!("RINGS: {e}"))?;
    let mut rings = Vec::with_capacity(n as usize);
    for i in 0..n {
        // aya 0.14 has no RingBuf::create. The kernel checks an inner map
        // against the program's template (RING_TEMPLATE_BYTES) by type,
        // key, value and flags, not by size.
        let def = aya_obj::Map::new_from_params(BPF_MAP_TYPE_RINGBUF, 0, 0, bytes, 0);
        let ring = MapData::create(def, &format!("spill_ring{i}"), None)
            .map_err(|e| format!("creating ring buffer {i}: {e}"))?;
        outer
            .set(i, &ring, 0)
            .map_err(|e| format!("inserting ring buffer {i}: {e}"))?;
        let ring = Map::from_map_data(ring).map_err(|e| format!("ring buffer {i}: {e}"))?;
        rings.push(RingBuf::try_from(ring).map_err(|e| format!("ring buffer {i}: {e}"))?);
    }
    Ok(rings)
}

/// Converts `CLOCK_BOOTTIME` (what the program stamps) to wall-clock time.
pub struct WallClock {
    /// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in ns.
    offset: i64,
    measured: Instant,
}

impl WallClock {
    pub fn new() -> WallClock {
        WallClock {
            offset: boot_to_wall_offset(),
            measured: Instant::now(),
        }
    }

    /// Re-measures the offset if it is older than a second.
    pub fn refresh(&mut self, now: Instant) {
        if now.duration_since(self.measured) >= CLOCK_REFRESH {
            *self = WallClock::new();
        }
    }

    /// Nanoseconds since the Unix epoch for a `bpf_ktime_get_boot_ns()` value.
    pub fn wall_ns(&self, boot_ns: u64) -> i64 {
        (boot_ns as i64).saturating_add(self.offset)
    }
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `REALTIME - BOOTTIME`, with the realtime read bracketed by two boottime
/// reads to halve the error.
fn boot_to_wall_offset() -> i64 {
    let b1 = clock_ns(libc::CLOCK_BOOTTIME);
    let r = clock_ns(libc::CLOCK_REALTIME);
    let b2 = clock_ns(libc::CLOCK_BOOTTIME);
    r - (b1 + (b2 - b1) / 2)
}

/// Parses one ring record; `None` if it is malformed (never expected).
pub fn parse<'a>(item: &'a [u8], clock: &WallClock) -> Option<Record<'a>> {
    let head = item.get(..HDR_SIZE)?;
    // SAFETY: head is HDR_SIZE bytes and EventHeader is plain integers.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(head.as_ptr().cast()) };
    let data = item.get(HDR_SIZE..HDR_SIZE + h.len as usize)?;
    Some(Record {
        timestamp: clock.wall_ns(h.boot_ns),
        cgroup: h.cgroup,
        key: h.key,
        cookie: h.cookie,
        tgid: h.tgid,
        fd: h.fd,
        offset: h.offset,
        len: h.len,
        total: h.total,
        data,
    })
}

/// What the loops share with the `Capture`: the stop flag, and (in `keep`)
/// everything that must outlive them (programs, links, maps).
pub struct LoopShared<K: Send + Sync + 'static> {
    pub stop: AtomicBool,
    pub keep: K,
}

/// Starts one thread per ring; see [`super::Capture::spawn_loops`].
pub fn spawn<K, H, F>(
    rings: Vec<RingBuf<MapData>>,
    shared: Arc<LoopShared<K>>,
    make: F,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>>
where
    K: Send + Sync + 'static,
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let mut handles = Vec::with_capacity(rings.len());
    for (i, ring) in rings.into_iter().enumerate() {
        let (shared, make) = (shared.clone(), make.clone());
        let handle = std::thread::Builder::new()
            .name(format!("ebpf-ring-{i}"))
            .spawn(move || {
                tokio_uring::start(async move {
                    let handler = make(i);
                    drop(make);
                    run(i, ring, handler, &shared.stop).await;
                    // The last loop out detaches the programs.
                    drop(shared);
                });
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// One loop: wait (readable or timer), drain, tick, until `stop`.
async fn run<H: Handler>(
    index: usize,
    mut ring: RingBuf<MapData>,
    mut handler: H,
    stop: &AtomicBool,
) {
    let fd = ring.as_raw_fd();
    let mut clock = WallClock::new();
    let mut poll = Some(Box::pin(poll_readable(fd)));
    let mut more = false;
    // The handler took no more records, some are left in the ring: wait
    // for the tick only (the ring stays readable, a poll would spin).
    let mut held = false;
    let mut tick = MIN_TICK;
    loop {
        if held {
            tokio::time::sleep(MIN_TICK).await;
        } else if !more {
            let timer = tokio::time::sleep(tick);
            let woken = match poll.as_mut() {
                Some(p) => tokio::select! {
                    r = p => Some(r),
                    _ = timer => None,
                },
                None => {
                    timer.await;
                    None
                }
            };
            match woken {
                Some(Ok(_)) => poll = Some(Box::pin(poll_readable(fd))),
                Some(Err(e)) => {
                    tracing::warn!(
                        "eBPF ring {index}: io_uring poll failed ({e}); draining on the timer only"
                    );
                    poll = None;
                }
                None => {}
            }
        }
        let now = Instant::now();
        clock.refresh(now);
        let mut n = 0;
        held = false;
        while n < MAX_ROUND {
            if !handler.ready_for_more() {
                held = true;
                break;
            }
            let Some(item) = ring.next() else { break };
            match parse(&item, &clock) {
                Some(r) => handler.record(&r, now),
                None => tracing::warn!(
                    "eBPF ring {index}: malformed record of {} bytes",
                    item.len()
                ),
            }
            n += 1;
        }
        more = n == MAX_ROUND;
        let waiting = handler.tick(Instant::now());
        tick = if n > 0 || waiting || held {
            MIN_TICK
        } else {
            (tick * 2).min(MAX_TICK)
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
}

/// Completes when `fd` is readable (io_uring `POLL_ADD`, one-shot).
/// tokio-uring has no poll op, but lets us submit a raw SQE; the driver
/// cancels it if the future is dropped at runtime shutdown.
async fn poll_readable(fd: RawFd) -> std::io::Result<u32> {
    let sqe = io_uring::opcode::PollAdd::new(io_uring::types::Fd(fd), libc::POLLIN as u32).build();
    tokio_uring::UnsubmittedOneshot::new((), PollIn, sqe)
        .submit()
        .await
}

struct PollIn;

impl tokio_uring::OneshotOutputTransform for PollIn {
    type Output = std::io::Result<u32>;
    type StoredData = ();

    fn transform_oneshot_output(self, _: (), cqe: io_uring::cqueue::Entry) -> Self::Output {
        match cqe.result() {
            r if r < 0 => Err(std::io::Error::from_raw_os_error(-r)),
            r => Ok(r as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_collector_common::InodeKey;

    #[test]
    fn parses_records() {
        let clock = WallClock {
            offset: 1_000,
            measured: Instant::now(),
        };
        let h = EventHeader {
            boot_ns: 5,
            cgroup: 99,
            key: InodeKey::new(77, 15),
            cookie: 3,
            tgid: 42,
            fd: 1,
            offset: 16384,
            len: 3,
            total: 20000,
        };
        let mut item = vec![0u8; HDR_SIZE];
        // SAFETY: item has HDR_SIZE bytes.
        unsafe { std::ptr::write_unaligned(item.as_mut_ptr().cast(), h) };
        item.extend_from_slice(b"abc\0\0"); // ring records are padded
        let r = parse(&item, &clock).unwrap();
        assert_eq!(r.timestamp, 1_005);
        assert_eq!(
            (r.key, r.cookie, r.tgid, r.fd),
            (InodeKey::new(77, 15), 3, 42, 1)
        );
        assert_eq!(
            (r.offset, r.len, r.total, r.data),
            (16384, 3, 20000, &b"abc"[..])
        );
        assert!(parse(&item[..HDR_SIZE + 2], &clock).is_none());
        assert!(parse(&item[..10], &clock).is_none());
    }

    #[test]
    fn wall_clock_matches_realtime() {
        let clock = WallClock::new();
        let wall = clock.wall_ns(clock_ns(libc::CLOCK_BOOTTIME) as u64);
        assert!((wall - clock_ns(libc::CLOCK_REALTIME)).abs() < 10_000_000);
    }
}
