//! The primitives a loom model replaces: atomics, the lock-protected cell, futex wait
//! and wake, yielding. Normally these are `core`'s and `sys::futex`; under `cfg(loom)`
//! they are loom's, so the locks, the `rcu_node` tree, the callback segments and the
//! percpu counter and semaphore can be model-checked as they are (`loom-tests/`).
//!
//! Loom's atomics cannot be made in a constant, so under `cfg(loom)` the constructors
//! of types that hold them are plain functions (`const_fn!`) and the crate builds only
//! the parts that do not live in statics.

/// Atomics: `core::sync::atomic`, or loom's under `cfg(loom)`.
pub mod atomic {
    #[cfg(not(loom))]
    pub use core::sync::atomic::*;
    #[cfg(loom)]
    pub use loom::sync::atomic::*;
}

/// Defines a constructor that is a `const fn` normally and a plain `fn` under
/// `cfg(loom)`, where the atomics it makes are not constants.
macro_rules! const_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$m])*
        $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(loom)]
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_fn;

/// An `UnsafeCell` whose accesses a loom model checks: under `cfg(loom)` each
/// [`get`](Self::get) is recorded as a write, and loom reports one that is not ordered
/// after the previous access (the lock around it failed to order them).
#[repr(transparent)]
pub struct UnsafeCell<T> {
    inner: UnsafeCellInner<T>,
}

impl<T> UnsafeCell<T> {
    const_fn! {
        /// A cell holding `value`.
        pub fn new(value: T) -> Self {
            Self {
                inner: UnsafeCellInner::new(value),
            }
        }
    }

    /// A raw pointer to the value.
    #[inline(always)]
    pub fn get(&self) -> *mut T {
        #[cfg(not(loom))]
        return self.inner.get();
        #[cfg(loom)]
        return self.inner.with_mut(|p| p);
    }
}

#[cfg(not(loom))]
type UnsafeCellInner<T> = core::cell::UnsafeCell<T>;
#[cfg(loom)]
type UnsafeCellInner<T> = loom::cell::UnsafeCell<T>;

/// futex(2) wait and wake, and yielding the CPU.
#[cfg(not(loom))]
pub use crate::sys::futex;

/// futex(2) wait and wake, and yielding the CPU, emulated for loom: one wait queue (a
/// loom mutex and condition variable) stands for the kernel's futex hash buckets. As
/// the kernel does, `wait` checks the word under the queue's lock and `wake` takes
/// that lock, so a wake that follows a change of the word is never lost; a waiter
/// nobody wakes is a deadlock loom reports.
#[cfg(loom)]
pub mod futex {
    use super::atomic::{AtomicU32, Ordering};
    use loom::sync::{Condvar, Mutex};

    struct Queue {
        lock: Mutex<()>,
        cond: Condvar,
    }

    loom::lazy_static! {
        static ref QUEUE: Queue = Queue { lock: Mutex::new(()), cond: Condvar::new() };
    }

    /// Sleeps while `*word == expected`. Spurious wake-ups are possible.
    pub fn wait(word: &AtomicU32, expected: u32) {
        let g = QUEUE.lock.lock().unwrap();
        if word.load(Ordering::SeqCst) == expected {
            drop(QUEUE.cond.wait(g).unwrap());
        }
    }

    /// Wakes the waiters on `word` (all of them: futex wake-ups may be spurious).
    pub fn wake(_word: &AtomicU32, _n: i32) {
        let _g = QUEUE.lock.lock().unwrap();
        QUEUE.cond.notify_all();
    }

    /// Lets the other threads of the model run.
    pub fn yield_now() {
        loom::thread::yield_now();
    }
}
