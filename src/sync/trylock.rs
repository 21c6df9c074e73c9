//! The per-CPU lock: tried once, never waited on.

use super::prim::atomic::{AtomicU32, Ordering};
use super::prim::{const_fn, futex};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
/// The structure was retired; every try fails from now on.
const DEAD: u32 = 2;

/// A lock that is tried once and never waited on, for structures owned by one CPU.
///
/// A thread that fails to take it takes another path (the node's shared cache, the
/// zone), so a holder preempted in the middle of its critical section delays nobody.
#[repr(transparent)]
pub struct TryLock(AtomicU32);

impl TryLock {
    const_fn! {
        /// An unlocked lock.
        pub fn new() -> Self {
            Self(AtomicU32::new(UNLOCKED))
        }
    }

    /// Takes the lock if it is free.
    #[inline(always)]
    pub fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases a lock taken by [`try_lock`](Self::try_lock) or [`lock_wait`](Self::lock_wait).
    #[inline(always)]
    pub fn unlock(&self) {
        self.0.store(UNLOCKED, Ordering::Release);
    }

    /// Takes the lock, yielding while it is held. Only for rare administrative work
    /// (retuning, draining every CPU), never on an allocation path. Returns false if
    /// the lock is dead.
    pub fn lock_wait(&self) -> bool {
        loop {
            match self
                .0
                .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(DEAD) => return false,
                Err(_) => futex::yield_now(),
            }
        }
    }

    /// Marks a lock held by the caller as dead: every later try fails.
    pub fn kill(&self) {
        self.0.store(DEAD, Ordering::Release);
    }
}

impl Default for TryLock {
    fn default() -> Self {
        Self::new()
    }
}
