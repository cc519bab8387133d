//! Spillway's diodes against the standard channels.
//!
//! Every stage of Spillway parks envelopes in a diode
//! (`spillway_plumbing::diode`): a bounded lock-free ring (crossbeam-queue's
//! `ArrayQueue`) that never blocks its producer: when full it drops its
//! oldest item and counts it, and every push signals a tokio `Notify` for
//! the async reader. Collector shards, per-core app diodes and every router
//! or RLP subscription are diodes, so their cost is paid once per envelope
//! per stage. This bench compares them with `crossbeam_channel::bounded`,
//! `std::sync::mpsc::sync_channel` and `std::sync::mpsc::channel`, moving
//! `u64`s (the queue's own cost, without envelope allocation):
//!
//! - `diode_push_pop`: one thread pushes 10,000 items (the default buffer
//!   size of the collector and router), then pops them all. Each queue is
//!   big enough: nothing is dropped and nothing blocks.
//! - `diode_spsc`: a producer thread sends 100,000 items to a consumer
//!   thread through a queue that can hold them all: nothing blocks and
//!   nothing is dropped, so every queue moves every item and the numbers
//!   compare like for like. The diode's consumer polls in a loop, yielding
//!   when empty (the async reader would wait on the diode's `Notify`); the
//!   channels' consumer blocks in `recv`.
//! - `diode_spsc_1024`: the same through a buffer of 1,024. The bounded
//!   channels then block the producer when full (back-pressure), while the
//!   diodes drop their oldest items instead: their throughput counts the
//!   items *offered*, and the share they dropped is printed on stderr after
//!   each bench (it varies widely from run to run: a producer of bare
//!   `u64`s outruns any reader, and evicting the oldest item races the
//!   reader for the same slot).
//!   `std_mpsc` stays unbounded, for reference.
//!
//! `spillway_percore` is the `PerCore` diode of the collector's v2 Ingress
//! (one diode per CPU, the producer pushing into its current CPU's diode,
//! the reader sweeping them with `drain_into` 256 at a time, the default
//! batch size).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

mod common;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use spillway_plumbing::diode::{Diode, PerCore};

/// Items of the single-thread bench: the default diode size.
const PUSH_POP_ITEMS: usize = 10_000;
/// Items moved between the two threads per iteration.
const SPSC_ITEMS: usize = 100_000;
/// The small buffer between the two threads in `diode_spsc_1024`.
const SMALL_CAPACITY: usize = 1024;
/// What a batcher drains at a time (the default `--batch-size`).
const DRAIN_CHUNK: usize = 256;

fn push_pop(c: &mut Criterion) {
    let n = PUSH_POP_ITEMS;
    let mut group = c.benchmark_group("diode_push_pop");
    group.throughput(Throughput::Elements(n as u64));

    let diode = Diode::new(n);
    group.bench_function("spillway_diode", |b| {
        b.iter(|| {
            for i in 0..n as u64 {
                black_box(diode.push(i));
            }
            while let Some(v) = diode.pop() {
                black_box(v);
            }
        })
    });
    assert_eq!(diode.dropped(), 0);

    let per_core = PerCore::for_this_machine(n);
    let mut out = Vec::with_capacity(DRAIN_CHUNK);
    group.bench_function("spillway_percore", |b| {
        b.iter(|| {
            for i in 0..n as u64 {
                black_box(per_core.push(i));
            }
            while per_core.drain_into(&mut out, DRAIN_CHUNK) > 0 {
                black_box(&out);
                out.clear();
            }
        })
    });
    assert_eq!(per_core.dropped(), 0);

    let (tx, rx) = crossbeam_channel::bounded(n);
    group.bench_function("crossbeam_channel", |b| {
        b.iter(|| {
            for i in 0..n as u64 {
                tx.send(i).unwrap();
            }
            while let Ok(v) = rx.try_recv() {
                black_box(v);
            }
        })
    });

    let (tx, rx) = mpsc::sync_channel(n);
    group.bench_function("std_mpsc_sync", |b| {
        b.iter(|| {
            for i in 0..n as u64 {
                tx.send(i).unwrap();
            }
            while let Ok(v) = rx.try_recv() {
                black_box(v);
            }
        })
    });

    let (tx, rx) = mpsc::channel();
    group.bench_function("std_mpsc", |b| {
        b.iter(|| {
            for i in 0..n as u64 {
                tx.send(i).unwrap();
            }
            while let Ok(v) = rx.try_recv() {
                black_box(v);
            }
        })
    });

    group.finish();
}

