//! `call_rcu`'s callback segments against grace periods and the callback invoker:
//! every callback runs exactly once, and only after a full grace period has elapsed
//! since it was queued.
//!
//! As `rcu/callbacks.rs` does it: a callback is queued on its CPU's list under the
//! list's try-lock, or on the shared list under its mutex when the try fails, with the
//! `gp_seq` snapshot taken under that lock (`enqueue` + `accelerate`); the invoker
//! takes each list's lock, advances it to the `gp_seq` it read first, accelerates what
//! is left, detaches a batch of DONE and invokes it after unlocking. A third thread
//! runs grace periods (the `gp_seq` transitions). The check at invocation does not
//! trust `seq::snap`: from the `gp_seq` the queuer read it works out by hand which
//! grace period must have ended.
#![cfg(loom)]

use std::cell::UnsafeCell as StdUnsafeCell;

use cpuslab::rcu::segcblist::SegCbList;
use cpuslab::rcu::{seq, RcuHead};
use cpuslab::sync::atomic::{AtomicU64, Ordering};
use cpuslab::sync::{Mutex, TryLock};
use cpuslab_loom_tests::{model, seq_cst_u64};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// Callbacks queued.
const N: usize = 3;
/// Callbacks invoked per list per pass (the kernel's `blimit`, small to keep some on
/// DONE between passes).
const BLIMIT: usize = 1;
/// Grace periods the grace-period thread runs.
const GPS: usize = 2;

/// What the model knows of one callback.
#[derive(Clone, Copy, Default)]
struct Record {
    /// `gp_seq` read when it was queued.
    queued_at: u64,
    /// Times it was invoked.
    invoked: u32,
}

struct World {
    gp_seq: AtomicU64,
    /// One CPU's list (`CbList`): a try-lock and the segmented list.
    cpu_lock: TryLock,
    cpu_list: UnsafeCell<SegCbList>,
    /// The list of last resort.
    shared: Mutex<SegCbList>,
    heads: [StdUnsafeCell<RcuHead>; N],
    records: [UnsafeCell<Record>; N],
}

// SAFETY: the lists, and the heads on them, are only touched under their locks; a
// detached chain belongs to the invoker; loom checks the records.
unsafe impl Sync for World {}
// SAFETY: as above.
unsafe impl Send for World {}

/// The `gp_seq` at which a grace period that began after `s` was read has ended,
/// worked out without `seq`: the next one to start if none is running at `s`, else
/// the one after the running one.
fn full_grace_period_after(s: u64) -> u64 {
    let base = s & !3;
    if s & 3 == 0 {
        base + 4
    } else {
        base + 8
    }
}

impl World {
    fn new() -> Self {
        Self {
            gp_seq: seq_cst_u64(4),
            cpu_lock: TryLock::new(),
            cpu_list: UnsafeCell::new(SegCbList::new()),
            shared: Mutex::new(SegCbList::new()),
            heads: core::array::from_fn(|_| StdUnsafeCell::new(RcuHead::new())),
            records: core::array::from_fn(|_| UnsafeCell::new(Record::default())),
        }
    }

    /// `call_rcu(heads[i])`.
    fn call_rcu(&self, i: usize) {
        let queue = |list: &mut SegCbList| {
            let now = self.gp_seq.load(Ordering::SeqCst);
            // SAFETY: the head is on no list; the list's lock is held.
            unsafe { list.enqueue(self.heads[i].get()) };
            list.accelerate(seq::snap(now));
            self.records[i].with_mut(|r| {
                // SAFETY: written before the head can be invoked, under the lock.
                unsafe { (*r).queued_at = now }
            });
        };
        if self.cpu_lock.try_lock() {
            // SAFETY: the lock is held.
            self.cpu_list.with_mut(|l| queue(unsafe { &mut *l }));
            self.cpu_lock.unlock();
        } else {
            queue(&mut self.shared.lock());
        }
    }

    /// `callbacks::process`: one pass over both lists.
    fn process(&self) {
        let cur = self.gp_seq.load(Ordering::Relaxed);
        let take = |list: &mut SegCbList| {
            list.advance(cur);
            list.accelerate(seq::snap(self.gp_seq.load(Ordering::SeqCst)));
            list.extract_done(BLIMIT)
        };
        if self.cpu_lock.lock_wait() {
            // SAFETY: the lock is held.
            let (chain, _) = self.cpu_list.with_mut(|l| take(unsafe { &mut *l }));
            self.cpu_lock.unlock();
            self.invoke(chain, cur);
        }
        let (chain, _) = take(&mut self.shared.lock());
        self.invoke(chain, cur);
    }

    /// Invokes a detached chain, checking each callback's grace period against `cur`,
    /// the `gp_seq` its list was advanced to.
    fn invoke(&self, mut h: *mut RcuHead, cur: u64) {
        while !h.is_null() {
            let i = self
                .heads
                .iter()
                .position(|c| c.get() == h)
                .expect("a head the model never queued");
            // SAFETY: the chain was detached under the list's lock and is ours.
            h = unsafe { (*h).next };
            self.records[i].with_mut(|r| {
                // SAFETY: the record is ordered after the queuer's write (checked).
                let r = unsafe { &mut *r };
                assert!(
                    cur >= full_grace_period_after(r.queued_at),
                    "callback {i} queued at gp_seq {} invoked at {cur}, before a full grace period",
                    r.queued_at
                );
                assert_eq!(r.invoked, 0, "callback {i} invoked twice");
                r.invoked += 1;
            });
        }
    }

    /// A grace period's `gp_seq` transitions.
    fn run_gp(&self) {
        let gp = seq::start(self.gp_seq.load(Ordering::Relaxed));
        self.gp_seq.store(gp, Ordering::SeqCst);
        self.gp_seq.store(seq::end(gp), Ordering::SeqCst);
    }

    fn invoked(&self) -> usize {
        self.records
            .iter()
            .filter(|r| {
                // SAFETY: every thread has joined.
                r.with(|r| unsafe { (*r).invoked } == 1)
            })
            .count()
    }
}

#[test]
fn callbacks_run_once_after_their_grace_period() {
    model(|| {
        let w = Arc::new(World::new());
        // Two threads on one CPU queue callbacks 0, 2 and 1: one of them finds the
        // CPU's list busy when the other holds it and takes the shared list.
        let queuers: Vec<_> = [&[0, 2][..], &[1][..]]
            .into_iter()
            .map(|ids| {
                let w = w.clone();
                thread::spawn(move || {
                    for &i in ids {
                        w.call_rcu(i);
                    }
                })
            })
            .collect();
        let gp_thread = {
            let w = w.clone();
            thread::spawn(move || {
                for _ in 0..GPS {
                    w.run_gp();
                }
            })
        };
        w.process();
        for q in queuers {
            q.join().unwrap();
        }
        gp_thread.join().unwrap();
        // Drain: the grace-period thread's loop, alone now. Each callback needs at
        // most two more grace periods, and each pass invokes BLIMIT per list.
        for _ in 0..2 + N {
            w.process();
            w.run_gp();
        }
        w.process();
        assert_eq!(w.invoked(), N, "a callback was lost");
        assert!(w.shared.lock().is_empty());
        assert!(w.cpu_list.with(|l| unsafe { (*l).is_empty() }));
    });
}
