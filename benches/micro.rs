//! Criterion micro-benchmarks: each allocator called directly through its
//! `GlobalAlloc` static (the process's own global allocator stays `System`).
//!
//! Groups (allocator = the benchmark parameter):
//! * `pair/<size>`: one alloc + one byte written + free, 8 B to 256 KiB (64 KiB and
//!   256 KiB are large blocks, whole buddy pages);
//! * `pair_align16/<size>`: the same with a 16-byte alignment (hashbrown's tables),
//!   64 B and 4 KiB;
//! * `batch_lifo/64` and `batch_fifo/64`: 1000 blocks allocated, then freed
//!   newest-first or oldest-first;
//! * `cross_thread_free/64`: batches of 1000 allocated here and freed on a
//!   second thread (pinned to another core where there is one);
//! * `realloc_growth/8..64K`: one block grown 8 B → 64 KiB by doubling;
//! * `page_pair`: cpuslab's page pool alone, one order-0 page taken and given
//!   back (the per-CPU page list); run again with `CPUSLAB_RSEQ=0` for the
//!   tried-lock path;
//! * `stats/memory`, `stats/caches`: one call of `stats::memory()` (where the memory
//!   sits) and of `stats::caches()` (every cache's counts), as a metrics exporter
//!   polls them.
//!
//! ```text
//! cargo bench -p cpuslab-bench --bench micro [-- FILTER]
//! ```

use core::alloc::{GlobalAlloc, Layout};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use std::hint::black_box;
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

const SIZES: &[usize] = &[
    8, 16, 32, 64, 128, 256, 512, 1024, 4096, 32768, 65536, 262144,
];
const BATCH: usize = 1000;

type Group<'a> = BenchmarkGroup<'a, WallTime>;

/// Something to run once per allocator.
trait PerAlloc {
    fn run<A: GlobalAlloc + Sync>(&mut self, name: &str, a: &'static A);
}

/// Calls `f` with every allocator compiled in, in a fixed order.
fn each_alloc(f: &mut impl PerAlloc) {
    f.run("cpuslab", &cpuslab::CpuSlab);
    f.run("system", &std::alloc::System);
    #[cfg(feature = "competitors")]
    {
        static MI: mimalloc::MiMalloc = mimalloc::MiMalloc;
        static JE: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
        f.run("mimalloc", &MI);
        f.run("jemalloc", &JE);
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("layout")
}

/// Allocates or panics (a null would make the timings meaningless).
#[inline(always)]
unsafe fn alloc_ok<A: GlobalAlloc>(a: &A, l: Layout) -> *mut u8 {
    let p = a.alloc(l);
    assert!(!p.is_null(), "allocation of {l:?} failed");
    p
}

struct Pair<'g, 'c> {
    g: &'g mut Group<'c>,
    size: usize,
    align: usize,
}

impl PerAlloc for Pair<'_, '_> {
    fn run<A: GlobalAlloc + Sync>(&mut self, name: &str, a: &'static A) {
        let l = Layout::from_size_align(self.size, self.align).expect("layout");
        self.g
            .bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| unsafe {
                    let p = alloc_ok(a, l);
                    p.write(1);
                    a.dealloc(black_box(p), l);
                })
            });
    }
}

struct Batch<'g, 'c> {
    g: &'g mut Group<'c>,
    lifo: bool,
}

impl PerAlloc for Batch<'_, '_> {
    fn run<A: GlobalAlloc + Sync>(&mut self, name: &str, a: &'static A) {
        let l = layout(64);
        let lifo = self.lifo;
        let mut ptrs: Vec<*mut u8> = Vec::with_capacity(BATCH);
        self.g
            .bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| unsafe {
                    for _ in 0..BATCH {
                        let p = alloc_ok(a, l);
                        p.write(1);
                        ptrs.push(p);
                    }
                    if lifo {
                        while let Some(p) = ptrs.pop() {
                            a.dealloc(p, l);
                        }
                    } else {
                        for p in ptrs.drain(..) {
                            a.dealloc(p, l);
                        }
                    }
                })
            });
    }
}

struct CrossThread<'g, 'c> {
    g: &'g mut Group<'c>,
}

