//! A futex mutex for node and zone state: spins briefly, then sleeps.

use core::ops::{Deref, DerefMut};

use super::prim::atomic::{AtomicU32, Ordering};
use super::prim::{const_fn, futex, UnsafeCell};

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A contended lock spins 1, 2, 4 ... 2^`SPIN_STEPS` times before it yields.
#[cfg(not(loom))]
const SPIN_STEPS: u32 = 6;
/// ...and yields this many times before it sleeps on the futex.
#[cfg(not(loom))]
const YIELD_STEPS: u32 = 4;

/// A mutual-exclusion lock over `T` that never allocates.
pub struct Mutex<T> {
    state: AtomicU32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `data`.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the data.
unsafe impl<T: Send> Send for Mutex<T> {}

/// Proof that the lock is held; releases it on drop.
pub struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
}

impl<T> Mutex<T> {
    const_fn! {
        /// An unlocked mutex.
        pub fn new(data: T) -> Self {
            Self {
                state: AtomicU32::new(UNLOCKED),
                data: UnsafeCell::new(data),
            }
        }
    }

    /// Takes the lock, sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        MutexGuard { lock: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| MutexGuard { lock: self })
    }

    #[cold]
    fn lock_contended(&self) {
        // A loom model goes straight to the futex: a spin without yielding would
        // multiply the interleavings it explores.
        // Otherwise, as crossbeam's `Backoff::snooze`: spins that double from 1 to 64
        // pause instructions, then a few `sched_yield`s (a holder preempted on this
        // CPU gets to run), then the futex.
        #[cfg(not(loom))]
        for step in 0..=SPIN_STEPS + YIELD_STEPS {
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if step <= SPIN_STEPS {
                for _ in 0..1u32 << step {
                    core::hint::spin_loop();
                }
            } else {
                futex::yield_now();
            }
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex::wait(&self.state, CONTENDED);
        }
    }

    /// Raw access for code that knows the lock is held (fork handlers).
    pub fn data_ptr(&self) -> *mut T {
        self.data.get()
    }

    /// Takes the lock and leaks the guard; paired with [`force_unlock`](Self::force_unlock).
    pub fn lock_raw(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken with [`lock_raw`](Self::lock_raw).
    ///
    /// # Safety
    /// The caller must hold the lock (or be a forked child whose only thread is the
    /// one that held it).
    pub unsafe fn force_unlock(&self) {
        self.unlock();
    }

    /// Opens the lock if it is held, without waking anyone: for a forked child whose
    /// lock holders no longer exist.
    ///
    /// # Safety
    /// Only in a forked child, before any other thread exists.
    pub unsafe fn force_unlock_if_locked(&self) {
        self.state.store(UNLOCKED, Ordering::Relaxed);
    }

    #[inline]
    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex::wake(&self.state, 1);
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}
