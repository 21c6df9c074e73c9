//! Locks and atomics for every layer.
//!
//! Two kinds of lock, as in the kernel: [`TryLock`] guards a per-CPU structure and is
//! only ever tried (its holder may be preempted, so waiting on it could wait a whole
//! time slice); [`Mutex`] guards shared node and zone state and sleeps on a futex when
//! contended.
//!
//! Both, and the RCU and percpu structures built on them, take their atomics from
//! [`prim`], which a loom model swaps for loom's (`cfg(loom)`).

mod mutex;
mod padded;
pub mod prim;
mod trylock;

pub use mutex::{Mutex, MutexGuard};
pub use padded::CachePadded;
pub use prim::atomic;
pub use trylock::TryLock;
