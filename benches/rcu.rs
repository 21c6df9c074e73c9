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
//! * `synchronize_with_readers/{cpuslab,urcu_memb}/{1,4,16}`: one grace period while
//!   that many threads enter and leave read sections in a loop.
//!
//! Each group also runs liburcu's memb flavour (`urcu_memb_*`, Debian's `liburcu8`)
//! through FFI in the same run where the library is installed (`dlopen` of
//! `liburcu-memb.so.8`; without it those rows are skipped with a note):
//! `read_side/urcu_memb_read_lock`, `grace_period/urcu_memb_synchronize_rcu`,
//! `call_rcu/urcu_memb_10000`. liburcu's read side is its exported function, a call
//! where C code built against its headers would inline it.
//!
//! ```text
//! cargo bench -p cpuslab-bench --bench rcu [-- FILTER]
//! ```

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::time::Duration;

use cpuslab::rcu::{self, RcuHead};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

/// liburcu's `struct rcu_head`: a wait-free queue node, then the callback.
#[repr(C)]
struct UrcuHead {
    next: *mut UrcuHead,
    func: Option<unsafe extern "C" fn(*mut UrcuHead)>,
}

/// liburcu's memb flavour, loaded at run time.
struct Urcu {
    register_thread: unsafe extern "C" fn(),
    read_lock: unsafe extern "C" fn(),
    read_unlock: unsafe extern "C" fn(),
    synchronize: unsafe extern "C" fn(),
    call_rcu: unsafe extern "C" fn(*mut UrcuHead, unsafe extern "C" fn(*mut UrcuHead)),
    barrier: unsafe extern "C" fn(),
}

/// `liburcu-memb.so.8`'s functions, or None (with a note on stderr) when it is not
/// installed.
fn urcu() -> Option<&'static Urcu> {
    static URCU: OnceLock<Option<Urcu>> = OnceLock::new();
    URCU.get_or_init(|| {
        // SAFETY: dlopen and dlsym with NUL-terminated names; each symbol is a function
        // of the signature liburcu's headers give it.
        unsafe {
            let lib = libc::dlopen(c"liburcu-memb.so.8".as_ptr(), libc::RTLD_NOW);
            if lib.is_null() {
                eprintln!(
                    "note: liburcu-memb.so.8 not found (Debian: liburcu8); its rows are skipped"
                );
                return None;
            }
            let sym = |name: &std::ffi::CStr| {
                let f = libc::dlsym(lib, name.as_ptr());
                assert!(!f.is_null(), "liburcu lacks {name:?}");
                f
            };
            Some(Urcu {
                register_thread: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(
                    sym(c"urcu_memb_register_thread"),
                ),
                read_lock: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(sym(
                    c"urcu_memb_read_lock",
                )),
                read_unlock: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(sym(
                    c"urcu_memb_read_unlock",
                )),
                synchronize: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(sym(
                    c"urcu_memb_synchronize_rcu",
                )),
                call_rcu: std::mem::transmute::<
                    *mut libc::c_void,
                    unsafe extern "C" fn(*mut UrcuHead, unsafe extern "C" fn(*mut UrcuHead)),
                >(sym(c"urcu_memb_call_rcu")),
                barrier: std::mem::transmute::<*mut libc::c_void, unsafe extern "C" fn()>(sym(
                    c"urcu_memb_barrier",
                )),
            })
        }
    })
    .as_ref()
}

/// Registers the calling thread with liburcu once (readers and `call_rcu` need it).
fn urcu_register(u: &Urcu) {
    thread_local!(static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
    if !DONE.with(|d| d.replace(true)) {
        // SAFETY: a thread registers itself once; it stays registered until it exits.
        unsafe { (u.register_thread)() };
    }
}

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
    if let Some(u) = urcu() {
        urcu_register(u);
        g.bench_function("urcu_memb_read_lock", |b| {
            b.iter(|| {
                // SAFETY: a registered thread, sections balanced.
                unsafe {
                    (u.read_lock)();
                    (u.read_unlock)();
                }
            })
        });
    }
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
    if let Some(u) = urcu() {
        urcu_register(u);
        // SAFETY: outside any read section.
        g.bench_function("urcu_memb_synchronize_rcu", |b| {
            b.iter(|| unsafe { (u.synchronize)() })
        });
    }
    g.finish();
}

/// Starts `n` threads that enter and leave read sections (cpuslab's, or liburcu's
/// when `urcu`) until the returned flag is set; they have all started on return.
fn readers(
    n: usize,
    urcu: Option<&'static Urcu>,
) -> (Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(n + 1));
    let threads = (0..n)
        .map(|_| {
            let (stop, started) = (stop.clone(), started.clone());
            std::thread::spawn(move || {
                if let Some(u) = urcu {
                    urcu_register(u);
                }
                started.wait();
                while !stop.load(Ordering::Relaxed) {
                    match urcu {
                        // SAFETY: a registered thread, sections balanced.
                        Some(u) => unsafe {
                            (u.read_lock)();
                            black_box(());
                            (u.read_unlock)();
                        },
                        None => drop(black_box(rcu::read_lock())),
                    }
                }
            })
        })
        .collect();
    started.wait();
    (stop, threads)
}

fn synchronize_with_readers(c: &mut Criterion) {
    let mut g = c.benchmark_group("synchronize_with_readers");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    for n in [1usize, 4, 16] {
        let (stop, threads) = readers(n, None);
        g.bench_function(format!("cpuslab/{n}"), |b| b.iter(rcu::synchronize));
        stop.store(true, Ordering::Relaxed);
        threads.into_iter().for_each(|t| t.join().unwrap());
        if let Some(u) = urcu() {
            let (stop, threads) = readers(n, Some(u));
            // SAFETY: outside any read section.
            g.bench_function(format!("urcu_memb/{n}"), |b| {
                b.iter(|| unsafe { (u.synchronize)() })
            });
            stop.store(true, Ordering::Relaxed);
            threads.into_iter().for_each(|t| t.join().unwrap());
        }
    }
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
    if let Some(u) = urcu() {
        urcu_register(u);
        static URCU_INVOKED: AtomicU64 = AtomicU64::new(0);
        unsafe extern "C" fn urcu_count(_head: *mut UrcuHead) {
            URCU_INVOKED.fetch_add(1, Ordering::Relaxed);
        }
        let mut heads: Vec<UrcuHead> = (0..N)
            .map(|_| UrcuHead {
                next: std::ptr::null_mut(),
                func: None,
            })
            .collect();
        let mut queued = 0u64;
        g.bench_function("urcu_memb_10000", |b| {
            b.iter(|| {
                for h in heads.iter_mut() {
                    // SAFETY: each head is idle (the previous round's barrier ran every
                    // callback) and outlives its callback; a registered thread.
                    unsafe { (u.call_rcu)(h, urcu_count) };
                }
                queued += N as u64;
                // SAFETY: outside any read section.
                unsafe { (u.barrier)() };
            })
        });
        assert_eq!(URCU_INVOKED.load(Ordering::Relaxed), queued);
    }
    g.finish();
    // Every callback ran exactly once.
    assert_eq!(INVOKED.load(Ordering::Relaxed), queued);
}

criterion_group!(
    benches,
    read_side,
    floor,
    grace_period,
    synchronize_with_readers,
    call_rcu_throughput
);
criterion_main!(benches);
