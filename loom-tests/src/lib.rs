//! loom models of cpuslab's concurrent algorithms, run against the library's own code
//! built with `--cfg loom` (its atomics, lock cells and futex waits are then loom's):
//!
//! - `tests/trylock.rs`: the per-CPU [`TryLock`](cpuslab::sync::TryLock), its
//!   fallback to a shared [`Mutex`](cpuslab::sync::Mutex), and a killed lock.
//! - `tests/rcu_gp.rs`: a grace period (the `gp_seq` state machine, the `rcu_node`
//!   tree's `qsmask` report-up, forcing quiescent states) against two readers, one of
//!   them nesting; no reader that started before the grace period sees its object freed.
//!   And a reader leaving while the masks initialise: the grace period still ends. And
//!   a grace period that finds no reader present and frees at once, against a reader
//!   coming online: it reads the new version.
//! - `tests/rcu_segcblist.rs`: `call_rcu`'s segmented callback lists against grace
//!   periods and the callback invoker: every callback runs once, after a full grace
//!   period.
//! - `tests/percpu_counter.rs`: the percpu counter's fold against concurrent adds and
//!   exact sums.
//! - `tests/percpu_rwsem.rs`: the percpu rw-semaphore never lets a reader overlap the
//!   writer.
//! - `tests/array_cache.rs`: two CPUs' array caches refilled and flushed against a
//!   node's shared cache and slab lists (`slab::transfer`), falling back to the node
//!   while a third thread drains a stopped cache and the shared cache: no object is
//!   lost or handed out twice, and the lists' counts agree with the slabs.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p cpuslab-loom-tests --release
//! ```
//!
//! Without `--cfg loom` every test file is empty.

#![warn(missing_docs)]

#[cfg(loom)]
pub use loom_util::*;

#[cfg(loom)]
mod loom_util {
    use cpuslab::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

    /// Runs `f` under `loom::model` (every interleaving, within
    /// `LOOM_MAX_PREEMPTIONS`) and reports how many executions it explored; fails if
    /// loom found nothing to interleave, which would mean the model checks nothing.
    pub fn model<F: Fn() + Sync + Send + 'static>(f: F) -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
        use std::sync::Arc;
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let start = std::time::Instant::now();
        loom::model(move || {
            counted.fetch_add(1, Relaxed);
            f()
        });
        let n = runs.load(Relaxed);
        eprintln!("{n} executions in {:.2?}", start.elapsed());
        assert!(n > 1, "loom explored a single execution");
        n
    }

    // Loom takes an atomic's initial value for a release store outside the order of
    // sequentially consistent operations, so a SeqCst load may read it even after a
    // later SeqCst store, which C11 forbids. Storing the value again with SeqCst puts
    // it in that order.

    /// An `AtomicU64` holding `v` as if stored with `SeqCst`.
    pub fn seq_cst_u64(v: u64) -> AtomicU64 {
        let a = AtomicU64::new(v);
        a.store(v, Ordering::SeqCst);
        a
    }

    /// An `AtomicIsize` holding `v` as if stored with `SeqCst`.
    pub fn seq_cst_isize(v: isize) -> AtomicIsize {
        let a = AtomicIsize::new(v);
        a.store(v, Ordering::SeqCst);
        a
    }
}