/// Waits a little when a diode is empty: the reader's stand-in for
/// awaiting the diode's `Notify`.
fn idle() {
    thread::yield_now();
}

/// Moves `SPSC_ITEMS` from a new thread through `diode` to this one, until
/// the producer is done and the diode empty.
fn spsc_diode(diode: &Diode<u64>) {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..SPSC_ITEMS as u64 {
                diode.push(i);
            }
            done.store(true, Ordering::Release);
        });
        loop {
            if let Some(v) = diode.pop() {
                black_box(v);
            } else if done.load(Ordering::Acquire) {
                // Everything pushed is visible now.
                while let Some(v) = diode.pop() {
                    black_box(v);
                }
                break;
            } else {
                idle();
            }
        }
    });
}

/// The same through per-core diodes, drained `DRAIN_CHUNK` at a time.
fn spsc_per_core(per_core: &PerCore<u64>, out: &mut Vec<u64>) {
    let done = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| {
            for i in 0..SPSC_ITEMS as u64 {
                per_core.push(i);
            }
            done.store(true, Ordering::Release);
        });
        loop {
            out.clear();
            if per_core.drain_into(out, DRAIN_CHUNK) > 0 {
                black_box(&*out);
            } else if done.load(Ordering::Acquire) {
                while per_core.drain_into(out, DRAIN_CHUNK) > 0 {
                    black_box(&*out);
                    out.clear();
                }
                break;
            } else {
                idle();
            }
        }
    });
}

/// Says how much a diode dropped because its consumer lagged.
fn report_drops(bench: &str, dropped: u64, runs: u64) {
    let offered = runs * SPSC_ITEMS as u64;
    if dropped > 0 {
        eprintln!(
            "{bench}: dropped {dropped} of {offered} items offered ({:.2}%): drop-oldest while the consumer lagged",
            dropped as f64 * 100.0 / offered as f64
        );
    }
}

/// One producer thread, one consumer thread, queues of `capacity`.
fn spsc_group(c: &mut Criterion, name: &str, capacity: usize) {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(SPSC_ITEMS as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(20);

    // The queues are made once; each run leaves them empty.
    let diode = Diode::new(capacity);
    let mut runs = 0;
    group.bench_function("spillway_diode", |b| {
        b.iter(|| {
            spsc_diode(&diode);
            runs += 1;
        })
    });
    report_drops(&format!("{name}/spillway_diode"), diode.dropped(), runs);

    let per_core = PerCore::for_this_machine(capacity);
    let mut out = Vec::with_capacity(DRAIN_CHUNK);
    let mut runs = 0;
    group.bench_function("spillway_percore", |b| {
        b.iter(|| {
            spsc_per_core(&per_core, &mut out);
            runs += 1;
        })
    });
    report_drops(
        &format!("{name}/spillway_percore"),
        per_core.dropped(),
        runs,
    );

    let (tx, rx) = crossbeam_channel::bounded(capacity);
    group.bench_function("crossbeam_channel", |b| {
        b.iter(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..SPSC_ITEMS as u64 {
                        tx.send(i).unwrap();
                    }
                });
                for _ in 0..SPSC_ITEMS {
                    black_box(rx.recv().unwrap());
                }
            })
        })
    });

    let (tx, rx) = mpsc::sync_channel(capacity);
    group.bench_function("std_mpsc_sync", |b| {
        b.iter(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..SPSC_ITEMS as u64 {
                        tx.send(i).unwrap();
                    }
                });
                for _ in 0..SPSC_ITEMS {
                    black_box(rx.recv().unwrap());
                }
            })
        })
    });

    // Unbounded: neither blocks nor drops, whatever `capacity` is.
    let (tx, rx) = mpsc::channel();
    group.bench_function("std_mpsc", |b| {
        b.iter(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..SPSC_ITEMS as u64 {
                        tx.send(i).unwrap();
                    }
                });
                for _ in 0..SPSC_ITEMS {
                    black_box(rx.recv().unwrap());
                }
            })
        })
    });

    group.finish();
}

fn spsc(c: &mut Criterion) {
    spsc_group(c, "diode_spsc", SPSC_ITEMS);
    spsc_group(c, "diode_spsc_1024", SMALL_CAPACITY);
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = push_pop, spsc
}
criterion_main!(benches);
