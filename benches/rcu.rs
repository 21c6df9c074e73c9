//! Criterion benches of cpuslab's RCU, side by side in one run:
//!
//! * `read_side/{cpuslab_read_lock,crossbeam_epoch_pin}`: entering and leaving one
//!   read-side critical section (`rcu::read_lock()` + drop) against pinning an epoch
//!   of crossbeam-epoch (`pin()` + drop), the read side most Rust code uses today.
//! * `read_side/cpuslab_read_lock_nested`: a section opened inside another.
//! * `floor/{empty,two_stores,static_section}`: what this harness's loop costs alone,
//!   with the stores of a read section (`ctr = gp_seq`, `ctr = 0`), and with the whole
//!   outermost section (test `ctr`, store `gp_seq`, test `rcu_special`, store 0) on
//!   statics instead of thread-local words: the floor under `read_side`.
//! * `grace_period/{synchronize_expedited,synchronize}`: latency of one grace period
//!   with no reader inside a section.
//! * `call_rcu/10000`: queueing 10,000 intrusive callbacks and `rcu::barrier()` until
//!   all have run; callbacks/s.
//!
//! ```text
//! cargo bench -p cpuslab-bench --bench rcu [-- FILTER]
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::time::Duration;

use cpuslab::rcu::{self, RcuHead};

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

fn read_side(c: &mut Criterion) {
    let mut g = c.benchmark_group("read_side");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("cpuslab_read_lock", |b| {
        b.iter(|| drop(black_box(rcu::read_lock())))
    });
    g.bench_function("crossbeam_epoch_pin", |b| {
        b.iter(|| drop(black_box(crossbeam_epoch::pin())))
    });
    let outer = rcu::read_lock();
    g.bench_function("cpuslab_read_lock_nested", |b| {
        b.iter(|| drop(black_box(rcu::read_lock())))
    });
    drop(outer);
    g.finish();
}

fn floor(c: &mut Criterion) {
    // `ctr`, `rcu_special` and `gp_seq`, in statics; written here so that the compiler
    // cannot fold them into constants.
    static CTR: AtomicU64 = AtomicU64::new(0);
    static SPECIAL: AtomicU64 = AtomicU64::new(0);
    static SEQ: AtomicU64 = AtomicU64::new(0);
    SEQ.store(black_box(4), Ordering::Relaxed);
    SPECIAL.store(black_box(0), Ordering::Relaxed);
    let mut g = c.benchmark_group("floor");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("empty", |b| b.iter(|| black_box(())));
    g.bench_function("two_stores", |b| {
        b.iter(|| {
            CTR.store(SEQ.load(Ordering::Relaxed), Ordering::Relaxed);
            compiler_fence(Ordering::SeqCst);
            CTR.store(0, Ordering::Release);
        })
    });
    g.bench_function("static_section", |b| {
        b.iter(|| {
            if CTR.load(Ordering::Relaxed) == 0 {
                CTR.store(SEQ.load(Ordering::Relaxed), Ordering::Relaxed);
            } else {
                unreachable!();
            }
            compiler_fence(Ordering::SeqCst);
            if SPECIAL.load(Ordering::Relaxed) == 0 {
                CTR.store(0, Ordering::Release);
            } else {
                unreachable!();
            }
        })
    });
    g.finish();
    // Read, so that the stores are not dead.
    black_box(CTR.load(Ordering::Relaxed));
}

fn grace_period(c: &mut Criterion) {
    let mut g = c.benchmark_group("grace_period");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("synchronize_expedited", |b| {
        b.iter(rcu::synchronize_expedited)
    });
    g.bench_function("synchronize", |b| b.iter(rcu::synchronize));
    g.finish();
}

static INVOKED: AtomicU64 = AtomicU64::new(0);

unsafe fn count_callback(_head: *mut RcuHead) {
    INVOKED.fetch_add(1, Ordering::Relaxed);
}

fn call_rcu_throughput(c: &mut Criterion) {
    const N: usize = 10_000;
    let mut g = c.benchmark_group("call_rcu");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(N as u64));
    let mut heads: Vec<RcuHead> = (0..N).map(|_| RcuHead::new()).collect();
    let mut queued = 0u64;
    g.bench_function("10000", |b| {
        b.iter(|| {
            for h in heads.iter_mut() {
                // SAFETY: each head is idle (the previous round's barrier ran every
                // callback) and outlives its callback.
                unsafe { rcu::call_rcu(h, count_callback) };
            }
            queued += N as u64;
            rcu::barrier();
        })
    });
    g.finish();
    // Every callback ran exactly once.
    assert_eq!(INVOKED.load(Ordering::Relaxed), queued);
}

criterion_group!(benches, read_side, floor, grace_period, call_rcu_throughput);
criterion_main!(benches);