impl PerAlloc for CrossThread<'_, '_> {
    fn run<A: GlobalAlloc + Sync>(&mut self, name: &str, a: &'static A) {
        let l = layout(64);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (here, there) = (cores.first().copied(), cores.get(1).copied());
        self.g
            .bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter_custom(|iters| {
                    // Pipelined: this thread allocates batch n+1 while the other
                    // frees batch n; the time covers both ends.
                    let (tx, rx) = sync_channel::<Vec<usize>>(4);
                    let freer = std::thread::spawn(move || {
                        if let Some(c) = there {
                            core_affinity::set_for_current(c);
                        }
                        for batch in rx {
                            for p in batch {
                                unsafe { a.dealloc(p as *mut u8, l) };
                            }
                        }
                    });
                    if let Some(c) = here {
                        core_affinity::set_for_current(c);
                    }
                    let start = Instant::now();
                    for _ in 0..iters {
                        let batch: Vec<usize> = (0..BATCH)
                            .map(|_| unsafe {
                                let p = alloc_ok(a, l);
                                p.write(1);
                                p as usize
                            })
                            .collect();
                        tx.send(batch).expect("freer died");
                    }
                    drop(tx);
                    freer.join().expect("freer panicked");
                    start.elapsed()
                })
            });
    }
}

struct ReallocGrowth<'g, 'c> {
    g: &'g mut Group<'c>,
}

impl PerAlloc for ReallocGrowth<'_, '_> {
    fn run<A: GlobalAlloc + Sync>(&mut self, name: &str, a: &'static A) {
        self.g
            .bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| unsafe {
                    let mut size = 8;
                    let mut p = alloc_ok(a, layout(size));
                    p.write(1);
                    while size < 64 << 10 {
                        p = a.realloc(p, layout(size), size * 2);
                        assert!(!p.is_null(), "realloc to {} failed", size * 2);
                        // Touch the new half so growth in place is not free.
                        p.add(size).write(2);
                        assert_eq!(p.read(), 1, "realloc lost the contents");
                        size *= 2;
                    }
                    a.dealloc(black_box(p), layout(size));
                })
            });
    }
}

fn benches(c: &mut Criterion) {
    for &size in SIZES {
        let mut g = c.benchmark_group(format!("pair/{size}"));
        g.throughput(Throughput::Elements(1));
        each_alloc(&mut Pair {
            g: &mut g,
            size,
            align: 8,
        });
        g.finish();
    }
    // 16-byte alignment: hashbrown's tables (every std HashMap), `u128`.
    for size in [64, 4096] {
        let mut g = c.benchmark_group(format!("pair_align16/{size}"));
        g.throughput(Throughput::Elements(1));
        each_alloc(&mut Pair {
            g: &mut g,
            size,
            align: 16,
        });
        g.finish();
    }
    for lifo in [true, false] {
        let mut g = c.benchmark_group(if lifo {
            "batch_lifo/64"
        } else {
            "batch_fifo/64"
        });
        g.throughput(Throughput::Elements(BATCH as u64));
        each_alloc(&mut Batch { g: &mut g, lifo });
        g.finish();
    }
    let mut g = c.benchmark_group("cross_thread_free/64");
    g.throughput(Throughput::Elements(BATCH as u64));
    each_alloc(&mut CrossThread { g: &mut g });
    g.finish();
    let mut g = c.benchmark_group("realloc_growth/8..64K");
    // 13 reallocs (8 → 16 → ... → 65536) per iteration.
    g.throughput(Throughput::Elements(13));
    each_alloc(&mut ReallocGrowth { g: &mut g });
    g.finish();
    page_pair(c);
}

/// One order-0 page off the calling CPU's page list and back.
fn page_pair(c: &mut Criterion) {
    // The page pool boots with the allocator.
    // SAFETY: a valid layout; the block is freed at once.
    unsafe {
        let l = layout(64);
        cpuslab::CpuSlab.dealloc(alloc_ok(&cpuslab::CpuSlab, l), l);
    }
    let mut g = c.benchmark_group("page_pair");
    g.throughput(Throughput::Elements(1));
    g.bench_function("cpuslab", |b| {
        b.iter(|| {
            let p = cpuslab::page::alloc_pages(0);
            assert!(!p.is_null());
            // SAFETY: a page just taken, given back once.
            unsafe { cpuslab::page::free_pages(black_box(p), 0) };
        })
    });
    g.finish();
    // What a metrics exporter polling cpuslab pays a call.
    let mut g = c.benchmark_group("stats");
    g.bench_function("memory", |b| b.iter(|| black_box(cpuslab::stats::memory())));
    g.bench_function("caches", |b| b.iter(|| black_box(cpuslab::stats::caches())));
    g.finish();
}

fn config() -> Criterion {
    // Short runs and a light analysis: the whole file takes a couple of
    // minutes (plots and 100k bootstrap resamples would double that).
    Criterion::default()
        .measurement_time(Duration::from_secs(1))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20)
        .nresamples(10_000)
        .without_plots()
}

criterion_group! {
    name = micro;
    config = config();
    targets = benches
}
criterion_main!(micro);
