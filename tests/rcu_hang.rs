//! RCU forward progress under reader-thread churn: a reader thread that leaves while a
//! grace period initialises the `rcu_node` masks must not leave that grace period
//! waiting forever for a leaf nobody will report.
//!
//! Each test runs its workload on worker threads and waits for them with a deadline; a
//! grace period that never ends fails the test with the RCU statistics and the last
//! trace events instead of hanging the test runner.

#[global_allocator]
static GLOBAL: cpuslab::CpuSlab = cpuslab::CpuSlab;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cpuslab::rcu::{self, trace, tree, RcuHead};

/// How long the churn runs (`CPUSLAB_RCU_HANG_SECS`, default 2).
fn run_for() -> Duration {
    let secs = std::env::var("CPUSLAB_RCU_HANG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// A grace period takes microseconds to milliseconds; this is a hang.
const HANG: Duration = Duration::from_secs(10);

/// The statistics and the last trace events, for a failure message.
fn rcu_dump() -> String {
    let mut s = String::new();
    rcu::write_rcu_stats(&mut s).unwrap();
    let mut ring = [trace::TraceEntry {
        time_ns: 0,
        gp_seq: 0,
        event: trace::Event::NewReq,
        arg: 0,
    }; 24];
    let waiting: Vec<usize> = (0..256).filter(|&slot| tree::waits_for(slot)).collect();
    s.push_str(&format!(
        "root done {}, readers 0..256 waited for: {waiting:?}\n",
        tree::root_done()
    ));
    let n = trace::snapshot(&mut ring);
    for e in &ring[..n] {
        s.push_str(&format!(
            "  {:>16} ns gp_seq {:>8} {:?} {}\n",
            e.time_ns, e.gp_seq, e.event, e.arg
        ));
    }
    s
}

/// Runs `updater` on a thread while `churners` threads each spawn short-lived reader
/// threads one after another, until `updater` returns; fails if it has not returned
/// within the run time plus [`HANG`].
fn churn_readers_while(churners: usize, updater: impl FnOnce(&AtomicBool) -> u64 + Send + 'static) {
    let stop = Arc::new(AtomicBool::new(false));
    let exits = Arc::new(AtomicU64::new(0));
    let spawners: Vec<_> = (0..churners)
        .map(|_| {
            let stop = stop.clone();
            let exits = exits.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    thread::spawn(|| {
                        // Registers this thread as a reader; it goes offline at exit.
                        let g = rcu::read_lock();
                        drop(g);
                    })
                    .join()
                    .unwrap();
                    exits.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let (done_tx, done_rx) = mpsc::channel();
    {
        let stop = stop.clone();
        thread::spawn(move || {
            let n = updater(&stop);
            done_tx.send(n).unwrap();
        });
    }
    let deadline = run_for() + HANG;
    let started = Instant::now();
    let result = done_rx.recv_timeout(deadline);
    stop.store(true, Ordering::Relaxed);
    match result {
        Ok(n) => {
            for s in spawners {
                s.join().unwrap();
            }
            assert!(n > 0, "the updater did no work");
            eprintln!(
                "{n} updates against {} reader exits in {:?}",
                exits.load(Ordering::Relaxed),
                started.elapsed()
            );
        }
        Err(_) => panic!(
            "RCU hang: the updater had not finished {:?} after its run time ({} reader exits so far)\n{}",
            HANG,
            exits.load(Ordering::Relaxed),
            rcu_dump()
        ),
    }
}

/// `synchronize` in a loop while reader threads come and go.
#[test]
fn synchronize_completes_while_reader_threads_exit() {
    let t = run_for();
    churn_readers_while(1, move |stop| {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < t && !stop.load(Ordering::Relaxed) {
            rcu::synchronize();
            n += 1;
        }
        n
    });
}

static INVOKED: AtomicU64 = AtomicU64::new(0);

unsafe fn count_and_free(head: *mut RcuHead) {
    INVOKED.fetch_add(1, Ordering::Relaxed);
    // SAFETY: queued from `Box::into_raw` below, invoked once.
    drop(unsafe { Box::from_raw(head) });
}

/// `call_rcu` and `barrier` in a loop while reader threads come and go (the shape of
/// the hang first seen in `kmem_cache`'s `typesafe_by_rcu_defers_slab_freeing`).
#[test]
fn barrier_completes_while_reader_threads_exit() {
    let t = run_for();
    churn_readers_while(1, move |stop| {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < t && !stop.load(Ordering::Relaxed) {
            let before = INVOKED.load(Ordering::Relaxed);
            for _ in 0..4 {
                // SAFETY: a fresh head, freed by its callback.
                unsafe { rcu::call_rcu(Box::into_raw(Box::new(RcuHead::new())), count_and_free) };
            }
            rcu::barrier();
            assert!(INVOKED.load(Ordering::Relaxed) >= before + 4);
            n += 1;
        }
        n
    });
}
