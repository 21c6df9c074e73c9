//! Criterion benches of the per-CPU allocator and its typed users, side by side in one
//! run:
//!
//! * `counter_add_2threads/{percpu_counter,percpu_counter_batch1024,shared_atomic}`:
//!   two threads (pinned to two cores where there are two) each adding 1 per
//!   iteration to one shared counter: a `PercpuCounter` (`add`: its CPU's delta,
//!   folded into the global count past the batch — the kernel's default of 32, or
//!   1024) or one `AtomicU64` (`fetch_add` on a line both cores write). Throughput is
//!   adds/s.
//! * `percpu_area/alloc_free/<size>`: `alloc_percpu` + `free_percpu` of one area
//!   (zeroed in every CPU's unit), pairs/s.
//! * `percpu_area/batch_1000/<size>`: 1000 areas allocated, then freed, areas/s.
//!
//! ```text
//! cargo bench -p cpuslab-bench --bench percpu [-- FILTER]
//! ```

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cpuslab::percpu::{alloc_percpu, free_percpu, PercpuCounter};

/// Runs `op` `iters` times on each of two threads started together (pinned to two
/// different cores when the machine has them); returns the wall time until both end.
fn two_threads(iters: u64, op: &(impl Fn() + Sync)) -> Duration {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let start = Barrier::new(3);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let core = (cores.len() >= 2).then(|| cores[i]);
                let start = &start;
                s.spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    start.wait();
                    for _ in 0..iters {
                        op();
                    }
                })
            })
            .collect();
        start.wait();
        let t = Instant::now();
        for w in workers {
            w.join().expect("worker");
        }
        t.elapsed()
    })
}

fn counter_add(c: &mut Criterion) {
    let mut g = c.benchmark_group("counter_add_2threads");
    g.throughput(Throughput::Elements(2));
    // Few long samples: each starts two threads, whose start skew must not matter.
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    let counter = PercpuCounter::new(0).expect("percpu counter");
    let mut counter_adds = 0u64;
    g.bench_function("percpu_counter", |b| {
        b.iter_custom(|iters| {
            counter_adds += 2 * iters;
            two_threads(iters, &|| counter.add(black_box(1)))
        })
    });
    // The same with a larger batch: fewer folds, each of which takes the shared line.
    let counter_1024 = PercpuCounter::with_batch(0, 1024).expect("percpu counter");
    let mut counter_1024_adds = 0u64;
    g.bench_function("percpu_counter_batch1024", |b| {
        b.iter_custom(|iters| {
            counter_1024_adds += 2 * iters;
            two_threads(iters, &|| counter_1024.add(black_box(1)))
        })
    });
    let shared = AtomicU64::new(0);
    let mut shared_adds = 0u64;
    g.bench_function("shared_atomic", |b| {
        b.iter_custom(|iters| {
            shared_adds += 2 * iters;
            two_threads(iters, &|| {
                shared.fetch_add(black_box(1), Ordering::Relaxed);
            })
        })
    });
    g.finish();
    // Nothing was lost on either side.
    assert_eq!(counter.sum() as u64, counter_adds);
    assert_eq!(counter_1024.sum() as u64, counter_1024_adds);
    assert_eq!(shared.load(Ordering::Relaxed), shared_adds);
}

fn area_alloc_free(c: &mut Criterion) {
    let mut g = c.benchmark_group("percpu_area");
    g.measurement_time(Duration::from_secs(2));
    g.warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(1));
    for size in [8usize, 64, 1024, 4096] {
        g.bench_with_input(BenchmarkId::new("alloc_free", size), &size, |b, &size| {
            b.iter(|| {
                let p = alloc_percpu(black_box(size), 8).expect("alloc_percpu");
                // SAFETY: allocated just above, freed once.
                unsafe { free_percpu(black_box(p)) };
            })
        });
    }
    const BATCH: usize = 1000;
    g.throughput(Throughput::Elements(BATCH as u64));
    for size in [8usize, 64] {
        g.bench_with_input(BenchmarkId::new("batch_1000", size), &size, |b, &size| {
            let mut areas = Vec::with_capacity(BATCH);
            b.iter(|| {
                for _ in 0..BATCH {
                    areas.push(alloc_percpu(size, 8).expect("alloc_percpu"));
                }
                for p in areas.drain(..) {
                    // SAFETY: allocated just above, freed once.
                    unsafe { free_percpu(p) };
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, counter_add, area_alloc_free);
criterion_main!(benches);
