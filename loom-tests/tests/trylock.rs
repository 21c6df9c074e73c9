//! The per-CPU try-lock: holders exclude each other, a failed try takes the shared
//! path (a node's `Mutex`), nothing is lost, and a killed lock is never taken again.
#![cfg(loom)]

use cpuslab::sync::{Mutex, TryLock};
use cpuslab_loom_tests::model;
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// A per-CPU structure (an array cache, a callback list) and the node-wide
/// structure its users fall back to.
struct Caches {
    lock: TryLock,
    /// Objects put in the per-CPU structure; loom checks every access is ordered
    /// after the previous one, which only the lock provides.
    local: UnsafeCell<u32>,
    shared: Mutex<u32>,
}

// SAFETY: `local` is only touched with `lock` held.
unsafe impl Sync for Caches {}

impl Caches {
    fn new() -> Self {
        Self {
            lock: TryLock::new(),
            local: UnsafeCell::new(0),
            shared: Mutex::new(0),
        }
    }

    /// The allocation path: this CPU's structure if its lock can be had, else the
    /// shared one.
    fn put(&self) {
        if self.lock.try_lock() {
            self.local.with_mut(|p| {
                // SAFETY: the lock is held.
                unsafe { *p += 1 }
            });
            self.lock.unlock();
        } else {
            *self.shared.lock() += 1;
        }
    }

    /// Administrative work (draining, retuning): waits for the lock; falls back only
    /// when it is dead. Returns whether it got the lock.
    fn put_waiting(&self) -> bool {
        if self.lock.lock_wait() {
            self.local.with_mut(|p| {
                // SAFETY: the lock is held.
                unsafe { *p += 1 }
            });
            self.lock.unlock();
            true
        } else {
            *self.shared.lock() += 1;
            false
        }
    }

    fn local(&self) -> u32 {
        // SAFETY: called once every thread has joined.
        self.local.with(|p| unsafe { *p })
    }
}

// Loom explores schedules in which two threads that yield in a spin take turns
// forever and starve the holder; so each model has at most one `lock_wait` spinning
// at a time.

#[test]
fn trylock_excludes_and_falls_back() {
    model(|| {
        let c = Arc::new(Caches::new());
        let putter = {
            let c = c.clone();
            thread::spawn(move || c.put())
        };
        let waiter = {
            let c = c.clone();
            thread::spawn(move || c.put_waiting())
        };
        c.put();
        putter.join().unwrap();
        assert!(waiter.join().unwrap(), "a live lock reported dead");
        let (local, shared) = (c.local(), *c.shared.lock());
        assert_eq!(local + shared, 3, "a put was lost");
        assert!(local >= 1, "a try failed though nobody held the lock");
    });
}

#[test]
fn killed_trylock_is_never_taken_again() {
    model(|| {
        let c = Arc::new(Caches::new());
        let putter = {
            let c = c.clone();
            thread::spawn(move || c.put())
        };
        // The owner retires the structure: takes the lock, empties it, kills it.
        assert!(c.lock.lock_wait(), "a live lock reported dead");
        let waiter = {
            let c = c.clone();
            thread::spawn(move || c.put_waiting())
        };
        let at_kill = c.local.with_mut(|p| {
            // SAFETY: the lock is held.
            unsafe {
                *p += 1;
                *p
            }
        });
        c.lock.kill();
        putter.join().unwrap();
        assert!(!waiter.join().unwrap(), "a killed lock was taken");
        assert_eq!(
            c.local(),
            at_kill,
            "the structure was touched after it was killed"
        );
        assert_eq!(c.local() + *c.shared.lock(), 3, "a put was lost");
        assert!(!c.lock.try_lock() && !c.lock.lock_wait());
    });
}
